// Package dns is the "trace dns" gadget: every DNS query and response sent
// or received by a socket of this node (UDP and TCP, IPv4 and IPv6),
// matched into pairs with their latency, and an "unanswered" event for a
// query that got no response within the timeout.
package dns

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"sync"
	"time"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/net/dns/dnsmessage"

	"github.com/kdiag/kdiag/pkg/enrich"
	"github.com/kdiag/kdiag/pkg/gadget"
	"github.com/kdiag/kdiag/pkg/gadget/internal/kernel"
)

// Event types.
const (
	TypeQuery      = "query"
	TypeResponse   = "response"
	TypeUnanswered = "unanswered"
)

// Event is one DNS message, or a query that was never answered.
type Event struct {
	Time time.Time `json:"time"`
	// Type is query, response or unanswered.
	Type string `json:"type"`
	// QR is "Q" for a query (and an unanswered query), "R" for a response.
	QR string `json:"qr"`
	// Error is the rcode of a failed response (ServerFailure, NameError,
	// Refused...) or "unanswered"; empty otherwise.
	Error   string   `json:"error,omitempty"`
	ID      uint16   `json:"id"`
	Name    string   `json:"name"`
	QType   string   `json:"qtype"`
	RCode   string   `json:"rcode,omitempty"`
	Answers []string `json:"answers,omitempty"`
	// LatencyNs is, for a response, the time since its query was seen at
	// the same socket; for an unanswered query, how long it waited.
	LatencyNs int64 `json:"latencyNs,omitempty"`
	// Nameserver is the end on the DNS port (query destination, response
	// source).
	Nameserver gadget.Endpoint `json:"nameserver"`
	Unanswered bool            `json:"unanswered,omitempty"`
	Src        gadget.Endpoint `json:"src"`
	Dst        gadget.Endpoint `json:"dst"`
	// Direction is egress (sent by the traced socket) or ingress.
	Direction string `json:"direction"`
	Protocol  string `json:"protocol"`
	// PID and Comm are the sender for egress messages, and for a response
	// the process whose query it answers, when known.
	PID       uint32     `json:"pid,omitempty"`
	TID       uint32     `json:"tid,omitempty"`
	Comm      string     `json:"comm,omitempty"`
	Netns     uint32     `json:"netns,omitempty"`
	CgroupID  uint64     `json:"cgroupId,omitempty"`
	Truncated bool       `json:"truncated,omitempty"`
	K8s       enrich.K8s `json:"k8s"`
}

// Options configures a Tracer.
type Options struct {
	gadget.Options
	// Ports carry DNS; empty means 53.
	Ports []uint16
	// Timeout after which a query with no response yields an unanswered
	// event; zero means 2s.
	Timeout time.Duration
	// Env points at non-standard kernel interface paths (tests).
	Env kernel.Env
	// Cgroup2Root is where to attach; discovered (or mounted) when empty.
	Cgroup2Root string
}

// Tracer is a loaded and attached DNS gadget.
type Tracer struct {
	opts  Options
	log   *slog.Logger
	objs  dnsObjects
	links []link.Link
	sel   *enrich.Selection
	clock kernel.BootClock

	pending   map[pendingKey]pendingQuery
	scratch   dnsEvent // decode buffer, reused (read on one goroutine)
	closeOnce sync.Once
}

type pendingKey struct {
	cgroup         uint64
	netns          uint32
	client, server netip.AddrPort
	id             uint16
	proto          uint8
	// clientSide is true for the sender's view (query egress, response
	// ingress) and false for the server's (query ingress, response egress):
	// on loopback both views share cgroup, netns and addresses.
	clientSide bool
}

type pendingQuery struct {
	ev Event
	ts uint64
}

// maxPending bounds the table of queries waiting for a response.
const maxPending = 1 << 18

// New checks privileges and kernel support, resolves the filter, loads the
// programs and attaches them to the root of the cgroup2 hierarchy.
func New(opts Options) (*Tracer, error) {
	if opts.Timeout == 0 {
		opts.Timeout = 2 * time.Second
	}
	if len(opts.Ports) == 0 {
		opts.Ports = []uint16{53}
	}
	t := &Tracer{opts: opts, log: opts.Logger, pending: map[pendingKey]pendingQuery{}}
	if t.log == nil {
		t.log = slog.New(slog.DiscardHandler)
	}
	if err := opts.Env.Preflight(); err != nil {
		return nil, err
	}
	root := opts.Cgroup2Root
	if root == "" {
		r, err := kernel.EnsureCgroup2()
		if err != nil {
			return nil, err
		}
		root = r
	}
	sel, clock, err := kernel.SelectAndClock(opts.Enricher, opts.Filter)
	if err != nil {
		return nil, err
	}
	t.sel, t.clock = sel, clock

	spec, err := loadDns()
	if err != nil {
		return nil, fmt.Errorf("read embedded dns BPF object: %w", err)
	}
	consts := kernel.FilterConstants(t.sel)
	consts["have_kern_ctx"] = boolU8(haveKfunc("bpf_cast_to_kern_ctx"))
	if err := kernel.SetConstants(spec, consts); err != nil {
		return nil, err
	}
	if opts.RingBytes != 0 {
		spec.Maps["events"].MaxEntries = opts.RingBytes
	}
	if err := spec.LoadAndAssign(&t.objs, nil); err != nil {
		return nil, kernel.LoadError("dns", err)
	}
	for _, p := range opts.Ports {
		if err := t.objs.Ports.Update(p, uint8(1), ebpf.UpdateAny); err != nil {
			t.Close()
			return nil, fmt.Errorf("set DNS port %d: %w", p, err)
		}
	}
	if err := kernel.SyncFilter(t.objs.FilterCgroups, t.objs.FilterNetns, t.sel); err != nil {
		t.Close()
		return nil, err
	}
	for _, a := range []struct {
		typ  ebpf.AttachType
		prog *ebpf.Program
	}{{ebpf.AttachCGroupInetEgress, t.objs.DnsEgress}, {ebpf.AttachCGroupInetIngress, t.objs.DnsIngress}} {
		l, err := link.AttachCgroup(link.CgroupOptions{Path: root, Attach: a.typ, Program: a.prog})
		if err != nil {
			t.Close()
			return nil, fmt.Errorf("attach cgroup_skb to %s: %w", root, err)
		}
		t.links = append(t.links, l)
	}
	return t, nil
}

// haveKfunc reports whether the kernel's BTF has a kfunc of this name.
func haveKfunc(name string) bool {
	spec, err := btf.LoadKernelSpec()
	if err != nil {
		return false
	}
	var fn *btf.Func
	return spec.TypeByName(name, &fn) == nil
}

func boolU8(b bool) uint8 {
	if b {
		return 1
	}
	return 0
}

// Close detaches and unloads the programs. It is safe to call twice.
func (t *Tracer) Close() error {
	var errs []error
	t.closeOnce.Do(func() {
		for _, l := range t.links {
			errs = append(errs, l.Close())
		}
		errs = append(errs, t.objs.Close())
	})
	return errors.Join(errs...)
}

// Run delivers events to fn until ctx is done, then drains the ring buffer,
// reports the queries whose timeout has passed as unanswered, and returns
// the counts (queries still within their timeout are counted as Pending).
// fn runs on one goroutine.
func (t *Tracer) Run(ctx context.Context, fn func(Event)) (gadget.Stats, error) {
	var filtered, unparsed, unanswered uint64
	refresh := kernel.FilterRefresher(t.sel, t.objs.FilterCgroups, t.objs.FilterNetns, t.log)
	r := kernel.Reader{
		Ring:     t.objs.Events,
		Lost:     t.objs.Lost,
		Programs: []*ebpf.Program{t.objs.DnsEgress, t.objs.DnsIngress},
		OnLost:   t.opts.OnLost,
		Tick: func(now time.Time) {
			unanswered += t.expire(now, fn)
			refresh(now)
		},
	}
	st, err := r.Run(ctx, func(raw []byte) {
		ev, ok := t.decode(raw)
		if !ok {
			unparsed++
			return
		}
		if t.sel != nil && !t.sel.Match(ev.K8s) {
			filtered++
			return
		}
		fn(ev)
	})
	unanswered += t.expire(time.Now(), fn)
	st.Pending = uint64(len(t.pending))
	st.Filtered = filtered
	st.Unparsed = unparsed
	st.Events = st.Events - filtered - unparsed + unanswered
	return st, err
}

// expire reports the queries whose timeout has passed.
func (t *Tracer) expire(now time.Time, fn func(Event)) uint64 {
	var n uint64
	for k, p := range t.pending {
		waited := now.Sub(p.ev.Time)
		if waited < t.opts.Timeout {
			continue
		}
		delete(t.pending, k)
		ev := p.ev
		ev.Type = TypeUnanswered
		ev.Unanswered = true
		ev.Error = "unanswered"
		ev.LatencyNs = waited.Nanoseconds()
		ev.Time = now
		fn(ev)
		n++
	}
	return n
}

func (t *Tracer) decode(raw []byte) (Event, bool) {
	const header = int(unsafe.Offsetof(dnsEvent{}.Data))
	if len(raw) < header {
		return Event{}, false
	}
	// The record is the C struct event truncated after its data: copy the
	// fixed part into bpf2go's dnsEvent (same layout) and read the message
	// in place.
	e := &t.scratch
	copy(unsafe.Slice((*byte)(unsafe.Pointer(e)), header), raw[:header])
	n := min(int(e.Len), len(raw)-header, len(e.Data))
	msg := raw[header : header+n]

	var p dnsmessage.Parser
	h, err := p.Start(msg)
	if err != nil {
		return Event{}, false
	}
	q, err := p.Question()
	if err != nil {
		return Event{}, false
	}
	ev := Event{
		Time:      t.clock.Time(e.Ts),
		ID:        h.ID,
		Name:      q.Name.String(),
		QType:     strings.TrimPrefix(q.Type.String(), "Type"),
		Netns:     e.Netns,
		CgroupID:  e.CgroupId,
		Truncated: e.Truncated != 0,
		Protocol:  "udp",
		Direction: "ingress",
	}
	if e.Proto == 6 {
		ev.Protocol = "tcp"
	}
	if e.Egress != 0 {
		ev.Direction = "egress"
		ev.PID, ev.TID, ev.Comm = e.Pid, e.Tid, kernel.CString(e.Comm[:])
	}
	src := gadget.Endpoint{Addr: gadget.AddrFrom16(e.Family, e.Saddr), Port: e.Sport}
	dst := gadget.Endpoint{Addr: gadget.AddrFrom16(e.Family, e.Daddr), Port: e.Dport}
	if en := t.opts.Enricher; en != nil {
		src.K8s = en.Peer(src.Addr)
		dst.K8s = en.Peer(dst.Addr)
		ev.K8s = en.Resolve(enrich.Keys{CgroupID: e.CgroupId, PID: ev.PID, Netns: e.Netns})
	} else {
		ev.K8s = enrich.K8s{}
	}
	ev.Src, ev.Dst = src, dst

	key := pendingKey{cgroup: e.CgroupId, netns: e.Netns, id: h.ID, proto: e.Proto, clientSide: (e.Egress != 0) != h.Response}
	if !h.Response {
		ev.Type, ev.QR, ev.Nameserver = TypeQuery, "Q", dst
		key.client, key.server = netip.AddrPortFrom(src.Addr, src.Port), netip.AddrPortFrom(dst.Addr, dst.Port)
		if len(t.pending) < maxPending {
			t.pending[key] = pendingQuery{ev: ev, ts: e.Ts}
		}
		return ev, true
	}
	ev.Type, ev.QR, ev.Nameserver = TypeResponse, "R", src
	ev.RCode = strings.TrimPrefix(h.RCode.String(), "RCode")
	if h.RCode != dnsmessage.RCodeSuccess {
		ev.Error = ev.RCode
	}
	if err := p.SkipAllQuestions(); err == nil {
		ev.Answers = answers(&p)
	}
	key.client, key.server = netip.AddrPortFrom(dst.Addr, dst.Port), netip.AddrPortFrom(src.Addr, src.Port)
	if pq, ok := t.pending[key]; ok {
		delete(t.pending, key)
		if e.Ts >= pq.ts {
			ev.LatencyNs = int64(e.Ts - pq.ts)
		}
		if ev.PID == 0 {
			ev.PID, ev.TID, ev.Comm = pq.ev.PID, pq.ev.TID, pq.ev.Comm
		}
	}
	return ev, true
}

// answers renders the answer section: addresses for A and AAAA, the target
// for CNAME, PTR and NS, the type name otherwise.
func answers(p *dnsmessage.Parser) []string {
	var out []string
	for {
		h, err := p.AnswerHeader()
		if err != nil {
			return out
		}
		switch h.Type {
		case dnsmessage.TypeA:
			r, err := p.AResource()
			if err != nil {
				return out
			}
			out = append(out, netip.AddrFrom4(r.A).String())
		case dnsmessage.TypeAAAA:
			r, err := p.AAAAResource()
			if err != nil {
				return out
			}
			out = append(out, netip.AddrFrom16(r.AAAA).String())
		case dnsmessage.TypeCNAME:
			r, err := p.CNAMEResource()
			if err != nil {
				return out
			}
			out = append(out, r.CNAME.String())
		case dnsmessage.TypePTR:
			r, err := p.PTRResource()
			if err != nil {
				return out
			}
			out = append(out, r.PTR.String())
		default:
			if err := p.SkipAnswer(); err != nil {
				return out
			}
			out = append(out, strings.TrimPrefix(h.Type.String(), "Type"))
		}
	}
}

// KernelCost returns the CPU time the gadget's BPF programs have used in
// the kernel and how many times they ran, while BPF statistics are enabled
// (see ebpf.EnableStats); zero otherwise.
func (t *Tracer) KernelCost() (time.Duration, uint64) {
	return kernel.RunTime([]*ebpf.Program{t.objs.DnsEgress, t.objs.DnsIngress})
}
