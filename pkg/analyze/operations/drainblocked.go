package operations

import (
	"fmt"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"

	"github.com/kdiag/kdiag/pkg/analyze/internal/evidence"
	"github.com/kdiag/kdiag/pkg/cluster"
	"github.com/kdiag/kdiag/pkg/findings"
	"github.com/kdiag/kdiag/pkg/pdb"
)

// drainBlocked reports cordoned nodes that still run pods the eviction API
// would refuse: a drain (or the upgrade, scale-down or repair behind it) is
// stuck there now, not merely at risk.
func (a *analysis) drainBlocked() []findings.Finding {
	if !a.s.Has(cluster.ResNodes) {
		return nil
	}
	nodes := make([]*corev1.Node, 0)
	for i := range a.s.Nodes {
		if a.s.Nodes[i].Spec.Unschedulable {
			nodes = append(nodes, &a.s.Nodes[i])
		}
	}
	sort.Slice(nodes, func(i, j int) bool { return nodes[i].Name < nodes[j].Name })
	var out []findings.Finding
	for _, n := range nodes {
		if f, ok := a.drainBlockedOne(n); ok {
			out = append(out, f)
		}
	}
	return out
}

func (a *analysis) drainBlockedOne(n *corev1.Node) (findings.Finding, bool) {
	var blocked []blockedPod
	for _, pod := range a.ix.PodsOnNode(n.Name) {
		if isDaemonOrMirror(pod) {
			continue // drains skip them
		}
		if v := pdb.Evict(pod, a.cov.PDBsOf(pod)); !v.Allowed {
			blocked = append(blocked, blockedPod{pod, v})
		}
	}
	if len(blocked) == 0 {
		return findings.Finding{}, false
	}
	sort.Slice(blocked, func(i, j int) bool {
		return ref(blocked[i].pod.Namespace, blocked[i].pod.Name) < ref(blocked[j].pod.Namespace, blocked[j].pod.Name)
	})

	ev := []string{"spec.unschedulable=true (cordoned, as a drain does first)"}
	for _, t := range n.Spec.Taints {
		if t.Key == corev1.TaintNodeUnschedulable && t.TimeAdded != nil {
			ev = append(ev, fmt.Sprintf("taint %s:%s added %s", t.Key, t.Effect, evidence.Ago(a.now, t.TimeAdded.Time)))
		}
	}
	var budgets []*policyv1.PodDisruptionBudget
	seen := map[*policyv1.PodDisruptionBudget]bool{}
	var lines []string
	for _, bp := range blocked {
		pods := ref(bp.pod.Namespace, bp.pod.Name)
		covering := a.cov.PDBsOf(bp.pod)
		for _, p := range covering {
			if !seen[p] {
				seen[p] = true
				budgets = append(budgets, p)
			}
		}
		if bp.verdict.PDB != nil {
			p := bp.verdict.PDB
			lines = append(lines, fmt.Sprintf("%s: HTTP %d from PodDisruptionBudget %s (disruptionsAllowed=%d): %s",
				pods, bp.verdict.Code, ref(p.Namespace, p.Name), p.Status.DisruptionsAllowed, evidence.Short(bp.verdict.Message)))
		} else {
			names := make([]string, len(covering))
			for i, p := range covering {
				names[i] = p.Name
			}
			lines = append(lines, fmt.Sprintf("%s: HTTP %d, covered by %s (%s): %s",
				pods, bp.verdict.Code, evidence.Plural(len(covering), "PodDisruptionBudget"), strings.Join(names, ", "), evidence.Short(bp.verdict.Message)))
		}
	}
	if len(lines) > evidence.MaxListed {
		lines = append(lines[:evidence.MaxListed], fmt.Sprintf("... and %d more pods refused", len(lines)-evidence.MaxListed))
	}
	ev = append(ev, lines...)
	if !evidence.Gapped(a.s, cluster.ResEvents, "") {
		if g := a.nodeDrainEvents(n.Name); g != nil {
			ev = append(ev, fmt.Sprintf("%s of failed evictions or drains recorded on the node, last %s (see eviction-failed)",
				evidence.Plural(int(g.count), "event"), evidence.Ago(a.now, g.last.Time)))
		}
	}

	first := blocked[0]
	why := "refused"
	if first.verdict.PDB != nil {
		why = "PodDisruptionBudget " + ref(first.verdict.PDB.Namespace, first.verdict.PDB.Name) + " allows 0 disruptions"
		if first.verdict.PDB.Status.ObservedGeneration < first.verdict.PDB.Generation {
			why = "PodDisruptionBudget " + ref(first.verdict.PDB.Namespace, first.verdict.PDB.Name) + " has a stale status"
		}
	} else if first.verdict.Code == 500 {
		why = "covered by more than one PodDisruptionBudget"
	}
	title := fmt.Sprintf("Node %s is cordoned but its drain cannot finish: the eviction API refuses %s (%s: %s)",
		n.Name, evidence.Plural(len(blocked), "pod"), ref(first.pod.Namespace, first.pod.Name), why)

	rem := []findings.Remediation{
		findings.Inspect("See which pods a drain of the node would fail to evict (server-side dry run: nothing is cordoned or evicted)",
			fmt.Sprintf("kubectl drain %s --ignore-daemonsets --delete-emptydir-data --dry-run=server", n.Name)),
	}
	rem = append(rem, showBudgets(budgets,
		"; its pdb-blocks-disruption or pod-multiple-pdbs finding carries the dry-run-verified fixes (scale the workload or relax the budget)")...)
	return findings.Finding{
		ID: idDrainBlocked, Severity: findings.Critical, Area: findings.AreaOperations,
		Object:   findings.ObjectRef{Kind: "Node", Name: n.Name},
		Title:    title,
		Evidence: ev,
		Explanation: "A drain cordons the node, then evicts its pods through the eviction API and retries every refusal until its timeout. " +
			"These pods are refused, so the drain, and the node-pool upgrade, scale-down or repair waiting on it, stalls with the node " +
			"cordoned and taking no new pods. Fix the budgets, then the retrying drain proceeds by itself.",
		Remediation: rem,
	}, true
}
