package workload

import (
	"fmt"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/util/duration"

	"github.com/kdiag/kdiag/pkg/analyze/internal/evidence"
	"github.com/kdiag/kdiag/pkg/analyze/internal/podready"
	"github.com/kdiag/kdiag/pkg/cluster"
	"github.com/kdiag/kdiag/pkg/findings"
)

// podRequests renders the summed CPU and memory requests of the pod's app
// containers: "cpu 2, memory 4Gi".
func podRequests(p *corev1.Pod) string {
	var parts []string
	for _, name := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
		var sum resource.Quantity
		set := false
		for _, c := range p.Spec.Containers {
			if q, ok := c.Resources.Requests[name]; ok {
				sum.Add(q)
				set = true
			}
		}
		if set {
			parts = append(parts, string(name)+" "+sum.String())
		}
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, ", ")
}

// placementLines renders what constrains where the pod may run.
func placementLines(p *corev1.Pod) []string {
	var out []string
	out = append(out, "requests per pod: "+podRequests(p))
	if len(p.Spec.NodeSelector) > 0 {
		kv := make([]string, 0, len(p.Spec.NodeSelector))
		for k, v := range p.Spec.NodeSelector {
			kv = append(kv, k+"="+v)
		}
		sort.Strings(kv)
		out = append(out, "spec.nodeSelector: "+strings.Join(kv, ","))
	}
	if a := p.Spec.Affinity; a != nil {
		var kinds []string
		if a.NodeAffinity != nil && a.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution != nil {
			kinds = append(kinds, "required nodeAffinity")
		}
		if a.PodAffinity != nil && len(a.PodAffinity.RequiredDuringSchedulingIgnoredDuringExecution) > 0 {
			kinds = append(kinds, "required podAffinity")
		}
		if a.PodAntiAffinity != nil && len(a.PodAntiAffinity.RequiredDuringSchedulingIgnoredDuringExecution) > 0 {
			kinds = append(kinds, "required podAntiAffinity")
		}
		if len(kinds) > 0 {
			out = append(out, "spec.affinity sets "+strings.Join(kinds, ", "))
		}
	}
	if len(p.Spec.TopologySpreadConstraints) > 0 {
		out = append(out, fmt.Sprintf("spec.topologySpreadConstraints: %d", len(p.Spec.TopologySpreadConstraints)))
	}
	var claims []string
	for _, v := range p.Spec.Volumes {
		if v.PersistentVolumeClaim != nil {
			claims = append(claims, v.PersistentVolumeClaim.ClaimName)
		}
	}
	if len(claims) > 0 {
		out = append(out, "uses PersistentVolumeClaims "+strings.Join(claims, ",")+" (an unbound claim or a volume in another zone also blocks scheduling)")
	}
	return out
}

// unschedulable reports pending pods the scheduler cannot place, and
// pending pods no scheduler has looked at for stuckAfter.
func unschedulable(s *cluster.Snapshot) []findings.Finding {
	now := s.TakenAt
	var gs groups
	critical := map[*group]bool{}
	messages := map[*group][]string{}
	oldest := map[*group]string{}
	for _, p := range sortedPods(s) {
		if p.Status.Phase != corev1.PodPending || p.Spec.NodeName != "" || p.DeletionTimestamp != nil {
			continue
		}
		age := now.Sub(p.CreationTimestamp.Time)
		c := podready.Condition(p, corev1.PodScheduled)
		switch {
		case c != nil && c.Status == corev1.ConditionFalse && c.Reason != corev1.PodReasonSchedulingGated:
			g := gs.get(s, p, "")
			critical[g] = true
			line := fmt.Sprintf("%s/%s: Pending, status.conditions[PodScheduled].status=False reason=%s since %s",
				p.Namespace, p.Name, c.Reason, evidence.Stamp(now, c.LastTransitionTime))
			if c.Message != "" {
				messages[g] = appendUnique(messages[g], evidence.Short(c.Message))
			}
			if e := evidence.LatestEvent(podEvents(s, p), func(e *corev1.Event) bool { return e.Reason == "FailedScheduling" }); e != nil {
				line += fmt.Sprintf("; FailedScheduling x%d, last %s", cluster.EventCount(e), evidence.Ago(now, cluster.EventTime(e).Time))
				if e.Message != "" && c.Message == "" {
					messages[g] = appendUnique(messages[g], evidence.Short(e.Message))
				}
			}
			g.add(p, line)
			if _, ok := oldest[g]; !ok && !p.CreationTimestamp.IsZero() {
				oldest[g] = duration.HumanDuration(age)
			}
		case c == nil && len(p.Spec.SchedulingGates) == 0 && !p.CreationTimestamp.IsZero() && age > stuckAfter:
			g := gs.get(s, p, "")
			sched := p.Spec.SchedulerName
			if sched == "" {
				sched = corev1.DefaultSchedulerName
			}
			g.add(p, fmt.Sprintf("%s/%s: Pending for %s with no PodScheduled condition and no node: spec.schedulerName=%s has not looked at it",
				p.Namespace, p.Name, duration.HumanDuration(age), sched))
			if _, ok := oldest[g]; !ok {
				oldest[g] = duration.HumanDuration(age)
			}
		}
	}

	var out []findings.Finding
	for _, g := range gs.sorted() {
		p := g.pods[0]
		ev := evidence.Capped(g.lines)
		for i, m := range messages[g] {
			if i == evidence.MaxListed {
				ev = append(ev, fmt.Sprintf("... and %d more scheduler messages", len(messages[g])-evidence.MaxListed))
				break
			}
			ev = append(ev, "scheduler message: "+m)
		}
		ev = append(ev, placementLines(p)...)
		sev := findings.Warning
		var title, expl string
		rem := []findings.Remediation{
			findings.Inspect("Show the scheduler's verdict and the pod's constraints", "kubectl describe pod "+p.Name+" -n "+g.ns),
		}
		if critical[g] {
			sev = findings.Critical
			title = fmt.Sprintf("%s: %s unschedulable", g.subject(), g.ofReplicas())
			if a := oldest[g]; a != "" {
				title += " (pending " + a + ")"
			}
			if len(messages[g]) > 0 {
				title += ": " + messages[g][0]
			}
			expl = "The scheduler found no node that satisfies the pod: its message counts, per reason, the nodes it " +
				"rejected (insufficient CPU or memory, taints the pod does not tolerate, node selectors or affinity, volume " +
				"zones, unbound claims). Lower the requests, relax the constraints, add tolerations, or add nodes; the " +
				"cluster autoscaler, when present, reports why it did not scale up in the pod's events."
			rem = append(rem,
				findings.Inspect("List the scheduler's failures for the pod", "kubectl get events -n "+g.ns+
					" --field-selector involvedObject.name="+p.Name+",reason=FailedScheduling"),
				findings.Inspect("Compare node capacity, taints and cordons", "kubectl get nodes -o custom-columns="+
					"NAME:.metadata.name,CPU:.status.allocatable.cpu,MEMORY:.status.allocatable.memory,"+
					"TAINTS:.spec.taints[*].key,UNSCHEDULABLE:.spec.unschedulable"))
		} else {
			title = fmt.Sprintf("%s: %s Pending for %s and never considered by a scheduler", g.subject(), g.ofReplicas(), oldest[g])
			expl = "No scheduler has set the pod's PodScheduled condition, which kube-scheduler does on its first attempt. " +
				"Either the scheduler is not running (or not leader), or spec.schedulerName names a scheduler that does not exist."
			rem = append(rem,
				findings.Inspect("Check that kube-scheduler holds its leader lease and renews it", "kubectl get lease kube-scheduler -n kube-system -o yaml"),
				findings.Inspect("Find the scheduler pods (self-managed control planes)", "kubectl get pods -n kube-system -l component=kube-scheduler"))
		}
		rem = append(rem, ownerCommands(g)...)
		out = append(out, findings.Finding{
			ID: idUnschedulable, Severity: sev, Area: findings.AreaWorkload,
			Object: g.object(), Title: title, Evidence: ev, Explanation: expl, Remediation: rem,
		})
	}
	return out
}

// appendUnique appends s to list unless it is there already.
func appendUnique(list []string, s string) []string {
	for _, x := range list {
		if x == s {
			return list
		}
	}
	return append(list, s)
}
