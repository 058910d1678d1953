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

// multiplePDBs reports pods covered by more than one budget, grouped by
// their workload and the set of budgets, because the eviction API refuses
// such pods outright (HTTP 500) whatever the budgets allow.
func (a *analysis) multiplePDBs() []findings.Finding {
	type group struct {
		ns    string
		owner cluster.Workload
		pdbs  []*policyv1.PodDisruptionBudget
		pods  []*corev1.Pod
	}
	groups := map[string]*group{}
	var keys []string
	for _, pod := range a.cov.MultiplyCovered() {
		pdbs := a.cov.PDBsOf(pod)
		owner := a.ix.OwnerOf(pod)
		names := make([]string, len(pdbs))
		for i, p := range pdbs {
			names[i] = p.Name
		}
		k := strings.Join([]string{pod.Namespace, owner.Kind, owner.Name, strings.Join(names, ",")}, "\x00")
		g := groups[k]
		if g == nil {
			g = &group{ns: pod.Namespace, owner: owner, pdbs: pdbs}
			groups[k] = g
			keys = append(keys, k)
		}
		g.pods = append(g.pods, pod)
	}
	sort.Strings(keys)
	out := make([]findings.Finding, 0, len(keys))
	for _, k := range keys {
		g := groups[k]
		names := make([]string, len(g.pdbs))
		for i, p := range g.pdbs {
			names[i] = p.Name
		}
		var subject string
		if g.owner.Kind == "Pod" {
			subject = "Pod " + ref(g.ns, g.owner.Name) + " is"
		} else {
			subject = fmt.Sprintf("%s of %s %s are", evidence.Plural(len(g.pods), "pod"), g.owner.Kind, ref(g.ns, g.owner.Name))
			if len(g.pods) == 1 {
				subject = fmt.Sprintf("1 pod of %s %s is", g.owner.Kind, ref(g.ns, g.owner.Name))
			}
		}
		title := fmt.Sprintf("%s covered by %d PodDisruptionBudgets (%s): the eviction API refuses to evict them, so drains stall",
			subject, len(g.pdbs), strings.Join(names, ", "))

		var ev []string
		for _, p := range g.pdbs {
			sel := pdb.SelectorString(p)
			if sel == "" {
				sel = "{} (every pod of the namespace)"
			}
			ev = append(ev, fmt.Sprintf("PodDisruptionBudget %s: selector %s, %s, status.disruptionsAllowed=%d",
				ref(p.Namespace, p.Name), sel, pdb.SpecString(p), p.Status.DisruptionsAllowed))
		}
		podLines := make([]string, len(g.pods))
		for i, p := range g.pods {
			podLines[i] = podOnNode(p)
		}
		ev = append(ev, "pods covered by all of them: "+evidence.Join(podLines))
		ev = append(ev, "the eviction API answers HTTP 500: \"This pod has more than one PodDisruptionBudget, which the eviction subresource does not support.\"")

		obj := findings.ObjectRef{Kind: g.owner.Kind, Namespace: g.ns, Name: g.owner.Name}
		out = append(out, findings.Finding{
			ID: idMultiplePDBs, Severity: findings.Warning, Area: findings.AreaOperations,
			Object:   obj,
			Title:    title,
			Evidence: ev,
			Explanation: "The eviction API supports exactly one PodDisruptionBudget per pod and refuses pods matched by several with an " +
				"error, even when every budget would allow the disruption; kubectl drain, cluster-autoscaler and node-pool upgrades then " +
				"retry until they time out. It usually happens when a chart ships its own budget and someone adds a broader one " +
				"(often with an empty selector, which selects the whole namespace).",
			Remediation: []findings.Remediation{
				findings.Inspect("Compare the budgets that overlap", fmt.Sprintf("kubectl get pdb -n %s %s -o wide", g.ns, strings.Join(names, " "))),
				findings.Inspect("Show the labels of a pod they both select", fmt.Sprintf("kubectl get pod -n %s %s --show-labels", g.ns, g.pods[0].Name)),
				findings.Inspect("Keep one budget for these pods: delete the redundant one or narrow its selector (for example a matchExpressions NotIn on the other workload's label) so that they no longer match; kdiag proposes no automatic fix because which budget should win is your choice",
					fmt.Sprintf("kubectl get pdb -n %s -o custom-columns=NAME:.metadata.name,SELECTOR:.spec.selector,MIN:.spec.minAvailable,MAX:.spec.maxUnavailable", g.ns)),
			},
		})
	}
	return out
}
