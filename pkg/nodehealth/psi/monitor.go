package psi

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/kdiag/kdiag/pkg/nodehealth"
	"github.com/kdiag/kdiag/pkg/nodehealth/metrics"
)

// Source is the name under which the PSI monitor reports conditions.
const Source = "psi-monitor"

// Threshold sets a condition when some.avg10 >= SetAvg10 or some.avg60 >=
// SetAvg60, and clears it only when some.avg10 < ClearAvg10 and some.avg60
// < ClearAvg60. The gap between the two is the hysteresis that keeps a
// condition from flapping around one value.
type Threshold struct {
	SetAvg10, SetAvg60, ClearAvg10, ClearAvg60 float64
}

// DefaultThreshold returns the thresholds used for memory and I/O unless
// configured.
func DefaultThreshold() Threshold {
	return Threshold{SetAvg10: 50, SetAvg60: 25, ClearAvg10: 20, ClearAvg60: 10}
}

// Next returns the condition's next status given its current one.
func (t Threshold) Next(cur bool, s Stat) bool {
	if cur {
		return !(s.Avg10 < t.ClearAvg10 && s.Avg60 < t.ClearAvg60)
	}
	return s.Avg10 >= t.SetAvg10 || s.Avg60 >= t.SetAvg60
}

// Validate checks that the clear bounds lie at or below the set bounds.
func (t Threshold) Validate() error {
	if t.ClearAvg10 > t.SetAvg10 || t.ClearAvg60 > t.SetAvg60 || t.SetAvg10 <= 0 || t.SetAvg60 <= 0 {
		return fmt.Errorf("PSI threshold %+v: want 0 < clear <= set", t)
	}
	return nil
}

// condition describes one PSI-driven condition.
type condition struct {
	typ, resource, setReason, clearReason string
}

// conditions returns the PSI-driven node conditions.
func conditions() []condition {
	return []condition{
		{"MemoryContentionPressure", "memory", "MemoryContention", "NoMemoryContention"},
		{"IOContentionPressure", "io", "IOContention", "NoIOContention"},
	}
}

// Options configure a Monitor.
type Options struct {
	// ProcDir is the node PSI directory (default /proc/pressure).
	ProcDir string
	// CgroupRoots are tried in order for a cgroup v2 hierarchy holding pods
	// (default /sys/fs/cgroup, /sys/fs/cgroup/unified).
	CgroupRoots []string
	// Interval between reads (default 10s).
	Interval time.Duration
	// Memory and IO thresholds (default DefaultThreshold).
	Memory, IO Threshold
	Metrics    *metrics.Metrics
	Logger     *slog.Logger
}

// Monitor polls PSI and reports conditions and metrics.
type Monitor struct {
	opts  Options
	sink  nodehealth.Sink
	state map[string]nodehealth.Condition
	pods  string // cgroup v2 root with pods, "" if none
}

// NewMonitor checks that node PSI can be read and returns a monitor that
// resumes from the conditions in resume. Without PSI it returns an error
// that says so.
func NewMonitor(opts Options, sink nodehealth.Sink, resume map[string]nodehealth.Condition) (*Monitor, error) {
	if opts.ProcDir == "" {
		opts.ProcDir = "/proc/pressure"
	}
	if opts.CgroupRoots == nil {
		opts.CgroupRoots = []string{"/sys/fs/cgroup", "/sys/fs/cgroup/unified"}
	}
	if opts.Interval <= 0 {
		opts.Interval = 10 * time.Second
	}
	if opts.Memory == (Threshold{}) {
		opts.Memory = DefaultThreshold()
	}
	if opts.IO == (Threshold{}) {
		opts.IO = DefaultThreshold()
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	for _, t := range []Threshold{opts.Memory, opts.IO} {
		if err := t.Validate(); err != nil {
			return nil, err
		}
	}
	if _, err := ReadDir(opts.ProcDir, ""); err != nil {
		return nil, fmt.Errorf("node pressure stall information unavailable (kernel without CONFIG_PSI or psi=0?): %w", err)
	}
	m := &Monitor{opts: opts, sink: sink, state: map[string]nodehealth.Condition{}}
	for _, c := range conditions() {
		st := nodehealth.Condition{Type: c.typ, Reason: c.clearReason, Message: "no " + c.resource + " contention", Transition: time.Now()}
		if r, ok := resume[c.typ]; ok {
			st = r
		}
		m.state[c.typ] = st
	}
	m.pods = PodCgroupRoot(opts.CgroupRoots)
	if m.pods == "" {
		opts.Logger.Info("no cgroup v2 hierarchy with pods; per-pod pressure is not exported", "tried", opts.CgroupRoots)
	}
	return m, nil
}

// Run publishes the conditions and polls until ctx ends.
func (m *Monitor) Run(ctx context.Context) error {
	for _, c := range conditions() {
		m.sink.SetCondition(Source, m.state[c.typ])
	}
	t := time.NewTicker(m.opts.Interval)
	defer t.Stop()
	for {
		m.Poll()
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// Poll reads PSI once, updates the metrics and the conditions.
func (m *Monitor) Poll() {
	node, err := ReadDir(m.opts.ProcDir, "")
	if err != nil {
		m.opts.Logger.Warn("read node PSI", "err", err)
	}
	now := time.Now()
	for r, p := range node {
		m.export(r, p)
	}
	for _, c := range conditions() {
		p, ok := node[c.resource]
		if !ok {
			continue
		}
		th := m.opts.Memory
		if c.resource == "io" {
			th = m.opts.IO
		}
		cur := m.state[c.typ]
		next := th.Next(cur.Status, p.Some)
		if next == cur.Status {
			continue
		}
		cur.Status, cur.Transition = next, now
		if next {
			cur.Reason = c.setReason
			cur.Message = fmt.Sprintf("%s pressure: some avg10=%.2f%% avg60=%.2f%% (set at avg10>=%.0f or avg60>=%.0f)",
				c.resource, p.Some.Avg10, p.Some.Avg60, th.SetAvg10, th.SetAvg60)
			m.sink.Emit(nodehealth.Event{Source: Source, Reason: c.setReason, Message: cur.Message, Time: now})
		} else {
			cur.Reason = c.clearReason
			cur.Message = fmt.Sprintf("%s pressure back to some avg10=%.2f%% avg60=%.2f%%", c.resource, p.Some.Avg10, p.Some.Avg60)
		}
		m.state[c.typ] = cur
		m.sink.SetCondition(Source, cur)
	}
	if m.pods != "" && m.opts.Metrics != nil {
		m.exportPods()
	}
}

func (m *Monitor) export(resource string, p Pressure) {
	mm := m.opts.Metrics
	if mm == nil {
		return
	}
	set := func(kind string, s Stat) {
		mm.PSIAvg.WithLabelValues(resource, kind, "10").Set(s.Avg10)
		mm.PSIAvg.WithLabelValues(resource, kind, "60").Set(s.Avg60)
		mm.PSIAvg.WithLabelValues(resource, kind, "300").Set(s.Avg300)
		mm.PSITotal.WithLabelValues(resource, kind).Set(float64(s.Total) / 1e6)
	}
	set("some", p.Some)
	if p.HasFull {
		set("full", p.Full)
	}
}

var podDirRE = regexp.MustCompile(`pod([0-9a-f]{8}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{12})(\.slice)?$`)

// exportPods exports each pod cgroup's pressure. The per-pod series are
// reset first so that pods that left do not linger.
func (m *Monitor) exportPods() {
	mm := m.opts.Metrics
	mm.PodPSIAvg.Reset()
	for uid, dir := range PodDirs(m.pods) {
		ps, _ := ReadDir(dir, ".pressure")
		for r, p := range ps {
			for _, kv := range []struct {
				kind string
				s    Stat
			}{{"some", p.Some}, {"full", p.Full}} {
				if kv.kind == "full" && !p.HasFull {
					continue
				}
				mm.PodPSIAvg.WithLabelValues(uid, r, kv.kind, "10").Set(kv.s.Avg10)
				mm.PodPSIAvg.WithLabelValues(uid, r, kv.kind, "60").Set(kv.s.Avg60)
			}
		}
	}
}

// PodCgroupRoot returns the first root that is a cgroup v2 hierarchy
// (it has cgroup.controllers) and holds a kubepods directory.
func PodCgroupRoot(roots []string) string {
	for _, r := range roots {
		if _, err := os.Stat(filepath.Join(r, "cgroup.controllers")); err != nil {
			continue
		}
		for _, k := range []string{"kubepods", "kubepods.slice"} {
			if st, err := os.Stat(filepath.Join(r, k)); err == nil && st.IsDir() {
				return r
			}
		}
	}
	return ""
}

// PodDirs maps pod UIDs to their cgroup directories under root, for both
// the cgroupfs (kubepods/<qos>/pod<uid>) and the systemd
// (kubepods.slice/kubepods-<qos>.slice/kubepods-<qos>-pod<uid>.slice) layouts.
func PodDirs(root string) map[string]string {
	out := map[string]string{}
	for _, pattern := range []string{
		"kubepods/pod*", "kubepods/*/pod*",
		"kubepods.slice/kubepods-pod*.slice", "kubepods.slice/*/kubepods-*-pod*.slice",
	} {
		ms, _ := filepath.Glob(filepath.Join(root, pattern))
		for _, d := range ms {
			if sm := podDirRE.FindStringSubmatch(d); sm != nil {
				out[strings.ReplaceAll(sm[1], "_", "-")] = d
			}
		}
	}
	return out
}
