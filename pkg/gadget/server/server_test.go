package server_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/kdiag/kdiag/pkg/enrich"
	"github.com/kdiag/kdiag/pkg/gadget/dns"
	"github.com/kdiag/kdiag/pkg/gadget/internal/testbed"
	"github.com/kdiag/kdiag/pkg/gadget/server"
	"github.com/kdiag/kdiag/pkg/gadget/wire"
)

func TestMain(m *testing.M) {
	testbed.RunHelperIfRequested()
	os.Exit(m.Run())
}

const node = "node-1"

func get(t *testing.T, srv *httptest.Server, method, path string, q url.Values) *http.Response {
	t.Helper()
	u := srv.URL + path
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	req, err := http.NewRequest(method, u, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, u, err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

func readAll(t *testing.T, resp *http.Response) string {
	t.Helper()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read body: %v", err)
	}
	return string(b)
}

func isRoot() bool { return os.Geteuid() == 0 }

// Requests the server refuses before loading anything; no root needed.
func TestServerRefusesBadRequests(t *testing.T) {
	noAPI := func(context.Context) (enrich.Source, error) { return nil, errors.New("dial tcp: connection refused") }
	srv := httptest.NewServer(server.New(server.Options{Node: node, NewSource: noAPI}))
	defer srv.Close()
	tests := []struct {
		name, method, path string
		q                  url.Values
		code               int
		want               string
	}{
		{"unknown gadget", "GET", "/gadgets/udp", nil, 404, `no gadget "udp"`},
		{"POST", "POST", "/gadgets/tcp", nil, 405, "only GET"},
		{"unknown parameter", "GET", "/gadgets/tcp", url.Values{"namespce": {"x"}}, 400, `unknown parameter "namespce"`},
		{"bad selector", "GET", "/gadgets/tcp", url.Values{"selector": {"a in ("}}, 400, "parameter selector"},
		{"bad duration", "GET", "/gadgets/dns", url.Values{"duration": {"-1s"}}, 400, "must be positive"},
		{"bad port", "GET", "/gadgets/dns", url.Values{"ports": {"53,0"}}, 400, `"0" is not a port`},
		{"bad ring", "GET", "/gadgets/dns", url.Values{"ringMiB": {"3"}}, 400, "power of two"},
		{"filter without API server", "GET", "/gadgets/tcp", url.Values{"namespace": {"shop"}}, 503, "filter -n shop needs the API server"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp := get(t, srv, tt.method, tt.path, tt.q)
			b := readAll(t, resp)
			if resp.StatusCode != tt.code || !strings.Contains(b, tt.want) {
				t.Fatalf("%d %q; want %d with %q", resp.StatusCode, b, tt.code, tt.want)
			}
			if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
				t.Errorf("error Content-Type %q: client-go passes only text bodies on as the message", ct)
			}
		})
	}
}

// While MaxSessions sessions run, another request gets 429.
func TestServerLimitsSessions(t *testing.T) {
	release := make(chan struct{})
	entered := make(chan struct{}, 1)
	blocking := func(ctx context.Context) (enrich.Source, error) {
		entered <- struct{}{}
		select {
		case <-release:
		case <-ctx.Done():
		}
		return nil, errors.New("no API server in this test")
	}
	srv := httptest.NewServer(server.New(server.Options{Node: node, NewSource: blocking, MaxSessions: 1}))
	defer srv.Close()
	first := make(chan *http.Response, 1)
	go func() {
		resp, err := http.Get(srv.URL + "/gadgets/tcp?namespace=shop")
		if err == nil {
			first <- resp
		}
		close(first)
	}()
	<-entered
	resp := get(t, srv, "GET", "/gadgets/dns", nil)
	if b := readAll(t, resp); resp.StatusCode != http.StatusTooManyRequests || !strings.Contains(b, "1 traces already running") {
		t.Fatalf("second session: %d %q; want 429", resp.StatusCode, b)
	}
	close(release)
	if r, ok := <-first; ok {
		b := readAll(t, r)
		r.Body.Close()
		if r.StatusCode != http.StatusServiceUnavailable {
			t.Errorf("first session: %d %q; want 503 (filter without API server)", r.StatusCode, b)
		}
	}
	// The slot is free again.
	resp = get(t, srv, "GET", "/gadgets/dns", url.Values{"namespace": {"x"}})
	if b := readAll(t, resp); resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("after the first ended: %d %q; want 503, not 429", resp.StatusCode, b)
	}
}

// Without Kubernetes access and without a filter the agent still traces,
// and says that events carry no names; not root, it answers 403.
func TestServerWithoutAPIServer(t *testing.T) {
	noAPI := func(context.Context) (enrich.Source, error) { return nil, errors.New("forbidden") }
	srv := httptest.NewServer(server.New(server.Options{Node: node, NewSource: noAPI}))
	defer srv.Close()
	resp := get(t, srv, "GET", "/gadgets/oomkill", url.Values{"duration": {"500ms"}})
	b := readAll(t, resp)
	if !isRoot() {
		if resp.StatusCode != http.StatusForbidden || !strings.Contains(b, "tracing needs root") {
			t.Fatalf("not root: %d %q; want 403 saying tracing needs root", resp.StatusCode, b)
		}
		return
	}
	// Only a missing kernel feature (501) is a reason to skip; any other
	// refusal as root is a failure.
	if resp.StatusCode == http.StatusNotImplemented {
		t.Skipf("oomkill does not load on this kernel (%d %s)", resp.StatusCode, b)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("oomkill as root: %d %q, want 200", resp.StatusCode, b)
	}
	ls := strings.Split(strings.TrimSpace(b), "\n")
	if len(ls) < 3 || !strings.Contains(ls[0], `"stream":"start"`) || !strings.Contains(ls[1], "events carry no Kubernetes names") || !strings.Contains(ls[len(ls)-1], `"stream":"end"`) {
		t.Fatalf("stream:\n%s\nwant start, warning, ..., end", b)
	}
}

// readStream reads lines from a live stream into a channel.
func readStream(resp *http.Response) <-chan string {
	ch := make(chan string, 1000)
	go func() {
		defer close(ch)
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			ch <- sc.Text()
		}
	}()
	return ch
}

// TestServerStreamsDNS runs the dns gadget through the handler: the start
// line arrives once the gadget is attached, then the events (the JSON of
// -o json, labelled), then, at the end of the duration, the final counts.
// A filter matching no pod is a 422.
func TestServerStreamsDNS(t *testing.T) {
	bed := testbed.New(t) // skips unless root with BTF
	client := bed.AddPod("shop", "checkout-1", testbed.PodOptions{})
	coredns := bed.AddPod("kube-system", "coredns-1", testbed.PodOptions{})
	bed.StartReady(client, "sleep")
	bed.StartReady(coredns, "dns-server", ":53")
	src := enrich.NewStaticSource(bed.CorePods(node), nil)
	srv := httptest.NewServer(server.New(server.Options{Node: node, Progress: 200 * time.Millisecond,
		NewSource: func(context.Context) (enrich.Source, error) { return src, nil }}))
	defer srv.Close()

	resp := get(t, srv, "GET", "/gadgets/dns", url.Values{"namespace": {"shop"}, "pod": {"nothing"}})
	if b := readAll(t, resp); resp.StatusCode != http.StatusUnprocessableEntity || !strings.Contains(b, "no pod matches") {
		t.Fatalf("filter matching nothing: %d %q; want 422", resp.StatusCode, b)
	}

	resp = get(t, srv, "GET", "/gadgets/dns", url.Values{"namespace": {"shop"}, "duration": {"4s"}})
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != wire.ContentType {
		t.Fatalf("status %d, Content-Type %q", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	lines := readStream(resp)
	first := <-lines
	var start wire.Control
	if err := json.Unmarshal([]byte(first), &start); err != nil || start.Stream != wire.KindStart || start.Node != node || start.Filter != "-n shop" {
		t.Fatalf("first line %q: want the start control line (%v)", first, err)
	}
	bed.Start(client, "dns-query", net.JoinHostPort(coredns.IPv4.String(), "53"), "udp", "ok.example.com.", "A")
	var events, progress int
	var end *wire.Control
	var sawAnswer bool
	for line := range lines {
		if wire.IsControl([]byte(line)) {
			var c wire.Control
			if err := json.Unmarshal([]byte(line), &c); err != nil {
				t.Fatalf("control line %q: %v", line, err)
			}
			switch c.Stream {
			case wire.KindProgress:
				progress++
			case wire.KindEnd:
				end = &c
			}
			continue
		}
		events++
		var ev dns.Event
		if err := json.Unmarshal([]byte(line), &ev); err != nil {
			t.Fatalf("event line %q: %v", line, err)
		}
		if ev.K8s.Pod != client.Name || ev.K8s.Node != node {
			t.Errorf("event from %+v passed the filter -n shop", ev.K8s)
		}
		if ev.Name == "ok.example.com." && ev.QR == "R" && len(ev.Answers) == 2 {
			sawAnswer = true
		}
	}
	if !sawAnswer {
		t.Error("no response event with answers for ok.example.com.")
	}
	if end == nil || end.Stats == nil {
		t.Fatal("stream ended without the final counts")
	}
	if end.Stats.Events != uint64(events) || end.Stats.Lost != 0 || end.Error != "" {
		t.Errorf("final counts %+v (error %q), want %d events, 0 lost", *end.Stats, end.Error, events)
	}
	if progress == 0 {
		t.Error("no progress line in 4s with Progress 200ms")
	}
}

// A client that goes away ends the session: the slot is free again.
func TestServerStopsWhenClientLeaves(t *testing.T) {
	testbed.RequireKernel(t)
	s := server.New(server.Options{Node: node, MaxSessions: 1})
	srv := httptest.NewServer(s)
	defer srv.Close()
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "GET", srv.URL+"/gadgets/tcp", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d", resp.StatusCode)
	}
	sc := bufio.NewScanner(resp.Body)
	if !sc.Scan() || !strings.Contains(sc.Text(), `"stream":"start"`) {
		t.Fatalf("first line %q", sc.Text())
	}
	cancel()
	resp.Body.Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		r, err := http.Get(srv.URL + "/gadgets/tcp?duration=100ms")
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, r.Body)
		r.Body.Close()
		if r.StatusCode == http.StatusOK {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("slot still taken 10s after the client left (status %d)", r.StatusCode)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
