package operations

import (
	"fmt"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/kdiag/kdiag/pkg/cluster"
	ct "github.com/kdiag/kdiag/pkg/cluster/clustertest"
)

// bigSnapshot builds 1,000 nodes and 30,000 pods in 3,000 Deployments of
// 10 replicas, each with a budget, spread over namespaces namespaces; every
// tenth budget is a blocking minAvailable: 10, every tenth node is cordoned
// and has a failed-drain event.
func bigSnapshot(namespaces int) *cluster.Snapshot {
	s := ct.Snapshot()
	for i := range 1000 {
		n := ct.ReadyNode(fmt.Sprintf("node-%04d", i))
		if i%10 == 0 {
			ct.Cordon(&n, time.Hour)
			s.Events = append(s.Events, ct.NodeEvent(n.Name, corev1.EventTypeWarning, "ScaleDownFailed", "failed to drain the node, aborting ScaleDown", time.Minute, 3))
		}
		s.Nodes = append(s.Nodes, n)
	}
	pod := 0
	for d := range 3000 {
		ns := fmt.Sprintf("ns-%03d", d%namespaces)
		lbls := map[string]string{"app": fmt.Sprintf("app-%04d", d), "tier": "backend"}
		dep, rs := ct.Deployment(ns, fmt.Sprintf("app-%04d", d), 10, lbls)
		s.Deployments = append(s.Deployments, dep)
		s.ReplicaSets = append(s.ReplicaSets, rs)
		nodes := make([]string, 10)
		for i := range nodes {
			nodes[i] = fmt.Sprintf("node-%04d", pod%1000)
			pod++
		}
		s.Pods = append(s.Pods, ct.ReplicaPods(dep, rs, nodes...)...)
		p := ct.PDBStatus(ct.MinAvailable(ct.PDB(ns, dep.Name, ct.PDBSelector(map[string]string{"app": lbls["app"]})), 9), 10, 9, 10, 1)
		if d%10 == 0 {
			p = ct.PDBStatus(ct.MinAvailable(ct.PDB(ns, dep.Name, ct.PDBSelector(map[string]string{"app": lbls["app"]})), 10), 10, 10, 10, 0)
		}
		s.PodDisruptionBudgets = append(s.PodDisruptionBudgets, p)
	}
	return s
}

func benchmarkAnalyze(b *testing.B, namespaces int) {
	snaps := make([]*cluster.Snapshot, b.N)
	for i := range snaps {
		snaps[i] = bigSnapshot(namespaces)
	}
	b.ReportAllocs()
	b.ResetTimer()
	var n int
	for i := range b.N {
		n = len(Analyze(snaps[i]))
	}
	b.ReportMetric(float64(n), "findings")
}

// BenchmarkAnalyze1000Nodes30000Pods spreads the workloads over 100
// namespaces.
func BenchmarkAnalyze1000Nodes30000Pods(b *testing.B) { benchmarkAnalyze(b, 100) }

// BenchmarkAnalyzeOneNamespace puts all 30,000 pods and 3,000 budgets in a
// single namespace, the worst case for selector matching.
func BenchmarkAnalyzeOneNamespace(b *testing.B) { benchmarkAnalyze(b, 1) }
