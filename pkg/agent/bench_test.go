package agent

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/kdiag/kdiag/pkg/lab/labtest"
)

// BenchmarkKmsgLineToNodeCondition measures the time from writing a
// kernel-log line to /dev/kmsg to the condition being visible on the Node
// through the real API server. One op is one set line and one clear line;
// the reported ms/transition is the mean of both.
func BenchmarkKmsgLineToNodeCondition(b *testing.B) {
	c := labtest.Cluster(b)
	cs := kubernetes.NewForConfigOrDie(c.RESTConfig())
	ctx := context.Background()
	marker := fmt.Sprintf("kb%06d", rand.IntN(1000000))
	files := []string{writeConfig(b, b.TempDir(), "bench.json", testConfig(marker))}
	startAgent(b, c.RESTConfig(), Options{ConfigFiles: files, DisablePSI: true})
	wait := func(status corev1.ConditionStatus) {
		for {
			cond, err := nodeCondition(ctx, cs, "ReadonlyFilesystem")
			if err == nil && cond.Status == status {
				return
			}
			time.Sleep(2 * time.Millisecond)
		}
	}
	b.ResetTimer()
	for b.Loop() {
		kmsg(b, "EXT4-fs ("+marker+"): Remounting filesystem read-only")
		wait(corev1.ConditionTrue)
		kmsg(b, "EXT4-fs ("+marker+"): re-mounted r/w")
		wait(corev1.ConditionFalse)
	}
	b.ReportMetric(float64(b.Elapsed().Milliseconds())/float64(2*b.N), "ms/transition")
}

// BenchmarkAPIWritesAtRest runs an idle agent with a 1 s heartbeat for 5 s
// and reports the API writes per heartbeat, and from that the writes per
// minute at the default 5-minute heartbeat.
func BenchmarkAPIWritesAtRest(b *testing.B) {
	c := labtest.Cluster(b)
	marker := fmt.Sprintf("kw%06d", rand.IntN(1000000))
	files := []string{writeConfig(b, b.TempDir(), "bench.json", testConfig(marker))}
	for b.Loop() {
		a, stop := startAgent(b, c.RESTConfig(), Options{ConfigFiles: files, DisablePSI: true, Heartbeat: time.Second})
		time.Sleep(500 * time.Millisecond) // the start-up patch
		start := a.Patches()
		time.Sleep(5 * time.Second)
		perHeartbeat := float64(a.Patches()-start) / 5
		stop()
		b.ReportMetric(perHeartbeat, "writes/heartbeat")
		b.ReportMetric(perHeartbeat/5, "writes/min@5m-heartbeat")
	}
}
