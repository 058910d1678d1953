// Package oomkill is the "trace oomkill" gadget: every OOM kill, with the
// victim, the process whose allocation triggered it, the size of the OOM
// domain in pages, and the memory cgroup's pod and container.
package oomkill

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"

	"github.com/kdiag/kdiag/pkg/enrich"
	"github.com/kdiag/kdiag/pkg/gadget"
	"github.com/kdiag/kdiag/pkg/gadget/internal/kernel"
)

// TypeOOMKill is the only event type.
const TypeOOMKill = "oomkill"

// Process names a process.
type Process struct {
	PID  uint32 `json:"pid"`
	TID  uint32 `json:"tid,omitempty"`
	Comm string `json:"comm"`
	// K8s is set for the trigger when it runs in another container.
	K8s *enrich.K8s `json:"k8s,omitempty"`
}

// Event is one OOM kill.
type Event struct {
	Time time.Time `json:"time"`
	Type string    `json:"type"`
	// PID and Comm are the victim's (as in the other gadgets' events).
	PID  uint32 `json:"pid"`
	Comm string `json:"comm"`
	// Trigger is the process whose allocation ran the OOM killer.
	Trigger Process `json:"trigger"`
	// Pages is the size of the OOM domain: the memory cgroup's limit in
	// pages, 0 when the cgroup has no limit (a system-wide OOM).
	Pages      uint64 `json:"pages"`
	UsagePages uint64 `json:"usagePages"`
	// The victim's memory at the time, in pages.
	TotalVMPages  uint64 `json:"totalVmPages"`
	AnonRSSPages  uint64 `json:"anonRssPages"`
	FileRSSPages  uint64 `json:"fileRssPages"`
	ShmemRSSPages uint64 `json:"shmemRssPages"`
	OOMScoreAdj   int16  `json:"oomScoreAdj"`
	// MemoryCgroup is the path of the memory cgroup (v1 memory hierarchy
	// or cgroup2), relative to its mount.
	MemoryCgroup string `json:"memoryCgroup"`
	// MemoryCgroupOf says whose memory cgroup that is: "victim", or
	// "trigger" on kernels where only the classic tracepoint loads.
	MemoryCgroupOf string     `json:"memoryCgroupOf"`
	Netns          uint32     `json:"netns,omitempty"`
	K8s            enrich.K8s `json:"k8s"`
}

// Options configures a Tracer. The filter is applied in user space: OOM
// kills are rare, and the victim's cgroup is only known in the event.
type Options struct {
	gadget.Options
	// Env points at non-standard kernel interface paths (tests).
	Env kernel.Env
	// ForceTracepoint uses the classic tracepoint even where tp_btf loads
	// (tests of the fallback, debugging).
	ForceTracepoint bool
}

// Tracer is a loaded and attached OOM kill gadget.
type Tracer struct {
	opts  Options
	log   *slog.Logger
	objs  objects
	link  link.Link
	sel   *enrich.Selection
	clock kernel.BootClock
	exact bool

	closeOnce sync.Once
}

type objects struct {
	Prog   *ebpf.Program
	Events *ebpf.Map `ebpf:"events"`
	Lost   *ebpf.Map `ebpf:"lost"`
}

type btfObjects struct {
	Prog   *ebpf.Program `ebpf:"handle_mark_victim_btf"`
	Events *ebpf.Map     `ebpf:"events"`
	Lost   *ebpf.Map     `ebpf:"lost"`
}

type tpObjects struct {
	Prog   *ebpf.Program `ebpf:"handle_mark_victim_tp"`
	Events *ebpf.Map     `ebpf:"events"`
	Lost   *ebpf.Map     `ebpf:"lost"`
}

// New checks privileges and kernel support and attaches to oom:mark_victim,
// with tp_btf (the victim's task) or else the classic tracepoint.
func New(opts Options) (*Tracer, error) {
	t := &Tracer{opts: opts, log: opts.Logger}
	if t.log == nil {
		t.log = slog.New(slog.DiscardHandler)
	}
	if err := opts.Env.Preflight(); err != nil {
		return nil, err
	}
	if err := opts.Env.CheckTracepoints("oom:mark_victim"); err != nil {
		return nil, err
	}
	sel, clock, err := kernel.SelectAndClock(opts.Enricher, opts.Filter)
	if err != nil {
		return nil, err
	}
	t.sel, t.clock = sel, clock

	btfErr := errors.New("disabled by ForceTracepoint")
	if !opts.ForceTracepoint {
		btfErr = t.loadBTF()
	}
	if btfErr == nil {
		t.exact = true
		return t, nil
	}
	t.log.Debug("tp_btf/mark_victim unavailable, using the classic tracepoint", "err", btfErr)
	if err := t.loadClassic(); err != nil {
		return nil, fmt.Errorf("%w (tp_btf also failed: %v)", err, btfErr)
	}
	return t, nil
}

func (t *Tracer) spec() (*ebpf.CollectionSpec, error) {
	spec, err := loadOomkill()
	if err != nil {
		return nil, fmt.Errorf("read embedded oomkill BPF object: %w", err)
	}
	if err := kernel.SetConstants(spec, map[string]any{"page_kb": uint32(os.Getpagesize() / 1024)}); err != nil {
		return nil, err
	}
	if t.opts.RingBytes != 0 {
		spec.Maps["events"].MaxEntries = t.opts.RingBytes
	}
	return spec, nil
}

func (t *Tracer) loadBTF() error {
	spec, err := t.spec()
	if err != nil {
		return err
	}
	var o btfObjects
	if err := spec.LoadAndAssign(&o, nil); err != nil {
		return kernel.LoadError("oomkill (tp_btf)", err)
	}
	l, err := link.AttachTracing(link.TracingOptions{Program: o.Prog})
	if err != nil {
		_ = o.Prog.Close()
		_ = o.Events.Close()
		_ = o.Lost.Close()
		return fmt.Errorf("attach tp_btf/mark_victim: %w", err)
	}
	t.objs, t.link = objects(o), l
	return nil
}

func (t *Tracer) loadClassic() error {
	spec, err := t.spec()
	if err != nil {
		return err
	}
	var o tpObjects
	if err := spec.LoadAndAssign(&o, nil); err != nil {
		return kernel.LoadError("oomkill", err)
	}
	l, err := link.Tracepoint("oom", "mark_victim", o.Prog, nil)
	if err != nil {
		_ = o.Prog.Close()
		_ = o.Events.Close()
		_ = o.Lost.Close()
		return fmt.Errorf("attach to tracepoint oom:mark_victim: %w", err)
	}
	t.objs, t.link = objects(o), l
	return nil
}

// Close detaches and unloads the program. It is safe to call twice.
func (t *Tracer) Close() error {
	var errs []error
	t.closeOnce.Do(func() {
		errs = append(errs, t.link.Close(), t.objs.Prog.Close(), t.objs.Events.Close(), t.objs.Lost.Close())
	})
	return errors.Join(errs...)
}

// Run delivers events to fn until ctx is done and returns the counts.
func (t *Tracer) Run(ctx context.Context, fn func(Event)) (gadget.Stats, error) {
	var filtered, repeats uint64
	// Threads of one process that hit the memory limit together can make
	// the kernel mark the same victim more than once before it exits: one
	// kill, reported once.
	lastKill := map[uint32]time.Time{}
	r := kernel.Reader{Ring: t.objs.Events, Lost: t.objs.Lost, Programs: []*ebpf.Program{t.objs.Prog}, OnLost: t.opts.OnLost}
	st, err := r.Run(ctx, func(raw []byte) {
		ev, ok := t.decode(raw)
		if !ok {
			return
		}
		if prev, seen := lastKill[ev.PID]; seen && ev.Time.Sub(prev) < repeatWindow {
			repeats++
			return
		}
		lastKill[ev.PID] = ev.Time
		if t.sel != nil && !t.sel.Match(ev.K8s) {
			filtered++
			return
		}
		fn(ev)
	})
	st.Filtered = filtered
	st.Events -= filtered + repeats
	return st, err
}

// repeatWindow is how close two mark_victim events for the same pid must be
// to count as one kill.
const repeatWindow = time.Second

// unlimitedPages: a page_counter max this large means "no limit".
const unlimitedPages = 1 << 50

func (t *Tracer) decode(raw []byte) (Event, bool) {
	var e oomkillEvent
	if len(raw) < int(unsafe.Sizeof(e)) {
		t.log.Warn("short oomkill record", "bytes", len(raw))
		return Event{}, false
	}
	e = *(*oomkillEvent)(unsafe.Pointer(&raw[0]))
	var parts []string
	for i := int(e.Depth) - 1; i >= 0 && i < len(e.Names); i-- {
		parts = append(parts, cString(e.Names[i][:]))
	}
	ev := Event{
		Time:           t.clock.Time(e.Ts),
		Type:           TypeOOMKill,
		PID:            e.VictimPid,
		Comm:           kernel.CString(e.VictimComm[:]),
		Trigger:        Process{PID: e.TriggerPid, TID: e.TriggerTid, Comm: kernel.CString(e.TriggerComm[:])},
		UsagePages:     e.UsagePages,
		TotalVMPages:   e.TotalVmPages,
		AnonRSSPages:   e.AnonRssPages,
		FileRSSPages:   e.FileRssPages,
		ShmemRSSPages:  e.ShmemRssPages,
		OOMScoreAdj:    e.OomScoreAdj,
		MemoryCgroup:   "/" + strings.Join(parts, "/"),
		MemoryCgroupOf: "victim",
		Netns:          e.Netns,
	}
	if e.Exact == 0 {
		ev.MemoryCgroupOf = "trigger"
	}
	if e.LimitPages < unlimitedPages {
		ev.Pages = e.LimitPages
	}
	if en := t.opts.Enricher; en != nil {
		ev.K8s = en.ByCgroupPath(ev.MemoryCgroup)
		if ev.K8s.PodUID == "" {
			ev.K8s = en.Resolve(enrich.Keys{PID: e.VictimPid, Netns: e.Netns})
		}
		if trig := en.Resolve(enrich.Keys{CgroupID: e.TriggerCgroupId, PID: e.TriggerPid}); trig.PodUID != "" && (trig.PodUID != ev.K8s.PodUID || trig.Container != ev.K8s.Container) {
			ev.Trigger.K8s = &trig
		}
	}
	return ev, true
}

func cString(b []int8) string {
	out := make([]byte, 0, len(b))
	for _, c := range b {
		if c == 0 {
			break
		}
		out = append(out, byte(c))
	}
	return string(out)
}
