package node

import (
	"fmt"
	"sort"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"

	"github.com/kdiag/kdiag/pkg/analyze/internal/evidence"
	"github.com/kdiag/kdiag/pkg/analyze/internal/podready"
	"github.com/kdiag/kdiag/pkg/cluster"
	"github.com/kdiag/kdiag/pkg/findings"
)

// recent is how old the latest OOM kill or eviction may be for its finding
// to be a warning; older ones are reported as info, since a container's
// lastState and an evicted pod's record persist long after the fact.
const recent = 24 * time.Hour

// limitFactor and mebibyte define the raised memory limit kdiag proposes
// for an OOMKilled container: 1.5x the current limit, rounded up to a whole
// Mi. A modest step: enough to absorb a usage peak just above the limit,
// small enough not to hide a leak or overcommit the node.
const (
	limitFactorNum = 3
	limitFactorDen = 2
	mebibyte       = 1 << 20
)

// oomKill is one container whose last (or current) termination was OOMKilled.
type oomKill struct {
	pod       *corev1.Pod
	owner     cluster.Workload
	container string
	init      bool
	spec      *corev1.Container
	term      *corev1.ContainerStateTerminated
	current   bool // state.terminated rather than lastState.terminated
	restarts  int32
}

// finished is when the killed container stopped.
func (k oomKill) finished() time.Time { return k.term.FinishedAt.Time }

// oomKills finds the OOMKilled containers of the snapshot, by node.
func oomKills(s *cluster.Snapshot) map[string][]oomKill {
	ix := s.Index()
	out := map[string][]oomKill{}
	for i := range s.Pods {
		p := &s.Pods[i]
		if p.Spec.NodeName == "" || evidence.Gapped(s, cluster.ResPods, p.Namespace) {
			continue
		}
		add := func(statuses []corev1.ContainerStatus, init bool) {
			for j := range statuses {
				cs := &statuses[j]
				k := oomKill{pod: p, container: cs.Name, init: init, restarts: cs.RestartCount}
				switch {
				case cs.State.Terminated != nil && cs.State.Terminated.Reason == "OOMKilled":
					k.term, k.current = cs.State.Terminated, true
				case cs.LastTerminationState.Terminated != nil && cs.LastTerminationState.Terminated.Reason == "OOMKilled":
					k.term = cs.LastTerminationState.Terminated
				default:
					continue
				}
				k.owner = ix.OwnerOf(p)
				k.spec = podready.Container(&p.Spec, cs.Name, init)
				out[p.Spec.NodeName] = append(out[p.Spec.NodeName], k)
			}
		}
		add(p.Status.InitContainerStatuses, true)
		add(p.Status.ContainerStatuses, false)
	}
	for _, ks := range out {
		sort.Slice(ks, func(i, j int) bool {
			if !ks[i].finished().Equal(ks[j].finished()) {
				return ks[i].finished().After(ks[j].finished())
			}
			a, b := ks[i].pod.Namespace+"/"+ks[i].pod.Name+"/"+ks[i].container, ks[j].pod.Namespace+"/"+ks[j].pod.Name+"/"+ks[j].container
			return a < b
		})
	}
	return out
}

// systemOOMs returns the kubelet's SystemOOM events (the kernel's global
// OOM killer ran), by node, oldest first.
func systemOOMs(s *cluster.Snapshot) map[string][]*corev1.Event {
	out := map[string][]*corev1.Event{}
	for i := range s.Events {
		e := &s.Events[i]
		if e.InvolvedObject.Kind == "Node" && e.Reason == "SystemOOM" {
			out[e.InvolvedObject.Name] = append(out[e.InvolvedObject.Name], e)
		}
	}
	for _, evs := range out {
		sort.SliceStable(evs, func(i, j int) bool { return cluster.EventTime(evs[i]).Time.Before(cluster.EventTime(evs[j]).Time) })
	}
	return out
}

// memoryOf renders a container's memory request and limit.
func memoryOf(c *corev1.Container) string {
	if c == nil {
		return "memory request and limit unknown (container not in the pod spec)"
	}
	req, lim := "none", "no limit"
	if q, ok := c.Resources.Requests[corev1.ResourceMemory]; ok {
		req = q.String()
	}
	if q, ok := c.Resources.Limits[corev1.ResourceMemory]; ok {
		lim = "limit " + q.String()
	}
	return "memory request " + req + ", " + lim
}

// hasMemoryLimit reports whether the container sets a memory limit.
func hasMemoryLimit(c *corev1.Container) bool {
	if c == nil {
		return false
	}
	_, ok := c.Resources.Limits[corev1.ResourceMemory]
	return ok
}

// oomKilled reports, per node, the containers that were OOMKilled and the
// kernel OOM killer's runs.
func oomKilled(s *cluster.Snapshot) []findings.Finding {
	now := s.TakenAt
	kills := oomKills(s)
	var sys map[string][]*corev1.Event
	if !evidence.Gapped(s, cluster.ResEvents, metav1.NamespaceDefault) {
		sys = systemOOMs(s)
	}
	nodes := make([]string, 0, len(kills)+len(sys))
	for n := range kills {
		nodes = append(nodes, n)
	}
	for n := range sys {
		if _, ok := kills[n]; !ok {
			nodes = append(nodes, n)
		}
	}
	sort.Strings(nodes)

	var out []findings.Finding
	for _, node := range nodes {
		ks, evs := kills[node], sys[node]
		var ev []string
		var lines []string
		noLimit, fresh := 0, len(evs) > 0
		for _, k := range ks {
			where := "lastState.terminated"
			if k.current {
				where = "state.terminated"
			}
			kind := "container"
			if k.init {
				kind = "init container"
			}
			line := fmt.Sprintf("%s/%s %s %s", k.pod.Namespace, k.pod.Name, kind, k.container)
			if k.owner.Kind != "Pod" {
				line += fmt.Sprintf(" (%s %s)", k.owner.Kind, k.owner.Name)
			}
			line += fmt.Sprintf(": %s.reason=OOMKilled exitCode=%d finishedAt=%s, restartCount=%d, %s",
				where, k.term.ExitCode, evidence.Stamp(now, k.term.FinishedAt), k.restarts, memoryOf(k.spec))
			lines = append(lines, line)
			if !hasMemoryLimit(k.spec) {
				noLimit++
			}
			if k.term.FinishedAt.IsZero() || now.Sub(k.finished()) <= recent {
				fresh = true
			}
		}
		ev = append(ev, evidence.Capped(lines)...)
		if noLimit > 0 {
			ev = append(ev, fmt.Sprintf("%s without a memory limit: such a container is OOMKilled only when the node itself runs out of memory",
				evidence.Plural(noLimit, "container")))
		}
		if n := s.Index().Node(node); n != nil {
			if c := condition(n, corev1.NodeMemoryPressure); c != nil && c.Status == corev1.ConditionTrue {
				ev = append(ev, "node "+conditionLine(now, c))
			}
			if q, ok := n.Status.Allocatable[corev1.ResourceMemory]; ok {
				ev = append(ev, "node status.allocatable.memory="+q.String())
			}
		}
		ev = append(ev, evidence.LatestLines(now, evs, evidence.MaxListed, nil)...)

		sev := findings.Warning
		if !fresh {
			sev = findings.Info
		}
		var title string
		switch {
		case len(ks) > 0:
			k := ks[0]
			title = fmt.Sprintf("Node %s: %s OOMKilled, most recently %s/%s/%s %s (%s)", node, evidence.Plural(len(ks), "container"),
				k.pod.Namespace, k.pod.Name, k.container, evidence.Ago(now, k.term.FinishedAt.Time), limitWord(k.spec))
		default:
			var total int32
			for _, e := range evs {
				total += cluster.EventCount(e)
			}
			title = fmt.Sprintf("Node %s: the kernel OOM killer ran %d times (SystemOOM events), last %s", node, total,
				evidence.Ago(now, cluster.EventTime(evs[len(evs)-1]).Time))
		}
		out = append(out, findings.Finding{
			ID: idOOMKilled, Severity: sev, Area: findings.AreaNode,
			Object:   findings.ObjectRef{Kind: "Node", Name: node},
			Title:    title,
			Evidence: ev,
			Explanation: "A container is OOMKilled when it uses more memory than its limit (the kernel kills it inside its " +
				"cgroup), or, when it has no limit, when the whole node runs out of memory. Each kill restarts the container " +
				"and loses its in-flight work. If usage just peaks above the limit, raise the limit; if it keeps growing, " +
				"fix the leak; if the node itself runs out, set requests that match real usage or use bigger nodes.",
			Remediation: oomRemediation(s, node, ks),
		})
	}
	return out
}

// limitWord renders a container's memory limit for a title.
func limitWord(c *corev1.Container) string {
	if c == nil {
		return "limit unknown"
	}
	if q, ok := c.Resources.Limits[corev1.ResourceMemory]; ok {
		return "limit " + q.String()
	}
	return "no limit"
}

// oomRemediation lists commands to measure usage and, per owning workload
// and container, a patch that raises the memory limit.
func oomRemediation(s *cluster.Snapshot, node string, ks []oomKill) []findings.Remediation {
	rem := []findings.Remediation{}
	seenNS := map[string]bool{}
	var nss []string
	for _, k := range ks {
		if !seenNS[k.pod.Namespace] {
			seenNS[k.pod.Namespace] = true
			nss = append(nss, k.pod.Namespace)
		}
	}
	sort.Strings(nss)
	for i, ns := range nss {
		if i == evidence.MaxListed {
			break
		}
		rem = append(rem, findings.Inspect("Compare the containers' memory usage with their limits in namespace "+ns,
			"kubectl top pod -n "+ns+" --containers --sort-by=memory"))
	}
	if len(ks) > 0 {
		k := ks[0]
		rem = append(rem, findings.Inspect("Show the most recent kill: last state, limits and events",
			"kubectl describe pod "+k.pod.Name+" -n "+k.pod.Namespace))
	} else {
		rem = append(rem, findings.Inspect("List the node's memory pressure and SystemOOM events", "kubectl describe node "+node))
	}
	seen := map[string]bool{}
	for _, k := range ks {
		key := k.pod.Namespace + "/" + k.owner.Kind + "/" + k.owner.Name + "/" + k.container
		if seen[key] {
			continue
		}
		seen[key] = true
		if r, ok := raiseLimit(s, k); ok {
			rem = append(rem, r)
		}
	}
	return rem
}

// raiseLimit builds the strategic-merge patch that raises the memory limit
// of an OOMKilled container in its owning Deployment, StatefulSet or
// DaemonSet to limitFactor times the current limit, rounded up to a whole
// Mi. It needs the owner in the snapshot and a current limit (from the
// template, or from the pod when a LimitRange defaulted it); without a
// limit there is no number to scale, so there is no patch.
func raiseLimit(s *cluster.Snapshot, k oomKill) (findings.Remediation, bool) {
	ix := s.Index()
	ns := k.pod.Namespace
	var tmpl *corev1.PodTemplateSpec
	var resource, kind string
	switch k.owner.Kind {
	case "Deployment":
		if d := ix.Deployment(ns, k.owner.Name); d != nil {
			tmpl, resource, kind = &d.Spec.Template, "deployments", "deployment"
		}
	case "StatefulSet":
		if st := ix.StatefulSet(ns, k.owner.Name); st != nil {
			tmpl, resource, kind = &st.Spec.Template, "statefulsets", "statefulset"
		}
	case "DaemonSet":
		if d := ix.DaemonSet(ns, k.owner.Name); d != nil {
			tmpl, resource, kind = &d.Spec.Template, "daemonsets", "daemonset"
		}
	}
	if tmpl == nil {
		return findings.Remediation{}, false
	}
	c := podready.Container(&tmpl.Spec, k.container, k.init)
	if c == nil {
		return findings.Remediation{}, false
	}
	old, ok := c.Resources.Limits[corev1.ResourceMemory]
	if !ok && k.spec != nil {
		old, ok = k.spec.Resources.Limits[corev1.ResourceMemory]
	}
	if !ok || old.Value() <= 0 {
		return findings.Remediation{}, false
	}
	newLimit := raisedLimit(old)
	listKey := "containers"
	if k.init {
		listKey = "initContainers"
	}
	patch := map[string]any{"spec": map[string]any{"template": map[string]any{"spec": map[string]any{
		listKey: []any{map[string]any{"name": k.container, "resources": map[string]any{
			"limits": map[string]any{"memory": newLimit.String()}}}},
	}}}}
	r, err := findings.Patch(
		fmt.Sprintf("Raise the memory limit of container %s in %s %s/%s from %s to %s (1.5x, rounded up to Mi); "+
			"first check with kubectl top that usage peaks near the limit rather than growing without bound",
			k.container, kind, ns, k.owner.Name, old.String(), newLimit.String()),
		schema.GroupVersionResource{Group: "apps", Version: "v1", Resource: resource}, kind, ns, k.owner.Name,
		types.StrategicMergePatchType, patch)
	if err != nil {
		return findings.Remediation{}, false
	}
	return r, true
}

// raisedLimit returns 1.5 times the limit, rounded up to a whole Mi.
func raisedLimit(old resource.Quantity) resource.Quantity {
	b := old.Value()
	scaled := (b*limitFactorNum + limitFactorDen - 1) / limitFactorDen
	mi := (scaled + mebibyte - 1) / mebibyte
	return resource.MustParse(fmt.Sprintf("%dMi", mi))
}
