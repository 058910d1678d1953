// Package render prints gadget events as they stream: kubectl-style columns
// for people, or one JSON object per line for machines.
package render

import (
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/kdiag/kdiag/pkg/gadget"
	"github.com/kdiag/kdiag/pkg/gadget/dns"
	"github.com/kdiag/kdiag/pkg/gadget/oomkill"
	"github.com/kdiag/kdiag/pkg/gadget/tcp"
)

// Format is an output format.
type Format string

// Formats.
const (
	Table Format = "table"
	JSON  Format = "json"
)

// ParseFormat accepts "", "table", "wide" and "json".
func ParseFormat(s string) (Format, error) {
	switch s {
	case "", "table", "wide":
		return Table, nil
	case "json":
		return JSON, nil
	}
	return "", fmt.Errorf("unknown output format %q: use table or json", s)
}

// TCPColumns returns the table headers of the tcp gadget.
func TCPColumns() []string {
	return []string{"NODE", "NAMESPACE", "POD", "CONTAINER", "PID", "COMM", "TYPE", "SRC", "DST", "ERROR"}
}

// DNSColumns returns the table headers of the dns gadget.
func DNSColumns() []string {
	return []string{"NODE", "NAMESPACE", "POD", "CONTAINER", "PID", "COMM", "QR", "ID", "QTYPE", "NAME", "RCODE", "LATENCY", "NAMESERVER", "ANSWERS", "ERROR"}
}

// OOMKillColumns returns the table headers of the oomkill gadget.
func OOMKillColumns() []string {
	return []string{"NODE", "NAMESPACE", "POD", "CONTAINER", "PID", "COMM", "TRIGGER", "PAGES", "MEMCG"}
}

// Writer streams rows or JSON lines. It is not safe for concurrent use:
// gadgets call their callback from one goroutine.
type Writer struct {
	w       io.Writer
	format  Format
	columns []string
	widths  []int
	header  bool
	enc     *json.Encoder
}

// NewWriter returns a writer for one gadget's events.
func NewWriter(w io.Writer, format Format, columns []string) *Writer {
	wr := &Writer{w: w, format: format, columns: columns, widths: make([]int, len(columns))}
	for i, c := range columns {
		wr.widths[i] = max(len(c), minWidth(c))
	}
	wr.enc = json.NewEncoder(w)
	return wr
}

// minWidth reserves room so that the first rows already line up.
func minWidth(col string) int {
	switch col {
	case "NODE", "NAMESPACE", "CONTAINER":
		return 12
	case "COMM":
		return 15
	case "POD", "SRC", "DST", "NAMESERVER", "NAME":
		return 24
	case "PID", "ID", "PAGES":
		return 7
	case "TYPE":
		return 12
	}
	return 0
}

// Row writes a table row (padded; columns widen as needed) or nothing in
// JSON mode.
func (w *Writer) Row(cells ...string) error {
	if !w.header {
		w.header = true
		if err := w.line(w.columns); err != nil {
			return err
		}
	}
	return w.line(cells)
}

func (w *Writer) line(cells []string) error {
	var b strings.Builder
	for i, c := range cells {
		if c == "" {
			c = "-"
		}
		if i == len(cells)-1 {
			b.WriteString(c)
			break
		}
		if i < len(w.widths) && len(c) > w.widths[i] {
			w.widths[i] = len(c)
		}
		b.WriteString(c)
		pad := 2
		if i < len(w.widths) {
			pad += w.widths[i] - len(c)
		}
		b.WriteString(strings.Repeat(" ", pad))
	}
	b.WriteByte('\n')
	_, err := io.WriteString(w.w, b.String())
	return err
}

// JSON writes v as one line.
func (w *Writer) JSON(v any) error {
	return w.enc.Encode(v)
}

func pid(p uint32) string {
	if p == 0 {
		return ""
	}
	return strconv.FormatUint(uint64(p), 10)
}

// TCP writes a tcp event.
func (w *Writer) TCP(ev tcp.Event) error {
	if w.format == JSON {
		return w.JSON(ev)
	}
	return w.Row(ev.K8s.Node, ev.K8s.Namespace, ev.K8s.Pod, ev.K8s.Container, pid(ev.PID), ev.Comm,
		ev.Type, ev.Src.String(), ev.Dst.String(), ev.Error)
}

// DNS writes a dns event.
func (w *Writer) DNS(ev dns.Event) error {
	if w.format == JSON {
		return w.JSON(ev)
	}
	latency := ""
	if ev.LatencyNs > 0 {
		latency = time.Duration(ev.LatencyNs).Round(time.Microsecond).String()
	}
	return w.Row(ev.K8s.Node, ev.K8s.Namespace, ev.K8s.Pod, ev.K8s.Container, pid(ev.PID), ev.Comm,
		ev.QR, strconv.Itoa(int(ev.ID)), ev.QType, ev.Name, ev.RCode, latency, ev.Nameserver.String(),
		strings.Join(ev.Answers, ","), ev.Error)
}

// OOMKill writes an oomkill event.
func (w *Writer) OOMKill(ev oomkill.Event) error {
	if w.format == JSON {
		return w.JSON(ev)
	}
	trigger := fmt.Sprintf("%d/%s", ev.Trigger.PID, ev.Trigger.Comm)
	pages := "unlimited"
	if ev.Pages > 0 {
		pages = strconv.FormatUint(ev.Pages, 10)
	}
	return w.Row(ev.K8s.Node, ev.K8s.Namespace, ev.K8s.Pod, ev.K8s.Container, pid(ev.PID), ev.Comm,
		trigger, pages, ev.MemoryCgroup)
}

// Summary is the closing line written to stderr.
func Summary(gadgetName string, st gadget.Stats) string {
	s := fmt.Sprintf("%s: %d events, %d lost", gadgetName, st.Events, st.Lost)
	if st.Missed > 0 {
		s += fmt.Sprintf(", %d hook runs skipped by the kernel (possibly lost)", st.Missed)
	}
	if st.Filtered > 0 {
		s += fmt.Sprintf(", %d filtered in user space", st.Filtered)
	}
	if st.Unparsed > 0 {
		s += fmt.Sprintf(", %d not parsable", st.Unparsed)
	}
	if st.Pending > 0 {
		s += fmt.Sprintf(", %d queries still waiting for a response", st.Pending)
	}
	return s
}

// LostWarning is written to stderr when the lost or missed count grows.
func LostWarning(gadgetName string, lost, missed uint64) string {
	return fmt.Sprintf("warning: %s: so far %d events lost (ring buffer full: the reader could not keep up), %d hook runs skipped by the kernel (another BPF program was running on the CPU)", gadgetName, lost, missed)
}
