// Package podready explains, from a snapshot alone, why a pod is not ready:
// its phase, its Ready condition, the state of its containers, failing
// readiness gates, its node's health and its latest warning events. The
// network and dns analyzers use it to say why a Service or the cluster DNS
// has no ready endpoints.
package podready

import (
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/duration"

	"github.com/kdiag/kdiag/pkg/cluster"
)

// Ready reports whether the pod's Ready condition is True.
func Ready(p *corev1.Pod) bool {
	c := condition(p, corev1.PodReady)
	return c != nil && c.Status == corev1.ConditionTrue
}

// Terminal reports whether the pod has finished (Succeeded or Failed); such
// pods never receive Service traffic again.
func Terminal(p *corev1.Pod) bool {
	return p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed
}

// Age renders how long before the snapshot t was, the way kubectl prints
// ages ("14m", "3h5m"); "" when t is zero.
func Age(s *cluster.Snapshot, t metav1.Time) string {
	if t.IsZero() {
		return ""
	}
	d := s.TakenAt.Sub(t.Time)
	if d < 0 {
		d = 0
	}
	return duration.HumanDuration(d)
}

// Explain returns evidence lines saying why the pod is not ready, most
// telling first. It reads only the snapshot: the pod's status, its node and
// the events about it. It returns nothing for a ready pod.
func Explain(s *cluster.Snapshot, p *corev1.Pod) []string {
	if Ready(p) && p.DeletionTimestamp == nil {
		return nil
	}
	var out []string
	add := func(format string, a ...any) { out = append(out, fmt.Sprintf(format, a...)) }

	if p.DeletionTimestamp != nil {
		add("pod is terminating (deletionTimestamp set %s ago)", Age(s, *p.DeletionTimestamp))
	}
	if p.Status.Phase != corev1.PodRunning {
		line := "phase=" + string(p.Status.Phase)
		if p.Status.Reason != "" {
			line += " reason=" + p.Status.Reason
		}
		if p.Status.Message != "" {
			line += ": " + oneLine(p.Status.Message)
		}
		add("%s", line)
	}
	if c := condition(p, corev1.PodScheduled); c != nil && c.Status != corev1.ConditionTrue {
		add("%s", describeCondition(s, c))
	}
	if c := condition(p, corev1.PodReady); c != nil && c.Status != corev1.ConditionTrue {
		add("%s", describeCondition(s, c))
	}
	statuses := append(append([]corev1.ContainerStatus(nil), p.Status.InitContainerStatuses...), p.Status.ContainerStatuses...)
	for i := range statuses {
		if line := describeContainer(s, &statuses[i]); line != "" {
			add("%s", line)
		}
	}
	for _, g := range p.Spec.ReadinessGates {
		c := condition(p, g.ConditionType)
		switch {
		case c == nil:
			add("readiness gate %s has no condition yet (the controller that sets it has not reported)", g.ConditionType)
		case c.Status != corev1.ConditionTrue:
			add("readiness gate %s", describeCondition(s, c))
		}
	}
	if p.Spec.NodeName != "" {
		if n := s.Index().Node(p.Spec.NodeName); n != nil {
			for i := range n.Status.Conditions {
				c := &n.Status.Conditions[i]
				if c.Type == corev1.NodeReady && c.Status != corev1.ConditionTrue {
					add("node %s is Ready=%s (%s) for %s", n.Name, c.Status, c.Reason, Age(s, c.LastTransitionTime))
				}
			}
		}
	}
	out = append(out, warningEvents(s, p, 2)...)
	return out
}

func condition(p *corev1.Pod, t corev1.PodConditionType) *corev1.PodCondition {
	for i := range p.Status.Conditions {
		if p.Status.Conditions[i].Type == t {
			return &p.Status.Conditions[i]
		}
	}
	return nil
}

func describeCondition(s *cluster.Snapshot, c *corev1.PodCondition) string {
	line := fmt.Sprintf("%s=%s", c.Type, c.Status)
	switch {
	case c.Reason != "" && c.Message != "":
		line += fmt.Sprintf(" (%s: %s)", c.Reason, oneLine(c.Message))
	case c.Reason != "":
		line += " (" + c.Reason + ")"
	case c.Message != "":
		line += " (" + oneLine(c.Message) + ")"
	}
	if age := Age(s, c.LastTransitionTime); age != "" {
		line += " for " + age
	}
	return line
}

func describeContainer(s *cluster.Snapshot, cs *corev1.ContainerStatus) string {
	var line string
	switch {
	case cs.State.Waiting != nil:
		w := cs.State.Waiting
		line = fmt.Sprintf("container %s waiting: %s", cs.Name, w.Reason)
		if w.Message != "" {
			line += " (" + oneLine(w.Message) + ")"
		}
	case cs.State.Terminated != nil:
		t := cs.State.Terminated
		if t.Reason == "Completed" && t.ExitCode == 0 {
			return "" // a finished init container is fine
		}
		line = fmt.Sprintf("container %s terminated: %s (exit code %d)", cs.Name, t.Reason, t.ExitCode)
	case cs.State.Running != nil && !cs.Ready:
		if cs.Started != nil && !*cs.Started {
			line = fmt.Sprintf("container %s running for %s but not started (startup probe not yet passing)", cs.Name, Age(s, cs.State.Running.StartedAt))
		} else {
			line = fmt.Sprintf("container %s running for %s but not ready (readiness probe failing)", cs.Name, Age(s, cs.State.Running.StartedAt))
		}
	default:
		return ""
	}
	if cs.RestartCount > 0 {
		line += fmt.Sprintf(", %d restarts", cs.RestartCount)
	}
	if t := cs.LastTerminationState.Terminated; t != nil {
		line += fmt.Sprintf(", last exit %s (code %d)", t.Reason, t.ExitCode)
		if age := Age(s, t.FinishedAt); age != "" {
			line += " " + age + " ago"
		}
	}
	return line
}

// warningEvents renders the pod's most recent Warning events, newest first,
// one per reason.
func warningEvents(s *cluster.Snapshot, p *corev1.Pod, max int) []string {
	evs := s.Index().EventsFor("Pod", p.Namespace, p.Name)
	seen := map[string]bool{}
	var out []string
	for i := len(evs) - 1; i >= 0 && len(out) < max; i-- {
		e := evs[i]
		if e.Type != corev1.EventTypeWarning || seen[e.Reason] {
			continue
		}
		seen[e.Reason] = true
		count := e.Count
		if e.Series != nil && e.Series.Count > count {
			count = e.Series.Count
		}
		if count < 1 {
			count = 1
		}
		out = append(out, fmt.Sprintf("event %s x%d, last %s ago: %s", e.Reason, count, Age(s, cluster.EventTime(e)), oneLine(e.Message)))
	}
	return out
}

// oneLine collapses whitespace so that multi-line messages fit in one
// evidence line, and caps very long messages.
func oneLine(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	const max = 300
	if len(s) > max {
		s = s[:max] + "..."
	}
	return s
}
