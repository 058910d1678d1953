// Package podready answers, from a snapshot alone, the questions the
// analyzers ask about a pod's state: is it ready, has it finished, what do
// its conditions and containers say, and above all why it is not ready:
// its phase, its Ready condition, the state of its containers, failing
// readiness gates, its node's health and its latest warning events. The
// network and dns analyzers use Explain to say why a Service or the
// cluster DNS has no ready endpoints; node and workload use the
// predicates.
package podready

import (
	"fmt"

	corev1 "k8s.io/api/core/v1"

	"github.com/kdiag/kdiag/pkg/analyze/internal/evidence"
	"github.com/kdiag/kdiag/pkg/cluster"
)

// Ready reports whether the pod's Ready condition is True.
func Ready(p *corev1.Pod) bool {
	c := Condition(p, corev1.PodReady)
	return c != nil && c.Status == corev1.ConditionTrue
}

// Terminal reports whether the pod has finished (Succeeded or Failed): it
// holds no resources on its node and never receives Service traffic again.
func Terminal(p *corev1.Pod) bool {
	return p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed
}

// Condition returns the pod's condition of the given type, or nil.
func Condition(p *corev1.Pod, t corev1.PodConditionType) *corev1.PodCondition {
	for i := range p.Status.Conditions {
		if p.Status.Conditions[i].Type == t {
			return &p.Status.Conditions[i]
		}
	}
	return nil
}

// Container returns the named app container of a pod spec, or with init
// the named init container; nil when there is none.
func Container(spec *corev1.PodSpec, name string, init bool) *corev1.Container {
	list := spec.Containers
	if init {
		list = spec.InitContainers
	}
	for i := range list {
		if list[i].Name == name {
			return &list[i]
		}
	}
	return nil
}

// ExplainPods says why up to n of the pods are not ready, one line per
// fact, each prefixed with "pod <name>: ", and counts the pods it did not
// look at.
func ExplainPods(s *cluster.Snapshot, pods []*corev1.Pod, n int) []string {
	var out []string
	for i, p := range pods {
		if i == n {
			out = append(out, fmt.Sprintf("... and %d more pods not shown", len(pods)-n))
			break
		}
		for _, l := range Explain(s, p) {
			out = append(out, "pod "+p.Name+": "+l)
		}
	}
	return out
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
		add("pod is terminating (deletionTimestamp set %s)", evidence.Ago(s.TakenAt, p.DeletionTimestamp.Time))
	}
	if p.Status.Phase != corev1.PodRunning {
		line := "phase=" + string(p.Status.Phase)
		if p.Status.Reason != "" {
			line += " reason=" + p.Status.Reason
		}
		if p.Status.Message != "" {
			line += ": " + evidence.Short(p.Status.Message)
		}
		add("%s", line)
	}
	if c := Condition(p, corev1.PodScheduled); c != nil && c.Status != corev1.ConditionTrue {
		add("%s", describeCondition(s, c))
	}
	if c := Condition(p, corev1.PodReady); c != nil && c.Status != corev1.ConditionTrue {
		add("%s", describeCondition(s, c))
	}
	statuses := append(append([]corev1.ContainerStatus(nil), p.Status.InitContainerStatuses...), p.Status.ContainerStatuses...)
	for i := range statuses {
		if line := describeContainer(s, &statuses[i]); line != "" {
			add("%s", line)
		}
	}
	for _, g := range p.Spec.ReadinessGates {
		c := Condition(p, g.ConditionType)
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
					add("node %s is Ready=%s (%s) for %s", n.Name, c.Status, c.Reason, evidence.Since(s.TakenAt, c.LastTransitionTime))
				}
			}
		}
	}
	// The latest Warning event of each reason, newest first.
	evs := s.Index().EventsFor("Pod", p.Namespace, p.Name)
	out = append(out, evidence.LatestLines(s.TakenAt, evs, 2, evidence.OnePerReason(evidence.IsWarning))...)
	return out
}

// describeCondition renders a pod condition that is not True, with its
// reason, message and age.
func describeCondition(s *cluster.Snapshot, c *corev1.PodCondition) string {
	line := fmt.Sprintf("%s=%s", c.Type, c.Status)
	switch {
	case c.Reason != "" && c.Message != "":
		line += fmt.Sprintf(" (%s: %s)", c.Reason, evidence.Short(c.Message))
	case c.Reason != "":
		line += " (" + c.Reason + ")"
	case c.Message != "":
		line += " (" + evidence.Short(c.Message) + ")"
	}
	if !c.LastTransitionTime.IsZero() {
		line += " for " + evidence.Since(s.TakenAt, c.LastTransitionTime)
	}
	return line
}

// describeContainer renders the state of a container that is not ready,
// or "" for one that is fine.
func describeContainer(s *cluster.Snapshot, cs *corev1.ContainerStatus) string {
	var line string
	switch {
	case cs.State.Waiting != nil:
		w := cs.State.Waiting
		line = fmt.Sprintf("container %s waiting: %s", cs.Name, w.Reason)
		if w.Message != "" {
			line += " (" + evidence.Short(w.Message) + ")"
		}
	case cs.State.Terminated != nil:
		t := cs.State.Terminated
		if t.Reason == "Completed" && t.ExitCode == 0 {
			return "" // a finished init container is fine
		}
		line = fmt.Sprintf("container %s terminated: %s (exit code %d)", cs.Name, t.Reason, t.ExitCode)
	case cs.State.Running != nil && !cs.Ready:
		if cs.Started != nil && !*cs.Started {
			line = fmt.Sprintf("container %s running for %s but not started (startup probe not yet passing)", cs.Name, evidence.Since(s.TakenAt, cs.State.Running.StartedAt))
		} else {
			line = fmt.Sprintf("container %s running for %s but not ready (readiness probe failing)", cs.Name, evidence.Since(s.TakenAt, cs.State.Running.StartedAt))
		}
	default:
		return ""
	}
	if cs.RestartCount > 0 {
		line += fmt.Sprintf(", %d restarts", cs.RestartCount)
	}
	if t := cs.LastTerminationState.Terminated; t != nil {
		line += fmt.Sprintf(", last exit %s (code %d)", t.Reason, t.ExitCode)
		if !t.FinishedAt.IsZero() {
			line += " " + evidence.Ago(s.TakenAt, t.FinishedAt.Time)
		}
	}
	return line
}
