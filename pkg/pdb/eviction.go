package pdb

import (
	"fmt"

	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// MaxDisruptedPodSize is the eviction API's limit on status.disruptedPods
// beyond which it refuses evictions (k8s.io/kubernetes
// pkg/registry/core/pod/storage.MaxDisruptedPodSize).
const MaxDisruptedPodSize = 2000

// Verdict is what the eviction API would answer for one pod, judged from
// the budgets' current status.
type Verdict struct {
	// Allowed is true when the eviction would be admitted.
	Allowed bool
	// Code is the HTTP status the API answers a refusal with: 429 Too Many
	// Requests (budget exhausted or still being processed), 500 (more than
	// one budget) or 403 (corrupt budget status); 0 when allowed.
	Code int
	// PDB is the budget that decided, if any.
	PDB *policyv1.PodDisruptionBudget
	// Message says why, in the API's words where it has them.
	Message string
}

// Evict predicts the eviction API's answer for pod, given the budgets that
// cover it (Coverage.PDBsOf). It follows EvictionREST.Create and
// checkAndDecrement in k8s.io/kubernetes pkg/registry/core/pod/storage:
// pods that are Pending, Succeeded, Failed or already being deleted ignore
// budgets; more than one budget is an error; an unready pod may go when the
// budget says AlwaysAllow, or under IfHealthyBudget when the budget is
// currently satisfied; otherwise the budget's status must allow a disruption
// and be up to date.
func Evict(pod *corev1.Pod, pdbs []*policyv1.PodDisruptionBudget) Verdict {
	switch {
	case pod.DeletionTimestamp != nil:
		return Verdict{Allowed: true, Message: "pod is already being deleted"}
	case pod.Status.Phase == corev1.PodPending, pod.Status.Phase == corev1.PodSucceeded, pod.Status.Phase == corev1.PodFailed:
		return Verdict{Allowed: true, Message: fmt.Sprintf("pod is %s, budgets do not apply", pod.Status.Phase)}
	}
	switch len(pdbs) {
	case 0:
		return Verdict{Allowed: true, Message: "no budget covers the pod"}
	case 1:
	default:
		return Verdict{Code: 500, Message: "This pod has more than one PodDisruptionBudget, which the eviction subresource does not support."}
	}
	p := pdbs[0]
	if !IsHealthy(pod) {
		if p.Spec.UnhealthyPodEvictionPolicy != nil && *p.Spec.UnhealthyPodEvictionPolicy == policyv1.AlwaysAllow {
			return Verdict{Allowed: true, PDB: p, Message: "pod is not Ready and the budget's unhealthyPodEvictionPolicy is AlwaysAllow"}
		}
		if p.Status.CurrentHealthy >= p.Status.DesiredHealthy && p.Status.DesiredHealthy > 0 {
			return Verdict{Allowed: true, PDB: p, Message: "pod is not Ready and the budget is satisfied (IfHealthyBudget)"}
		}
	}
	st := p.Status
	switch {
	case st.ObservedGeneration < p.Generation:
		return Verdict{Code: 429, PDB: p, Message: fmt.Sprintf("Cannot evict pod as it would violate the pod's disruption budget. The disruption budget %s is still being processed by the server.", p.Name)}
	case st.DisruptionsAllowed < 0:
		return Verdict{Code: 403, PDB: p, Message: fmt.Sprintf("The disruption budget %s does not allow evicting pods currently: pdb disruptions allowed is negative", p.Name)}
	case len(st.DisruptedPods) > MaxDisruptedPodSize:
		return Verdict{Code: 403, PDB: p, Message: fmt.Sprintf("The disruption budget %s does not allow evicting pods currently: too many pending evictions not confirmed by PDB controller", p.Name)}
	case st.DisruptionsAllowed == 0:
		return Verdict{Code: 429, PDB: p, Message: "Cannot evict pod as it would violate the pod's disruption budget. " + zeroMessage(p)}
	}
	return Verdict{Allowed: true, PDB: p, Message: fmt.Sprintf("the disruption budget %s allows %d disruption(s)", p.Name, st.DisruptionsAllowed)}
}

// zeroMessage is the cause the eviction API attaches to a 429 for a budget
// that allows no disruption.
func zeroMessage(p *policyv1.PodDisruptionBudget) string {
	st := p.Status
	c := meta.FindStatusCondition(st.Conditions, policyv1.DisruptionAllowedCondition)
	switch {
	case c != nil && c.Status == metav1.ConditionFalse && c.Message != "" && c.Reason == policyv1.SyncFailedReason:
		return fmt.Sprintf("The disruption budget %s does not allow evicting pods currently because it failed sync: %s", p.Name, c.Message)
	case st.CurrentHealthy <= st.DesiredHealthy:
		return fmt.Sprintf("The disruption budget %s needs %d healthy pods and has %d currently", p.Name, st.DesiredHealthy, st.CurrentHealthy)
	case c != nil && c.Status == metav1.ConditionFalse && c.Message != "":
		return fmt.Sprintf("The disruption budget %s does not allow evicting pods currently (%s): %s", p.Name, c.Reason, c.Message)
	default:
		return fmt.Sprintf("The disruption budget %s does not allow evicting pods currently", p.Name)
	}
}
