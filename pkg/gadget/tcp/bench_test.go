package tcp_test

import (
	"context"
	"fmt"
	"net"
	"testing"
	"time"

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
func BenchmarkConnects(b *testing.B) {
	bed := testbed.New(b)
	client := bed.AddPod("bench", "client", testbed.PodOptions{})
	server := bed.AddPod("bench", "server", testbed.PodOptions{})
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
	tr, err := tcp.New(tcp.Options{Options: gadget.Options{Enricher: en, Filter: enrich.Filter{Namespace: "bench"}}})
	if err != nil {
		b.Fatal(err)
	}
	defer tr.Close()
	ctx, cancel := context.WithCancel(context.Background())
	var events uint64
	done := make(chan gadget.Stats)
	cpu0 := testbed.ReadCPU()
	go func() {
		st, err := tr.Run(ctx, func(tcp.Event) { events++ })
		if err != nil {
			b.Error(err)
		}
		done <- st
	}()
	b.ResetTimer()
	traced := run()
	b.StopTimer()
	time.Sleep(300 * time.Millisecond) // the last closes
	cancel()
	st := <-done
	cpu := testbed.ReadCPU().Sub(cpu0)

	b.ReportMetric(float64(n)/traced.Seconds(), "connects/s")
	b.ReportMetric(float64(n)/untraced.Seconds(), "untraced-connects/s")
	b.ReportMetric(100*(traced.Seconds()/untraced.Seconds()-1), "slowdown-%")
	b.ReportMetric(float64(st.Events)/traced.Seconds(), "events/s")
	b.ReportMetric(float64(st.Lost), "lost")
	if st.Events > 0 {
		b.ReportMetric(float64(cpu.Self.Nanoseconds())/float64(st.Events), "reader-cpu-ns/event")
	}
	if st.Lost != 0 {
		b.Errorf("lost %d events", st.Lost)
	}
	if want := uint64(4 * n); st.Events+st.Filtered < want {
		b.Errorf("saw %d events, want at least %d", st.Events+st.Filtered, want)
	}
}
