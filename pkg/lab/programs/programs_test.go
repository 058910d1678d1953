package programs

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// logBuffer is a concurrency-safe log sink.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// started is a program running in the background.
type started struct {
	log  *logBuffer
	done chan error
	stop context.CancelFunc
}

// start runs program name with args and vars until the test ends.
func start(t *testing.T, name string, vars []string, args ...string) *started {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	s := &started{log: &logBuffer{}, done: make(chan error, 1), stop: cancel}
	if vars == nil {
		vars = []string{}
	}
	go func() { s.done <- Run(ctx, name, Env{Vars: vars, Out: s.log}, args) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-s.done:
			if err != nil {
				t.Errorf("%s ended with %v", name, err)
			}
		case <-time.After(5 * time.Second):
			t.Errorf("%s did not stop within 5s of its context ending", name)
		}
	})
	return s
}

// waitLog waits until the log matches re and returns the first match's
// submatches.
func (s *started) waitLog(t *testing.T, re string) []string {
	t.Helper()
	rx := regexp.MustCompile(re)
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if m := rx.FindStringSubmatch(s.log.String()); m != nil {
			return m
		}
		select {
		case err := <-s.done:
			t.Fatalf("program ended (%v) before logging %q; log:\n%s", err, re, s.log)
		case <-time.After(20 * time.Millisecond):
		}
	}
	t.Fatalf("log never matched %q; log:\n%s", re, s.log)
	return nil
}

// freePort returns a TCP port nothing listens on (closed right after).
func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

func TestHTTPServerAnswersAndLogsRequests(t *testing.T) {
	port := freePort(t)
	s := start(t, HTTPServer, []string{fmt.Sprintf("PORT=%d", port), "HOSTNAME=order-service-abc"}, "--address", "127.0.0.1")
	s.waitLog(t, `msg=listening`)
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/orders", port))
	if err != nil {
		t.Fatal(err)
	}
	body := new(bytes.Buffer)
	_, _ = body.ReadFrom(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(body.String(), "order-service-abc") {
		t.Errorf("GET /orders = %d %q, want 200 naming the host", resp.StatusCode, body)
	}
	s.waitLog(t, `msg=request method=GET path=/orders remote=127\.0\.0\.1:`)
	resp, err = http.Get(fmt.Sprintf("http://127.0.0.1:%d/health", port))
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("GET /health = %v, %v", resp, err)
	}
	resp.Body.Close()
}

func TestHTTPClientLogsRefusedConnectionsAndSuccesses(t *testing.T) {
	ok := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") }))
	defer ok.Close()
	closed := fmt.Sprintf("http://127.0.0.1:%d/", freePort(t))
	health := freePort(t)
	s := start(t, HTTPClient, []string{
		"ORDER_SERVICE_URL=" + closed, "PRODUCT_SERVICE_URL=" + ok.URL + "/", "INTERVAL=50ms", fmt.Sprintf("PORT=%d", health), "OTHER=x",
	})
	s.waitLog(t, `level=WARN msg="request failed" url=`+regexp.QuoteMeta(closed)+` err=.*connect: connection refused`)
	s.waitLog(t, `level=INFO msg="request succeeded" url=`+regexp.QuoteMeta(ok.URL+"/")+` status=200 requests=1`)
	// Failures are logged every time, successes only now and then.
	time.Sleep(300 * time.Millisecond)
	log := s.log.String()
	if fails, oks := strings.Count(log, "request failed"), strings.Count(log, "request succeeded"); fails < 4 || oks != 1 {
		t.Errorf("after ~8 rounds: %d failures and %d successes logged, want every failure and 1 success; log:\n%s", fails, oks, log)
	}
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/health", health))
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("health endpoint: %v, %v", resp, err)
	}
	resp.Body.Close()
}

// startUpstream runs upstream-dns on a free loopback port and returns its
// address.
func startUpstream(t *testing.T, args ...string) (*started, string) {
	t.Helper()
	s := start(t, UpstreamDNS, nil, append([]string{"--listen", "127.0.0.1:0"}, args...)...)
	m := s.waitLog(t, `msg=listening address=(127\.0\.0\.1:\d+)`)
	return s, m[1]
}

func query(t *testing.T, server, name string, timeout time.Duration) (*dns.Msg, error) {
	t.Helper()
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), dns.TypeA)
	c := &dns.Client{Timeout: timeout}
	r, _, err := c.Exchange(m, server)
	return r, err
}

func TestUpstreamDNSAnswersFailsAndDrops(t *testing.T) {
	cfg := filepath.Join(t.TempDir(), "upstream.yaml")
	if err := WriteUpstreamConfig(cfg, UpstreamConfig{Drop: []string{"api.payments.example"}}); err != nil {
		t.Fatal(err)
	}
	s, addr := startUpstream(t, "--answer", "payments.example=203.0.113.10", "--servfail", "broken.example", "--config", cfg)
	tests := []struct {
		name      string
		wantRcode int
		wantA     string
		wantDrop  bool
	}{
		{"status.payments.example", dns.RcodeSuccess, "203.0.113.10", false},
		{"api.payments.example", 0, "", true},
		{"v1.api.payments.example", 0, "", true},
		{"broken.example", dns.RcodeServerFailure, "", false},
		{"unknown.example", dns.RcodeNameError, "", false},
	}
	for _, tc := range tests {
		r, err := query(t, addr, tc.name, 300*time.Millisecond)
		if tc.wantDrop {
			if err == nil {
				t.Errorf("%s: got an answer (%s), want none", tc.name, dns.RcodeToString[r.Rcode])
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		if r.Rcode != tc.wantRcode {
			t.Errorf("%s: rcode %s, want %s", tc.name, dns.RcodeToString[r.Rcode], dns.RcodeToString[tc.wantRcode])
		}
		if tc.wantA != "" && (len(r.Answer) != 1 || r.Answer[0].(*dns.A).A.String() != tc.wantA) {
			t.Errorf("%s: answer %v, want A %s", tc.name, r.Answer, tc.wantA)
		}
	}
	s.waitLog(t, `msg=query name=api\.payments\.example\. type=A from=127\.0\.0\.1:\d+ action=drop`)
	// TCP too, and the root NS health check is answered.
	m := new(dns.Msg)
	m.SetQuestion(".", dns.TypeNS)
	if r, _, err := (&dns.Client{Net: "tcp", Timeout: time.Second}).Exchange(m, addr); err != nil || r.Rcode != dns.RcodeSuccess {
		t.Errorf("root NS over TCP: %v, %v", r, err)
	}

	// The upstream's owner fixes the file: the name is answered again.
	if err := WriteUpstreamConfig(cfg, UpstreamConfig{}); err != nil {
		t.Fatal(err)
	}
	s.waitLog(t, `msg="config reloaded"`)
	r, err := query(t, addr, "api.payments.example", time.Second)
	if err != nil || r.Rcode != dns.RcodeSuccess || len(r.Answer) != 1 {
		t.Fatalf("after the fix: %v, %v; want the zone's answer", r, err)
	}
	// A file appearing later is picked up; a broken one keeps the last good
	// configuration.
	if err := os.WriteFile(cfg, []byte("drop: {not: a list}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	s.waitLog(t, `level=ERROR msg="config not reloaded"`)
	if r, err := query(t, addr, "api.payments.example", time.Second); err != nil || r.Rcode != dns.RcodeSuccess {
		t.Errorf("after a broken config: %v, %v; want the last good one", r, err)
	}
}

func TestDNSClientLogsFailuresWithTheirReason(t *testing.T) {
	_, addr := startUpstream(t, "--answer", "status.payments.example=203.0.113.10", "--servfail", "broken.payments.example", "--drop", "api.payments.example")
	s := start(t, DNSClient, []string{
		EnvDNSServer + "=" + addr, EnvDNSSearch + "=shop.svc.cluster.local svc.cluster.local cluster.local", EnvDNSNdots + "=5",
		"NAMES=status.payments.example,broken.payments.example api.payments.example", "INTERVAL=100ms",
	}, "--timeout", "200ms")
	s.waitLog(t, `level=INFO msg=resolved name=status\.payments\.example addresses=\[203\.0\.113\.10\]`)
	s.waitLog(t, `level=WARN msg="resolve failed" name=broken\.payments\.example .*err="lookup broken\.payments\.example on 127\.0\.0\.1:\d+: server misbehaving \(SERVFAIL\)"`)
	s.waitLog(t, `level=WARN msg="resolve failed" name=api\.payments\.example .*err="lookup api\.payments\.example on 127\.0\.0\.1:\d+: i/o timeout"`)
}

func TestLookupSearchOrder(t *testing.T) {
	l := &Lookup{Search: []string{"shop.svc.cluster.local", "svc.cluster.local"}, Ndots: 5}
	tests := []struct {
		name  string
		ndots int
		want  []string
	}{
		{"order-service", 5, []string{"order-service.shop.svc.cluster.local.", "order-service.svc.cluster.local.", "order-service."}},
		{"api.payments.example", 5, []string{"api.payments.example.shop.svc.cluster.local.", "api.payments.example.svc.cluster.local.", "api.payments.example."}},
		{"api.payments.example", 2, []string{"api.payments.example.", "api.payments.example.shop.svc.cluster.local.", "api.payments.example.svc.cluster.local."}},
		{"absolute.example.", 5, []string{"absolute.example."}},
	}
	for _, tc := range tests {
		l.Ndots = tc.ndots
		if got := l.candidates(tc.name); strings.Join(got, " ") != strings.Join(tc.want, " ") {
			t.Errorf("candidates(%q, ndots %d) = %v, want %v", tc.name, tc.ndots, got, tc.want)
		}
	}
}

func TestLookupSearchesAndPrefersServerErrors(t *testing.T) {
	// The cluster zone answers a Service name; an external name is NXDOMAIN
	// in every search domain and SERVFAIL itself: the failure is SERVFAIL.
	_, addr := startUpstream(t, "--answer", "order-service.shop.svc.cluster.local=10.96.0.20", "--servfail", "api.payments.example")
	l := &Lookup{Server: addr, Search: []string{"shop.svc.cluster.local", "svc.cluster.local"}, Ndots: 5, Timeout: time.Second}
	ctx := context.Background()
	got, err := l.LookupHost(ctx, "order-service")
	if err != nil || len(got) != 1 || got[0].String() != "10.96.0.20" {
		t.Errorf("order-service: %v, %v; want 10.96.0.20", got, err)
	}
	_, err = l.LookupHost(ctx, "api.payments.example")
	if le, ok := err.(*LookupError); !ok || le.Rcode != "SERVFAIL" {
		t.Errorf("api.payments.example: %v, want SERVFAIL", err)
	}
	_, err = l.LookupHost(ctx, "nothing")
	if le, ok := err.(*LookupError); !ok || le.Rcode != "NXDOMAIN" || !strings.Contains(err.Error(), "no such host") {
		t.Errorf("nothing: %v, want NXDOMAIN", err)
	}
	if got, err := l.LookupHost(ctx, "10.1.2.3"); err != nil || got[0].String() != "10.1.2.3" {
		t.Errorf("IP literal: %v, %v", got, err)
	}
}

func TestMemoryHogAllocatesUpToSize(t *testing.T) {
	s := start(t, MemoryHog, []string{"SIZE=8Mi", "RATE=4Mi"})
	s.waitLog(t, `msg=allocated bytes=4194304 mib=4`)
	s.waitLog(t, `msg=holding bytes=8388608 chunks=2`)
}

func TestBadInputIsAOneLineError(t *testing.T) {
	tests := []struct {
		name, program string
		vars, args    []string
		want          string
	}{
		{"unknown program", "nope", nil, nil, `unknown lab program "nope"`},
		{"bad PORT", HTTPServer, []string{"PORT=eighty"}, nil, `PORT="eighty": not a port`},
		{"unknown flag", HTTPServer, nil, []string{"--bogus"}, "flag provided but not defined: -bogus (flags: --address"},
		{"resolve without nameserver", HTTPServer, []string{"PORT=1"}, []string{"--resolve", "x.example"}, "--resolve needs a nameserver"},
		{"client without URL", HTTPClient, nil, nil, "no URL"},
		{"client with a bad URL", HTTPClient, nil, []string{"order-service:3000"}, `"order-service:3000": not an http(s) URL`},
		{"client with a bad interval", HTTPClient, []string{"INTERVAL=often"}, []string{"http://x/"}, `INTERVAL="often": not a positive duration`},
		{"dns client without names", DNSClient, []string{EnvDNSServer + "=127.0.0.1"}, nil, "no name to resolve"},
		{"dns client without server", DNSClient, nil, []string{"x.example"}, "no nameserver"},
		{"dns client with a bad server", DNSClient, []string{EnvDNSServer + "=kube-dns"}, []string{"x.example"}, "not an IP address"},
		{"dns client with bad ndots", DNSClient, []string{EnvDNSServer + "=127.0.0.1", EnvDNSNdots + "=x"}, []string{"x.example"}, "not a non-negative number"},
		{"memory hog without size", MemoryHog, nil, nil, "--size: required"},
		{"memory hog with a bad size", MemoryHog, []string{"SIZE=lots"}, nil, `--size "lots"`},
		{"upstream with a bad answer", UpstreamDNS, nil, []string{"--answer", "x.example"}, "want NAME=IPv4"},
		{"upstream with an IPv6 answer", UpstreamDNS, nil, []string{"--answer", "x.example=::1"}, "not an IPv4 address"},
		{"upstream with a bad default", UpstreamDNS, nil, []string{"--default", "ignore"}, `default "ignore"`},
		{"upstream with a config it cannot read", UpstreamDNS, nil, []string{"--config", "/"}, "read upstream config"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			vars := tc.vars
			if vars == nil {
				vars = []string{}
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			err := Run(ctx, tc.program, Env{Vars: vars}, tc.args)
			if err == nil || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "\n") {
				t.Errorf("err = %v, want one line containing %q", err, tc.want)
			}
		})
	}
}

func TestUpstreamDNSStartsWithoutItsConfigFileAndPicksItUp(t *testing.T) {
	cfg := filepath.Join(t.TempDir(), "upstream-dns.yaml")
	s, addr := startUpstream(t, "--config", cfg)
	s.waitLog(t, `msg="config file absent; using the flags until it appears"`)
	if r, err := query(t, addr, "api.payments.example", time.Second); err != nil || r.Rcode != dns.RcodeNameError {
		t.Fatalf("before the file: %v, %v; want NXDOMAIN", r, err)
	}
	if err := WriteUpstreamConfig(cfg, UpstreamConfig{ServFail: []string{"payments.example"}}); err != nil {
		t.Fatal(err)
	}
	s.waitLog(t, `msg="config reloaded" answer=0 servfail=payments.example`)
	if r, err := query(t, addr, "api.payments.example", time.Second); err != nil || r.Rcode != dns.RcodeServerFailure {
		t.Fatalf("after the file: %v, %v; want SERVFAIL", r, err)
	}
}
