// Package kernel holds the machinery the gadgets share: the checks that
// turn a missing privilege or kernel feature into a one-line error, the
// mounts of tracefs and bpffs, loading with constants, the in-kernel filter
// maps and the ring-buffer reading loop with its lost-event accounting.
package kernel

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/features"
	"github.com/cilium/ebpf/ringbuf"
	"github.com/cilium/ebpf/rlimit"
	"golang.org/x/sys/unix"

	"github.com/kdiag/kdiag/pkg/enrich"
	"github.com/kdiag/kdiag/pkg/gadget"
)

// Paths the checks look at; variables of a Env so tests can point them
// elsewhere.
const (
	defaultBTF     = "/sys/kernel/btf/vmlinux"
	defaultTracefs = "/sys/kernel/tracing"
	defaultBPFFS   = "/sys/fs/bpf"
)

// Capability bits from linux/capability.h.
const (
	capSysAdmin = 21
	capPerfmon  = 38
	capBPF      = 39
)

// ErrPermission is returned (wrapped) when the process may not load BPF.
var ErrPermission = errors.New("permission denied")

// ErrUnsupported is returned (wrapped) when the kernel lacks a feature.
var ErrUnsupported = errors.New("unsupported kernel")

// Env describes where the kernel interfaces are; the zero value means the
// standard paths.
type Env struct {
	ProcStatus string // /proc/self/status
	BTF        string
	Tracefs    string
	BPFFS      string
}

func (e Env) withDefaults() Env {
	if e.ProcStatus == "" {
		e.ProcStatus = "/proc/self/status"
	}
	if e.BTF == "" {
		e.BTF = defaultBTF
	}
	if e.Tracefs == "" {
		e.Tracefs = defaultTracefs
	}
	if e.BPFFS == "" {
		e.BPFFS = defaultBPFFS
	}
	return e
}

// CheckCapabilities fails unless the process has CAP_BPF and CAP_PERFMON,
// or CAP_SYS_ADMIN (tracing programs read kernel memory).
func (e Env) CheckCapabilities() error {
	e = e.withDefaults()
	f, err := os.Open(e.ProcStatus)
	if err != nil {
		return fmt.Errorf("read capabilities: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "CapEff:") {
			continue
		}
		caps, err := strconv.ParseUint(strings.TrimSpace(strings.TrimPrefix(line, "CapEff:")), 16, 64)
		if err != nil {
			return fmt.Errorf("read capabilities: %q: %w", line, err)
		}
		has := func(bit uint) bool { return caps&(1<<bit) != 0 }
		if has(capSysAdmin) || (has(capBPF) && has(capPerfmon)) {
			return nil
		}
		return fmt.Errorf("tracing needs root (CAP_BPF and CAP_PERFMON, or CAP_SYS_ADMIN); effective capabilities are %#x: %w", caps, ErrPermission)
	}
	return fmt.Errorf("read capabilities: no CapEff line in %s", e.ProcStatus)
}

// CheckBTF fails when the kernel exposes no BTF, which CO-RE needs.
func (e Env) CheckBTF() error {
	e = e.withDefaults()
	if _, err := os.Stat(e.BTF); err != nil {
		return fmt.Errorf("kernel BTF not found at %s (needs CONFIG_DEBUG_INFO_BTF=y, Linux 5.8+): %w", e.BTF, ErrUnsupported)
	}
	return nil
}

// Preflight runs every check that does not depend on a gadget, lifts the
// memlock limit on old kernels, and mounts tracefs and bpffs if needed.
func (e Env) Preflight() error {
	if err := e.CheckCapabilities(); err != nil {
		return err
	}
	if err := e.CheckBTF(); err != nil {
		return err
	}
	if err := rlimit.RemoveMemlock(); err != nil {
		return fmt.Errorf("lift memlock limit: %w", err)
	}
	if err := features.HaveMapType(ebpf.RingBuf); err != nil {
		return fmt.Errorf("BPF ring buffer not available (needs Linux 5.8+): %w", ErrUnsupported)
	}
	if err := e.EnsureTracefs(); err != nil {
		return err
	}
	return e.EnsureBPFFS()
}

// EnsureTracefs mounts tracefs when its events directory is missing.
func (e Env) EnsureTracefs() error {
	e = e.withDefaults()
	if _, err := os.Stat(filepath.Join(e.Tracefs, "events")); err == nil {
		return nil
	}
	if err := os.MkdirAll(e.Tracefs, 0o755); err != nil {
		return fmt.Errorf("create tracefs mount point: %w", err)
	}
	if err := unix.Mount("tracefs", e.Tracefs, "tracefs", 0, ""); err != nil {
		return fmt.Errorf("mount tracefs at %s: %w", e.Tracefs, err)
	}
	return nil
}

// EnsureBPFFS mounts the BPF file system when it is not mounted.
func (e Env) EnsureBPFFS() error {
	e = e.withDefaults()
	var st unix.Statfs_t
	if err := unix.Statfs(e.BPFFS, &st); err == nil && st.Type == unix.BPF_FS_MAGIC {
		return nil
	}
	if err := os.MkdirAll(e.BPFFS, 0o755); err != nil {
		return fmt.Errorf("create bpffs mount point: %w", err)
	}
	if err := unix.Mount("bpf", e.BPFFS, "bpf", 0, ""); err != nil {
		return fmt.Errorf("mount bpffs at %s: %w", e.BPFFS, err)
	}
	return nil
}

// CheckTracepoints fails with the first "group:name" tracepoint that the
// kernel does not have.
func (e Env) CheckTracepoints(tps ...string) error {
	e = e.withDefaults()
	for _, tp := range tps {
		group, name, _ := strings.Cut(tp, ":")
		if _, err := os.Stat(filepath.Join(e.Tracefs, "events", group, name)); err != nil {
			return fmt.Errorf("tracepoint %s is missing (kernel too old or built without it): %w", tp, ErrUnsupported)
		}
	}
	return nil
}

// SetConstants sets the const volatile globals of a spec before loading.
func SetConstants(spec *ebpf.CollectionSpec, consts map[string]any) error {
	for name, v := range consts {
		vs, ok := spec.Variables[name]
		if !ok {
			return fmt.Errorf("BPF object has no variable %q", name)
		}
		if err := vs.Set(v); err != nil {
			return fmt.Errorf("set %s: %w", name, err)
		}
	}
	return nil
}

// LoadError turns a load failure into one line, keeping the verifier's
// last lines which say why.
func LoadError(what string, err error) error {
	var ve *ebpf.VerifierError
	if errors.As(err, &ve) {
		log := ve.Log
		if len(log) > 3 {
			log = log[len(log)-3:]
		}
		return fmt.Errorf("load %s BPF programs: verifier rejected them: %s: %w", what, strings.Join(log, " | "), ErrUnsupported)
	}
	if errors.Is(err, ebpf.ErrNotSupported) {
		return fmt.Errorf("load %s BPF programs: %w: %w", what, ErrUnsupported, err)
	}
	if errors.Is(err, os.ErrPermission) || errors.Is(err, unix.EPERM) {
		return fmt.Errorf("load %s BPF programs: %w (run as root): %w", what, ErrPermission, err)
	}
	return fmt.Errorf("load %s BPF programs: %w", what, err)
}

// FilterConstants returns the filter_by_* constants for a selection.
func FilterConstants(sel *enrich.Selection) map[string]any {
	var byCg, byNs uint8
	if sel != nil {
		// Both maps are consulted: a selected container passes if either its
		// cgroup or its pod's network namespace is listed.
		byCg, byNs = 1, 1
	}
	return map[string]any{"filter_by_cgroup": byCg, "filter_by_netns": byNs}
}

// SyncFilter makes the filter maps hold exactly the selection's keys.
func SyncFilter(cgroups, netns *ebpf.Map, sel *enrich.Selection) error {
	if sel == nil {
		return nil
	}
	one := uint8(1)
	for id := range sel.CgroupIDs {
		if err := cgroups.Update(id, one, ebpf.UpdateAny); err != nil {
			return fmt.Errorf("update cgroup filter: %w", err)
		}
	}
	for ino := range sel.Netns {
		if err := netns.Update(ino, one, ebpf.UpdateAny); err != nil {
			return fmt.Errorf("update netns filter: %w", err)
		}
	}
	var id uint64
	var v uint8
	var stale64 []uint64
	for it := cgroups.Iterate(); it.Next(&id, &v); {
		if !sel.CgroupIDs[id] {
			stale64 = append(stale64, id)
		}
	}
	for _, id := range stale64 {
		_ = cgroups.Delete(id)
	}
	var ino uint32
	var stale32 []uint32
	for it := netns.Iterate(); it.Next(&ino, &v); {
		if !sel.Netns[ino] {
			stale32 = append(stale32, ino)
		}
	}
	for _, ino := range stale32 {
		_ = netns.Delete(ino)
	}
	return nil
}

// SumLost adds up a per-CPU counter (lost events, rescued runs).
func SumLost(m *ebpf.Map) (uint64, error) {
	var per []uint64
	if err := m.Lookup(uint32(0), &per); err != nil {
		return 0, fmt.Errorf("read lost-event counter: %w", err)
	}
	var n uint64
	for _, v := range per {
		n += v
	}
	return n, nil
}

// RecursionMisses adds up how often the kernel skipped these programs
// because another BPF program was running on the CPU.
func RecursionMisses(progs []*ebpf.Program) uint64 {
	var n uint64
	for _, p := range progs {
		if p == nil {
			continue
		}
		if st, err := p.Stats(); err == nil {
			n += st.RecursionMisses
		}
	}
	return n
}

// Reader drains one ring buffer.
type Reader struct {
	// Ring is the BPF_MAP_TYPE_RINGBUF map.
	Ring *ebpf.Map
	// Lost is the per-CPU counter the BPF side increments on reserve failure.
	Lost *ebpf.Map
	// Programs are the gadget's programs, whose recursion misses are
	// reported as Stats.Missed.
	Programs []*ebpf.Program
	// Rescued, when set, is a per-CPU counter of skipped runs that a twin
	// program handled instead; they are subtracted from Missed.
	Rescued *ebpf.Map
	// OnLost is called when the lost or missed count grows.
	OnLost func(lost, missed uint64)
	// Tick, when set, is called about every PollEvery from the reading
	// goroutine (filter refresh, timeouts).
	Tick func(now time.Time)
	// PollEvery defaults to 200ms.
	PollEvery time.Duration
}

// Run reads records until ctx is done, then drains what is left, and calls
// handle for each with the raw bytes (valid only during the call). It
// returns how many records it read and how many the kernel lost.
func (r *Reader) Run(ctx context.Context, handle func(raw []byte)) (gadget.Stats, error) {
	var st gadget.Stats
	rd, err := ringbuf.NewReader(r.Ring)
	if err != nil {
		return st, fmt.Errorf("open ring buffer: %w", err)
	}
	defer rd.Close()
	poll := r.PollEvery
	if poll == 0 {
		poll = 200 * time.Millisecond
	}
	var mu sync.Mutex
	done := false
	stop := context.AfterFunc(ctx, func() {
		mu.Lock()
		done = true
		mu.Unlock()
		rd.SetDeadline(time.Now())
	})
	defer stop()
	checkLost := func() {
		grew := false
		if n, err := SumLost(r.Lost); err == nil && n > st.Lost {
			st.Lost, grew = n, true
		}
		n := RecursionMisses(r.Programs)
		if r.Rescued != nil {
			if rescued, err := SumLost(r.Rescued); err == nil && rescued <= n {
				n -= rescued
			}
		}
		if n > st.Missed {
			st.Missed, grew = n, true
		}
		if grew && r.OnLost != nil {
			r.OnLost(st.Lost, st.Missed)
		}
	}
	var rec ringbuf.Record
	lastTick := time.Now()
	for {
		mu.Lock()
		finishing := done
		if !finishing {
			rd.SetDeadline(time.Now().Add(poll))
		}
		mu.Unlock()
		err := rd.ReadInto(&rec)
		switch {
		case err == nil:
			st.Events++
			handle(rec.RawSample)
		case errors.Is(err, os.ErrDeadlineExceeded):
			if finishing {
				checkLost()
				return st, nil
			}
		case errors.Is(err, ringbuf.ErrClosed):
			checkLost()
			return st, nil
		default:
			return st, fmt.Errorf("read ring buffer: %w", err)
		}
		if now := time.Now(); now.Sub(lastTick) >= poll {
			lastTick = now
			checkLost()
			if r.Tick != nil {
				r.Tick(now)
			}
		}
	}
}

// fallbackCgroup2 is where EnsureCgroup2 mounts the unified hierarchy on a
// host that has none mounted (pure cgroup v1).
const fallbackCgroup2 = "/run/kdiag/cgroup2"

// EnsureCgroup2 returns the mount point of the cgroup2 hierarchy, mounting
// it at /run/kdiag/cgroup2 when no cgroup2 file system is mounted (the
// hierarchy always exists, even when every controller is on v1).
func EnsureCgroup2() (string, error) {
	if root, err := enrich.Cgroup2Root("/proc"); err == nil {
		return root, nil
	}
	if err := os.MkdirAll(fallbackCgroup2, 0o755); err != nil {
		return "", fmt.Errorf("create cgroup2 mount point: %w", err)
	}
	if err := unix.Mount("cgroup2", fallbackCgroup2, "cgroup2", 0, ""); err != nil {
		return "", fmt.Errorf("mount cgroup2 at %s: %w", fallbackCgroup2, err)
	}
	return fallbackCgroup2, nil
}

// RunTime adds up the run time and run count of programs. The kernel keeps
// them only while BPF statistics are enabled (ebpf.EnableStats or the
// kernel.bpf_stats_enabled sysctl); otherwise both are zero.
func RunTime(progs []*ebpf.Program) (time.Duration, uint64) {
	var d time.Duration
	var n uint64
	for _, p := range progs {
		if p == nil {
			continue
		}
		if st, err := p.Stats(); err == nil {
			d += st.Runtime
			n += st.RunCount
		}
	}
	return d, n
}
