package diagnose

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/kdiag/kdiag/pkg/nodehealth/psi"
)

// podStat is one read of a pod cgroup.
type podStat struct {
	cpuNanos uint64 // cumulative CPU time
	hasCPU   bool
	memory   int64 // working set
	hasMem   bool
}

// pressure fills the pressure section: node PSI, then pod usage from the
// kubepods cgroups, CPU sampled over opts.CPUWindow.
func (d *Diagnoser) pressure(ctx context.Context) Pressure {
	var sec Pressure
	node, err := psi.ReadDir(d.opts.ProcPressure, "")
	if err != nil {
		sec.Errors = append(sec.Errors, fmt.Sprintf("node PSI unavailable (kernel without CONFIG_PSI or booted with psi=0?): %v", err))
	}
	if len(node) > 0 {
		sec.PSI = map[string]PSI{}
		for r, p := range node {
			sec.PSI[r] = PSI{SomeAvg10: p.Some.Avg10, SomeAvg60: p.Some.Avg60, SomeAvg300: p.Some.Avg300,
				FullAvg10: p.Full.Avg10, FullAvg60: p.Full.Avg60, FullAvg300: p.Full.Avg300, HasFull: p.HasFull}
		}
	}

	src := d.podSources()
	if src.cpuRoot == "" && src.memRoot == "" {
		sec.Errors = append(sec.Errors, fmt.Sprintf("no kubepods cgroup found (cgroup v2 roots %s, v1 memory %s, v1 cpuacct %s): top pods unknown",
			strings.Join(d.opts.CgroupV2Roots, ", "), d.opts.MemoryV1Root, d.opts.CPUAcctV1Root))
		return sec
	}
	sec.CgroupVersion = src.version()
	first := src.read()
	sec.CPUWindow = d.opts.CPUWindow
	start := time.Now()
	select {
	case <-ctx.Done():
		sec.Errors = append(sec.Errors, "pod CPU not sampled: "+ctx.Err().Error())
		return sec
	case <-time.After(d.opts.CPUWindow):
	}
	second := src.read()
	elapsed := time.Since(start)
	sec.Pods = len(second)
	var pods []PodUsage
	for uid, s := range second {
		u := PodUsage{UID: uid, MemoryBytes: s.memory}
		if f, ok := first[uid]; ok && s.hasCPU && f.hasCPU && s.cpuNanos >= f.cpuNanos {
			u.CPUCores = float64(s.cpuNanos-f.cpuNanos) / float64(elapsed.Nanoseconds())
		}
		if d.opts.Pods != nil {
			if p, ok := d.opts.Pods.PodByUID(uid); ok {
				u.Namespace, u.Name = p.Namespace, p.Name
			}
		}
		pods = append(pods, u)
	}
	sec.TopCPU = top(pods, d.opts.TopPods, func(u PodUsage) float64 { return u.CPUCores })
	sec.TopMemory = top(pods, d.opts.TopPods, func(u PodUsage) float64 { return float64(u.MemoryBytes) })
	return sec
}

// top returns the n pods with the largest positive key, largest first.
func top(pods []PodUsage, n int, key func(PodUsage) float64) []PodUsage {
	var out []PodUsage
	for _, p := range pods {
		if key(p) > 0 {
			out = append(out, p)
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if key(out[i]) != key(out[j]) {
			return key(out[i]) > key(out[j])
		}
		return out[i].UID < out[j].UID
	})
	if len(out) > n {
		out = out[:n]
	}
	return out
}

// podSources says where pod CPU and memory are read: cgroup v2 when its
// pod cgroups have the files, else the v1 controllers (hybrid hosts mount
// v1 memory and cpuacct next to a v2 hierarchy without those controllers).
type podSources struct {
	cpuRoot, memRoot string
	cpuV2, memV2     bool
}

func (d *Diagnoser) podSources() podSources {
	var s podSources
	if v2 := psi.PodCgroupRoot(d.opts.CgroupV2Roots); v2 != "" {
		for _, dir := range psi.PodDirs(v2) {
			if fileExists(filepath.Join(dir, "cpu.stat")) {
				s.cpuRoot, s.cpuV2 = v2, true
			}
			if fileExists(filepath.Join(dir, "memory.current")) {
				s.memRoot, s.memV2 = v2, true
			}
			break
		}
	}
	if s.memRoot == "" && d.opts.MemoryV1Root != "" && len(psi.PodDirs(d.opts.MemoryV1Root)) > 0 {
		s.memRoot = d.opts.MemoryV1Root
	}
	if s.cpuRoot == "" && d.opts.CPUAcctV1Root != "" && len(psi.PodDirs(d.opts.CPUAcctV1Root)) > 0 {
		s.cpuRoot = d.opts.CPUAcctV1Root
	}
	return s
}

func (s podSources) version() string {
	switch {
	case (s.cpuRoot == "" || s.cpuV2) && (s.memRoot == "" || s.memV2):
		return "v2"
	case (s.cpuRoot == "" || !s.cpuV2) && (s.memRoot == "" || !s.memV2):
		return "v1"
	default:
		return "hybrid"
	}
}

// read reads every pod's CPU and memory once.
func (s podSources) read() map[string]podStat {
	out := map[string]podStat{}
	if s.cpuRoot != "" {
		for uid, dir := range psi.PodDirs(s.cpuRoot) {
			st := out[uid]
			if s.cpuV2 {
				if v, ok := statField(filepath.Join(dir, "cpu.stat"), "usage_usec"); ok {
					st.cpuNanos, st.hasCPU = v*1000, true
				}
			} else if v, ok := readUint(filepath.Join(dir, "cpuacct.usage")); ok {
				st.cpuNanos, st.hasCPU = v, true
			}
			out[uid] = st
		}
	}
	if s.memRoot != "" {
		for uid, dir := range psi.PodDirs(s.memRoot) {
			st := out[uid]
			usageFile, inactive := "memory.usage_in_bytes", "total_inactive_file"
			if s.memV2 {
				usageFile, inactive = "memory.current", "inactive_file"
			}
			if u, ok := readUint(filepath.Join(dir, usageFile)); ok {
				in, _ := statField(filepath.Join(dir, "memory.stat"), inactive)
				ws := int64(u) //nolint:gosec // memory sizes fit
				if in < u {
					ws -= int64(in) //nolint:gosec // idem
				} else {
					ws = 0
				}
				st.memory, st.hasMem = ws, true
			}
			out[uid] = st
		}
	}
	return out
}

func fileExists(p string) bool { _, err := os.Stat(p); return err == nil }

func readUint(p string) (uint64, bool) {
	b, err := os.ReadFile(p)
	if err != nil {
		return 0, false
	}
	v, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
	return v, err == nil
}

// statField reads "key value" from a cgroup stat file (cpu.stat, memory.stat).
func statField(p, key string) (uint64, bool) {
	f, err := os.Open(p)
	if err != nil {
		return 0, false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), " ")
		if ok && k == key {
			n, err := strconv.ParseUint(strings.TrimSpace(v), 10, 64)
			return n, err == nil
		}
	}
	return 0, false
}
