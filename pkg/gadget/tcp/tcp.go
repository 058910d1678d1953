// Package tcp is the "trace tcp" gadget: TCP connects, accepts and closes,
// failed connects with their errno, RSTs received and sent, and
// retransmits, from kernel tracepoints, labelled with Kubernetes names.
package tcp

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
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

// Event types.
const (
	TypeConnect     = "connect"
	TypeAccept      = "accept"
	TypeClose       = "close"
	TypeRSTReceived = "rst-received"
	TypeRSTSent     = "rst-sent"
	TypeRetransmit  = "retransmit"
)

// typeName names an event type as the BPF program numbers it.
func typeName(t uint8) string {
	switch t {
	case 1:
		return TypeConnect
	case 2:
		return TypeAccept
	case 3:
		return TypeClose
	case 4:
		return TypeRSTReceived
	case 5:
		return TypeRSTSent
	case 6:
		return TypeRetransmit
	}
	return ""
}

// stateName names a kernel TCP state (include/net/tcp_states.h).
func stateName(st uint8) string {
	names := [...]string{"", "ESTABLISHED", "SYN_SENT", "SYN_RECV", "FIN_WAIT1", "FIN_WAIT2", "TIME_WAIT",
		"CLOSE", "CLOSE_WAIT", "LAST_ACK", "LISTEN", "CLOSING", "NEW_SYN_RECV"}
	if int(st) < len(names) {
		return names[st]
	}
	return ""
}

// Event is one TCP event. For connect, close, RSTs and retransmits Src is
// the local end and Dst the remote one; for accept Src is the client that
// connected and Dst the local listening end.
type Event struct {
	Time time.Time `json:"time"`
	Type string    `json:"type"`
	// Error is the errno name for a failure (ECONNREFUSED, ETIMEDOUT,
	// ECONNRESET, EHOSTUNREACH...), empty on success.
	Error string          `json:"error,omitempty"`
	Src   gadget.Endpoint `json:"src"`
	Dst   gadget.Endpoint `json:"dst"`
	// PID and Comm are the process that opened the connection, when known
	// (accepts and RSTs sent without a socket happen in softirq context).
	PID  uint32 `json:"pid,omitempty"`
	TID  uint32 `json:"tid,omitempty"`
	Comm string `json:"comm,omitempty"`
	// Netns is the inode number of the socket's network namespace.
	Netns uint32 `json:"netns,omitempty"`
	// CgroupID is the socket's cgroup v2 id (0 when unknown).
	CgroupID uint64 `json:"cgroupId,omitempty"`
	// State is the TCP state the socket was in (before the transition).
	State string     `json:"state,omitempty"`
	K8s   enrich.K8s `json:"k8s"`
}

// Failed reports whether the event is a failure (an errno, an RST or a
// retransmit).
func (e Event) Failed() bool {
	return e.Error != "" || e.Type == TypeRSTReceived || e.Type == TypeRSTSent || e.Type == TypeRetransmit
}

// Options configures a Tracer.
type Options struct {
	gadget.Options
	// FailuresOnly drops successful connects, accepts and clean closes in
	// the kernel.
	FailuresOnly bool
	// Env points at non-standard kernel interface paths (tests).
	Env kernel.Env
	// ForceTracepoints uses the classic tracepoint flavour even where
	// tp_btf loads (tests of the fallback, debugging).
	ForceTracepoints bool
}

// Tracepoints the gadget needs.
func tracepoints() []string {
	return []string{
		"sock:inet_sock_set_state", "tcp:tcp_receive_reset", "tcp:tcp_send_reset", "tcp:tcp_retransmit_skb",
		"syscalls:sys_enter_connect", "syscalls:sys_exit_connect",
	}
}

// programs are the loaded programs, of either flavour.
type programs struct {
	SetState, ReceiveReset, SendReset, Retransmit, ConnectEnter, ConnectExit *ebpf.Program
	// SetStateTwin (tp_btf only) handles the state changes the kernel
	// skips for SetState while it runs on the same CPU.
	SetStateTwin *ebpf.Program
}

func (p programs) all() []*ebpf.Program {
	return []*ebpf.Program{p.SetState, p.ReceiveReset, p.SendReset, p.Retransmit, p.ConnectEnter, p.ConnectExit, p.SetStateTwin}
}

// btfObjects selects the tp_btf flavour (preferred).
type btfObjects struct {
	tcpMaps
	SetState     *ebpf.Program `ebpf:"btf_set_state"`
	SetStateTwin *ebpf.Program `ebpf:"btf_set_state_twin"`
	ReceiveReset *ebpf.Program `ebpf:"btf_receive_reset"`
	SendReset    *ebpf.Program `ebpf:"btf_send_reset"`
	Retransmit   *ebpf.Program `ebpf:"btf_retransmit"`
	ConnectEnter *ebpf.Program `ebpf:"handle_connect_enter"`
	ConnectExit  *ebpf.Program `ebpf:"handle_connect_exit"`
}

// tpObjects selects the classic tracepoint flavour (fallback).
type tpObjects struct {
	tcpMaps
	SetState     *ebpf.Program `ebpf:"tp_set_state"`
	ReceiveReset *ebpf.Program `ebpf:"tp_receive_reset"`
	SendReset    *ebpf.Program `ebpf:"tp_send_reset"`
	Retransmit   *ebpf.Program `ebpf:"tp_retransmit"`
	ConnectEnter *ebpf.Program `ebpf:"handle_connect_enter"`
	ConnectExit  *ebpf.Program `ebpf:"handle_connect_exit"`
}

// Tracer is a loaded and attached TCP gadget.
type Tracer struct {
	opts  Options
	log   *slog.Logger
	maps  tcpMaps
	progs programs
	links []link.Link
	sel   *enrich.Selection
	clock kernel.BootClock
	// Flavour is "tp_btf" or "tracepoint": how the TCP hooks were attached.
	flavour string

	closeOnce sync.Once
}

// New checks privileges and kernel support, resolves the filter, loads the
// BPF programs and attaches them (tp_btf, or classic tracepoints where
// tp_btf does not load). Events are queued from then on; call Run to
// consume them and Close to detach.
func New(opts Options) (*Tracer, error) {
	t := &Tracer{opts: opts, log: opts.Logger}
	if t.log == nil {
		t.log = slog.New(slog.DiscardHandler)
	}
	if err := opts.Env.Preflight(); err != nil {
		return nil, err
	}
	if err := opts.Env.CheckTracepoints(tracepoints()...); err != nil {
		return nil, err
	}
	sel, clock, err := kernel.SelectAndClock(opts.Enricher, opts.Filter)
	if err != nil {
		return nil, err
	}
	t.sel, t.clock = sel, clock

	btfErr := errors.New("disabled by ForceTracepoints")
	if !opts.ForceTracepoints {
		btfErr = t.load(true)
	}
	if btfErr != nil {
		t.log.Debug("tp_btf unavailable, using classic tracepoints", "err", btfErr)
		if err := t.load(false); err != nil {
			return nil, fmt.Errorf("%w (tp_btf also failed: %v)", err, btfErr)
		}
	}
	return t, nil
}

// Flavour says how the TCP hooks are attached: "tp_btf" or "tracepoint".
func (t *Tracer) Flavour() string { return t.flavour }

func (t *Tracer) load(useBTF bool) (err error) {
	spec, err := loadTcp()
	if err != nil {
		return fmt.Errorf("read embedded tcp BPF object: %w", err)
	}
	consts := kernel.FilterConstants(t.sel)
	consts["failures_only"] = boolU8(t.opts.FailuresOnly)
	if err := kernel.SetConstants(spec, consts); err != nil {
		return err
	}
	if t.opts.RingBytes != 0 {
		spec.Maps["events"].MaxEntries = t.opts.RingBytes
	}
	if useBTF {
		var o btfObjects
		if err := spec.LoadAndAssign(&o, nil); err != nil {
			return kernel.LoadError("tcp (tp_btf)", err)
		}
		t.maps, t.progs, t.flavour = o.tcpMaps, programs{o.SetState, o.ReceiveReset, o.SendReset, o.Retransmit, o.ConnectEnter, o.ConnectExit, o.SetStateTwin}, "tp_btf"
	} else {
		var o tpObjects
		if err := spec.LoadAndAssign(&o, nil); err != nil {
			return kernel.LoadError("tcp", err)
		}
		t.maps, t.progs, t.flavour = o.tcpMaps, programs{o.SetState, o.ReceiveReset, o.SendReset, o.Retransmit, o.ConnectEnter, o.ConnectExit, nil}, "tracepoint"
	}
	defer func() {
		if err != nil {
			t.detach()
		}
	}()
	if err := kernel.SyncFilter(t.maps.FilterCgroups, t.maps.FilterNetns, t.sel); err != nil {
		return err
	}
	hooks := []struct {
		tp   string
		prog *ebpf.Program
	}{
		{"sock:inet_sock_set_state", t.progs.SetState},
		{"tcp:tcp_receive_reset", t.progs.ReceiveReset},
		{"tcp:tcp_send_reset", t.progs.SendReset},
		{"tcp:tcp_retransmit_skb", t.progs.Retransmit},
	}
	if useBTF {
		hooks = append(hooks, struct {
			tp   string
			prog *ebpf.Program
		}{"sock:inet_sock_set_state", t.progs.SetStateTwin})
	}
	for _, h := range hooks {
		group, name, _ := strings.Cut(h.tp, ":")
		var l link.Link
		if useBTF {
			l, err = link.AttachTracing(link.TracingOptions{Program: h.prog})
		} else {
			l, err = link.Tracepoint(group, name, h.prog, nil)
		}
		if err != nil {
			return fmt.Errorf("attach to %s (%s): %w", h.tp, t.flavour, err)
		}
		t.links = append(t.links, l)
	}
	for _, h := range []struct {
		name string
		prog *ebpf.Program
	}{{"sys_enter_connect", t.progs.ConnectEnter}, {"sys_exit_connect", t.progs.ConnectExit}} {
		l, err := link.Tracepoint("syscalls", h.name, h.prog, nil)
		if err != nil {
			return fmt.Errorf("attach to tracepoint syscalls:%s: %w", h.name, err)
		}
		t.links = append(t.links, l)
	}
	return nil
}

// detach closes whatever load attached and loaded.
func (t *Tracer) detach() error {
	var errs []error
	for _, l := range t.links {
		errs = append(errs, l.Close())
	}
	t.links = nil
	for _, p := range t.progs.all() {
		if p != nil {
			errs = append(errs, p.Close())
		}
	}
	t.progs = programs{}
	errs = append(errs, t.maps.Close())
	t.maps = tcpMaps{}
	return errors.Join(errs...)
}

func boolU8(b bool) uint8 {
	if b {
		return 1
	}
	return 0
}

// Close detaches and unloads the programs. It is safe to call twice.
func (t *Tracer) Close() error {
	var err error
	t.closeOnce.Do(func() { err = t.detach() })
	return err
}

// Run delivers events to fn until ctx is done, then drains the ring buffer
// and returns the counts. fn runs on one goroutine.
func (t *Tracer) Run(ctx context.Context, fn func(Event)) (gadget.Stats, error) {
	var filtered uint64
	r := kernel.Reader{
		Ring:     t.maps.Events,
		Lost:     t.maps.Lost,
		Programs: t.progs.all(),
		Rescued:  t.maps.SetStateRescued,
		OnLost:   t.opts.OnLost,
		Tick:     kernel.FilterRefresher(t.sel, t.maps.FilterCgroups, t.maps.FilterNetns, t.log),
	}
	st, err := r.Run(ctx, func(raw []byte) {
		ev, ok := t.decode(raw)
		if !ok {
			return
		}
		if t.sel != nil && !t.sel.Match(ev.K8s) {
			filtered++
			return
		}
		fn(ev)
	})
	st.Filtered = filtered
	st.Events -= filtered
	return st, err
}

// decode turns a raw record into an Event. The record is the C struct
// event; bpf2go generated tcpEvent with the same layout, so a cast is
// exact and avoids reflection on the hot path.
func (t *Tracer) decode(raw []byte) (Event, bool) {
	if len(raw) < int(unsafe.Sizeof(tcpEvent{})) {
		t.log.Warn("short tcp record", "bytes", len(raw))
		return Event{}, false
	}
	e := (*tcpEvent)(unsafe.Pointer(&raw[0]))
	ev := Event{
		Time:     t.clock.Time(e.Ts),
		Type:     typeName(e.Type),
		Error:    kernel.ErrnoName(e.Err),
		PID:      e.Pid,
		TID:      e.Tid,
		Comm:     kernel.CString(e.Comm[:]),
		Netns:    e.Netns,
		CgroupID: e.CgroupId,
		State:    stateName(e.Oldstate),
	}
	local := gadget.Endpoint{Addr: gadget.AddrFrom16(e.Family, e.Saddr), Port: e.Sport}
	remote := gadget.Endpoint{Addr: gadget.AddrFrom16(e.Family, e.Daddr), Port: e.Dport}
	if en := t.opts.Enricher; en != nil {
		local.K8s = en.Peer(local.Addr)
		remote.K8s = en.Peer(remote.Addr)
		ev.K8s = en.Resolve(enrich.Keys{CgroupID: e.CgroupId, PID: e.Pid, Netns: e.Netns})
	}
	if ev.Type == TypeAccept {
		ev.Src, ev.Dst = remote, local
	} else {
		ev.Src, ev.Dst = local, remote
	}
	return ev, true
}

// KernelCost returns the CPU time the gadget's BPF programs have used in
// the kernel and how many times they ran, while BPF statistics are enabled
// (see ebpf.EnableStats); zero otherwise.
func (t *Tracer) KernelCost() (time.Duration, uint64) {
	return kernel.RunTime(t.progs.all())
}
