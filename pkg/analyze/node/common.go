package node

import (
	"fmt"
	"sort"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/duration"

	"github.com/kdiag/kdiag/pkg/cluster"
)

// maxListed caps lists in evidence: the first maxListed items, then a line
// saying how many more there are.
const maxListed = 5

// maxMessage caps kubelet and controller messages quoted in evidence.
const maxMessage = 300

// capped returns the first maxListed items and, when there are more, a line
// "... and N more".
func capped(items []string) []string {
	if len(items) <= maxListed {
		return items
	}
	out := append([]string(nil), items[:maxListed]...)
	return append(out, fmt.Sprintf("... and %d more", len(items)-maxListed))
}

// ago renders how long before now t was, as kubectl does ("12m ago").
func ago(now, t time.Time) string {
	d := now.Sub(t)
	if d < 0 {
		return duration.HumanDuration(-d) + " in the future (clock skew)"
	}
	return duration.HumanDuration(d) + " ago"
}

// stamp renders a timestamp and its age: "2026-05-20T11:48:00Z (12m ago)".
func stamp(now time.Time, t metav1.Time) string {
	if t.IsZero() {
		return "unknown"
	}
	return t.UTC().Format(time.RFC3339) + " (" + ago(now, t.Time) + ")"
}

// short collapses whitespace and caps a message for evidence.
func short(msg string) string {
	msg = strings.Join(strings.Fields(msg), " ")
	if r := []rune(msg); len(r) > maxMessage {
		return string(r[:maxMessage]) + "…"
	}
	return msg
}

// gapped reports whether resource r could not be read for namespace ns
// (a gap for all namespaces covers every one). Checks skip objects a gap
// covers and never conclude from their absence.
func gapped(s *cluster.Snapshot, r cluster.Resource, ns string) bool {
	for _, g := range s.Gaps {
		if g.Resource == r && (g.Namespace == "" || g.Namespace == ns) {
			return true
		}
	}
	return false
}

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
	return line + " since " + stamp(now, c.LastTransitionTime)
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
		line += " added " + stamp(now, *t.TimeAdded)
	}
	return line
}

// eventCount returns how many times an event was seen.
func eventCount(e *corev1.Event) int32 {
	if e.Series != nil && e.Series.Count > 0 {
		return e.Series.Count
	}
	if e.Count > 0 {
		return e.Count
	}
	return 1
}

// eventLine renders an event for evidence:
// "event Warning EvictionThresholdMet x3, last 2m ago: Attempting to reclaim memory".
func eventLine(now time.Time, e *corev1.Event) string {
	line := fmt.Sprintf("event %s %s x%d", e.Type, e.Reason, eventCount(e))
	if t := cluster.EventTime(e); !t.IsZero() {
		line += ", last " + ago(now, t.Time)
	}
	if e.Message != "" {
		line += ": " + short(e.Message)
	}
	return line
}

// latestEvents returns the lines of the most recent events (newest first,
// at most maxListed) among evs, which the index orders oldest first, that
// keep accepts.
func latestEvents(now time.Time, evs []*corev1.Event, keep func(*corev1.Event) bool) []string {
	var out []string
	for i := len(evs) - 1; i >= 0 && len(out) < maxListed; i-- {
		if keep(evs[i]) {
			out = append(out, eventLine(now, evs[i]))
		}
	}
	return out
}

// nodeEvents returns the events about a node, oldest first. The kubelet and
// the node controller record them with an involvedObject without namespace.
func nodeEvents(s *cluster.Snapshot, node string) []*corev1.Event {
	return s.Index().EventsFor("Node", "", node)
}

// terminal reports whether the pod has finished (Succeeded or Failed) and
// so holds no resources on its node.
func terminal(p *corev1.Pod) bool {
	return p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed
}

// podsScope says which pods a count covers when the read was limited to
// one namespace.
func podsScope(s *cluster.Snapshot) string {
	if s.Namespace != "" {
		return " of namespace " + s.Namespace
	}
	return ""
}

// plural returns "1 pod" or "3 pods".
func plural(n int, word string) string {
	if n == 1 {
		return fmt.Sprintf("%d %s", n, word)
	}
	return fmt.Sprintf("%d %ss", n, word)
}
