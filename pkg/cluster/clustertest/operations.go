package clustertest

import (
	"fmt"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// PDB returns a policy/v1 PodDisruptionBudget at generation 1 with the
// given selector (nil means a null selector, which selects no pod) and no
// minAvailable or maxUnavailable; chain MinAvailable or MaxUnavailable and
// PDBStatus to complete it.
func PDB(ns, name string, sel *metav1.LabelSelector) policyv1.PodDisruptionBudget {
	return policyv1.PodDisruptionBudget{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, UID: types.UID("uid-pdb-" + ns + "-" + name), Generation: 1},
		Spec:       policyv1.PodDisruptionBudgetSpec{Selector: sel},
	}
}

// PDBSelector returns a selector with the given matchLabels.
func PDBSelector(lbls map[string]string) *metav1.LabelSelector {
	return &metav1.LabelSelector{MatchLabels: lbls}
}

// MinAvailable sets spec.minAvailable: an int, or a string such as "50%".
func MinAvailable[T int | string](p policyv1.PodDisruptionBudget, v T) policyv1.PodDisruptionBudget {
	x := intOrString(v)
	p.Spec.MinAvailable = &x
	return p
}

// MaxUnavailable sets spec.maxUnavailable: an int, or a string such as "0%".
func MaxUnavailable[T int | string](p policyv1.PodDisruptionBudget, v T) policyv1.PodDisruptionBudget {
	x := intOrString(v)
	p.Spec.MaxUnavailable = &x
	return p
}

func intOrString[T int | string](v T) intstr.IntOrString {
	switch x := any(v).(type) {
	case int:
		return intstr.FromInt32(int32(x))
	default:
		return intstr.FromString(x.(string))
	}
}

// PDBStatus sets the status the disruption controller would write: the four
// counts, observedGeneration equal to the generation, and the
// DisruptionAllowed condition (SufficientPods or InsufficientPods).
func PDBStatus(p policyv1.PodDisruptionBudget, expected, desired, current, allowed int32) policyv1.PodDisruptionBudget {
	cond := metav1.Condition{
		Type: policyv1.DisruptionAllowedCondition, Status: metav1.ConditionTrue,
		Reason: policyv1.SufficientPodsReason, ObservedGeneration: p.Generation,
		LastTransitionTime: metav1.NewTime(Now().Add(-30 * time.Minute)),
	}
	if allowed <= 0 {
		cond.Status, cond.Reason = metav1.ConditionFalse, policyv1.InsufficientPodsReason
	}
	p.Status = policyv1.PodDisruptionBudgetStatus{
		ObservedGeneration: p.Generation, ExpectedPods: expected, DesiredHealthy: desired,
		CurrentHealthy: current, DisruptionsAllowed: allowed, Conditions: []metav1.Condition{cond},
	}
	return p
}

// ReplicaPods returns one Running, Ready pod per node, owned by the
// ReplicaSet (see Deployment) and labelled with the Deployment's labels.
// Pods are named <rs>-<i>.
func ReplicaPods(d appsv1.Deployment, rs appsv1.ReplicaSet, nodes ...string) []corev1.Pod {
	out := make([]corev1.Pod, 0, len(nodes))
	for i, n := range nodes {
		p := RunningPod(d.Namespace, fmt.Sprintf("%s-%d", rs.Name, i), n, d.Spec.Template.Labels)
		OwnPod(&p, rs)
		out = append(out, p)
	}
	return out
}

// StatefulSetOf returns a StatefulSet with the given replicas and pod
// labels, all of them ready, whose template runs one container "app". Its
// UID is the one SetController gives its pods' owner reference.
func StatefulSetOf(ns, name string, replicas int32, lbls map[string]string) appsv1.StatefulSet {
	return appsv1.StatefulSet{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, UID: types.UID("uid-StatefulSet-" + ns + "-" + name)},
		Spec: appsv1.StatefulSetSpec{
			Replicas: &replicas,
			Selector: &metav1.LabelSelector{MatchLabels: lbls},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: lbls},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "example/app:1"}}}},
		},
		Status: appsv1.StatefulSetStatus{Replicas: replicas, ReadyReplicas: replicas, CurrentReplicas: replicas},
	}
}

// DaemonSetOf returns a DaemonSet with the given pod labels. Its UID is the
// one SetController gives its pods' owner reference.
func DaemonSetOf(ns, name string, lbls map[string]string) appsv1.DaemonSet {
	return appsv1.DaemonSet{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, UID: types.UID("uid-DaemonSet-" + ns + "-" + name)},
		Spec: appsv1.DaemonSetSpec{
			Selector: &metav1.LabelSelector{MatchLabels: lbls},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: lbls}},
		},
	}
}

// SetPodReady sets the pod's Ready and ContainersReady conditions and its
// container's ready flag.
func SetPodReady(p *corev1.Pod, ready bool) {
	st := corev1.ConditionFalse
	if ready {
		st = corev1.ConditionTrue
	}
	for i := range p.Status.Conditions {
		if p.Status.Conditions[i].Type == corev1.PodReady || p.Status.Conditions[i].Type == corev1.ContainersReady {
			p.Status.Conditions[i].Status = st
		}
	}
	for i := range p.Status.ContainerStatuses {
		p.Status.ContainerStatuses[i].Ready = ready
	}
}
