package node

import (
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/duration"

	"github.com/kdiag/kdiag/pkg/analyze/internal/evidence"
	"github.com/kdiag/kdiag/pkg/analyze/internal/podready"
	"github.com/kdiag/kdiag/pkg/cluster"
	"github.com/kdiag/kdiag/pkg/findings"
)

// defaultLeaseDuration is the kubelet's default node Lease duration; a
// Lease renewed within it is fresh.
const defaultLeaseDuration = 40 * time.Second

// notReadyEventReason reports the Normal events worth showing next to the
// Warning ones for a NotReady node: state changes and kubelet restarts.
func notReadyEventReason(reason string) bool {
	switch reason {
	case "NodeNotReady", "NodeReady", "Rebooted", "Starting", "RegisteredNode":
		return true
	}
	return false
}

// leaseState describes the node's heartbeat Lease.
type leaseState struct {
	line  string // evidence
	title string // short form for the title; "" when unknown
	known bool   // the Lease was read (present or absent)
	fresh bool   // renewed within its duration
	age   time.Duration
	renew time.Time // spec.renewTime; zero when unknown
}

// nodeLease reads the node's heartbeat Lease.
func nodeLease(s *cluster.Snapshot, node string) leaseState {
	now := s.TakenAt
	if evidence.Gapped(s, cluster.ResLeases, corev1.NamespaceNodeLease) {
		return leaseState{line: "Lease " + corev1.NamespaceNodeLease + "/" + node + " not read (leases are missing from the snapshot)"}
	}
	l := s.Index().Lease(node)
	if l == nil {
		return leaseState{known: true, title: "no heartbeat Lease",
			line: "no Lease " + corev1.NamespaceNodeLease + "/" + node + ": its kubelet has never sent a Lease heartbeat"}
	}
	if l.Spec.RenewTime == nil || l.Spec.RenewTime.IsZero() {
		return leaseState{known: true, title: "Lease never renewed",
			line: "Lease " + corev1.NamespaceNodeLease + "/" + node + " has no spec.renewTime"}
	}
	dur := defaultLeaseDuration
	if l.Spec.LeaseDurationSeconds != nil && *l.Spec.LeaseDurationSeconds > 0 {
		dur = time.Duration(*l.Spec.LeaseDurationSeconds) * time.Second
	}
	renew := l.Spec.RenewTime.Time
	st := leaseState{known: true, age: now.Sub(renew), fresh: now.Sub(renew) <= dur, renew: renew}
	st.line = fmt.Sprintf("Lease %s/%s spec.renewTime=%s, leaseDurationSeconds=%d",
		corev1.NamespaceNodeLease, node, renew.UTC().Format(time.RFC3339)+" ("+evidence.Ago(now, renew)+")", int(dur/time.Second))
	if l.Spec.HolderIdentity != nil && *l.Spec.HolderIdentity != "" && *l.Spec.HolderIdentity != node {
		st.line += " holderIdentity=" + *l.Spec.HolderIdentity
	}
	st.title = "Lease last renewed " + evidence.Ago(now, renew)
	return st
}

// podCounts summarizes the pods bound to a node: those still running (not
// Succeeded or Failed), those of DaemonSets and those being deleted.
type podCounts struct {
	active, daemon, terminating int
}

// countPods counts the pods bound to a node.
func countPods(s *cluster.Snapshot, node string) podCounts {
	var c podCounts
	for _, p := range s.Index().PodsOnNode(node) {
		if podready.Terminal(p) {
			continue
		}
		c.active++
		if p.DeletionTimestamp != nil {
			c.terminating++
		}
		if ref := controllerKind(p); ref == "DaemonSet" {
			c.daemon++
		}
	}
	return c
}

// controllerKind returns the kind of the pod's controller, or "".
func controllerKind(p *corev1.Pod) string {
	for _, r := range p.OwnerReferences {
		if r.Controller != nil && *r.Controller {
			return r.Kind
		}
	}
	return ""
}

// podsLine renders the pod counts of a node, or says they were not read.
func podsLine(s *cluster.Snapshot, node string) (line string, count int, known bool) {
	if !s.Has(cluster.ResPods) {
		return "pods not (completely) read: how many run on the node is unknown", 0, false
	}
	c := countPods(s, node)
	line = fmt.Sprintf("%s%s bound to the node (not Succeeded/Failed)", evidence.Plural(c.active, "pod"), podsScope(s))
	var parts []string
	if c.daemon > 0 {
		parts = append(parts, fmt.Sprintf("%d from DaemonSets", c.daemon))
	}
	if c.terminating > 0 {
		parts = append(parts, fmt.Sprintf("%d Terminating", c.terminating))
	}
	if len(parts) > 0 {
		line += ": " + strings.Join(parts, ", ")
	}
	return line, c.active, true
}

// notReady reports a node whose Ready condition is not True.
func notReady(s *cluster.Snapshot, n *corev1.Node) (findings.Finding, bool) {
	now := s.TakenAt
	c := condition(n, corev1.NodeReady)
	if c != nil && c.Status == corev1.ConditionTrue {
		return findings.Finding{}, false
	}
	var ev []string
	state, reason := "NotReady", ""
	var forDur time.Duration
	if c == nil {
		state = "not Ready"
		ev = append(ev, "status.conditions has no Ready condition: the kubelet has never posted the node's status")
		if !n.CreationTimestamp.IsZero() {
			forDur = now.Sub(n.CreationTimestamp.Time)
			ev = append(ev, "metadata.creationTimestamp="+evidence.Stamp(now, n.CreationTimestamp))
		}
	} else {
		if c.Status == corev1.ConditionUnknown {
			state = "Unknown"
		}
		reason = c.Reason
		ev = append(ev, conditionLine(now, c))
		if c.Message != "" {
			ev = append(ev, "status.conditions[Ready].message: "+evidence.Short(c.Message))
		}
		ev = append(ev, "status.conditions[Ready].lastHeartbeatTime="+evidence.Stamp(now, c.LastHeartbeatTime))
		if !c.LastTransitionTime.IsZero() {
			forDur = now.Sub(c.LastTransitionTime.Time)
		}
	}
	lease := nodeLease(s, n.Name)
	ev = append(ev, lease.line)
	for i := range n.Spec.Taints {
		if k := n.Spec.Taints[i].Key; k == corev1.TaintNodeNotReady || k == corev1.TaintNodeUnreachable {
			ev = append(ev, taintLine(now, &n.Spec.Taints[i]))
		}
	}
	pods, podCount, podsKnown := podsLine(s, n.Name)
	ev = append(ev, pods)
	if !evidence.Gapped(s, cluster.ResEvents, metav1.NamespaceDefault) {
		ev = append(ev, evidence.LatestLines(now, nodeEvents(s, n.Name), evidence.MaxListed, func(e *corev1.Event) bool {
			return e.Type == corev1.EventTypeWarning || notReadyEventReason(e.Reason)
		})...)
	}

	title := fmt.Sprintf("Node %s is %s", n.Name, state)
	if state == "Unknown" {
		title = fmt.Sprintf("Node %s status is Unknown", n.Name)
	}
	if forDur > 0 {
		title += " for " + duration.HumanDuration(forDur)
	}
	if reason != "" {
		title += " (" + reason + ")"
	}
	if lease.title != "" {
		title += "; " + lease.title
	}
	if podsKnown {
		title += fmt.Sprintf("; %s%s on it", evidence.Plural(podCount, "pod"), podsScope(s))
	}

	return findings.Finding{
		ID: idNotReady, Severity: findings.Critical, Area: findings.AreaNode,
		Object:      findings.ObjectRef{Kind: "Node", Name: n.Name},
		Title:       title,
		Evidence:    ev,
		Explanation: notReadyExplanation(n.Name, c, lease),
		Remediation: []findings.Remediation{
			findings.Inspect("Show the node's conditions, taints, capacity and pods", "kubectl describe node "+n.Name),
			findings.Inspect("List the node's recent events", "kubectl get events -A --field-selector involvedObject.kind=Node,involvedObject.name="+n.Name+" --sort-by=.lastTimestamp"),
			findings.Inspect("Check the kubelet's heartbeat Lease", "kubectl get lease "+n.Name+" -n "+corev1.NamespaceNodeLease+" -o yaml"),
			findings.Inspect("List the pods on the node", "kubectl get pods -A -o wide --field-selector spec.nodeName="+n.Name),
		},
	}, true
}

// notReadyExplanation explains the finding from what the heartbeat says:
// a kubelet that stopped heartbeating (Unknown, or a stale Lease), one that
// heartbeats again after the node turned Unknown, or one that is alive but
// reports the node broken.
func notReadyExplanation(node string, c *corev1.NodeCondition, lease leaseState) string {
	const consequences = " The node lifecycle controller taints a node that is not ready with NoExecute; " +
		"after their tolerationSeconds (300s by default) its pods are evicted and recreated elsewhere, " +
		"and StatefulSet pods stay Terminating until the node comes back or is deleted."
	const stopped = " so the machine is down, cut off from the API server, or its kubelet has died; " +
		"look at the machine itself (console, cloud VM status)."
	unknown := c != nil && c.Status == corev1.ConditionUnknown
	switch {
	case unknown && lease.known && !lease.renew.IsZero() && lease.renew.After(c.LastTransitionTime.Time):
		return fmt.Sprintf("The node lifecycle controller marked %s Unknown when its kubelet missed its heartbeats, "+
			"but the Lease was renewed %s, after that: the kubelet is reporting again and the status should recover "+
			"shortly; if it flaps, look for network or kubelet restarts on the node.", node, duration.HumanDuration(lease.age)+" ago") + consequences
	case unknown:
		return fmt.Sprintf("The node lifecycle controller marked %s Unknown because its kubelet stopped heartbeating,", node) + stopped + consequences
	case lease.known && !lease.fresh:
		return fmt.Sprintf("The kubelet on %s has stopped heartbeating (its Lease is stale),", node) + stopped + consequences
	case lease.known && lease.fresh && c != nil && c.Status == corev1.ConditionFalse:
		return fmt.Sprintf("The kubelet on %s is alive (it renewed its Lease %s) but reports the node not ready: "+
			"the cause is on the node, usually the container runtime, the CNI network plugin or PLEG health; "+
			"the condition message names it.", node, duration.HumanDuration(lease.age)+" ago") + consequences
	default:
		return fmt.Sprintf("Node %s does not report Ready, so the scheduler places no new pods on it and its pods may not work.", node) + consequences
	}
}
