package operations

import (
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"

	"github.com/kdiag/kdiag/pkg/cluster"
	ct "github.com/kdiag/kdiag/pkg/cluster/clustertest"
)

var (
	nginxLabels = map[string]string{"app": "nginx"}
	webLabels   = map[string]string{"app": "web"}
)

// base returns a snapshot with three Ready nodes, the seed's single-replica
// nginx under minAvailable: 1 on n1, and a healthy neighbour: web with 3
// replicas under minAvailable: 2. Statuses are what the disruption
// controller writes for them.
func base() *cluster.Snapshot {
	s := ct.Snapshot()
	s.Nodes = append(s.Nodes, ct.ReadyNode("n1"), ct.ReadyNode("n2"), ct.ReadyNode("n3"))
	addDeploy(s, "shop", "nginx", 1, nginxLabels, "n1")
	addDeploy(s, "shop", "web", 3, webLabels, "n1", "n2", "n3")
	s.PodDisruptionBudgets = append(s.PodDisruptionBudgets,
		ct.PDBStatus(ct.MinAvailable(ct.PDB("shop", "nginx", ct.PDBSelector(nginxLabels)), 1), 1, 1, 1, 0),
		ct.PDBStatus(ct.MinAvailable(ct.PDB("shop", "web", ct.PDBSelector(webLabels)), 2), 3, 2, 3, 1),
	)
	return s
}

func addDeploy(s *cluster.Snapshot, ns, name string, replicas int32, lbls map[string]string, nodes ...string) {
	d, rs := ct.Deployment(ns, name, replicas, lbls)
	s.Deployments = append(s.Deployments, d)
	s.ReplicaSets = append(s.ReplicaSets, rs)
	s.Pods = append(s.Pods, ct.ReplicaPods(d, rs, nodes...)...)
}

func podByName(s *cluster.Snapshot, name string) *corev1.Pod {
	for i := range s.Pods {
		if s.Pods[i].Name == name {
			return &s.Pods[i]
		}
	}
	panic("no pod " + name)
}

func pdbByName(s *cluster.Snapshot, name string) *policyv1.PodDisruptionBudget {
	for i := range s.PodDisruptionBudgets {
		if s.PodDisruptionBudgets[i].Name == name {
			return &s.PodDisruptionBudgets[i]
		}
	}
	panic("no pdb " + name)
}
