package drain

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/kdiag/kdiag/pkg/cluster"
	ct "github.com/kdiag/kdiag/pkg/cluster/clustertest"
)

// world is a small cluster: nodes n1 and n2 (pool a, drained) and n3 (pool
// b, the spare), and Deployment web whose pods run on the given nodes under
// one budget.
type world struct {
	spare func(*corev1.Node) // mutates n3
	pods  func([]corev1.Pod) // mutates web's pods
	pdb   func(*policyv1.PodDisruptionBudget)
	extra func(s *cluster.Snapshot)
	on    []string // nodes of web's pods
	repl  int32
	// budget status: expected, desired, current, allowed
	st [4]int32
}

func (w world) snapshot() *cluster.Snapshot {
	s := ct.Snapshot()
	for _, n := range []string{"n1", "n2", "n3"} {
		node := ct.ReadyNode(n)
		node.Labels["pool"] = "a"
		node.Status.Allocatable = corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("4"), corev1.ResourceMemory: resource.MustParse("8Gi")}
		if n == "n3" {
			node.Labels["pool"] = "b"
			if w.spare != nil {
				w.spare(&node)
			}
		}
		s.Nodes = append(s.Nodes, node)
	}
	lbls := map[string]string{"app": "web"}
	d, rs := ct.Deployment("shop", "web", w.repl, lbls)
	pods := ct.ReplicaPods(d, rs, w.on...)
	if w.pods != nil {
		w.pods(pods)
	}
	s.Deployments, s.ReplicaSets, s.Pods = append(s.Deployments, d), append(s.ReplicaSets, rs), append(s.Pods, pods...)
	p := ct.PDBStatus(ct.MinAvailable(ct.PDB("shop", "web", ct.PDBSelector(lbls)), 1), w.st[0], w.st[1], w.st[2], w.st[3])
	if w.pdb != nil {
		w.pdb(&p)
	}
	s.PodDisruptionBudgets = append(s.PodDisruptionBudgets, p)
	if w.extra != nil {
		w.extra(s)
	}
	return s
}

func TestCheck(t *testing.T) {
	cordon := func(n *corev1.Node) { n.Spec.Unschedulable = true }
	pinToA := func(ps []corev1.Pod) {
		for i := range ps {
			ps[i].Spec.NodeSelector = map[string]string{"pool": "a"}
		}
	}
	type want struct {
		reason  string
		pod     string
		rolling bool
		spentBy int
		fixes   []string // substrings of remediation commands, in any order
		noScale bool
	}
	tests := []struct {
		name  string
		w     world
		opts  Options
		wants []want
	}{
		{
			name: "seed: one replica under minAvailable 1 blocks now; scale to 2 or relax",
			w:    world{on: []string{"n1"}, repl: 1, st: [4]int32{1, 1, 1, 0}},
			wants: []want{{reason: ReasonDisruptionBudget, pod: "shop/web-5d8f7c-0",
				fixes: []string{"kubectl scale deployment/web -n shop --replicas=2", `kubectl patch pdb web -n shop --type=merge -p '{"spec":{"maxUnavailable":1,"minAvailable":null}}'`}}},
		},
		{
			name: "seed pinned to the drained nodes: relax, not scale (new replicas would be stranded)",
			w:    world{on: []string{"n1"}, repl: 1, st: [4]int32{1, 1, 1, 0}, pods: pinToA},
			wants: []want{{reason: ReasonDisruptionBudget, pod: "shop/web-5d8f7c-0", noScale: true,
				fixes: []string{`'{"spec":{"maxUnavailable":1,"minAvailable":null}}'`, "kubectl get nodes"}}},
		},
		{
			name: "two replicas with a spare node: replacements keep the budget",
			w:    world{on: []string{"n1", "n2"}, repl: 2, st: [4]int32{2, 1, 2, 1}},
		},
		{
			name: "two replicas, spare node cordoned: the second pod stalls (rolling)",
			w:    world{on: []string{"n1", "n2"}, repl: 2, st: [4]int32{2, 1, 2, 1}, spare: cordon},
			wants: []want{{reason: ReasonDisruptionBudget, pod: "shop/web-5d8f7c-1", rolling: true, spentBy: 1,
				fixes: []string{`'{"spec":{"minAvailable":0}}'`, "kubectl get nodes"}}},
		},
		{
			name: "two replicas on one node, spare NotReady: stalls on the same node",
			w: world{on: []string{"n1", "n1"}, repl: 2, st: [4]int32{2, 1, 2, 1}, spare: func(n *corev1.Node) {
				ct.SetNodeCondition(n, corev1.NodeReady, corev1.ConditionFalse, "KubeletNotReady", "", 0)
			}},
			wants: []want{{reason: ReasonDisruptionBudget, pod: "shop/web-5d8f7c-1", rolling: true, spentBy: 1}},
		},
		{
			name:  "nodeSelector pins pods to the drained pool: stall",
			w:     world{on: []string{"n1", "n2"}, repl: 2, st: [4]int32{2, 1, 2, 1}, pods: pinToA},
			wants: []want{{reason: ReasonDisruptionBudget, pod: "shop/web-5d8f7c-1", rolling: true, spentBy: 1}},
		},
		{
			name: "untolerated taint on the spare: stall",
			w: world{on: []string{"n1", "n2"}, repl: 2, st: [4]int32{2, 1, 2, 1}, spare: func(n *corev1.Node) {
				n.Spec.Taints = []corev1.Taint{{Key: "dedicated", Value: "gpu", Effect: corev1.TaintEffectNoSchedule}}
			}},
			wants: []want{{reason: ReasonDisruptionBudget, pod: "shop/web-5d8f7c-1", rolling: true, spentBy: 1}},
		},
		{
			name: "tolerated taint on the spare: passes",
			w: world{on: []string{"n1", "n2"}, repl: 2, st: [4]int32{2, 1, 2, 1},
				spare: func(n *corev1.Node) {
					n.Spec.Taints = []corev1.Taint{{Key: "dedicated", Value: "gpu", Effect: corev1.TaintEffectNoSchedule}}
				},
				pods: func(ps []corev1.Pod) {
					for i := range ps {
						ps[i].Spec.Tolerations = []corev1.Toleration{{Key: "dedicated", Operator: corev1.TolerationOpExists}}
					}
				}},
		},
		{
			name: "no room on the spare for the CPU requests: stall",
			w: world{on: []string{"n1", "n2"}, repl: 2, st: [4]int32{2, 1, 2, 1},
				pods: func(ps []corev1.Pod) {
					for i := range ps {
						ps[i].Spec.Containers[0].Resources.Requests = corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("3")}
					}
				},
				extra: func(s *cluster.Snapshot) {
					big := withController(ct.RunningPod("other", "big", "n3", nil), "apps/v1", "ReplicaSet", "big")
					big.Spec.Containers[0].Resources.Requests = corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("2")}
					s.Pods = append(s.Pods, big)
				}},
			wants: []want{{reason: ReasonDisruptionBudget, pod: "shop/web-5d8f7c-1", rolling: true, spentBy: 1, fixes: []string{`'{"spec":{"minAvailable":0}}'`}}},
		},
		{
			name: "Pending pod is evicted without a budget check",
			w: world{on: []string{"n1"}, repl: 1, st: [4]int32{1, 1, 0, 0}, pods: func(ps []corev1.Pod) {
				ps[0].Status.Phase = corev1.PodPending
				ct.SetPodReady(&ps[0], false)
			}},
		},
		{
			name: "unready pod under IfHealthyBudget and a short budget: blocked, AlwaysAllow proposed",
			w: world{on: []string{"n1", "n3"}, repl: 2, st: [4]int32{2, 2, 1, 0},
				pdb:  func(p *policyv1.PodDisruptionBudget) { p.Spec.MinAvailable.IntVal = 2 },
				pods: func(ps []corev1.Pod) { ct.SetPodReady(&ps[0], false) }},
			wants: []want{{reason: ReasonDisruptionBudget, pod: "shop/web-5d8f7c-0", fixes: []string{`"unhealthyPodEvictionPolicy":"AlwaysAllow"`}}},
		},
		{
			name: "unready pod under AlwaysAllow: evicted",
			w: world{on: []string{"n1", "n3"}, repl: 2, st: [4]int32{2, 2, 1, 0},
				pdb: func(p *policyv1.PodDisruptionBudget) {
					p.Spec.MinAvailable.IntVal = 2
					pol := policyv1.AlwaysAllow
					p.Spec.UnhealthyPodEvictionPolicy = &pol
				},
				pods: func(ps []corev1.Pod) { ct.SetPodReady(&ps[0], false) }},
		},
		{
			name: "stale status: refused until the controller catches up",
			w: world{on: []string{"n1"}, repl: 2, st: [4]int32{2, 1, 2, 1},
				pdb: func(p *policyv1.PodDisruptionBudget) { p.Generation = 2 }},
			wants: []want{{reason: ReasonStaleStatus, pod: "shop/web-5d8f7c-0", fixes: []string{"kubectl get events"}}},
		},
		{
			name: "pod under two budgets: HTTP 500",
			w: world{on: []string{"n1"}, repl: 2, st: [4]int32{2, 1, 2, 1}, extra: func(s *cluster.Snapshot) {
				s.PodDisruptionBudgets = append(s.PodDisruptionBudgets, ct.PDBStatus(ct.MaxUnavailable(ct.PDB("shop", "all", ct.PDBSelector(map[string]string{"app": "web"})), 1), 2, 1, 2, 1))
			}},
			wants: []want{{reason: ReasonMultiplePDBs, pod: "shop/web-5d8f7c-0"}},
		},
		{
			name: "DaemonSet pod without --ignore-daemonsets: refused",
			w: world{on: []string{"n3"}, repl: 1, st: [4]int32{1, 0, 1, 1}, extra: func(s *cluster.Snapshot) {
				s.DaemonSets = append(s.DaemonSets, ct.DaemonSetOf("kube-system", "agent", nil))
				p := withController(ct.RunningPod("kube-system", "agent-x", "n1", nil), "apps/v1", "DaemonSet", "agent")
				s.Pods = append(s.Pods, p)
			}},
			wants: []want{{reason: ReasonDaemonSet, pod: "kube-system/agent-x", fixes: []string{"--ignore-daemonsets"}}},
		},
		{
			name: "DaemonSet pod with --ignore-daemonsets: skipped",
			w: world{on: []string{"n3"}, repl: 1, st: [4]int32{1, 0, 1, 1}, extra: func(s *cluster.Snapshot) {
				s.DaemonSets = append(s.DaemonSets, ct.DaemonSetOf("kube-system", "agent", nil))
				s.Pods = append(s.Pods, withController(ct.RunningPod("kube-system", "agent-x", "n1", nil), "apps/v1", "DaemonSet", "agent"))
			}},
			opts: Options{IgnoreDaemonSets: true},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rep := Check(tc.w.snapshot(), []string{"n1", "n2"}, tc.opts)
			if rep.Stalls != (len(tc.wants) > 0) || len(rep.Blockers) != len(tc.wants) {
				t.Fatalf("got %d blockers (stalls=%v), want %d: %+v\nsteps: %+v", len(rep.Blockers), rep.Stalls, len(tc.wants), rep.Blockers, rep.Steps)
			}
			for i, w := range tc.wants {
				b := rep.Blockers[i]
				if b.Reason != w.reason || b.Pod != w.pod || b.Rolling != w.rolling || len(b.SpentBy) != w.spentBy {
					t.Errorf("blocker %d = %+v, want reason %s pod %s rolling %v spentBy %d", i, b, w.reason, w.pod, w.rolling, w.spentBy)
				}
				var cmds []string
				for _, r := range b.Remediation {
					cmds = append(cmds, r.Command)
				}
				all := strings.Join(cmds, "\n")
				if (w.rolling || w.noScale) && strings.Contains(all, "kubectl scale") {
					t.Errorf("blocker %d: scaling proposed for a rolling stall, where the evicted pods do not come back:\n%s", i, all)
				}
				for _, f := range w.fixes {
					if !strings.Contains(all, f) {
						t.Errorf("blocker %d: no fix containing %q in:\n%s", i, f, all)
					}
				}
			}
		})
	}
}
