package dns_test

import (
	"context"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/kdiag/kdiag/pkg/enrich"
	"github.com/kdiag/kdiag/pkg/gadget"
	"github.com/kdiag/kdiag/pkg/gadget/dns"
	"github.com/kdiag/kdiag/pkg/gadget/internal/testbed"
)

// BenchmarkQueries measures sustained DNS throughput between two pods of
// the test bed (UDP over veth + bridge), first untraced, then traced with a
// namespace filter that selects both pods, in the same run. Each query is 4
// events: the client's query and response, and the server's. Reported:
// queries/s traced and untraced, the slowdown, events/s, lost events, and
// the CPU the reader (parsing, pairing, enrichment) spends per event.
func BenchmarkQueries(b *testing.B) { benchQueries(b, false) }

// BenchmarkQueriesFilteredOut runs the same load while the gadget traces
// only another (idle) pod: the cost of the hooks for traffic outside the
// filter, which the kernel drops before copying anything.
func BenchmarkQueriesFilteredOut(b *testing.B) { benchQueries(b, true) }

func benchQueries(b *testing.B, filteredOut bool) {
	bed := testbed.New(b)
	client := bed.AddPod("bench", "client", testbed.PodOptions{})
	server := bed.AddPod("bench", "coredns", testbed.PodOptions{})
	bed.AddPod("idle", "idle", testbed.PodOptions{})
	filter := enrich.Filter{Namespace: "bench"}
	if filteredOut {
		filter = enrich.Filter{Namespace: "idle"}
	}
	bed.StartReady(server, "dns-server", ":53")
	addr := net.JoinHostPort(server.IPv4.String(), "53")
	n := b.N
	run := func() time.Duration {
		start := time.Now()
		p := bed.Start(client, "dns-flood", addr, fmt.Sprint(n), "64")
		if err := p.WaitLine(fmt.Sprintf("done sent=%d recv=%d", n, n), 10*time.Minute); err != nil {
			b.Fatal(err)
		}
		return time.Since(start)
	}
	untraced := run()

	en := enrich.New(enrich.Options{Source: enrich.NewStaticSource(bed.CorePods("node-1"), nil), NodeName: "node-1"})
	tr, err := dns.New(dns.Options{Options: gadget.Options{Enricher: en, Filter: filter}})
	if err != nil {
		b.Fatal(err)
	}
	defer tr.Close()
	// Kernel-side cost: the kernel times BPF programs only while asked to.
	if stats, err := ebpf.EnableStats(unix.BPF_STATS_RUN_TIME); err == nil {
		defer stats.Close()
	}
	ctx, cancel := context.WithCancel(context.Background())
	var responses, unanswered uint64
	done := make(chan gadget.Stats)
	cpu0 := testbed.ReadCPU()
	go func() {
		st, err := tr.Run(ctx, func(ev dns.Event) {
			switch {
			case ev.Unanswered:
				unanswered++
			case ev.QR == "R" && ev.LatencyNs > 0:
				responses++
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
	time.Sleep(200 * time.Millisecond)
	cancel()
	st := <-done
	cpu := testbed.ReadCPU().Sub(cpu0)
	kernelTime, kernelRuns := tr.KernelCost()

	b.ReportMetric(float64(n)/traced.Seconds(), "queries/s")
	b.ReportMetric(float64(n)/untraced.Seconds(), "untraced-queries/s")
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
	if st.Events < uint64(4*n) || responses != uint64(2*n) || unanswered != 0 {
		b.Errorf("events %d (want %d), paired responses %d (want %d), unanswered %d (want 0)", st.Events, 4*n, responses, 2*n, unanswered)
	}
}
