package workload

import (
	"fmt"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/kdiag/kdiag/pkg/cluster"
	ct "github.com/kdiag/kdiag/pkg/cluster/clustertest"
)

// bigSnapshot builds deployments x replicas pods spread over 1,000 nodes
// with some trouble: every 40th pod crash-looping, every 60th failing to
// pull, every 90th unschedulable, every 25th failing readiness probes.
func bigSnapshot(deployments, replicas int) *cluster.Snapshot {
	s := ct.Snapshot()
	for d := 0; d < deployments; d++ {
		ns := fmt.Sprintf("ns-%d", d%50)
		lbls := map[string]string{"app": fmt.Sprint(d)}
		dep, rs := ct.Deployment(ns, fmt.Sprintf("app-%d", d), int32(replicas), lbls)
		s.Deployments, s.ReplicaSets = append(s.Deployments, dep), append(s.ReplicaSets, rs)
		for r := 0; r < replicas; r++ {
			k := d*replicas + r
			name := fmt.Sprintf("app-%d-%d", d, r)
			p := ct.RunningPod(ns, name, fmt.Sprintf("node-%04d", k%1000), lbls)
			ct.Created(&p, time.Hour)
			switch {
			case k%40 == 1:
				ct.CrashLooping(&p, "app", int32(k%9), 1, "Error", "boom", time.Minute)
			case k%60 == 2:
				ct.WaitingContainer(&p, "app", "ImagePullBackOff", "Back-off pulling image")
			case k%90 == 3:
				p = ct.PendingPod(ns, name, lbls, 20*time.Minute)
				ct.Unschedulable(&p, "0/1000 nodes are available: 1000 Insufficient cpu.", 20*time.Minute)
			case k%25 == 4:
				s.Events = append(s.Events, ct.PodEvent(ns, name, "app", corev1.EventTypeWarning, "Unhealthy",
					"Readiness probe failed: HTTP probe failed with statuscode: 500", time.Minute, 3))
			}
			ct.OwnPod(&p, rs)
			s.Pods = append(s.Pods, p)
		}
	}
	return s
}

// BenchmarkAnalyze measures the workload analyzer on 30,000 pods.
func BenchmarkAnalyze(b *testing.B) {
	base := bigSnapshot(3000, 10)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		s := &cluster.Snapshot{TakenAt: base.TakenAt, Pods: base.Pods, Events: base.Events,
			Deployments: base.Deployments, ReplicaSets: base.ReplicaSets}
		b.StartTimer()
		if len(Analyze(s)) == 0 {
			b.Fatal("no findings")
		}
	}
}
