package tcp_test

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kdiag/kdiag/pkg/enrich"
	"github.com/kdiag/kdiag/pkg/gadget"
	"github.com/kdiag/kdiag/pkg/gadget/internal/testbed"
	"github.com/kdiag/kdiag/pkg/gadget/tcp"
)

func TestMain(m *testing.M) {
	testbed.RunHelperIfRequested()
	os.Exit(m.Run())
}

const node = "node-1"

// collector gathers events from a running tracer.
type collector struct {
	mu     sync.Mutex
	events []tcp.Event
	stats  gadget.Stats
	err    error
	done   chan struct{}
	cancel context.CancelFunc
	tracer *tcp.Tracer
}

func startTracer(t *testing.T, opts tcp.Options) *collector {
	t.Helper()
	tr, err := tcp.New(opts)
	if err != nil {
		t.Fatalf("tcp.New: %v", err)
	}
	t.Cleanup(func() { _ = tr.Close() })
	ctx, cancel := context.WithCancel(context.Background())
	c := &collector{done: make(chan struct{}), cancel: cancel, tracer: tr}
	go func() {
		defer close(c.done)
		st, err := tr.Run(ctx, func(ev tcp.Event) {
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

// waitFor waits until some event satisfies match.
func (c *collector) waitFor(t *testing.T, what string, match func(tcp.Event) bool) tcp.Event {
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
	return tcp.Event{}
}

func (c *collector) dump() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var b strings.Builder
	for _, ev := range c.events {
		fmt.Fprintf(&b, "  %s %s %s -> %s pid=%d comm=%s k8s=%+v\n", ev.Type, ev.Error, ev.Src, ev.Dst, ev.PID, ev.Comm, ev.K8s)
	}
	return b.String()
}

func TestConnectRefusedIsLabelledWithClientPod(t *testing.T) {
	for _, flavour := range []string{"tp_btf", "tracepoint"} {
		t.Run(flavour, func(t *testing.T) { testConnectRefused(t, flavour) })
	}
}

func testConnectRefused(t *testing.T, flavour string) {
	bed := testbed.New(t)
	client := bed.AddPod("shop", "storefront-7d9f", testbed.PodOptions{})
	server := bed.AddPod("shop", "orders-5c4b", testbed.PodOptions{})
	noise := bed.AddPod("other", "noise-1", testbed.PodOptions{})
	src := enrich.NewStaticSource(bed.CorePods(node), nil)
	en := enrich.New(enrich.Options{Source: src, NodeName: node})

	c := startTracer(t, tcp.Options{ForceTracepoints: flavour == "tracepoint", Options: gadget.Options{
		Enricher: en,
		Filter:   enrich.Filter{Namespace: "shop", PodPrefix: "storefront"},
	}})
	if c.tracer.Flavour() != flavour {
		t.Fatalf("attached as %s, want %s", c.tracer.Flavour(), flavour)
	}

	bed.StartReady(server, "tcp-listen", ":8080")
	// The noise pod's refused connect must be filtered out.
	noiseProc := bed.Start(noise, "tcp-connect", net.JoinHostPort(server.IPv4.String(), "9090"))
	if err := noiseProc.WaitLine("done", 10*time.Second); err != nil {
		t.Fatal(err)
	}
	refused := bed.Start(client, "tcp-connect", net.JoinHostPort(server.IPv4.String(), "9090"))
	if err := refused.WaitLine("done ok=0 fail=1", 10*time.Second); err != nil {
		t.Fatal(err)
	}
	ok := bed.Start(client, "tcp-connect", net.JoinHostPort(server.IPv4.String(), "8080"))
	if err := ok.WaitLine("done ok=1 fail=0", 10*time.Second); err != nil {
		t.Fatal(err)
	}

	ev := c.waitFor(t, "ECONNREFUSED connect", func(ev tcp.Event) bool {
		return ev.Type == tcp.TypeConnect && ev.Error == "ECONNREFUSED"
	})
	want := enrich.K8s{Node: node, Namespace: "shop", Pod: "storefront-7d9f", Container: "main", PodUID: client.UID}
	if ev.K8s != want {
		t.Errorf("refused connect labelled %+v, want %+v", ev.K8s, want)
	}
	if got := ev.Dst.String(); got != "pod/shop/orders-5c4b:9090" {
		t.Errorf("dst = %s, want pod/shop/orders-5c4b:9090", got)
	}
	if got := ev.Src.K8s.String(); got != "pod/shop/storefront-7d9f" {
		t.Errorf("src k8s = %s, want pod/shop/storefront-7d9f", got)
	}
	if ev.PID == 0 || ev.Comm == "" {
		t.Errorf("refused connect has no process: pid=%d comm=%q", ev.PID, ev.Comm)
	}
	if ev.Netns != client.Netns {
		t.Errorf("netns = %d, want the client's %d", ev.Netns, client.Netns)
	}

	// IPv6: the same refusal over the pods' fd00:251::/64 addresses.
	refused6 := bed.Start(client, "tcp-connect", net.JoinHostPort(server.IPv6.String(), "9090"))
	if err := refused6.WaitLine("done ok=0 fail=1", 10*time.Second); err != nil {
		t.Fatal(err)
	}
	ev6 := c.waitFor(t, "IPv6 ECONNREFUSED connect", func(ev tcp.Event) bool {
		return ev.Type == tcp.TypeConnect && ev.Error == "ECONNREFUSED" && ev.Dst.Addr.Is6()
	})
	if ev6.Dst.Addr != server.IPv6 || ev6.Src.Addr != client.IPv6 || ev6.K8s.Pod != "storefront-7d9f" {
		t.Errorf("IPv6 refused connect: %s -> %s k8s=%+v", ev6.Src, ev6.Dst, ev6.K8s)
	}

	c.waitFor(t, "successful connect", func(ev tcp.Event) bool {
		return ev.Type == tcp.TypeConnect && ev.Error == "" && ev.Dst.Port == 8080 && ev.K8s.Pod == "storefront-7d9f"
	})
	c.waitFor(t, "close", func(ev tcp.Event) bool {
		return ev.Type == tcp.TypeClose && ev.Dst.Port == 8080
	})
	c.waitFor(t, "RST received", func(ev tcp.Event) bool {
		return ev.Type == tcp.TypeRSTReceived && ev.Dst.Port == 9090
	})
	c.stop()
	for _, ev := range c.events {
		if ev.K8s.Pod != "storefront-7d9f" {
			t.Errorf("event outside the filter: %s %s -> %s k8s=%+v", ev.Type, ev.Src, ev.Dst, ev.K8s)
		}
	}
	if c.err != nil {
		t.Errorf("Run: %v", c.err)
	}
}

func TestUnreachableAndFailuresOnly(t *testing.T) {
	bed := testbed.New(t)
	client := bed.AddPod("shop", "storefront-1", testbed.PodOptions{})
	server := bed.AddPod("shop", "orders-1", testbed.PodOptions{})
	// One SYN retry: a connect to a silent address fails within seconds.
	if out, err := exec.Command("ip", "netns", "exec", client.NetnsName, "sysctl", "-qw", "net.ipv4.tcp_syn_retries=1").CombinedOutput(); err != nil {
		t.Fatalf("sysctl: %v: %s", err, out)
	}
	en := enrich.New(enrich.Options{Source: enrich.NewStaticSource(bed.CorePods(node), nil), NodeName: node})
	c := startTracer(t, tcp.Options{FailuresOnly: true, Options: gadget.Options{
		Enricher: en, Filter: enrich.Filter{Namespace: "shop"},
	}})
	bed.StartReady(server, "tcp-listen", ":8080")
	okConn := bed.Start(client, "tcp-connect", net.JoinHostPort(server.IPv4.String(), "8080"))
	if err := okConn.WaitLine("done ok=1", 10*time.Second); err != nil {
		t.Fatal(err)
	}
	// 10.251.0.250 is in the bed's subnet but nobody has it.
	silent := bed.Start(client, "tcp-connect", "10.251.0.250:80")
	if err := silent.WaitLine("done ok=0 fail=1", 20*time.Second); err != nil {
		t.Fatal(err)
	}
	ev := c.waitFor(t, "failed connect to a silent address", func(ev tcp.Event) bool {
		return ev.Type == tcp.TypeConnect && ev.Dst.Port == 80
	})
	if ev.Error != "EHOSTUNREACH" && ev.Error != "ETIMEDOUT" {
		t.Errorf("connect to a silent address failed with %q, want EHOSTUNREACH or ETIMEDOUT", ev.Error)
	}
	c.waitFor(t, "SYN retransmit", func(ev tcp.Event) bool {
		return ev.Type == tcp.TypeRetransmit && ev.Dst.Port == 80 && ev.K8s.Pod == "storefront-1"
	})
	c.stop()
	for _, ev := range c.events {
		if !ev.Failed() {
			t.Errorf("--failures-only let a success through: %s %s -> %s", ev.Type, ev.Src, ev.Dst)
		}
	}
}

func TestFloodIsCountedNotDropped(t *testing.T) {
	bed := testbed.New(t)
	client := bed.AddPod("flood", "client", testbed.PodOptions{})
	server := bed.AddPod("flood", "server", testbed.PodOptions{})
	en := enrich.New(enrich.Options{Source: enrich.NewStaticSource(bed.CorePods(node), nil), NodeName: node})
	var lostSeen uint64
	tr, err := tcp.New(tcp.Options{Options: gadget.Options{
		Enricher:  en,
		Filter:    enrich.Filter{Namespace: "flood"},
		RingBytes: 16 * 4096, // small on purpose: about 680 events fit
		OnLost:    func(lost, _ uint64) { lostSeen = lost },
	}})
	if err != nil {
		t.Fatalf("tcp.New: %v", err)
	}
	t.Cleanup(func() { _ = tr.Close() })
	bed.StartReady(server, "tcp-listen", ":8080")
	const conns = 1000
	p := bed.Start(client, "tcp-connect", net.JoinHostPort(server.IPv4.String(), "8080"), fmt.Sprint(conns), "4")
	if err := p.WaitLine(fmt.Sprintf("done ok=%d fail=0", conns), 60*time.Second); err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond) // let the last closes happen
	// Nobody read the ring while the connections ran: most events could
	// not be queued. Each connection is a connect, an accept and two closes.
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	st, err := tr.Run(ctx, func(tcp.Event) {})
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	if st.Lost == 0 {
		t.Fatalf("a full ring buffer lost nothing? stats %+v", st)
	}
	if lostSeen != st.Lost {
		t.Errorf("OnLost reported %d, stats say %d", lostSeen, st.Lost)
	}
	// 4 per connection, none missing: lost events are counted. The tracer
	// is unfiltered, so retransmits on a loaded machine and the TCP
	// traffic of whatever else runs on it (other test packages run in
	// parallel: labs, real pods) add a few; double counting would add
	// thousands.
	if got := st.Events + st.Filtered + st.Lost + st.Missed; got < 4*conns || got > 4*conns+conns/10 {
		t.Errorf("events %d + filtered %d + lost %d + missed %d = %d, want %d (4 per connection) plus at most %d others",
			st.Events, st.Filtered, st.Lost, st.Missed, got, 4*conns, conns/10)
	}
}

func TestFilterMatchingNothingIsAnError(t *testing.T) {
	testbed.RequireKernel(t)
	en := enrich.New(enrich.Options{Source: enrich.NewStaticSource(nil, nil), NodeName: node})
	_, err := tcp.New(tcp.Options{Options: gadget.Options{Enricher: en, Filter: enrich.Filter{Namespace: "nope"}}})
	if err == nil || !strings.Contains(err.Error(), "no pod matches") {
		t.Fatalf("err = %v, want a 'no pod matches' error", err)
	}
}

// TestV1OnlyPodsAreLabelledAndFiltered: on a hybrid host whose containers
// are only in v1 hierarchies, sockets carry the cgroup2 root; events are
// still labelled (process cgroups, network namespace) and filtered in the
// kernel by network namespace.
func TestV1OnlyPodsAreLabelledAndFiltered(t *testing.T) {
	bed := testbed.New(t)
	client := bed.AddPod("shop", "storefront-v1", testbed.PodOptions{V1Only: true})
	server := bed.AddPod("shop", "orders-v1", testbed.PodOptions{V1Only: true})
	noise := bed.AddPod("other", "noise-v1", testbed.PodOptions{V1Only: true})
	if client.MemoryCgroup == "" {
		t.Skip("no v1 memory hierarchy on this host")
	}
	// Like pause containers, these hold the pods' namespaces from the start.
	bed.StartReady(client, "sleep")
	bed.StartReady(noise, "sleep")
	bed.StartReady(server, "tcp-listen", ":8080")
	en := enrich.New(enrich.Options{Source: enrich.NewStaticSource(bed.CorePods(node), nil), NodeName: node})
	c := startTracer(t, tcp.Options{Options: gadget.Options{Enricher: en, Filter: enrich.Filter{Namespace: "shop"}}})
	for _, p := range []*testbed.Pod{noise, client} {
		pr := bed.Start(p, "tcp-connect", net.JoinHostPort(server.IPv4.String(), "9090"))
		if err := pr.WaitLine("done ok=0 fail=1", 10*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	ok := bed.Start(client, "tcp-connect", net.JoinHostPort(server.IPv4.String(), "8080"))
	if err := ok.WaitLine("done ok=1", 10*time.Second); err != nil {
		t.Fatal(err)
	}
	ev := c.waitFor(t, "refused connect", func(ev tcp.Event) bool { return ev.Error == "ECONNREFUSED" })
	if ev.K8s.Pod != "storefront-v1" || ev.K8s.Container != "main" || ev.CgroupID != 1 {
		t.Errorf("refused connect: k8s %+v cgroup %d (want the pod, from its v1 cgroups; cgroup2 root 1)", ev.K8s, ev.CgroupID)
	}
	acc := c.waitFor(t, "accept", func(ev tcp.Event) bool { return ev.Type == tcp.TypeAccept })
	if acc.K8s.Pod != "orders-v1" {
		t.Errorf("accept (no process context) labelled %+v, want orders-v1 from its netns", acc.K8s)
	}
	c.stop()
	for _, ev := range c.events {
		if ev.K8s.Namespace != "shop" {
			t.Errorf("event outside the filter: %s %s -> %s k8s=%+v", ev.Type, ev.Src, ev.Dst, ev.K8s)
		}
	}
	if c.stats.Filtered != 0 {
		t.Errorf("%d events reached user space only to be filtered: the kernel filter did not hold", c.stats.Filtered)
	}
}
