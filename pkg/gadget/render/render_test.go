package render

import (
	"bytes"
	"encoding/json"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/kdiag/kdiag/pkg/enrich"
	"github.com/kdiag/kdiag/pkg/gadget"
	"github.com/kdiag/kdiag/pkg/gadget/dns"
	"github.com/kdiag/kdiag/pkg/gadget/oomkill"
	"github.com/kdiag/kdiag/pkg/gadget/tcp"
)

var refused = tcp.Event{
	Time:  time.Unix(1700000000, 0).UTC(),
	Type:  tcp.TypeConnect,
	Error: "ECONNREFUSED",
	Src:   gadget.Endpoint{Addr: netip.MustParseAddr("10.244.1.7"), Port: 40312, K8s: &enrich.Peer{Kind: "pod", Namespace: "shop", Name: "storefront-1"}},
	Dst:   gadget.Endpoint{Addr: netip.MustParseAddr("10.96.0.20"), Port: 8080, K8s: &enrich.Peer{Kind: "svc", Namespace: "shop", Name: "orders"}},
	PID:   4242, Comm: "node", Netns: 4026532000,
	K8s: enrich.K8s{Node: "aks-1", Namespace: "shop", Pod: "storefront-1", Container: "web", PodUID: "u"},
}

func TestTCPJSONHasTheDocumentedFields(t *testing.T) {
	var buf bytes.Buffer
	w := NewWriter(&buf, JSON, TCPColumns())
	if err := w.TCP(refused); err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(buf.String(), "\n"); n != 1 {
		t.Fatalf("want one JSON line, got %d: %s", n, buf.String())
	}
	var m map[string]any
	if err := json.Unmarshal(buf.Bytes(), &m); err != nil {
		t.Fatalf("not JSON: %v", err)
	}
	for _, k := range []string{"type", "error", "src", "dst", "pid", "comm", "netns", "k8s"} {
		if _, ok := m[k]; !ok {
			t.Errorf("JSON has no %q: %s", k, buf.String())
		}
	}
	dst := m["dst"].(map[string]any)
	if dst["addr"] != "10.96.0.20" || dst["port"] != float64(8080) || dst["k8s"].(map[string]any)["kind"] != "svc" {
		t.Errorf("dst = %v", dst)
	}
	k := m["k8s"].(map[string]any)
	if k["node"] != "aks-1" || k["namespace"] != "shop" || k["pod"] != "storefront-1" || k["container"] != "web" {
		t.Errorf("k8s = %v", k)
	}
	if _, ok := k["PodUID"]; ok {
		t.Errorf("pod UID leaked into output: %v", k)
	}
	var back tcp.Event
	if err := json.Unmarshal(buf.Bytes(), &back); err != nil || back.Dst.String() != "svc/shop/orders:8080" || back.Error != "ECONNREFUSED" {
		t.Errorf("round trip: %v %+v", err, back)
	}
}

func TestTables(t *testing.T) {
	tests := []struct {
		name  string
		write func(w *Writer) error
		cols  []string
		want  []string
	}{
		{"tcp", func(w *Writer) error { return w.TCP(refused) }, TCPColumns(),
			[]string{"aks-1", "shop", "storefront-1", "web", "4242", "connect", "pod/shop/storefront-1:40312", "svc/shop/orders:8080", "ECONNREFUSED"}},
		{"dns", func(w *Writer) error {
			return w.DNS(dns.Event{QR: "R", ID: 7, Name: "api.example.com.", QType: "A", RCode: "ServerFailure", Error: "ServerFailure",
				LatencyNs: 1500000, Nameserver: gadget.Endpoint{Addr: netip.MustParseAddr("10.96.0.10"), Port: 53}})
		}, DNSColumns(), []string{"R", "7", "api.example.com.", "ServerFailure", "1.5ms", "10.96.0.10:53"}},
		{"dns unanswered", func(w *Writer) error {
			return w.DNS(dns.Event{QR: "Q", Name: "x.", Unanswered: true, Error: "unanswered"})
		}, DNSColumns(), []string{"Q", "x.", "unanswered"}},
		{"oomkill", func(w *Writer) error {
			return w.OOMKill(oomkill.Event{PID: 9, Comm: "java", Trigger: oomkill.Process{PID: 10, Comm: "java"}, Pages: 4096, MemoryCgroup: "/kubepods/pod1/c1"})
		}, OOMKillColumns(), []string{"9", "java", "10/java", "4096", "/kubepods/pod1/c1"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf bytes.Buffer
			w := NewWriter(&buf, Table, tt.cols)
			if err := tt.write(w); err != nil {
				t.Fatal(err)
			}
			lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
			if len(lines) != 2 {
				t.Fatalf("want header and one row, got:\n%s", buf.String())
			}
			if got := strings.Fields(lines[0]); strings.Join(got, " ") != strings.Join(tt.cols, " ") {
				t.Errorf("header = %v", got)
			}
			for _, cell := range tt.want {
				if !strings.Contains(lines[1], cell) {
					t.Errorf("row %q lacks %q", lines[1], cell)
				}
			}
			if idx := strings.Index(lines[0], "NAMESPACE"); idx < 0 || len(lines[1]) <= idx || lines[1][idx-2:idx] != "  " {
				t.Errorf("columns not aligned:\n%s", buf.String())
			}
		})
	}
}

func TestParseFormat(t *testing.T) {
	for in, want := range map[string]Format{"": Table, "table": Table, "wide": Table, "json": JSON} {
		if got, err := ParseFormat(in); err != nil || got != want {
			t.Errorf("ParseFormat(%q) = %v, %v", in, got, err)
		}
	}
	if _, err := ParseFormat("yaml"); err == nil {
		t.Error("yaml accepted")
	}
}

func TestSummaryCountsLost(t *testing.T) {
	s := Summary("dns", gadget.Stats{Events: 10, Lost: 3, Missed: 1, Filtered: 2, Pending: 4})
	if s != "dns: 10 events, 3 lost, 1 hook runs skipped by the kernel (possibly lost), 2 filtered in user space, 4 queries still waiting for a response" {
		t.Errorf("summary = %q", s)
	}
}
