package operations

import (
	"fmt"
	"maps"
	"slices"
	"sort"

	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"

	"github.com/kdiag/kdiag/pkg/analyze/internal/editdist"
	"github.com/kdiag/kdiag/pkg/analyze/internal/evidence"
	"github.com/kdiag/kdiag/pkg/cluster"
	"github.com/kdiag/kdiag/pkg/findings"
	"github.com/kdiag/kdiag/pkg/pdb"
)

// noMatchingPods reports budgets that select no pod of their namespace.
// Only namespaces whose pods were all read are judged.
func (a *analysis) noMatchingPods() []findings.Finding {
	var out []findings.Finding
	for _, p := range a.pdbs {
		if !a.podsKnown(p.Namespace) || len(a.cov.PodsOf(p)) > 0 {
			continue
		}
		out = append(out, a.noMatchingOne(p))
	}
	return out
}

func (a *analysis) noMatchingOne(p *policyv1.PodDisruptionBudget) findings.Finding {
	name := ref(p.Namespace, p.Name)
	sel := p.Spec.Selector
	var title string
	ev := []string{specLine(p, 0)}
	switch err := a.cov.SelectorError(p); {
	case err != nil:
		title = fmt.Sprintf("PodDisruptionBudget %s has an invalid selector and selects no pods", name)
		ev = append(ev, "selector error: "+evidence.Short(err.Error()))
	case sel == nil:
		title = fmt.Sprintf("PodDisruptionBudget %s has a null selector, which selects no pods in policy/v1", name)
		ev = append(ev, "spec.selector is null: in policy/v1 a null selector selects nothing (an empty selector {} would select every pod of the namespace)")
	case len(sel.MatchLabels) == 0 && len(sel.MatchExpressions) == 0:
		title = fmt.Sprintf("PodDisruptionBudget %s selects every pod of namespace %s ({}), but the namespace has no pods", name, p.Namespace)
	default:
		title = fmt.Sprintf("PodDisruptionBudget %s selects no pods (selector %s)", name, pdb.SelectorString(p))
		ev = append(ev, a.labelHints(p)...)
	}
	st := p.Status
	ev = append(ev, fmt.Sprintf("status: expectedPods=%d currentHealthy=%d disruptionsAllowed=%d", st.ExpectedPods, st.CurrentHealthy, st.DisruptionsAllowed))
	if !evidence.Gapped(a.s, cluster.ResEvents, p.Namespace) {
		ev = append(ev, evidence.LatestLines(a.now, a.ix.EventsFor("PodDisruptionBudget", p.Namespace, p.Name), 1,
			func(e *corev1.Event) bool { return e.Reason == "NoPods" })...)
	}
	return findings.Finding{
		ID: idNoMatchingPods, Severity: findings.Warning, Area: findings.AreaOperations,
		Object:   findings.ObjectRef{Kind: "PodDisruptionBudget", Namespace: p.Namespace, Name: p.Name},
		Title:    title,
		Evidence: ev,
		Explanation: "A budget that selects no pod protects nothing: the workload it was written for can lose all its pods at once " +
			"to a drain, an upgrade or a scale-down. The usual cause is a label typo, or a selector left behind when the workload's " +
			"labels changed. In policy/v1 a null selector selects nothing, while an empty one ({}) selects the whole namespace.",
		Remediation: []findings.Remediation{
			findings.Inspect("Show the budget's selector", fmt.Sprintf("kubectl get pdb %s -n %s -o yaml", p.Name, p.Namespace)),
			findings.Inspect("List the namespace's pods with their labels, to find the ones it should select",
				fmt.Sprintf("kubectl get pods -n %s --show-labels", p.Namespace)),
		},
	}
}

// labelHints shows, for each label key the selector uses, which values the
// namespace's pods carry, so that a typo such as app=ngnix stands out.
func (a *analysis) labelHints(p *policyv1.PodDisruptionBudget) []string {
	keys := map[string]bool{}
	for k := range p.Spec.Selector.MatchLabels {
		keys[k] = true
	}
	for _, r := range p.Spec.Selector.MatchExpressions {
		keys[r.Key] = true
	}
	sorted := slices.Sorted(maps.Keys(keys))
	pods := a.ix.PodsInNamespace(p.Namespace)
	var out []string
	for _, k := range sorted {
		counts := map[string]int{}
		for _, pod := range pods {
			if v, ok := pod.Labels[k]; ok {
				counts[v]++
			}
		}
		if len(counts) == 0 {
			out = append(out, fmt.Sprintf("no pod in namespace %s has a label %q (%s in the namespace)", p.Namespace, k, evidence.Plural(len(pods), "pod")))
			continue
		}
		vals := make([]string, 0, len(counts))
		for v := range counts {
			vals = append(vals, v)
		}
		// Values closest to the wanted one first, so that a typo shows
		// even in a namespace with many apps; then the most common.
		want, hasWant := p.Spec.Selector.MatchLabels[k]
		dist := map[string]int{}
		for _, v := range vals {
			if hasWant {
				dist[v] = editdist.Levenshtein(want, v)
			}
		}
		sort.Slice(vals, func(i, j int) bool {
			if dist[vals[i]] != dist[vals[j]] {
				return dist[vals[i]] < dist[vals[j]]
			}
			if counts[vals[i]] != counts[vals[j]] {
				return counts[vals[i]] > counts[vals[j]]
			}
			return vals[i] < vals[j]
		})
		parts := make([]string, len(vals))
		for i, v := range vals {
			parts[i] = fmt.Sprintf("%s=%s (%s)", k, v, evidence.Plural(counts[v], "pod"))
			if hasWant && dist[v] <= 2 {
				parts[i] += fmt.Sprintf(" close to %s=%s: a typo?", k, want)
			}
		}
		out = append(out, fmt.Sprintf("pods in namespace %s carry %s", p.Namespace, evidence.Join(parts)))
	}
	return out
}
