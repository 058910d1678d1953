package remote

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kdiag/kdiag/pkg/agentclient"
	"github.com/kdiag/kdiag/pkg/gadget/render"
	"github.com/kdiag/kdiag/pkg/gadget/wire"
)

// fakeAgents serves canned streams per node. A node in errs fails to
// connect; a node in blocks streams its text and then waits for ctx.
type fakeAgents struct {
	streams map[string]string
	errs    map[string]error
	blocks  map[string]bool
	missing []string
	listErr error

	mu      sync.Mutex
	queries []url.Values
	paths   []string
}

func (f *fakeAgents) Agents(_ context.Context, nodes ...string) ([]agentclient.Agent, []string, error) {
	if f.listErr != nil {
		return nil, nil, f.listErr
	}
	var out []agentclient.Agent
	for n := range f.streams {
		out = append(out, agentclient.Agent{Node: n, Pod: &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "agent-" + n, Namespace: "kube-system"}}})
	}
	for n := range f.errs {
		out = append(out, agentclient.Agent{Node: n, Pod: &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "agent-" + n, Namespace: "kube-system"}}})
	}
	return out, f.missing, nil
}

func (f *fakeAgents) Stream(ctx context.Context, a agentclient.Agent, path string, q url.Values) (io.ReadCloser, error) {
	f.mu.Lock()
	f.queries = append(f.queries, q)
	f.paths = append(f.paths, path)
	f.mu.Unlock()
	if err := f.errs[a.Node]; err != nil {
		return nil, err
	}
	var r io.Reader = strings.NewReader(f.streams[a.Node])
	if f.blocks[a.Node] {
		r = io.MultiReader(r, ctxReader{ctx})
	}
	return io.NopCloser(r), nil
}

// ctxReader blocks until ctx ends, like a stream the agent keeps open.
type ctxReader struct{ ctx context.Context }

func (c ctxReader) Read([]byte) (int, error) {
	<-c.ctx.Done()
	return 0, c.ctx.Err()
}

func lines(ls ...string) string { return strings.Join(ls, "\n") + "\n" }

const (
	start1 = `{"stream":"start","node":"n1","gadget":"dns","filter":"-n shop"}`
	start2 = `{"stream":"start","node":"n2","gadget":"dns","filter":"-n shop"}`
	ev1    = `{"time":"2026-11-28T10:00:00Z","type":"query","qr":"Q","id":1,"name":"a.example.","qtype":"A","nameserver":{"addr":"10.0.0.10","port":53},"src":{"addr":"10.0.0.5","port":4000},"dst":{"addr":"10.0.0.10","port":53},"direction":"egress","protocol":"udp","k8s":{"node":"n1","namespace":"shop","pod":"checkout"}}`
	ev2    = `{"time":"2026-11-28T10:00:01Z","type":"response","qr":"R","error":"ServerFailure","id":1,"name":"a.example.","qtype":"A","rcode":"ServerFailure","nameserver":{"addr":"10.0.0.10","port":53},"src":{"addr":"10.0.0.10","port":53},"dst":{"addr":"10.0.0.6","port":4000},"direction":"ingress","protocol":"udp","k8s":{"node":"n2","namespace":"shop","pod":"orders"}}`
)

func TestRunMergesStreamsAndReportsEveryNode(t *testing.T) {
	fa := &fakeAgents{
		streams: map[string]string{
			"n1": lines(start1, ev1, `{"stream":"lost","node":"n1","stats":{"events":1,"lost":7,"missed":1,"filtered":0}}`, ev1,
				`{"stream":"end","node":"n1","stats":{"events":2,"lost":9,"missed":1,"filtered":0}}`),
			"n2": lines(start2, ev2, `{"stream":"end","node":"n2","stats":{"events":1,"lost":0,"missed":0,"filtered":0}}`),
			// Started, then the connection broke without the final line.
			"n4": lines(`{"stream":"start","node":"n4"}`, ev1, `{"stream":"progress","node":"n4","stats":{"events":1,"lost":2,"missed":0,"filtered":0}}`),
		},
		errs: map[string]error{
			"n3": &agentclient.ResponseError{Code: 422, Message: "node n3: -n shop on node n3: no pod matches the filter"},
			"n5": &agentclient.ResponseError{Code: 403, Message: "node n5: tracing needs root", FromAPIServer: false},
		},
		missing: []string{"n0"},
	}
	var got []string
	var notices []string
	res, err := Run(context.Background(), Options{
		Agents: fa, Gadget: wire.DNS, Params: wire.Params{Namespace: "shop", Duration: time.Minute},
		Event: func(node string, line []byte) error {
			got = append(got, node+" "+string(line))
			return nil
		},
		Notice: func(m string) { notices = append(notices, m) },
	})
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	if len(got) != 4 {
		t.Fatalf("got %d events, want 4 (2 from n1, 1 from n2, 1 from n4):\n%s", len(got), strings.Join(got, "\n"))
	}
	for _, g := range got {
		node, line, _ := strings.Cut(g, " ")
		if line != ev1 && line != ev2 {
			t.Errorf("event from %s changed on the way: %s", node, line)
		}
	}
	want := map[string]struct {
		state    State
		received uint64
		lost     uint64
		complete bool
		reason   string
	}{
		"n0": {NoAgent, 0, 0, false, "no ready kdiag agent pod"},
		"n1": {Answered, 2, 9, true, ""},
		"n2": {Answered, 1, 0, true, ""},
		"n3": {NoMatch, 0, 0, false, "no pod matches"},
		"n4": {Failed, 1, 2, false, "stream ended before the agent's final count"},
		"n5": {Failed, 0, 0, false, "403 Forbidden: node n5: tracing needs root"},
	}
	if len(res.Nodes) != len(want) {
		t.Fatalf("%d node results, want %d: %+v", len(res.Nodes), len(want), res.Nodes)
	}
	for i, nr := range res.Nodes {
		if i > 0 && res.Nodes[i-1].Node >= nr.Node {
			t.Errorf("nodes not sorted: %s before %s", res.Nodes[i-1].Node, nr.Node)
		}
		w := want[nr.Node]
		if nr.State != w.state || nr.Received != w.received || nr.Stats.Lost != w.lost || nr.Complete != w.complete || !strings.Contains(nr.Reason, w.reason) {
			t.Errorf("%s: state %q received %d lost %d complete %v reason %q; want %q %d %d %v reason containing %q",
				nr.Node, nr.State, nr.Received, nr.Stats.Lost, nr.Complete, nr.Reason, w.state, w.received, w.lost, w.complete, w.reason)
		}
	}
	if tot := res.Total(); tot.Events != 4 || tot.Lost != 11 || tot.Missed != 1 {
		t.Errorf("total %+v, want 4 events, 11 lost, 1 missed", tot)
	}
	joined := strings.Join(notices, "\n")
	for _, w := range []string{"dns on n1: so far 7 events lost", "tracing on 3 node(s): n1, n2, n4", "n3 (no matching pod)", "n5 (failed)"} {
		if !strings.Contains(joined, w) {
			t.Errorf("notices lack %q:\n%s", w, joined)
		}
	}
	sum := res.Summary("dns")
	last := sum[len(sum)-1]
	if want := "dns: 4 events, 11 lost, 1 hook runs skipped by the kernel (possibly lost) (nodes: 2 answered, 1 no agent, 1 no matching pod, 2 failed)"; last != want {
		t.Errorf("final summary line\n got %q\nwant %q", last, want)
	}
	if !strings.Contains(sum[0], "n0") || !strings.Contains(sum[0], "no agent") {
		t.Errorf("first summary line should be n0 without agent: %q", sum[0])
	}
	for _, q := range fa.queries {
		if q.Get(wire.ParamNamespace) != "shop" || q.Get(wire.ParamDuration) != "1m0s" {
			t.Errorf("query sent to the agent: %v", q)
		}
	}
	for _, p := range fa.paths {
		if p != "/gadgets/dns" {
			t.Errorf("path %q, want /gadgets/dns", p)
		}
	}
}

func TestRunErrors(t *testing.T) {
	tests := []struct {
		name  string
		fa    *fakeAgents
		nodes []string
		event func(string, []byte) error
		want  string
	}{
		{"agent pods cannot be listed", &fakeAgents{listErr: errors.New("list agent pods in kube-system: forbidden")}, nil, nil, "forbidden"},
		{"no agent anywhere", &fakeAgents{}, nil, nil, "no node answered: no ready kdiag agent pod in kube-system on any node"},
		{"no agent on the nodes asked", &fakeAgents{missing: []string{"n7"}}, []string{"n7"}, nil, "no node selected has an agent"},
		{"every agent failed", &fakeAgents{errs: map[string]error{"n1": errors.New("dial tcp: connection refused")}}, nil, nil, "no node answered: n1: dial tcp: connection refused"},
		{"old agent without gadgets", &fakeAgents{errs: map[string]error{"n1": &agentclient.ResponseError{Code: 404, Message: "404 page not found"}}}, nil, nil, "older kdiag agent"},
		{"garbage instead of a stream", &fakeAgents{streams: map[string]string{"n1": strings.Repeat("x", 2000)}}, nil, nil, "longer than 1024 bytes"},
		{"output closed", &fakeAgents{streams: map[string]string{"n1": lines(start1, ev1, ev1)}}, nil,
			func(string, []byte) error { return io.ErrClosedPipe }, "closed pipe"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Run(context.Background(), Options{Agents: tt.fa, Gadget: wire.TCP, Nodes: tt.nodes, Event: tt.event, MaxLine: 1024})
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want it to contain %q", err, tt.want)
			}
		})
	}
}

// An interrupt ends the streams; the nodes that answered stay answered,
// with the counts they last reported.
func TestRunInterrupted(t *testing.T) {
	fa := &fakeAgents{
		streams: map[string]string{"n1": lines(start1, ev1, `{"stream":"progress","node":"n1","stats":{"events":1,"lost":3,"missed":0,"filtered":0}}`)},
		blocks:  map[string]bool{"n1": true},
	}
	ctx, cancel := context.WithCancel(context.Background())
	res, err := Run(ctx, Options{Agents: fa, Gadget: wire.DNS, Event: func(string, []byte) error { cancel(); return nil }})
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	nr := res.Nodes[0]
	if nr.State != Answered || nr.Complete || !strings.Contains(nr.Reason, "interrupted") {
		t.Errorf("after an interrupt: %+v; want answered, not complete, reason interrupted", nr)
	}
}

func TestWriterTableAndJSON(t *testing.T) {
	var js bytes.Buffer
	w, err := Writer(wire.DNS, render.JSON, &js)
	if err != nil {
		t.Fatal(err)
	}
	if err := w("n1", []byte(ev1)); err != nil {
		t.Fatal(err)
	}
	if js.String() != ev1+"\n" {
		t.Errorf("JSON output must pass the agent's line through:\n got %s\nwant %s", js.String(), ev1)
	}
	var tab bytes.Buffer
	w, err = Writer(wire.DNS, render.Table, &tab)
	if err != nil {
		t.Fatal(err)
	}
	if err := w("n2", []byte(ev2)); err != nil {
		t.Fatal(err)
	}
	out := tab.String()
	for _, want := range []string{"NODE", "NAMESPACE", "n2", "shop", "orders", "ServerFailure", "a.example."} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
	if err := w("n2", []byte(`{"time":`)); !errors.Is(err, ErrBadEvent) {
		t.Errorf("a truncated event: err = %v, want ErrBadEvent", err)
	}
	if _, err := Writer("nope", render.Table, &tab); err == nil {
		t.Error("an unknown gadget must be an error")
	}
}

// A line the table writer cannot decode is counted, and the stream goes on.
func TestRunCountsUnparsableEvents(t *testing.T) {
	fa := &fakeAgents{streams: map[string]string{"n1": lines(start1, `{"time":1}`, ev1, `{"stream":"end","node":"n1","stats":{"events":2,"lost":0,"missed":0,"filtered":0}}`)}}
	var tab bytes.Buffer
	w, _ := Writer(wire.DNS, render.Table, &tab)
	res, err := Run(context.Background(), Options{Agents: fa, Gadget: wire.DNS, Event: w})
	if err != nil {
		t.Fatal(err)
	}
	if nr := res.Nodes[0]; nr.Unparsed != 1 || nr.Received != 2 || nr.State != Answered {
		t.Errorf("%+v: want 1 unparsable of 2 received, answered", nr)
	}
	if !strings.Contains(fmt.Sprint(res.Summary("dns")), "1 not parsable here") {
		t.Errorf("summary does not mention the unparsable line: %v", res.Summary("dns"))
	}
}
