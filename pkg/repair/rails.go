package repair

import (
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// Annotations that steer the controller.
const (
	// AnnotationSkip on a Node (any value but "false") keeps the
	// controller away from it.
	AnnotationSkip = "kdiag.io/skip-repair"
	// AnnotationPaused set to "true" on the controller's leader-election
	// Lease pauses the whole controller.
	AnnotationPaused = "kdiag.io/repair-paused"
)

// Taints that keep the controller away from a node by default.
const (
	// TaintToBeDeleted is set by the cluster autoscaler on a node it is
	// removing.
	TaintToBeDeleted = "ToBeDeletedByClusterAutoscaler"
	// TaintShutdown is set by the cloud node lifecycle controller on a
	// node whose VM is shut down (on purpose: it is not broken).
	TaintShutdown = "node.cloudprovider.kubernetes.io/shutdown"
)

// DefaultSkipTaints returns the taint keys that make the controller skip a
// node.
func DefaultSkipTaints() []string { return []string{TaintToBeDeleted, TaintShutdown} }

// Health is a node's Ready condition as the controller sees it.
type Health struct {
	// Ready is true when the Ready condition is True.
	Ready bool
	// Since is the Ready condition's lastTransitionTime.
	Since time.Time
	// Known is false when the node reports no Ready condition yet.
	Known bool
}

// HealthOf reads the node's Ready condition.
func HealthOf(n *corev1.Node) Health {
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return Health{Ready: c.Status == corev1.ConditionTrue, Since: c.LastTransitionTime.Time, Known: true}
		}
	}
	return Health{}
}

// Unhealthy reports whether the node's Ready condition has been False or
// Unknown for at least after, and if not, how long until it would be.
// A node without a Ready condition is not judged.
func (h Health) Unhealthy(now time.Time, after time.Duration) (bool, time.Duration) {
	if h.Ready || !h.Known {
		return false, 0
	}
	left := h.Since.Add(after).Sub(now)
	return left <= 0, max(left, 0)
}

// SkipReason says why the controller leaves a node alone, or "" when it
// does not. ours is the node's repair state: a node the controller cordoned
// itself is not "cordoned by another actor".
func SkipReason(n *corev1.Node, skipTaints []string, ours State) string {
	if v, ok := n.Annotations[AnnotationSkip]; ok && v != "false" {
		return fmt.Sprintf("annotated %s=%s", AnnotationSkip, v)
	}
	for _, t := range n.Spec.Taints {
		for _, k := range skipTaints {
			if t.Key == k {
				return fmt.Sprintf("tainted %s", k)
			}
		}
	}
	// Upgrades (AKS node image and Kubernetes upgrades, Cluster API
	// rollouts, kubectl drain by an operator) all start by cordoning the
	// node. A cordon the controller did not set means another actor is
	// working on the node: repairing it too would fight that actor.
	if n.Spec.Unschedulable && !ours.Cordoned {
		return "cordoned by another actor (upgrade or maintenance in progress)"
	}
	return ""
}

// ParseMaxUnhealthy parses --max-unhealthy: a count ("2") or a percentage
// of the nodes ("40%").
func ParseMaxUnhealthy(s string) (intstr.IntOrString, error) {
	v := intstr.Parse(strings.TrimSpace(s))
	if v.Type == intstr.String {
		p := strings.TrimSuffix(v.StrVal, "%")
		var n int
		if !strings.HasSuffix(v.StrVal, "%") || p == "" {
			return v, fmt.Errorf("max-unhealthy %q: want a count (2) or a percentage (40%%)", s)
		}
		if _, err := fmt.Sscanf(p, "%d", &n); err != nil || fmt.Sprint(n) != p || n < 0 || n > 100 {
			return v, fmt.Errorf("max-unhealthy %q: want a percentage between 0%% and 100%%", s)
		}
		return v, nil
	}
	if v.IntVal < 0 {
		return v, fmt.Errorf("max-unhealthy %q: want a count >= 0", s)
	}
	return v, nil
}

// maxUnhealthyOf resolves max against total nodes; a percentage is rounded
// up, so that 40% of 2 nodes allows 1 unhealthy node.
func maxUnhealthyOf(max intstr.IntOrString, total int) int {
	n, err := intstr.GetScaledValueFromIntOrPercent(&max, total, true)
	if err != nil {
		// ParseMaxUnhealthy validated it; an unvalidated value halts.
		return 0
	}
	return n
}
