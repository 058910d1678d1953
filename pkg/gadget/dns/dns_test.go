package dns_test

import (
	"context"
	"fmt"
	"net"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kdiag/kdiag/pkg/enrich"
	"github.com/kdiag/kdiag/pkg/gadget"
	"github.com/kdiag/kdiag/pkg/gadget/dns"
	"github.com/kdiag/kdiag/pkg/gadget/internal/testbed"
)

func TestMain(m *testing.M) {
	testbed.RunHelperIfRequested()
	os.Exit(m.Run())
}

const node = "node-1"

type collector struct {
	mu     sync.Mutex
	events []dns.Event
	stats  gadget.Stats
	err    error
	done   chan struct{}
	cancel context.CancelFunc
}

func startTracer(t *testing.T, opts dns.Options) *collector {
	t.Helper()
	tr, err := dns.New(opts)
	if err != nil {
		t.Fatalf("dns.New: %v", err)
	}
	t.Cleanup(func() { _ = tr.Close() })
	ctx, cancel := context.WithCancel(context.Background())
	c := &collector{done: make(chan struct{}), cancel: cancel}
	go func() {
		defer close(c.done)
		st, err := tr.Run(ctx, func(ev dns.Event) {
			c.mu.Lock()
			c.events = append(c.events, ev)
			c.mu.Unlock()
		})
		c.mu.Lock()
		c.stats, c.err = st, err
		c.mu.Unlock()
	}()
	t.Cleanup(c.stop)
	return c
}

func (c *collector) stop() {
	c.cancel()
	<-c.done
}

func (c *collector) waitFor(t *testing.T, what string, match func(dns.Event) bool) dns.Event {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		c.mu.Lock()
		for _, ev := range c.events {
			if match(ev) {
				c.mu.Unlock()
				return ev
			}
		}
		c.mu.Unlock()
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("no %s event within 10s; got:\n%s", what, c.dump())
	return dns.Event{}
}

func (c *collector) dump() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var b strings.Builder
	for _, ev := range c.events {
		fmt.Fprintf(&b, "  %s %s id=%d %s %s rcode=%s %v %s -> %s pid=%d k8s=%+v\n",
			ev.Type, ev.Direction, ev.ID, ev.Name, ev.QType, ev.RCode, ev.Answers, ev.Src, ev.Dst, ev.PID, ev.K8s)
	}
	return b.String()
}

func query(t *testing.T, bed *testbed.Bed, p *testbed.Pod, server, proto, name, qtype, want string) {
	t.Helper()
	pr := bed.Start(p, "dns-query", server, proto, name, qtype)
	if err := pr.WaitLine(want, 10*time.Second); err != nil {
		t.Fatalf("query %s %s: %v", proto, name, err)
	}
}

func TestAnsweredFailedAndUnansweredQueries(t *testing.T) {
	bed := testbed.New(t)
	client := bed.AddPod("shop", "checkout-6b8d", testbed.PodOptions{})
	coredns := bed.AddPod("kube-system", "coredns-abc", testbed.PodOptions{})
	noise := bed.AddPod("other", "noise-1", testbed.PodOptions{})
	en := enrich.New(enrich.Options{Source: enrich.NewStaticSource(bed.CorePods(node), nil), NodeName: node})
	c := startTracer(t, dns.Options{
		Timeout: time.Second,
		Options: gadget.Options{Enricher: en, Filter: enrich.Filter{Namespace: "shop"}},
	})
	bed.StartReady(coredns, "dns-server", ":53")
	v4 := net.JoinHostPort(coredns.IPv4.String(), "53")
	v6 := net.JoinHostPort(coredns.IPv6.String(), "53")

	query(t, bed, noise, v4, "udp", "ok-noise.example.com", "A", "result rcode=RCodeSuccess")
	query(t, bed, client, v4, "udp", "ok.example.com", "A", "result rcode=RCodeSuccess answers=2")
	query(t, bed, client, v4, "udp", "fail.example.com", "A", "result rcode=RCodeServerFailure")
	query(t, bed, client, v4, "udp", "drop.example.com", "A", "result timeout")
	query(t, bed, client, v6, "udp", "ok6.example.com", "AAAA", "result rcode=RCodeSuccess answers=1")
	query(t, bed, client, v4, "tcp", "oktcp.example.com", "A", "result rcode=RCodeSuccess answers=2")

	wantK8s := enrich.K8s{Node: node, Namespace: "shop", Pod: "checkout-6b8d", Container: "main", PodUID: client.UID}
	ok := c.waitFor(t, "answered response", func(ev dns.Event) bool {
		return ev.QR == "R" && ev.Name == "ok.example.com."
	})
	if ok.RCode != "Success" || ok.Error != "" {
		t.Errorf("ok.example.com: rcode %q error %q, want Success and no error", ok.RCode, ok.Error)
	}
	if !slices.Equal(ok.Answers, []string{"192.0.2.1", "192.0.2.2"}) {
		t.Errorf("ok.example.com answers = %v", ok.Answers)
	}
	if ok.LatencyNs <= 0 || ok.LatencyNs > int64(time.Second) {
		t.Errorf("ok.example.com latency = %dns, want a measured round trip", ok.LatencyNs)
	}
	if got := ok.Nameserver.String(); got != "pod/kube-system/coredns-abc:53" {
		t.Errorf("nameserver = %s, want pod/kube-system/coredns-abc:53", got)
	}
	if ok.K8s != wantK8s {
		t.Errorf("response labelled %+v, want %+v", ok.K8s, wantK8s)
	}
	if ok.PID == 0 || ok.Comm == "" || ok.Direction != "ingress" || ok.QType != "A" {
		t.Errorf("response: pid=%d comm=%q direction=%s qtype=%s", ok.PID, ok.Comm, ok.Direction, ok.QType)
	}
	if ok.Netns != client.Netns || ok.CgroupID == 0 {
		t.Errorf("response netns %d cgroup %d, want netns %d and a cgroup id", ok.Netns, ok.CgroupID, client.Netns)
	}
	c.waitFor(t, "query", func(ev dns.Event) bool {
		return ev.QR == "Q" && ev.Type == dns.TypeQuery && ev.Name == "ok.example.com." && ev.Direction == "egress" && ev.PID != 0
	})

	fail := c.waitFor(t, "SERVFAIL response", func(ev dns.Event) bool {
		return ev.QR == "R" && ev.Name == "fail.example.com."
	})
	if fail.RCode != "ServerFailure" || fail.Error != "ServerFailure" || len(fail.Answers) != 0 {
		t.Errorf("fail.example.com: rcode %q error %q answers %v", fail.RCode, fail.Error, fail.Answers)
	}

	un := c.waitFor(t, "unanswered", func(ev dns.Event) bool { return ev.Unanswered })
	if un.Name != "drop.example.com." || un.QR != "Q" || un.Type != dns.TypeUnanswered || un.LatencyNs < int64(time.Second) {
		t.Errorf("unanswered event: %+v", un)
	}
	if un.K8s != wantK8s || un.Nameserver.Port != 53 {
		t.Errorf("unanswered event labelled %+v nameserver %s", un.K8s, un.Nameserver)
	}

	v6resp := c.waitFor(t, "IPv6 response", func(ev dns.Event) bool { return ev.QR == "R" && ev.Name == "ok6.example.com." })
	if !slices.Equal(v6resp.Answers, []string{"2001:db8::1"}) || v6resp.QType != "AAAA" || !v6resp.Src.Addr.Is6() {
		t.Errorf("IPv6 response: %+v", v6resp)
	}
	tcpResp := c.waitFor(t, "TCP response", func(ev dns.Event) bool { return ev.QR == "R" && ev.Name == "oktcp.example.com." })
	if tcpResp.Protocol != "tcp" || tcpResp.LatencyNs <= 0 {
		t.Errorf("TCP response: protocol %s latency %d", tcpResp.Protocol, tcpResp.LatencyNs)
	}

	c.stop()
	unanswered := 0
	for _, ev := range c.events {
		if ev.K8s.Pod != "checkout-6b8d" {
			t.Errorf("event outside the filter: %s %s k8s=%+v", ev.Type, ev.Name, ev.K8s)
		}
		if ev.Unanswered {
			unanswered++
		}
	}
	if unanswered != 1 {
		t.Errorf("%d unanswered events, want 1:\n%s", unanswered, c.dump())
	}
	if c.err != nil {
		t.Errorf("Run: %v", c.err)
	}
}

func TestOtherPorts(t *testing.T) {
	bed := testbed.New(t)
	client := bed.AddPod("shop", "checkout-1", testbed.PodOptions{})
	server := bed.AddPod("dns", "resolver-1", testbed.PodOptions{})
	en := enrich.New(enrich.Options{Source: enrich.NewStaticSource(bed.CorePods(node), nil), NodeName: node})
	c := startTracer(t, dns.Options{Ports: []uint16{5353}, Timeout: time.Minute, Options: gadget.Options{Enricher: en, Filter: enrich.Filter{PodPrefix: "checkout"}}})
	bed.StartReady(server, "dns-server", ":5353")
	query(t, bed, client, net.JoinHostPort(server.IPv4.String(), "5353"), "udp", "ok.port.test", "A", "result rcode=RCodeSuccess")
	c.waitFor(t, "response on port 5353", func(ev dns.Event) bool {
		return ev.QR == "R" && ev.Name == "ok.port.test." && ev.Nameserver.Port == 5353
	})
	// A query still within its timeout when the trace stops is counted as
	// pending, not reported as unanswered and not forgotten.
	bed.Start(client, "dns-query", net.JoinHostPort(server.IPv4.String(), "5353"), "udp", "drop.port.test", "A")
	c.waitFor(t, "query that will not be answered", func(ev dns.Event) bool { return ev.QR == "Q" && ev.Name == "drop.port.test." })
	c.stop()
	if c.stats.Pending != 1 {
		t.Errorf("stats %+v: want 1 pending query", c.stats)
	}
	for _, ev := range c.events {
		if ev.Unanswered {
			t.Errorf("reported unanswered before its timeout: %+v", ev)
		}
	}
}

// TestUpstreamIgnoresSomeNames is the seed's DNS story: the client sees
// SERVFAIL from the cluster DNS server; a second trace in the DNS server's
// namespace shows its upstream never answering those names while it
// answers others.
func TestUpstreamIgnoresSomeNames(t *testing.T) {
	bed := testbed.New(t)
	client := bed.AddPod("shop", "checkout-1", testbed.PodOptions{})
	coredns := bed.AddPod("kube-system", "coredns-1", testbed.PodOptions{})
	upstream := bed.AddPod("corp-dns", "custom-dns-1", testbed.PodOptions{})
	en := enrich.New(enrich.Options{Source: enrich.NewStaticSource(bed.CorePods(node), nil), NodeName: node})
	clientView := startTracer(t, dns.Options{Timeout: 1500 * time.Millisecond,
		Options: gadget.Options{Enricher: en, Filter: enrich.Filter{Namespace: "shop"}}})
	dnsView := startTracer(t, dns.Options{Timeout: 1500 * time.Millisecond,
		Options: gadget.Options{Enricher: en, Filter: enrich.Filter{Namespace: "kube-system", PodPrefix: "coredns"}}})

	bed.StartReady(upstream, "dns-server", ":53")
	bed.StartReady(coredns, "dns-forwarder", ":53", net.JoinHostPort(upstream.IPv4.String(), "53"))
	server := net.JoinHostPort(coredns.IPv4.String(), "53")
	query(t, bed, client, server, "udp", "ok.shop.example.", "A", "result rcode=RCodeSuccess answers=2")
	query(t, bed, client, server, "udp", "drop.payments.example.", "A", "result rcode=RCodeServerFailure")

	fail := clientView.waitFor(t, "SERVFAIL seen by the client", func(ev dns.Event) bool {
		return ev.QR == "R" && ev.Name == "drop.payments.example." && ev.RCode == "ServerFailure"
	})
	if got := fail.Nameserver.String(); got != "pod/kube-system/coredns-1:53" {
		t.Errorf("client's nameserver = %s", got)
	}
	un := dnsView.waitFor(t, "upstream query never answered", func(ev dns.Event) bool {
		return ev.Unanswered && ev.Name == "drop.payments.example."
	})
	if got := un.Nameserver.String(); got != "pod/corp-dns/custom-dns-1:53" || un.K8s.Pod != "coredns-1" || un.Direction != "egress" {
		t.Errorf("unanswered upstream query: nameserver %s, pod %s, direction %s", got, un.K8s.Pod, un.Direction)
	}
	ok := dnsView.waitFor(t, "upstream answering other names", func(ev dns.Event) bool {
		return ev.QR == "R" && ev.Name == "ok.shop.example." && ev.Nameserver.Port == 53 && ev.Src.Addr == upstream.IPv4
	})
	if ok.RCode != "Success" || ok.LatencyNs <= 0 {
		t.Errorf("upstream answer: rcode %s latency %d", ok.RCode, ok.LatencyNs)
	}
	// The cluster DNS server's own view also shows it answering SERVFAIL.
	dnsView.waitFor(t, "SERVFAIL sent by the DNS server", func(ev dns.Event) bool {
		return ev.QR == "R" && ev.Direction == "egress" && ev.Name == "drop.payments.example." && ev.RCode == "ServerFailure"
	})
	clientView.stop()
	for _, ev := range clientView.events {
		if ev.Unanswered {
			t.Errorf("the client's query was answered (SERVFAIL), yet: %+v", ev)
		}
	}
}

// TestLoopbackKeepsBothViews: client and server in one pod (a node-local
// cache, a sidecar) share cgroup, netns and addresses; each view still pairs
// its own query and response.
func TestLoopbackKeepsBothViews(t *testing.T) {
	bed := testbed.New(t)
	p := bed.AddPod("kube-system", "node-local-dns-1", testbed.PodOptions{})
	en := enrich.New(enrich.Options{Source: enrich.NewStaticSource(bed.CorePods(node), nil), NodeName: node})
	c := startTracer(t, dns.Options{Ports: []uint16{5353}, Options: gadget.Options{Enricher: en, Filter: enrich.Filter{Namespace: "kube-system"}}})
	bed.StartReady(p, "dns-server", "127.0.0.1:5353")
	query(t, bed, p, "127.0.0.1:5353", "udp", "ok.local.test", "A", "result rcode=RCodeSuccess")
	for _, dir := range []string{"ingress", "egress"} {
		ev := c.waitFor(t, dir+" response", func(ev dns.Event) bool {
			return ev.QR == "R" && ev.Name == "ok.local.test." && ev.Direction == dir
		})
		if ev.LatencyNs <= 0 || ev.PID == 0 || ev.K8s.Pod != "node-local-dns-1" {
			t.Errorf("%s response: latency %d pid %d pod %q", dir, ev.LatencyNs, ev.PID, ev.K8s.Pod)
		}
	}
}
