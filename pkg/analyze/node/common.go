package node

import (
	"fmt"
	"sort"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/kdiag/kdiag/pkg/analyze/internal/evidence"
	"github.com/kdiag/kdiag/pkg/cluster"
)

// sortedNodes returns the snapshot's nodes ordered by name.
func sortedNodes(s *cluster.Snapshot) []*corev1.Node {
	out := make([]*corev1.Node, len(s.Nodes))
	for i := range s.Nodes {
		out[i] = &s.Nodes[i]
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// condition returns the node's condition of the given type, or nil.
func condition(n *corev1.Node, t corev1.NodeConditionType) *corev1.NodeCondition {
	for i := range n.Status.Conditions {
		if n.Status.Conditions[i].Type == t {
			return &n.Status.Conditions[i]
		}
	}
	return nil
}

// isReady reports whether the node's Ready condition is True.
func isReady(n *corev1.Node) bool {
	c := condition(n, corev1.NodeReady)
	return c != nil && c.Status == corev1.ConditionTrue
}

// conditionLine renders a node condition for evidence.
func conditionLine(now time.Time, c *corev1.NodeCondition) string {
	line := fmt.Sprintf("status.conditions[%s].status=%s", c.Type, c.Status)
	if c.Reason != "" {
		line += " reason=" + c.Reason
	}
	return line + " since " + evidence.Stamp(now, c.LastTransitionTime)
}

// taint returns the node's taint with the given key, or nil.
func taint(n *corev1.Node, key string) *corev1.Taint {
	for i := range n.Spec.Taints {
		if n.Spec.Taints[i].Key == key {
			return &n.Spec.Taints[i]
		}
	}
	return nil
}

// taintLine renders a taint for evidence.
func taintLine(now time.Time, t *corev1.Taint) string {
	line := "spec.taints: " + t.Key
	if t.Value != "" {
		line += "=" + t.Value
	}
	line += ":" + string(t.Effect)
	if t.TimeAdded != nil && !t.TimeAdded.IsZero() {
		line += " added " + evidence.Stamp(now, *t.TimeAdded)
	}
	return line
}

// nodeEvents returns the events about a node, oldest first. The kubelet and
// the node controller record them with an involvedObject without namespace.
func nodeEvents(s *cluster.Snapshot, node string) []*corev1.Event {
	return s.Index().EventsFor("Node", "", node)
}

// podsScope says which pods a count covers when the read was limited to
// one namespace.
func podsScope(s *cluster.Snapshot) string {
	if s.Namespace != "" {
		return " of namespace " + s.Namespace
	}
	return ""
}
