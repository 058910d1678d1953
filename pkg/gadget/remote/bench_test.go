package remote_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"k8s.io/client-go/kubernetes"

	"github.com/kdiag/kdiag/pkg/agentclient"
	"github.com/kdiag/kdiag/pkg/gadget/internal/testbed"
	"github.com/kdiag/kdiag/pkg/gadget/remote"
	"github.com/kdiag/kdiag/pkg/gadget/render"
	"github.com/kdiag/kdiag/pkg/gadget/wire"
	"github.com/kdiag/kdiag/pkg/lab/labtest"
)

// BenchmarkClusterDNS measures cluster mode end to end: a DNS flood
// between two pods of a lab node, traced by that node's agent (the real
// agent with the gadget server), streamed as JSON lines through the lab's
// kube-apiserver pod proxy, merged and written by the CLI side
// (remote.Run with the -o json writer). The flood runs untraced, then
// traced, in the same run; its window (queries in flight) sets the rate.
// Reported: queries/s traced and untraced, the slowdown, events/s received
// by the CLI side, events lost in the kernel ring buffer and dropped by the
// agent's send queue when the stream did not keep up, and the CPU this
// process (agent + CLI side; the API server is a separate process) spent
// per event. It fails when an event is unaccounted for (neither received
// nor counted as lost or dropped) or the kernel skipped a hook; losses
// themselves are reported, not failures: past some rate the stream through
// the API server cannot keep up, and the point is that they are counted.
func BenchmarkClusterDNS(b *testing.B) {
	for _, window := range []int{1, 8, 64} {
		b.Run(fmt.Sprintf("window=%d", window), func(b *testing.B) { benchClusterDNS(b, window) })
	}
}

func benchClusterDNS(b *testing.B, window int) {
	bed := testbed.New(b)
	c := labtest.Cluster(b)
	ctx := context.Background()
	cs := kubernetes.NewForConfigOrDie(c.RESTConfig())
	ns := fmt.Sprintf("bench-%d", time.Now().UnixNano()%100000)
	labtest.CreateNamespace(b, ctx, cs, ns)
	client := bed.AddPod(ns, "client", testbed.PodOptions{})
	coredns := bed.AddPod(ns, "coredns", testbed.PodOptions{})
	registerPod(b, ctx, cs, client, agentNode)
	registerPod(b, ctx, cs, coredns, agentNode)
	bed.StartReady(client, "sleep")
	bed.StartReady(coredns, "dns-server", ":53")
	startLabAgent(b, c, agentNode)

	addr := net.JoinHostPort(coredns.IPv4.String(), "53")
	n := b.N
	flood := func() time.Duration {
		start := time.Now()
		p := bed.Start(client, "dns-flood", addr, fmt.Sprint(n), fmt.Sprint(window))
		if err := p.WaitLine(fmt.Sprintf("done sent=%d recv=%d", n, n), 10*time.Minute); err != nil {
			b.Fatal(err)
		}
		return time.Since(start)
	}
	// The path must be up before the timed floods: a flood gives up after
	// 2 s without a response.
	for i := 0; ; i++ {
		q := bed.Start(client, "dns-query", addr, "udp", "ok.warmup.test.", "A")
		err := q.WaitLine("result rcode=RCodeSuccess", 5*time.Second)
		if err == nil {
			break
		}
		if i == 4 {
			b.Fatalf("the DNS server does not answer: %v", err)
		}
	}
	untraced := flood()

	var received atomic.Uint64
	write, err := remote.Writer(wire.DNS, render.JSON, io.Discard)
	if err != nil {
		b.Fatal(err)
	}
	started := make(chan struct{})
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan struct{})
	var res remote.Result
	var runErr error
	go func() {
		defer close(done)
		res, runErr = remote.Run(runCtx, remote.Options{
			Agents: agentclient.New(cs, agentclient.Options{}), Gadget: wire.DNS, Nodes: []string{agentNode},
			Params: wire.Params{Namespace: ns},
			Event: func(node string, line []byte) error {
				received.Add(1)
				return write(node, line)
			},
			Notice: func(m string) {
				if strings.Contains(m, "tracing on") {
					close(started)
				} else {
					b.Log(m)
				}
			},
		})
	}()
	select {
	case <-started:
	case <-done:
		b.Fatalf("trace ended before starting: %v", runErr)
	}
	cpu0 := testbed.ReadCPU()
	b.ResetTimer()
	traced := flood()
	b.StopTimer()
	// Wait until the stream has delivered everything (4 events a query)
	// but what was counted as dropped, or nothing has arrived for 3 s.
	last, stall := received.Load(), time.Now()
	for received.Load() < uint64(4*n) && time.Since(stall) < 3*time.Second {
		time.Sleep(50 * time.Millisecond)
		if r := received.Load(); r != last {
			last, stall = r, time.Now()
		}
	}
	cpu := testbed.ReadCPU().Sub(cpu0)
	// Let a progress line carry the agent's final counts, then stop.
	time.Sleep(1500 * time.Millisecond)
	cancel()
	<-done
	if runErr != nil {
		b.Fatalf("remote.Run: %v", runErr)
	}
	nr := res.Nodes[0]
	got := received.Load()
	b.ReportMetric(float64(n)/traced.Seconds(), "queries/s")
	b.ReportMetric(float64(n)/untraced.Seconds(), "untraced-queries/s")
	b.ReportMetric(100*(traced.Seconds()/untraced.Seconds()-1), "slowdown-%")
	b.ReportMetric(float64(got)/traced.Seconds(), "events/s")
	b.ReportMetric(float64(nr.Stats.Lost), "lost")
	b.ReportMetric(float64(nr.Dropped), "dropped")
	b.ReportMetric(float64(nr.Stats.Missed), "missed")
	if got > 0 {
		b.ReportMetric(float64(cpu.Self.Nanoseconds())/float64(got), "agent+cli-cpu-ns/event")
	}
	if nr.Stats.Missed != 0 {
		b.Errorf("the kernel skipped %d hook runs", nr.Stats.Missed)
	}
	// With kernel losses the count of events is not 4 per query any more
	// (a query whose response was lost becomes an unanswered event), but
	// every event the agent sent must have arrived.
	if (nr.Stats.Lost == 0 && got+nr.Dropped != uint64(4*n)) || nr.Stats.Events != got {
		b.Errorf("%d events: received %d, lost %d, dropped %d: some unaccounted for (the agent sent %d)", 4*n, got, nr.Stats.Lost, nr.Dropped, nr.Stats.Events)
	}
}
