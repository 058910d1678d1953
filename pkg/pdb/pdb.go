// Package pdb is the arithmetic of PodDisruptionBudgets, written to agree
// with Kubernetes itself: which budgets cover a pod (the selector rules of
// policy/v1), how many pods a budget expects and how many must stay healthy
// (the disruption controller in kube-controller-manager), whether the
// eviction API would let a pod go (pkg/registry/core/pod/storage/eviction.go),
// why a budget allows no disruption, and the smallest change that allows
// one. `kdiag doctor` and `kdiag drain check` both build on it.
//
// Every function is pure: it reads the objects it is given and never the
// clock or the API.
package pdb

import (
	"fmt"

	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// Selector returns the label selector of a budget with the semantics of
// policy/v1, which both the disruption controller and the eviction API use:
// a null spec.selector selects no pod, and an empty one ({}) selects every
// pod of the namespace. (policy/v1beta1 treated the empty selector as
// selecting nothing; kdiag reads policy/v1 only.)
func Selector(p *policyv1.PodDisruptionBudget) (labels.Selector, error) {
	// metav1.LabelSelectorAsSelector maps nil to labels.Nothing() and an
	// empty selector to labels.Everything(), exactly the policy/v1 rule.
	sel, err := metav1.LabelSelectorAsSelector(p.Spec.Selector)
	if err != nil {
		return nil, fmt.Errorf("selector of PodDisruptionBudget %s/%s: %w", p.Namespace, p.Name, err)
	}
	return sel, nil
}

// Covers reports whether the budget covers the pod: same namespace and the
// selector matches the pod's labels. A budget with an invalid selector
// covers nothing, as in the eviction API.
func Covers(p *policyv1.PodDisruptionBudget, pod *corev1.Pod) bool {
	if p.Namespace != pod.Namespace {
		return false
	}
	sel, err := Selector(p)
	if err != nil {
		return false
	}
	return sel.Matches(labels.Set(pod.Labels))
}

// SelectorString renders a budget's selector for `kubectl get pods -l`:
// "" for the empty selector (every pod) and "<none>" for a null one.
func SelectorString(p *policyv1.PodDisruptionBudget) string {
	switch sel := p.Spec.Selector; {
	case sel == nil:
		return "<none>"
	case len(sel.MatchLabels) == 0 && len(sel.MatchExpressions) == 0:
		// FormatLabelSelector renders {} as "<none>" too; it selects all.
		return ""
	default:
		return metav1.FormatLabelSelector(sel)
	}
}

// IsHealthy reports whether the disruption controller counts the pod as
// healthy: its Ready condition is True. Hand-written because the helper
// Kubernetes uses (k8s.io/kubernetes/pkg/api/v1/pod.IsPodReady) lives in a
// module kdiag does not import, and the rule is one condition lookup.
func IsHealthy(pod *corev1.Pod) bool {
	for _, c := range pod.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// Mode says which field of a budget's spec sets its size.
type Mode string

// The ways a budget can be written.
const (
	// ModeMinAvailableInt is an integer spec.minAvailable; the controller
	// then counts the selected pods as the expected pods.
	ModeMinAvailableInt Mode = "minAvailable"
	// ModeMinAvailablePercent is a percentage spec.minAvailable; the
	// expected pods are the summed scale of the pods' controllers.
	ModeMinAvailablePercent Mode = "minAvailable%"
	// ModeMaxUnavailable is spec.maxUnavailable, integer or percentage; the
	// expected pods are the summed scale of the pods' controllers.
	ModeMaxUnavailable Mode = "maxUnavailable"
	// ModeNone is a budget with neither field set. It is valid, but the
	// controller then expects 0 pods and allows no disruption at all.
	ModeNone Mode = "none"
)

// ModeOf returns how the budget is written. maxUnavailable wins when both
// are set, as in the disruption controller (validation forbids both).
func ModeOf(p *policyv1.PodDisruptionBudget) Mode {
	switch {
	case p.Spec.MaxUnavailable != nil:
		return ModeMaxUnavailable
	case p.Spec.MinAvailable == nil:
		return ModeNone
	case p.Spec.MinAvailable.Type == intstr.Int:
		return ModeMinAvailableInt
	default:
		return ModeMinAvailablePercent
	}
}

// usesScale reports whether the controller takes the expected pods from
// the controllers' scale rather than from counting pods.
func (m Mode) usesScale() bool { return m == ModeMinAvailablePercent || m == ModeMaxUnavailable }

// SpecString renders the size fields of a budget, e.g. "minAvailable=1" or
// "maxUnavailable=10%", or "neither minAvailable nor maxUnavailable set".
func SpecString(p *policyv1.PodDisruptionBudget) string {
	switch {
	case p.Spec.MaxUnavailable != nil && p.Spec.MinAvailable != nil:
		return "minAvailable=" + p.Spec.MinAvailable.String() + " and maxUnavailable=" + p.Spec.MaxUnavailable.String()
	case p.Spec.MaxUnavailable != nil:
		return "maxUnavailable=" + p.Spec.MaxUnavailable.String()
	case p.Spec.MinAvailable != nil:
		return "minAvailable=" + p.Spec.MinAvailable.String()
	default:
		return "neither minAvailable nor maxUnavailable set"
	}
}
