package operations

import (
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/duration"

	"github.com/kdiag/kdiag/pkg/cluster"
	"github.com/kdiag/kdiag/pkg/pdb"
)

// pdbGVR is the resource remediations patch.
var pdbGVR = schema.GroupVersionResource{Group: "policy", Version: "v1", Resource: "poddisruptionbudgets"}

// maxListed caps lists in evidence and titles.
const maxListed = 5

// maxMessage caps quoted event and condition messages.
const maxMessage = 300

// joinCapped joins the first maxListed items and counts the rest.
func joinCapped(items []string) string {
	if len(items) <= maxListed {
		return strings.Join(items, ", ")
	}
	return fmt.Sprintf("%s ... and %d more", strings.Join(items[:maxListed], ", "), len(items)-maxListed)
}

// ago renders how long before now t was ("12m ago").
func ago(now, t time.Time) string {
	d := now.Sub(t)
	if d < 0 {
		return duration.HumanDuration(-d) + " in the future (clock skew)"
	}
	return duration.HumanDuration(d) + " ago"
}

// short collapses whitespace and caps a quoted message.
func short(msg string) string {
	msg = strings.Join(strings.Fields(msg), " ")
	if r := []rune(msg); len(r) > maxMessage {
		return string(r[:maxMessage]) + "…"
	}
	return msg
}

// plural renders "1 pod" or "3 pods".
func plural(n int, word string) string {
	if n == 1 {
		return "1 " + word
	}
	return fmt.Sprintf("%d %ss", n, word)
}

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
			line += " since " + c.LastTransitionTime.UTC().Format(time.RFC3339) + " (" + ago(now, c.LastTransitionTime.Time) + ")"
		}
		if c.Message != "" {
			line += ": " + short(c.Message)
		}
		return line
	}
	return ""
}

// eventLine renders an event: reason, count, when and message.
func eventLine(now time.Time, e *corev1.Event) string {
	n := eventCount(e)
	t := cluster.EventTime(e)
	when := "at an unknown time"
	if !t.IsZero() {
		when = "last " + ago(now, t.Time)
	}
	return fmt.Sprintf("event %s %s x%d, %s: %s", e.Type, e.Reason, n, when, short(e.Message))
}

// eventCount is how many times an event was seen, whichever API filled it.
func eventCount(e *corev1.Event) int32 {
	switch {
	case e.Series != nil && e.Series.Count > 0:
		return e.Series.Count
	case e.Count > 0:
		return e.Count
	default:
		return 1
	}
}

// firstSeen returns when an event was first seen, or the zero time.
func firstSeen(e *corev1.Event) metav1.Time {
	switch {
	case !e.FirstTimestamp.IsZero():
		return e.FirstTimestamp
	case !e.EventTime.IsZero():
		return metav1.Time{Time: e.EventTime.Time}
	default:
		return cluster.EventTime(e)
	}
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
