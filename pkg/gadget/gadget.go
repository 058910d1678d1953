// Package gadget holds what kdiag's eBPF gadgets (trace tcp, dns, oomkill)
// share in their public API: options, run statistics and endpoints. Each
// gadget lives in its own subpackage and is a library:
//
//	t, err := tcp.New(tcp.Options{Common: gadget.Options{Enricher: e}})
//	stats, err := t.Run(ctx, func(ev tcp.Event) { ... })
//
// Events are plain structs with a JSON encoding, so a remote agent can
// stream them and a client can decode them with the same types.
package gadget

import (
	"log/slog"
	"net/netip"
	"strconv"

	"github.com/kdiag/kdiag/pkg/enrich"
)

// Options are the settings every gadget takes.
type Options struct {
	// Enricher labels events with Kubernetes names; nil means none.
	Enricher *enrich.Enricher
	// Filter selects pods; the zero value traces everything. Where the
	// gadget can, the selection is applied in the kernel.
	Filter enrich.Filter
	// RingBytes sizes the ring buffer (a power of two, multiple of the page
	// size); zero keeps the gadget's default (8 MiB).
	RingBytes uint32
	// OnLost is called (from the reading goroutine) whenever the count of
	// events lost because the ring buffer was full, or of hook runs the
	// kernel skipped, grows. It gets both totals.
	OnLost func(lost, missed uint64)
	// Logger receives debug logs; nil discards them.
	Logger *slog.Logger
}

// Stats summarises a run.
type Stats struct {
	// Events is the number of events delivered to the callback.
	Events uint64 `json:"events"`
	// Lost is the number of events the kernel could not queue (ring buffer
	// full). It is never silently zero: it is read from per-CPU counters.
	Lost uint64 `json:"lost"`
	// Missed is the number of times the kernel skipped one of the gadget's
	// programs because a BPF program was already running on that CPU (its
	// recursion-miss counters). Each skip may have been an event.
	Missed uint64 `json:"missed"`
	// Filtered is the number of events read but dropped by the user-space
	// part of the filter.
	Filtered uint64 `json:"filtered"`
	// Unparsed is the number of records that could not be decoded (e.g. a
	// packet on a DNS port that is not DNS).
	Unparsed uint64 `json:"unparsed,omitempty"`
	// Pending is the number of DNS queries still waiting for a response,
	// within their timeout, when the trace stopped: neither answered nor
	// known to be unanswered.
	Pending uint64 `json:"pending,omitempty"`
}

// Endpoint is one end of a connection or DNS exchange.
type Endpoint struct {
	Addr netip.Addr   `json:"addr"`
	Port uint16       `json:"port"`
	K8s  *enrich.Peer `json:"k8s,omitempty"`
}

// String renders pod/ns/name:port, svc/ns/name:port or addr:port.
func (e Endpoint) String() string {
	if !e.Addr.IsValid() {
		return "-"
	}
	port := strconv.Itoa(int(e.Port))
	if e.K8s != nil {
		return e.K8s.String() + ":" + port
	}
	return netip.AddrPortFrom(e.Addr, e.Port).String()
}

// AddrFrom16 converts a kernel address (4 or 16 significant bytes) to an Addr.
func AddrFrom16(family uint16, b [16]byte) netip.Addr {
	switch family {
	case 2: // AF_INET
		return netip.AddrFrom4([4]byte{b[0], b[1], b[2], b[3]})
	case 10: // AF_INET6
		return netip.AddrFrom16(b).Unmap()
	}
	return netip.Addr{}
}
