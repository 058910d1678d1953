// Package wire is the protocol between the CLI (cluster mode of
// kdiag trace) and the gadget server of the node agent: the request's
// parameters, carried as URL query values through the API server's pod
// proxy, and the response stream.
//
// The response to GET /gadgets/{tcp,dns,oomkill} is JSON lines. An event
// line is exactly what `kdiag trace ... -o json` prints for that event. A
// control line is an object whose first key is "stream" (see Control):
//
//	{"stream":"start","node":"n1","gadget":"dns","filter":"-n shop"}
//	{"time":"...","type":"query","qr":"Q",...}            an event
//	{"stream":"progress","node":"n1","stats":{"events":10,"lost":0,...}}
//	{"stream":"lost","node":"n1","stats":{"lost":12,"missed":0,...}}
//	{"stream":"end","node":"n1","stats":{...},"error":"..."}
//
// Events never start with {"stream": (their first key is "time"), so a
// reader tells the two apart from the first bytes without decoding each
// event twice; IsControl does that.
package wire

import (
	"bytes"
	"fmt"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/labels"

	"github.com/kdiag/kdiag/pkg/enrich"
	"github.com/kdiag/kdiag/pkg/gadget"
)

// Gadget names, as in the path /gadgets/<name>.
const (
	TCP     = "tcp"
	DNS     = "dns"
	OOMKill = "oomkill"
)

// Gadgets returns the gadget names the server knows.
func Gadgets() []string { return []string{TCP, DNS, OOMKill} }

// PathPrefix is where the agent mounts the gadget server.
const PathPrefix = "/gadgets/"

// Path returns the URL path of a gadget.
func Path(gadgetName string) string { return PathPrefix + gadgetName }

// Query parameter names.
const (
	ParamNamespace    = "namespace"
	ParamPod          = "pod"
	ParamContainer    = "container"
	ParamSelector     = "selector"
	ParamFailuresOnly = "failuresOnly"
	ParamTimeout      = "timeout"
	ParamPorts        = "ports"
	ParamDuration     = "duration"
	ParamRingMiB      = "ringMiB"
)

// Params are a trace request's settings.
type Params struct {
	// Namespace, PodPrefix, Container and Selector select pods as -n, -p,
	// -c and -l do.
	Namespace, PodPrefix, Container, Selector string
	// FailuresOnly is tcp's --failures-only.
	FailuresOnly bool
	// DNSTimeout is dns's --timeout; zero means the gadget's default.
	DNSTimeout time.Duration
	// DNSPorts is dns's --ports; empty means 53.
	DNSPorts []uint16
	// Duration stops the trace after this long; zero means until the
	// client disconnects.
	Duration time.Duration
	// RingMiB sizes the ring buffer; zero means the gadget's default.
	RingMiB uint32
}

// Query encodes p (one value per key; ports comma-separated, since the
// pod proxy client passes one value per key).
func (p Params) Query() url.Values {
	q := url.Values{}
	set := func(k, v string) {
		if v != "" {
			q.Set(k, v)
		}
	}
	set(ParamNamespace, p.Namespace)
	set(ParamPod, p.PodPrefix)
	set(ParamContainer, p.Container)
	set(ParamSelector, p.Selector)
	if p.FailuresOnly {
		q.Set(ParamFailuresOnly, "true")
	}
	if p.DNSTimeout > 0 {
		q.Set(ParamTimeout, p.DNSTimeout.String())
	}
	if len(p.DNSPorts) > 0 {
		ports := make([]string, len(p.DNSPorts))
		for i, port := range p.DNSPorts {
			ports[i] = strconv.Itoa(int(port))
		}
		q.Set(ParamPorts, strings.Join(ports, ","))
	}
	if p.Duration > 0 {
		q.Set(ParamDuration, p.Duration.String())
	}
	if p.RingMiB > 0 {
		q.Set(ParamRingMiB, strconv.FormatUint(uint64(p.RingMiB), 10))
	}
	return q
}

// ParseParams decodes and checks a request's query. Unknown keys are an
// error, so that a typo does not silently trace everything.
func ParseParams(q url.Values) (Params, error) {
	var p Params
	for k, v := range q {
		if len(v) != 1 {
			return p, fmt.Errorf("parameter %s: given %d times, want once", k, len(v))
		}
		val := v[0]
		var err error
		switch k {
		case ParamNamespace:
			p.Namespace = val
		case ParamPod:
			p.PodPrefix = val
		case ParamContainer:
			p.Container = val
		case ParamSelector:
			if _, err = labels.Parse(val); err == nil {
				p.Selector = val
			}
		case ParamFailuresOnly:
			p.FailuresOnly, err = strconv.ParseBool(val)
		case ParamTimeout:
			p.DNSTimeout, err = positiveDuration(val)
		case ParamDuration:
			p.Duration, err = positiveDuration(val)
		case ParamPorts:
			p.DNSPorts, err = parsePorts(val)
		case ParamRingMiB:
			var n uint64
			n, err = strconv.ParseUint(val, 10, 32)
			if err == nil && (n == 0 || n&(n-1) != 0 || n > 32) {
				err = fmt.Errorf("must be a power of two up to 32 (the agent's memory)")
			}
			p.RingMiB = uint32(n)
		default:
			known := []string{ParamNamespace, ParamPod, ParamContainer, ParamSelector, ParamFailuresOnly, ParamTimeout, ParamPorts, ParamDuration, ParamRingMiB}
			slices.Sort(known)
			return p, fmt.Errorf("unknown parameter %q (known: %s)", k, strings.Join(known, ", "))
		}
		if err != nil {
			return p, fmt.Errorf("parameter %s=%q: %w", k, val, err)
		}
	}
	return p, nil
}

func positiveDuration(s string) (time.Duration, error) {
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, err
	}
	if d <= 0 {
		return 0, fmt.Errorf("must be positive")
	}
	return d, nil
}

func parsePorts(s string) ([]uint16, error) {
	var out []uint16
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.ParseUint(strings.TrimSpace(f), 10, 16)
		if err != nil || n == 0 {
			return nil, fmt.Errorf("%q is not a port", f)
		}
		out = append(out, uint16(n))
	}
	return out, nil
}

// Filter is the pod filter the parameters describe.
func (p Params) Filter() (enrich.Filter, error) {
	f := enrich.Filter{Namespace: p.Namespace, PodPrefix: p.PodPrefix, Container: p.Container}
	if p.Selector != "" {
		sel, err := labels.Parse(p.Selector)
		if err != nil {
			return f, fmt.Errorf("selector %q: %w", p.Selector, err)
		}
		f.Selector = sel
	}
	return f, nil
}

// Kinds of control lines.
const (
	// KindStart is the first line, written once the gadget is attached:
	// events from then on are seen.
	KindStart = "start"
	// KindProgress carries the counts so far, every few seconds, and keeps
	// an idle stream alive.
	KindProgress = "progress"
	// KindLost is written whenever the lost, missed or dropped count grows.
	KindLost = "lost"
	// KindEnd is the last line: the run's final statistics and, when the
	// trace stopped on an error, that error.
	KindEnd = "end"
	// KindWarning carries a message for the user (e.g. no Kubernetes names).
	KindWarning = "warning"
)

// Control is a control line.
type Control struct {
	// Stream is the kind of line; it must stay the first field.
	Stream string        `json:"stream"`
	Node   string        `json:"node,omitempty"`
	Gadget string        `json:"gadget,omitempty"`
	Filter string        `json:"filter,omitempty"`
	Stats  *gadget.Stats `json:"stats,omitempty"`
	// Dropped counts events the agent dropped because the client (through
	// the API server) did not keep up and its send queue was full. Like
	// Stats.Lost, they are lost events, never silently.
	Dropped uint64 `json:"dropped,omitempty"`
	// Error is why the trace stopped early (KindEnd), or a warning's text.
	Error string `json:"error,omitempty"`
}

var controlPrefix = []byte(`{"stream":`)

// IsControl reports whether a line is a control line rather than an event.
func IsControl(line []byte) bool {
	return bytes.HasPrefix(line, controlPrefix)
}

// ContentType is the media type of the response stream.
const ContentType = "application/x-ndjson"
