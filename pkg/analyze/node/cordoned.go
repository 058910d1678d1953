package node

import (
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/duration"

	"github.com/kdiag/kdiag/pkg/analyze/internal/evidence"
	"github.com/kdiag/kdiag/pkg/cluster"
	"github.com/kdiag/kdiag/pkg/findings"
)

// longCordon is how long a node may stay cordoned before kdiag warns that
// the cordon may have been forgotten.
const longCordon = 24 * time.Hour

// cordoned reports a node with spec.unschedulable set.
func cordoned(s *cluster.Snapshot, n *corev1.Node) (findings.Finding, bool) {
	if !n.Spec.Unschedulable {
		return findings.Finding{}, false
	}
	now := s.TakenAt
	ev := []string{"spec.unschedulable=true"}

	// When: the taint's timeAdded, else the kubelet's NodeNotSchedulable event.
	var at time.Time
	if t := taint(n, corev1.TaintNodeUnschedulable); t != nil {
		ev = append(ev, taintLine(now, t))
		if t.TimeAdded != nil && !t.TimeAdded.IsZero() {
			at = t.TimeAdded.Time
		}
	}
	if !evidence.Gapped(s, cluster.ResEvents, metav1.NamespaceDefault) {
		if e := evidence.LatestEvent(nodeEvents(s, n.Name), func(e *corev1.Event) bool { return e.Reason == "NodeNotSchedulable" }); e != nil {
			ev = append(ev, evidence.EventLine(now, e))
			if at.IsZero() {
				at = cluster.EventTime(e).Time
			}
		}
	}
	if at.IsZero() {
		ev = append(ev, "when it was cordoned is unknown: the taint has no timeAdded and no NodeNotSchedulable event was read")
	}

	// What still runs there: a drain moves every pod except DaemonSet pods.
	remaining := 0
	podsKnown := s.Has(cluster.ResPods)
	if podsKnown {
		c := countPods(s, n.Name)
		remaining = c.active - c.daemon
		line := fmt.Sprintf("%s%s still on the node, %d of them not from DaemonSets", evidence.Plural(c.active, "pod"), podsScope(s), remaining)
		if remaining > 0 {
			line += ": a drain has not started, has not finished, or is blocked"
		}
		ev = append(ev, line)
	}
	ready := isReady(n)
	if !ready {
		ev = append(ev, "the node is not Ready (see node-not-ready)")
	}

	sev := findings.Info
	title := fmt.Sprintf("Node %s is cordoned", n.Name)
	if !at.IsZero() {
		title += " for " + duration.HumanDuration(now.Sub(at))
		if now.Sub(at) > longCordon {
			sev = findings.Warning
			title += fmt.Sprintf(" (more than %s: forgotten after maintenance?)", duration.HumanDuration(longCordon))
		}
	}
	if podsKnown && remaining > 0 {
		title += fmt.Sprintf("; %s not from DaemonSets still there", evidence.Plural(remaining, "pod"))
	}

	rem := []findings.Remediation{
		findings.Inspect("Show the node's taints, conditions and pods", "kubectl describe node "+n.Name),
		findings.Inspect("List the pods still on the node", "kubectl get pods -A -o wide --field-selector spec.nodeName="+n.Name),
		findings.Inspect("Check whether a drain of the node would stall (PodDisruptionBudgets)", "kubectl get pdb -A"),
	}
	if ready {
		// kubectl uncordon sends this patch; the node controller then
		// removes the unschedulable taint.
		rem = append(rem, findings.MustPatch(
			"If the maintenance is over, make the node schedulable again (the patch kubectl uncordon "+n.Name+" sends)",
			schema.GroupVersionResource{Version: "v1", Resource: "nodes"}, "node", "", n.Name,
			types.MergePatchType, map[string]any{"spec": map[string]any{"unschedulable": false}}))
	}
	return findings.Finding{
		ID: idCordoned, Severity: sev, Area: findings.AreaNode,
		Object:   findings.ObjectRef{Kind: "Node", Name: n.Name},
		Title:    title,
		Evidence: ev,
		Explanation: "A cordoned node takes no new pods. That is expected during a drain, an upgrade or a repair, " +
			"but a cordon left behind after maintenance silently shrinks the cluster's capacity and can leave pods " +
			"Pending elsewhere.",
		Remediation: rem,
	}, true
}
