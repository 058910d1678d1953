package wire

import (
	"encoding/json"
	"net/url"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/kdiag/kdiag/pkg/gadget"
)

func TestParamsRoundTrip(t *testing.T) {
	tests := []Params{
		{},
		{Namespace: "shop", PodPrefix: "store-front", Container: "app", Selector: "app in (a,b),tier!=db", FailuresOnly: true, Duration: 30 * time.Second, RingMiB: 16},
		{Namespace: "kube-system", DNSTimeout: 5 * time.Second, DNSPorts: []uint16{53, 5353}},
	}
	for _, p := range tests {
		got, err := ParseParams(p.Query())
		if err != nil {
			t.Fatalf("ParseParams(%v): %v", p.Query(), err)
		}
		if !reflect.DeepEqual(got, p) {
			t.Errorf("round trip of %+v gave %+v", p, got)
		}
	}
}

func TestParseParamsRejects(t *testing.T) {
	tests := []struct {
		q    url.Values
		want string
	}{
		{url.Values{"nmespace": {"x"}}, `unknown parameter "nmespace"`},
		{url.Values{"namespace": {"a", "b"}}, "given 2 times"},
		{url.Values{"selector": {"a in ("}}, "parameter selector"},
		{url.Values{"failuresOnly": {"maybe"}}, "parameter failuresOnly"},
		{url.Values{"timeout": {"0s"}}, "must be positive"},
		{url.Values{"duration": {"soon"}}, "parameter duration"},
		{url.Values{"ports": {"53,70000"}}, `"70000" is not a port`},
		{url.Values{"ringMiB": {"0"}}, "power of two"},
		{url.Values{"ringMiB": {"64"}}, "up to 32"},
	}
	for _, tt := range tests {
		if _, err := ParseParams(tt.q); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("ParseParams(%v) = %v, want an error with %q", tt.q, err, tt.want)
		}
	}
}

func TestFilter(t *testing.T) {
	f, err := Params{Namespace: "shop", PodPrefix: "web", Selector: "app=web"}.Filter()
	if err != nil || f.String() != "-n shop -p web -l app=web" {
		t.Errorf("Filter() = %q, %v", f.String(), err)
	}
}

// Control lines are told from events by their first bytes: the encoding
// must keep "stream" first, and events must not start with it.
func TestIsControl(t *testing.T) {
	b, err := json.Marshal(Control{Stream: KindEnd, Node: "n1", Stats: &gadget.Stats{Events: 3}})
	if err != nil {
		t.Fatal(err)
	}
	if !IsControl(b) {
		t.Errorf("control line not recognised: %s", b)
	}
	for _, ev := range []string{`{"time":"2026-11-28T10:00:00Z","type":"connect"}`, `{"streamer":1}`, ``, `[]`} {
		if IsControl([]byte(ev)) {
			t.Errorf("%q taken for a control line", ev)
		}
	}
}
