package node

import (
	"fmt"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/kdiag/kdiag/pkg/cluster"
	ct "github.com/kdiag/kdiag/pkg/cluster/clustertest"
)

// bigSnapshot builds a cluster of nodes x podsPerNode pods in Deployments,
// with some trouble: every 10th node NotReady, every 7th under memory
// pressure, every 50th pod OOMKilled and every 100th evicted.
func bigSnapshot(nodes, podsPerNode int) *cluster.Snapshot {
	s := ct.Snapshot()
	for i := 0; i < nodes; i++ {
		name := fmt.Sprintf("node-%04d", i)
		n := ct.ReadyNode(name)
		ct.SetAllocatable(&n, "8", "32Gi", 110)
		switch {
		case i%10 == 0:
			n = ct.NotReadyNode(name, corev1.ConditionUnknown, "NodeStatusUnknown", "Kubelet stopped posting node status.", 15*time.Minute)
		case i%7 == 0:
			ct.SetNodeCondition(&n, corev1.NodeMemoryPressure, corev1.ConditionTrue, "KubeletHasInsufficientMemory", "", time.Minute)
		}
		s.Nodes = append(s.Nodes, n)
		s.Leases = append(s.Leases, ct.NodeLease(name, 3*time.Second))
	}
	deploys := nodes * podsPerNode / 10
	for d := 0; d < deploys; d++ {
		ns := fmt.Sprintf("ns-%d", d%50)
		dep, rs := ct.Deployment(ns, fmt.Sprintf("app-%d", d), 10, map[string]string{"app": fmt.Sprint(d)})
		dep.Spec.Template.Spec.Containers = []corev1.Container{{Name: "app"}}
		s.Deployments, s.ReplicaSets = append(s.Deployments, dep), append(s.ReplicaSets, rs)
		for r := 0; r < 10; r++ {
			k := d*10 + r
			node := fmt.Sprintf("node-%04d", k%nodes)
			name := fmt.Sprintf("app-%d-%d", d, r)
			var p corev1.Pod
			if k%100 == 99 {
				p = ct.EvictedPod(ns, name, node, "The node was low on resource: memory.", time.Duration(k)*time.Second)
			} else {
				p = ct.RunningPod(ns, name, node, map[string]string{"app": fmt.Sprint(d)})
				if k%3 != 0 {
					ct.SetMemory(&p, "app", "64Mi", "128Mi")
				}
				if k%50 == 0 {
					ct.OOMKilled(&p, "app", 3, time.Duration(k)*time.Second)
				}
			}
			ct.OwnPod(&p, rs)
			s.Pods = append(s.Pods, p)
		}
	}
	return s
}

// BenchmarkAnalyze measures the node analyzer on 1,000 nodes and 30,000 pods.
func BenchmarkAnalyze(b *testing.B) {
	base := bigSnapshot(1000, 30)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		s := &cluster.Snapshot{TakenAt: base.TakenAt, Nodes: base.Nodes, Pods: base.Pods, Leases: base.Leases,
			Deployments: base.Deployments, ReplicaSets: base.ReplicaSets}
		b.StartTimer()
		if len(Analyze(s)) == 0 {
			b.Fatal("no findings")
		}
	}
}
