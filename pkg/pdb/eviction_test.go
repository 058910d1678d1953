package pdb

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	ct "github.com/kdiag/kdiag/pkg/cluster/clustertest"
)

func TestEvict(t *testing.T) {
	sel := ct.PDBSelector(web)
	exhausted := ct.PDBStatus(ct.MinAvailable(ct.PDB("shop", "nginx", sel), 1), 1, 1, 1, 0)
	roomy := ct.PDBStatus(ct.MinAvailable(ct.PDB("shop", "web", sel), 2), 3, 2, 3, 1)
	satisfiedZero := ct.PDBStatus(ct.MaxUnavailable(ct.PDB("shop", "web", sel), 1), 3, 2, 2, 0)
	short := ct.PDBStatus(ct.MaxUnavailable(ct.PDB("shop", "web", sel), 1), 3, 2, 1, 0)
	always := short
	pol := policyv1.AlwaysAllow
	always.Spec.UnhealthyPodEvictionPolicy = &pol
	stale := roomy
	stale.Generation = 2
	negative := ct.PDBStatus(ct.MinAvailable(ct.PDB("shop", "web", sel), 2), 3, 2, 3, -1)
	syncFailed := ct.PDBStatus(ct.MaxUnavailable(ct.PDB("shop", "agent", sel), 1), 0, 0, 3, 0)
	syncFailed.Status.Conditions[0].Reason = policyv1.SyncFailedReason
	syncFailed.Status.Conditions[0].Message = `daemonsets.apps does not implement the scale subresource`

	ready := ct.RunningPod("shop", "web-1", "n1", web)
	unready := ready
	unready.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionFalse}}
	pending := ready
	pending.Status.Phase = corev1.PodPending
	succeeded := ready
	succeeded.Status.Phase = corev1.PodSucceeded
	deleting := ready
	now := metav1.NewTime(ct.Now())
	deleting.DeletionTimestamp = &now

	tests := []struct {
		name    string
		pod     corev1.Pod
		pdbs    []policyv1.PodDisruptionBudget
		allowed bool
		code    int
		msg     string
	}{
		{name: "no budget", pod: ready, allowed: true},
		{name: "budget with room", pod: ready, pdbs: []policyv1.PodDisruptionBudget{roomy}, allowed: true},
		{name: "seed: exhausted budget", pod: ready, pdbs: []policyv1.PodDisruptionBudget{exhausted}, code: 429, msg: "The disruption budget nginx needs 1 healthy pods and has 1 currently"},
		{name: "two budgets", pod: ready, pdbs: []policyv1.PodDisruptionBudget{roomy, exhausted}, code: 500, msg: "more than one PodDisruptionBudget"},
		{name: "pending pods ignore budgets", pod: pending, pdbs: []policyv1.PodDisruptionBudget{exhausted}, allowed: true},
		{name: "finished pods ignore budgets", pod: succeeded, pdbs: []policyv1.PodDisruptionBudget{exhausted}, allowed: true},
		{name: "terminating pods ignore budgets", pod: deleting, pdbs: []policyv1.PodDisruptionBudget{exhausted, roomy}, allowed: true},
		{name: "stale status refuses even with room", pod: ready, pdbs: []policyv1.PodDisruptionBudget{stale}, code: 429, msg: "still being processed"},
		{name: "negative disruptionsAllowed", pod: ready, pdbs: []policyv1.PodDisruptionBudget{negative}, code: 403, msg: "negative"},
		{name: "unready pod, satisfied budget, IfHealthyBudget", pod: unready, pdbs: []policyv1.PodDisruptionBudget{satisfiedZero}, allowed: true},
		{name: "unready pod, short budget, IfHealthyBudget", pod: unready, pdbs: []policyv1.PodDisruptionBudget{short}, code: 429, msg: "needs 2 healthy pods and has 1 currently"},
		{name: "unready pod, short budget, AlwaysAllow", pod: unready, pdbs: []policyv1.PodDisruptionBudget{always}, allowed: true},
		{name: "ready pod, AlwaysAllow does not help", pod: ready, pdbs: []policyv1.PodDisruptionBudget{always}, code: 429},
		{name: "sync failure is named", pod: ready, pdbs: []policyv1.PodDisruptionBudget{syncFailed}, code: 429, msg: "failed sync: daemonsets.apps does not implement"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			v := Evict(&tc.pod, ptrs(tc.pdbs))
			if v.Allowed != tc.allowed || v.Code != tc.code {
				t.Errorf("Evict = allowed %v code %d (%s), want allowed %v code %d", v.Allowed, v.Code, v.Message, tc.allowed, tc.code)
			}
			if !strings.Contains(v.Message, tc.msg) {
				t.Errorf("message %q does not contain %q", v.Message, tc.msg)
			}
			if !tc.allowed && tc.code != 500 && v.PDB == nil {
				t.Errorf("refusal names no budget")
			}
		})
	}
}
