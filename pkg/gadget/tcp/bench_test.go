package tcp_test

import (
	"context"
	"fmt"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/kdiag/kdiag/pkg/enrich"
	"github.com/kdiag/kdiag/pkg/gadget"
	"github.com/kdiag/kdiag/pkg/gadget/internal/testbed"
	"github.com/kdiag/kdiag/pkg/gadget/tcp"
)

// BenchmarkConnects measures sustained TCP connects per second between two
// pods of the test bed (veth + bridge), first untraced, then traced with a
// namespace filter, in the same run. Each connection is 4 events (connect,
// accept, two closes). Reported: connects/s traced and untraced, the
// slowdown, events/s, lost events, and the CPU the reader spends per event.
func BenchmarkConnects(b *testing.B) { benchConnects(b, false) }

// BenchmarkConnectsFilteredOut runs the same load while the gadget traces
// only another (idle) pod: the cost of the hooks for connections outside
// the filter, which the kernel drops before reserving any event.
func BenchmarkConnectsFilteredOut(b *testing.B) { benchConnects(b, true) }

func benchConnects(b *testing.B, filteredOut bool) {
	bed := testbed.New(b)
	client := bed.AddPod("bench", "client", testbed.PodOptions{})
	server := bed.AddPod("bench", "server", testbed.PodOptions{})
	bed.AddPod("idle", "idle", testbed.PodOptions{})
	filter := enrich.Filter{Namespace: "bench"}
	if filteredOut {
		filter = enrich.Filter{Namespace: "idle"}
	}
	bed.StartReady(server, "tcp-listen", ":8080")
	addr := net.JoinHostPort(server.IPv4.String(), "8080")
	n := b.N
	run := func() time.Duration {
		start := time.Now()
		p := bed.Start(client, "tcp-connect", addr, fmt.Sprint(n), "8")
		if err := p.WaitLine(fmt.Sprintf("done ok=%d fail=0", n), 10*time.Minute); err != nil {
			b.Fatal(err)
		}
		return time.Since(start)
	}
	untraced := run()

	en := enrich.New(enrich.Options{Source: enrich.NewStaticSource(bed.CorePods("node-1"), nil), NodeName: "node-1"})
	tr, err := tcp.New(tcp.Options{Options: gadget.Options{Enricher: en, Filter: filter}})
	if err != nil {
		b.Fatal(err)
	}
	defer tr.Close()
	// Kernel-side cost: the kernel times BPF programs only while asked to.
	if stats, err := ebpf.EnableStats(unix.BPF_STATS_RUN_TIME); err == nil {
		defer stats.Close()
	}
	ctx, cancel := context.WithCancel(context.Background())
	var events, closes atomic.Uint64
	var connects, accepts, clientCloses, serverCloses int
	done := make(chan gadget.Stats)
	cpu0 := testbed.ReadCPU()
	go func() {
		st, err := tr.Run(ctx, func(e tcp.Event) {
			events.Add(1)
			if e.Type == tcp.TypeClose {
				closes.Add(1)
			}
			// Read only after Run returned.
			switch {
			case e.Type == tcp.TypeConnect && e.Error == "":
				connects++
			case e.Type == tcp.TypeAccept:
				accepts++
			case e.Type == tcp.TypeClose && e.K8s.Pod == "client":
				clientCloses++
			case e.Type == tcp.TypeClose && e.K8s.Pod == "server":
				serverCloses++
			}
		})
		if err != nil {
			b.Error(err)
		}
		done <- st
	}()
	b.ResetTimer()
	traced := run()
	b.StopTimer()
	// Wait for the last closes: a FIN that needs retransmitting can take
	// seconds (at most 10s).
	for deadline := time.Now().Add(10 * time.Second); !filteredOut && closes.Load() < uint64(2*n) && time.Now().Before(deadline); {
		time.Sleep(50 * time.Millisecond)
	}
	cancel()
	st := <-done
	cpu := testbed.ReadCPU().Sub(cpu0)
	kernelTime, kernelRuns := tr.KernelCost()

	b.ReportMetric(float64(n)/traced.Seconds(), "connects/s")
	b.ReportMetric(float64(n)/untraced.Seconds(), "untraced-connects/s")
	b.ReportMetric(100*(traced.Seconds()/untraced.Seconds()-1), "slowdown-%")
	b.ReportMetric(float64(st.Events)/traced.Seconds(), "events/s")
	b.ReportMetric(float64(st.Lost), "lost")
	b.ReportMetric(float64(st.Missed), "missed")
	if st.Events > 0 {
		b.ReportMetric(float64(cpu.Self.Nanoseconds())/float64(st.Events), "reader-cpu-ns/event")
		b.ReportMetric(float64(kernelTime.Nanoseconds())/float64(st.Events), "bpf-ns/event")
	}
	if kernelRuns > 0 {
		b.ReportMetric(float64(kernelTime.Nanoseconds())/float64(kernelRuns), "bpf-ns/run")
	}
	if st.Lost != 0 || st.Missed != 0 {
		b.Errorf("lost %d events, kernel skipped %d hook runs", st.Lost, st.Missed)
	}
	if filteredOut {
		if st.Events != 0 {
			b.Errorf("%d events passed a filter that selects an idle pod", st.Events)
		}
		return
	}
	// A server socket of the untraced run may still close during this one
	// (its FIN retransmitted), hence "at least" for the server's closes.
	if connects != n || accepts != n || clientCloses != n || serverCloses < n {
		b.Errorf("want %d connects, accepts and client closes, at least %d server closes; got %d, %d, %d, %d; stats %+v",
			n, n, connects, accepts, clientCloses, serverCloses, st)
	}
}
