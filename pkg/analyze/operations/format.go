package operations

import (
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"

	"github.com/kdiag/kdiag/pkg/analyze/internal/evidence"
	"github.com/kdiag/kdiag/pkg/findings"
	"github.com/kdiag/kdiag/pkg/pdb"
)

// ref renders namespace/name.
func ref(ns, name string) string { return ns + "/" + name }

// podState says in a few words why the disruption controller does not
// count a pod as healthy.
func podState(m pdb.Member) string {
	p := m.Pod
	switch {
	case p.DeletionTimestamp != nil:
		return "being deleted"
	case m.Healthy:
		return "Ready"
	case p.Status.Phase != corev1.PodRunning && p.Status.Phase != "":
		return string(p.Status.Phase)
	}
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue {
			return "eviction in flight"
		}
	}
	return "not Ready"
}

// podOnNode renders "name on node n1" or "name (not scheduled)".
func podOnNode(p *corev1.Pod) string {
	if p.Spec.NodeName == "" {
		return p.Name + " (not scheduled)"
	}
	return p.Name + " on " + p.Spec.NodeName
}

// conditionLine renders the DisruptionAllowed condition of a budget.
func conditionLine(now time.Time, p *policyv1.PodDisruptionBudget) string {
	for _, c := range p.Status.Conditions {
		if c.Type != policyv1.DisruptionAllowedCondition {
			continue
		}
		line := fmt.Sprintf("condition %s=%s reason=%s", c.Type, c.Status, c.Reason)
		if !c.LastTransitionTime.IsZero() {
			line += " since " + evidence.Stamp(now, c.LastTransitionTime)
		}
		if c.Message != "" {
			line += ": " + evidence.Short(c.Message)
		}
		return line
	}
	return ""
}

// selectorFlag renders the -l flag that lists a budget's pods, or "" for
// the empty selector (every pod of the namespace).
func selectorFlag(p *policyv1.PodDisruptionBudget) string {
	s := pdb.SelectorString(p)
	if s == "" || s == "<none>" {
		return ""
	}
	return " -l '" + s + "'"
}

// showBudgets returns a read-only command that shows each budget, for at
// most evidence.MaxListed of them; note follows the budget's name in the
// description and says where its fixes are.
func showBudgets(pdbs []*policyv1.PodDisruptionBudget, note string) []findings.Remediation {
	var out []findings.Remediation
	for _, p := range pdbs[:min(len(pdbs), evidence.MaxListed)] {
		out = append(out, findings.Inspect("Show PodDisruptionBudget "+ref(p.Namespace, p.Name)+note,
			fmt.Sprintf("kubectl get pdb %s -n %s -o yaml", p.Name, p.Namespace)))
	}
	return out
}
