package node

import (
	"fmt"
	"sort"
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

// pressureKind describes one of the kubelet's pressure conditions.
type pressureKind struct {
	cond     corev1.NodeConditionType
	resource string // the resource name in the kubelet's eviction messages
	taint    string
	// events are the reasons of the node's Warning events that belong to
	// this pressure, besides EvictionThresholdMet for the resource.
	events      map[string]bool
	explanation string
	inspect     func(node string) []findings.Remediation
}

// pressureKinds lists the pressure conditions in report order.
func pressureKinds() []pressureKind {
	return []pressureKind{
		{
			cond: corev1.NodeMemoryPressure, resource: "memory", taint: corev1.TaintNodeMemoryPressure,
			events: map[string]bool{"SystemOOM": true},
			explanation: "The node is short of memory: the kubelet stops admitting BestEffort pods and, below its hard " +
				"eviction threshold, evicts pods (BestEffort first, then those using most above their requests). " +
				"Usual causes are pods without memory limits, limits far above requests (overcommit), or a node too small for its pods.",
			inspect: func(node string) []findings.Remediation {
				return []findings.Remediation{
					findings.Inspect("Find the pods using the most memory", "kubectl top pod -A --sort-by=memory"),
					findings.Inspect("List the pods on the node with their QoS class", podsQoSCommand(node)),
				}
			},
		},
		{
			cond: corev1.NodeDiskPressure, resource: "ephemeral-storage", taint: corev1.TaintNodeDiskPressure,
			events: map[string]bool{"FreeDiskSpaceFailed": true, "ImageGCFailed": true},
			explanation: "The node's root or image filesystem is nearly full: the kubelet garbage-collects images and dead " +
				"containers, refuses new pods and evicts pods by their ephemeral-storage use. Usual causes are images that " +
				"image garbage collection cannot remove (all in use, or GC failing), container logs and emptyDir volumes; " +
				"the fix is to delete what fills the disk (unused images, logs) or to grow the disk.",
			inspect: func(node string) []findings.Remediation {
				return []findings.Remediation{
					findings.Inspect("Show filesystem usage of the node, its image filesystem and each pod (kubelet stats summary)",
						"kubectl get --raw /api/v1/nodes/"+node+"/proxy/stats/summary"),
				}
			},
		},
		{
			cond: corev1.NodePIDPressure, resource: "pids", taint: corev1.TaintNodePIDPressure,
			explanation: "The node is running out of process IDs: new processes, including the kubelet's own and container " +
				"runtimes', fail to start and the kubelet evicts pods. The usual cause is a pod leaking processes or threads; " +
				"set pod PID limits (kubelet podPidsLimit).",
			inspect: func(node string) []findings.Remediation {
				return []findings.Remediation{
					findings.Inspect("Show the process count of the node and of each pod (kubelet stats summary)",
						"kubectl get --raw /api/v1/nodes/"+node+"/proxy/stats/summary"),
				}
			},
		},
	}
}

// podsQoSCommand lists the pods of a node with their QoS class.
func podsQoSCommand(node string) string {
	return "kubectl get pods -A --field-selector spec.nodeName=" + node +
		" -o custom-columns=NAMESPACE:.metadata.namespace,NAME:.metadata.name,QOS:.status.qosClass,PHASE:.status.phase"
}

// underPressure returns the pressure conditions of the node that are True.
func underPressure(n *corev1.Node) []*corev1.NodeCondition {
	var out []*corev1.NodeCondition
	for _, k := range pressureKinds() {
		if c := condition(n, k.cond); c != nil && c.Status == corev1.ConditionTrue {
			out = append(out, c)
		}
	}
	return out
}

// pressure reports each pressure condition of the node that is True.
func pressure(s *cluster.Snapshot, n *corev1.Node) []findings.Finding {
	now := s.TakenAt
	var out []findings.Finding
	for _, k := range pressureKinds() {
		c := condition(n, k.cond)
		if c == nil || c.Status != corev1.ConditionTrue {
			continue
		}
		ev := []string{conditionLine(now, c)}
		if c.Message != "" {
			ev = append(ev, fmt.Sprintf("status.conditions[%s].message: %s", c.Type, evidence.Short(c.Message)))
		}
		if t := taint(n, k.taint); t != nil {
			ev = append(ev, taintLine(now, t))
		} else {
			ev = append(ev, "no "+k.taint+" taint on the node yet")
		}
		ev = append(ev, resourceEvidence(s, n, k)...)

		// Evidence of evictions: evicted (or rejected) pods and the
		// kubelet's EvictionThresholdMet events for this resource.
		evictions := 0
		if !evidence.Gapped(s, cluster.ResPods, s.Namespace) {
			var names []string
			for _, p := range s.Index().PodsOnNode(n.Name) {
				if isEvicted(p) && evictionResource(p.Status.Message) == k.resource {
					names = append(names, p.Namespace+"/"+p.Name)
				}
			}
			sort.Strings(names)
			evictions += len(names)
			if len(names) > 0 {
				ev = append(ev, fmt.Sprintf("%s evicted or rejected by the kubelet for %s on this node: %s",
					evidence.Plural(len(names), "pod"), k.resource, strings.Join(evidence.Capped(names), ", ")))
			}
		}
		if !evidence.Gapped(s, cluster.ResEvents, metav1.NamespaceDefault) {
			evs := evidence.LatestLines(now, nodeEvents(s, n.Name), evidence.MaxListed, func(e *corev1.Event) bool {
				if e.Type != corev1.EventTypeWarning {
					return false
				}
				if e.Reason == "EvictionThresholdMet" {
					return strings.Contains(e.Message, k.resource)
				}
				return k.events[e.Reason]
			})
			for _, e := range nodeEvents(s, n.Name) {
				if e.Reason == "EvictionThresholdMet" && strings.Contains(e.Message, k.resource) {
					evictions++
				}
			}
			ev = append(ev, evs...)
		}

		sev := findings.Warning
		title := fmt.Sprintf("Node %s has %s for %s", n.Name, c.Type, evidence.Since(now, c.LastTransitionTime))
		if c.Message != "" {
			title += " (" + evidence.Short(c.Message) + ")"
		}
		if evictions > 0 {
			sev = findings.Critical
			title += "; the kubelet is evicting pods"
		}
		rem := []findings.Remediation{findings.Inspect("Show the node's conditions, capacity, allocated resources and events", "kubectl describe node "+n.Name)}
		rem = append(rem, k.inspect(n.Name)...)
		rem = append(rem, findings.Inspect("List the node's recent events", "kubectl get events -A --field-selector involvedObject.kind=Node,involvedObject.name="+n.Name+" --sort-by=.lastTimestamp"))
		out = append(out, findings.Finding{
			ID: idPressure, Severity: sev, Area: findings.AreaNode,
			Object:      findings.ObjectRef{Kind: "Node", Name: n.Name},
			Title:       title,
			Evidence:    ev,
			Explanation: k.explanation,
			Remediation: rem,
		})
	}
	return out
}

// resourceEvidence adds what the snapshot knows about the pressured
// resource: requests and limits against allocatable for memory, the image
// list for disk.
func resourceEvidence(s *cluster.Snapshot, n *corev1.Node, k pressureKind) []string {
	switch k.cond {
	case corev1.NodeMemoryPressure:
		if !s.Has(cluster.ResPods) {
			return nil
		}
		return []string{memoryCommitment(s, n)}
	case corev1.NodeDiskPressure:
		var out []string
		if q, ok := n.Status.Allocatable[corev1.ResourceEphemeralStorage]; ok {
			out = append(out, "status.allocatable.ephemeral-storage="+bytesIEC(q.Value()))
		}
		if len(n.Status.Images) > 0 {
			var total int64
			for _, im := range n.Status.Images {
				total += im.SizeBytes
			}
			out = append(out, fmt.Sprintf("status.images lists %d images totalling %s (the kubelet reports at most 50 by default)",
				len(n.Status.Images), bytesIEC(total)))
		}
		return out
	}
	return nil
}

// memoryCommitment compares the memory requests and limits of the pods on
// the node with its allocatable memory.
func memoryCommitment(s *cluster.Snapshot, n *corev1.Node) string {
	var req, lim int64
	unlimited, pods := 0, 0
	for _, p := range s.Index().PodsOnNode(n.Name) {
		if podready.Terminal(p) {
			continue
		}
		pods++
		for _, c := range p.Spec.Containers {
			if q, ok := c.Resources.Requests[corev1.ResourceMemory]; ok {
				req += q.Value()
			}
			if q, ok := c.Resources.Limits[corev1.ResourceMemory]; ok {
				lim += q.Value()
			} else {
				unlimited++
			}
		}
	}
	line := fmt.Sprintf("memory of the %s%s on the node: requests %s, limits %s", evidence.Plural(pods, "pod"), podsScope(s), bytesIEC(req), bytesIEC(lim))
	if q, ok := n.Status.Allocatable[corev1.ResourceMemory]; ok && q.Value() > 0 {
		a := q.Value()
		line = fmt.Sprintf("memory of the %s%s on the node: requests %s (%d%% of allocatable %s), limits %s (%d%%)",
			evidence.Plural(pods, "pod"), podsScope(s), bytesIEC(req), req*100/a, bytesIEC(a), bytesIEC(lim), lim*100/a)
	}
	if unlimited > 0 {
		line += fmt.Sprintf("; %s without a memory limit", evidence.Plural(unlimited, "container"))
	}
	return line
}

// bytesIEC renders a byte count in binary units with one decimal.
func bytesIEC(b int64) string {
	const (
		ki = 1 << 10
		mi = 1 << 20
		gi = 1 << 30
	)
	one := func(v float64, unit string) string {
		return strings.TrimSuffix(fmt.Sprintf("%.1f", v), ".0") + unit
	}
	switch {
	case b >= gi:
		return one(float64(b)/gi, "Gi")
	case b >= mi:
		return one(float64(b)/mi, "Mi")
	case b >= ki:
		return one(float64(b)/ki, "Ki")
	}
	return fmt.Sprintf("%d", b)
}

// networkUnavailable reports a node whose NetworkUnavailable condition is True.
func networkUnavailable(s *cluster.Snapshot, n *corev1.Node) (findings.Finding, bool) {
	now := s.TakenAt
	c := condition(n, corev1.NodeNetworkUnavailable)
	if c == nil || c.Status != corev1.ConditionTrue {
		return findings.Finding{}, false
	}
	ev := []string{conditionLine(now, c)}
	if c.Message != "" {
		ev = append(ev, "status.conditions[NetworkUnavailable].message: "+evidence.Short(c.Message))
	}
	if t := taint(n, corev1.TaintNodeNetworkUnavailable); t != nil {
		ev = append(ev, taintLine(now, t))
	}
	if n.Spec.PodCIDR == "" && len(n.Spec.PodCIDRs) == 0 {
		ev = append(ev, "spec.podCIDR is empty: no pod address range has been allocated to the node")
	} else {
		ev = append(ev, "spec.podCIDRs="+strings.Join(podCIDRs(n), ","))
	}
	pods, _, _ := podsLine(s, n.Name)
	ev = append(ev, pods)
	if !evidence.Gapped(s, cluster.ResEvents, metav1.NamespaceDefault) {
		ev = append(ev, evidence.LatestLines(now, nodeEvents(s, n.Name), evidence.MaxListed, func(e *corev1.Event) bool {
			return e.Type == corev1.EventTypeWarning
		})...)
	}
	title := fmt.Sprintf("Node %s has NetworkUnavailable for %s", n.Name, evidence.Since(now, c.LastTransitionTime))
	if c.Reason != "" {
		title += " (" + c.Reason + ")"
	}
	return findings.Finding{
		ID: idNetworkUnavailable, Severity: findings.Critical, Area: findings.AreaNode,
		Object:   findings.ObjectRef{Kind: "Node", Name: n.Name},
		Title:    title,
		Evidence: ev,
		Explanation: "The pod network of this node is not configured: the CNI plugin (or the cloud route controller, " +
			"which sets this condition when it has not created the node's route) has not finished, so pods there " +
			"cannot reach other nodes and the scheduler avoids the node. Look at the CNI DaemonSet pod on the node " +
			"and at the route controller's events.",
		Remediation: []findings.Remediation{
			findings.Inspect("Show the node's conditions and events", "kubectl describe node "+n.Name),
			findings.Inspect("Find the network plugin pods on the node (CNI DaemonSets run in kube-system)",
				"kubectl get pods -n kube-system -o wide --field-selector spec.nodeName="+n.Name),
		},
	}, true
}

// podCIDRs returns the pod address ranges of the node.
func podCIDRs(n *corev1.Node) []string {
	if len(n.Spec.PodCIDRs) > 0 {
		return n.Spec.PodCIDRs
	}
	return []string{n.Spec.PodCIDR}
}

// standardCondition reports whether the kubelet owns a node condition type;
// every other type was added by something else (Node Problem Detector, a
// cloud provider's agent, kdiag's agent).
func standardCondition(t corev1.NodeConditionType) bool {
	switch t {
	case corev1.NodeReady, corev1.NodeMemoryPressure, corev1.NodeDiskPressure,
		corev1.NodePIDPressure, corev1.NodeNetworkUnavailable:
		return true
	}
	return false
}

// staleProblemHeartbeat is how old a problem condition's heartbeat may get
// before kdiag says the detector that set it may be gone: three times Node
// Problem Detector's default 5m heartbeat period.
const staleProblemHeartbeat = 15 * time.Minute

// problemConditions reports each non-standard condition of the node that
// is True.
func problemConditions(s *cluster.Snapshot, n *corev1.Node) []findings.Finding {
	now := s.TakenAt
	var out []findings.Finding
	for i := range n.Status.Conditions {
		c := &n.Status.Conditions[i]
		if standardCondition(c.Type) || c.Status != corev1.ConditionTrue {
			continue
		}
		ev := []string{conditionLine(now, c)}
		if c.Message != "" {
			ev = append(ev, fmt.Sprintf("status.conditions[%s].message: %s", c.Type, evidence.Short(c.Message)))
		}
		stale := false
		if !c.LastHeartbeatTime.IsZero() {
			ev = append(ev, fmt.Sprintf("status.conditions[%s].lastHeartbeatTime=%s", c.Type, evidence.Stamp(now, c.LastHeartbeatTime)))
			if now.Sub(c.LastHeartbeatTime.Time) > staleProblemHeartbeat {
				stale = true
				ev = append(ev, fmt.Sprintf("the heartbeat is older than %s: the detector that set the condition may no longer run, "+
					"and a condition nobody updates never clears", duration.HumanDuration(staleProblemHeartbeat)))
			}
		}
		if !evidence.Gapped(s, cluster.ResEvents, metav1.NamespaceDefault) {
			ev = append(ev, evidence.LatestLines(now, nodeEvents(s, n.Name), evidence.MaxListed, func(e *corev1.Event) bool {
				return e.Type == corev1.EventTypeWarning && (e.Reason == c.Reason || strings.Contains(e.Reason, string(c.Type)))
			})...)
		}
		title := fmt.Sprintf("Node %s has condition %s=True for %s", n.Name, c.Type, evidence.Since(now, c.LastTransitionTime))
		if c.Reason != "" {
			title += " (" + c.Reason + ")"
		}
		if stale {
			title += "; its heartbeat is stale"
		}
		out = append(out, findings.Finding{
			ID: idProblemCondition, Severity: findings.Warning, Area: findings.AreaNode,
			Object:   findings.ObjectRef{Kind: "Node", Name: n.Name},
			Title:    title,
			Evidence: ev,
			Explanation: fmt.Sprintf("%s is not a kubelet condition: a node problem detector (Node Problem Detector, a cloud "+
				"provider's agent or kdiag's agent) set it to report a problem the kubelet does not see, such as a kernel "+
				"deadlock, a read-only filesystem or a runtime that keeps restarting. Pods on the node may fail in ways "+
				"their own status does not explain; fix the node or drain and repair it.", c.Type),
			Remediation: []findings.Remediation{
				findings.Inspect("Show the node's conditions and events", "kubectl describe node "+n.Name),
				findings.Inspect("List the node's recent events (problem detectors also report as events)",
					"kubectl get events -A --field-selector involvedObject.kind=Node,involvedObject.name="+n.Name+" --sort-by=.lastTimestamp"),
				findings.Inspect("Find the problem detector pods on the node", "kubectl get pods -A -o wide --field-selector spec.nodeName="+n.Name),
			},
		})
	}
	return out
}
