package workload

import (
	"fmt"
	"sort"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/duration"

	"github.com/kdiag/kdiag/pkg/analyze/internal/evidence"
	"github.com/kdiag/kdiag/pkg/analyze/internal/podready"
	"github.com/kdiag/kdiag/pkg/cluster"
	"github.com/kdiag/kdiag/pkg/findings"
)

// nodeState renders whether the node a pod is bound to is Ready, or "" when
// it is Ready or unknown.
func nodeState(s *cluster.Snapshot, node string) string {
	if node == "" || evidence.Gapped(s, cluster.ResNodes, "") {
		return ""
	}
	n := s.Index().Node(node)
	if n == nil {
		return "node " + node + " no longer exists"
	}
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			if c.Status == corev1.ConditionTrue {
				return ""
			}
			return fmt.Sprintf("node %s is not Ready (Ready=%s %s)", node, c.Status, c.Reason)
		}
	}
	return "node " + node + " has no Ready condition"
}

// coveredWaiting are waiting reasons other checks report; a pod showing one
// of them is not "stuck creating".
func coveredWaiting(reason string) bool {
	return reason == "CrashLoopBackOff" || pullReason(reason) || createReason(reason) != ""
}

// stuckCreating reports pods bound to a node whose containers have not
// started stuckAfter after scheduling, with the kubelet's warnings.
func stuckCreating(s *cluster.Snapshot) []findings.Finding {
	now := s.TakenAt
	var gs groups
	firstWarning := map[*group]string{}
	nodes := map[*group]map[string]bool{}
	oldest := map[*group]time.Duration{}
	for _, p := range sortedPods(s) {
		if p.Status.Phase != corev1.PodPending || p.Spec.NodeName == "" || p.DeletionTimestamp != nil {
			continue
		}
		since := p.CreationTimestamp.Time
		if c := podready.Condition(p, corev1.PodScheduled); c != nil && c.Status == corev1.ConditionTrue && !c.LastTransitionTime.IsZero() {
			since = c.LastTransitionTime.Time
		}
		if since.IsZero() || now.Sub(since) <= stuckAfter {
			continue
		}
		covered := false
		var waiting []string
		containerStatuses(p, func(cs *corev1.ContainerStatus, init bool) {
			switch {
			case cs.State.Waiting != nil && coveredWaiting(cs.State.Waiting.Reason):
				covered = true
			case cs.State.Waiting != nil:
				r := cs.State.Waiting.Reason
				if r == "" {
					r = "Waiting"
				}
				waiting = append(waiting, containerWord(cs.Name, init)+" "+r)
			case init && cs.State.Running != nil:
				waiting = append(waiting, containerWord(cs.Name, init)+" running since "+evidence.Stamp(now, cs.State.Running.StartedAt))
			}
		})
		if covered {
			continue
		}
		if len(p.Status.ContainerStatuses) == 0 && len(p.Status.InitContainerStatuses) == 0 {
			waiting = append(waiting, "no container status reported yet")
		}
		g := gs.get(s, p, "")
		line := fmt.Sprintf("%s/%s on node %s: Pending %s after scheduling; %s", p.Namespace, p.Name, p.Spec.NodeName,
			duration.HumanDuration(now.Sub(since)), strings.Join(waiting, ", "))
		if st := nodeState(s, p.Spec.NodeName); st != "" {
			line += "; " + st
		}
		if warn := evidence.Latest(podEvents(s, p), 3, evidence.IsWarning); len(warn) > 0 {
			if firstWarning[g] == "" {
				firstWarning[g] = warn[0].Reason + ": " + evidence.Short(warn[0].Message)
			}
			lines := make([]string, len(warn))
			for i, e := range warn {
				lines[i] = evidence.EventLine(now, e)
			}
			line += "; " + strings.Join(lines, "; ")
		}
		g.add(p, line)
		if nodes[g] == nil {
			nodes[g] = map[string]bool{}
		}
		nodes[g][p.Spec.NodeName] = true
		if d := now.Sub(since); d > oldest[g] {
			oldest[g] = d
		}
	}

	var out []findings.Finding
	for _, g := range gs.sorted() {
		ns := make([]string, 0, len(nodes[g]))
		for n := range nodes[g] {
			ns = append(ns, n)
		}
		sort.Strings(ns)
		title := fmt.Sprintf("%s: %s stuck starting for up to %s on %s", g.subject(), g.ofReplicas(),
			duration.HumanDuration(oldest[g]), strings.Join(evidence.Capped(ns), ", "))
		if w := firstWarning[g]; w != "" {
			title += " (" + w + ")"
		}
		p := g.pods[0]
		rem := []findings.Remediation{
			findings.Inspect("Show the pod's volumes, container states and events", "kubectl describe pod "+p.Name+" -n "+g.ns),
			findings.Inspect("List the kubelet's warnings for the pod", "kubectl get events -n "+g.ns+
				" --field-selector involvedObject.name="+p.Name+",type=Warning"),
			findings.Inspect("Check the node the pod waits on", "kubectl describe node "+p.Spec.NodeName),
		}
		out = append(out, findings.Finding{
			ID: idStuckCreating, Severity: findings.Warning, Area: findings.AreaWorkload,
			Object: g.object(), Title: title, Evidence: evidence.Capped(g.lines),
			Explanation: "The pods were scheduled but their containers have not started. The kubelet's warnings name the " +
				"step that fails: FailedMount or FailedAttachVolume (a missing ConfigMap or Secret volume, a volume still " +
				"attached elsewhere, a CSI driver error), FailedCreatePodSandBox (the CNI plugin cannot set up the pod " +
				"network or give it an IP), or an init container that never finishes. No warning at all points at the " +
				"node itself (kubelet or runtime hung).",
			Remediation: rem,
		})
	}
	return out
}

// stuckTerminating reports pods still present stuckAfter after their
// deletion grace period ended.
func stuckTerminating(s *cluster.Snapshot) []findings.Finding {
	now := s.TakenAt
	var gs groups
	finalizers := map[*group]int{}
	deadNode := map[*group]int{}
	oldest := map[*group]time.Duration{}
	for _, p := range sortedPods(s) {
		if p.DeletionTimestamp == nil || now.Sub(p.DeletionTimestamp.Time) <= stuckAfter {
			continue
		}
		g := gs.get(s, p, "")
		over := now.Sub(p.DeletionTimestamp.Time)
		line := fmt.Sprintf("%s/%s: metadata.deletionTimestamp=%s (the grace period ended %s ago)", p.Namespace, p.Name,
			p.DeletionTimestamp.UTC().Format(time.RFC3339), duration.HumanDuration(over))
		if len(p.Finalizers) > 0 {
			line += ", metadata.finalizers=[" + strings.Join(p.Finalizers, ",") + "]"
			finalizers[g]++
		}
		if p.Spec.NodeName != "" {
			line += ", node " + p.Spec.NodeName
			if st := nodeState(s, p.Spec.NodeName); st != "" {
				line += ": " + st
				deadNode[g]++
			}
		}
		line += ", phase " + string(p.Status.Phase)
		g.add(p, line)
		if over > oldest[g] {
			oldest[g] = over
		}
	}

	var out []findings.Finding
	for _, g := range gs.sorted() {
		title := fmt.Sprintf("%s: %s stuck Terminating, up to %s past the grace period", g.subject(), g.ofReplicas(), duration.HumanDuration(oldest[g]))
		var causes []string
		if deadNode[g] > 0 {
			title += fmt.Sprintf("; %s on a node that is not Ready", evidence.Plural(deadNode[g], "pod"))
			causes = append(causes, "the kubelet of a node that is not Ready cannot confirm the containers stopped, so the "+
				"API server keeps the pod until the node returns or its Node object is deleted")
		}
		if finalizers[g] > 0 {
			title += fmt.Sprintf("; %s held by finalizers", evidence.Plural(finalizers[g], "pod"))
			causes = append(causes, "a finalizer stays until the controller that owns it removes it; find out why that "+
				"controller has not (it may be gone)")
		}
		if len(causes) == 0 {
			causes = append(causes, "the kubelet has not confirmed the containers stopped: a hung container runtime, a "+
				"process ignoring SIGKILL in uninterruptible I/O, or a volume that cannot be unmounted")
		}
		p := g.pods[0]
		rem := []findings.Remediation{
			findings.Inspect("Show the pod's finalizers, node and events", "kubectl describe pod "+p.Name+" -n "+g.ns),
			findings.Inspect("Show what holds the pod", "kubectl get pod "+p.Name+" -n "+g.ns+
				" -o jsonpath={.metadata.finalizers}{.spec.nodeName}"),
		}
		if p.Spec.NodeName != "" {
			rem = append(rem, findings.Inspect("Check the pod's node", "kubectl describe node "+p.Spec.NodeName))
		}
		out = append(out, findings.Finding{
			ID: idStuckTerminating, Severity: findings.Warning, Area: findings.AreaWorkload,
			Object: g.object(), Title: title, Evidence: evidence.Capped(g.lines),
			Explanation: "A deleted pod stays Terminating until its kubelet confirms its containers are gone and its " +
				"finalizers are removed. Here " + strings.Join(causes, "; ") + ". While it stays, a StatefulSet cannot " +
				"recreate a pod of the same name and its volumes stay attached. Force deletion (kubectl delete pod --force " +
				"--grace-period=0) only once you know the containers no longer run, or two copies may run at once.",
			Remediation: rem,
		})
	}
	return out
}
