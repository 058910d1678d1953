package drain

import (
	"fmt"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/kdiag/kdiag/pkg/cluster"
	ct "github.com/kdiag/kdiag/pkg/cluster/clustertest"
)

// poolSnapshot builds nodes nodes (half in pool a, the one drained), each
// running perNode pods of Deployments of 10 replicas under minAvailable 1
// budgets, every pod requesting 100m CPU.
func poolSnapshot(nodes, perNode int) (*cluster.Snapshot, []string) {
	s := ct.Snapshot()
	var pool []string
	for i := 0; i < nodes; i++ {
		n := ct.ReadyNode(fmt.Sprintf("n%04d", i))
		n.Labels["pool"] = "b"
		if i < nodes/2 {
			n.Labels["pool"] = "a"
			pool = append(pool, n.Name)
		}
		n.Status.Allocatable = corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("64"), corev1.ResourceMemory: resource.MustParse("256Gi")}
		s.Nodes = append(s.Nodes, n)
	}
	total := nodes * perNode
	for d := 0; d*10 < total; d++ {
		lbls := map[string]string{"app": fmt.Sprintf("app%d", d)}
		dep, rs := ct.Deployment("shop", lbls["app"], 10, lbls)
		var on []string
		for k := 0; k < 10 && d*10+k < total; k++ {
			on = append(on, s.Nodes[(d*10+k)%nodes].Name)
		}
		pods := ct.ReplicaPods(dep, rs, on...)
		for i := range pods {
			pods[i].Spec.Containers[0].Resources.Requests = corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("100m")}
		}
		s.Deployments, s.ReplicaSets, s.Pods = append(s.Deployments, dep), append(s.ReplicaSets, rs), append(s.Pods, pods...)
		s.PodDisruptionBudgets = append(s.PodDisruptionBudgets, ct.PDBStatus(ct.MinAvailable(ct.PDB("shop", lbls["app"], ct.PDBSelector(lbls)), 1), 10, 1, 10, 9))
	}
	return s, pool
}

// BenchmarkCheckPool drains half of a 200-node cluster with 30 pods a node.
func BenchmarkCheckPool(b *testing.B) {
	s, pool := poolSnapshot(200, 30)
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if rep := Check(s, pool, Options{}); rep.Stalls {
			b.Fatalf("unexpected stall: %+v", rep.Blockers[0])
		}
	}
}
