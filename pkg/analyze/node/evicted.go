package node

import (
	"fmt"
	"maps"
	"regexp"
	"slices"
	"sort"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/kdiag/kdiag/pkg/analyze/internal/evidence"
	"github.com/kdiag/kdiag/pkg/cluster"
	"github.com/kdiag/kdiag/pkg/findings"
)

// isEvicted reports whether the kubelet evicted (or, under pressure,
// rejected) the pod: it is Failed with status.reason Evicted.
func isEvicted(p *corev1.Pod) bool {
	return p.Status.Phase == corev1.PodFailed && p.Status.Reason == "Evicted"
}

var (
	// The kubelet's eviction message: "The node was low on resource: memory. ..."
	lowOnResource = regexp.MustCompile(`low on resource: ([A-Za-z0-9._/-]+)`)
	// Its admission rejection under pressure: "The node had condition: [DiskPressure]. "
	hadCondition = regexp.MustCompile(`had condition: \[([A-Za-z]+)`)
)

// conditionResource maps a pressure condition to the resource the kubelet
// names in eviction messages, or "" for another condition.
func conditionResource(cond string) string {
	switch corev1.NodeConditionType(cond) {
	case corev1.NodeMemoryPressure:
		return "memory"
	case corev1.NodeDiskPressure:
		return "ephemeral-storage"
	case corev1.NodePIDPressure:
		return "pids"
	}
	return ""
}

// evictionResource returns the resource an eviction message names
// ("memory", "ephemeral-storage", "pids"), or "" when it names none.
func evictionResource(msg string) string {
	if m := lowOnResource.FindStringSubmatch(msg); m != nil {
		return strings.TrimSuffix(m[1], ".")
	}
	if m := hadCondition.FindStringSubmatch(msg); m != nil {
		if r := conditionResource(m[1]); r != "" {
			return r
		}
		return m[1]
	}
	return ""
}

// evictedAt returns when the pod was evicted: the DisruptionTarget
// condition the kubelet sets, else the latest container finish.
func evictedAt(p *corev1.Pod) time.Time {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.DisruptionTarget && !c.LastTransitionTime.IsZero() {
			return c.LastTransitionTime.Time
		}
	}
	var t time.Time
	for _, cs := range p.Status.ContainerStatuses {
		if cs.State.Terminated != nil && cs.State.Terminated.FinishedAt.After(t) {
			t = cs.State.Terminated.FinishedAt.Time
		}
	}
	return t
}

// evictionGroup is the evicted pods of one owning workload.
type evictionGroup struct {
	ns    string
	owner cluster.Workload
	pods  []*corev1.Pod
}

// evicted reports the pods the kubelet evicted, one finding per owning
// workload.
func evicted(s *cluster.Snapshot) []findings.Finding {
	now := s.TakenAt
	ix := s.Index()
	groups := map[string]*evictionGroup{}
	for i := range s.Pods {
		p := &s.Pods[i]
		if !isEvicted(p) || evidence.Gapped(s, cluster.ResPods, p.Namespace) {
			continue
		}
		w := ix.OwnerOf(p)
		key := p.Namespace + "/" + w.Kind + "/" + w.Name
		g := groups[key]
		if g == nil {
			g = &evictionGroup{ns: p.Namespace, owner: w}
			groups[key] = g
		}
		g.pods = append(g.pods, p)
	}
	keys := slices.Sorted(maps.Keys(groups))

	var out []findings.Finding
	for _, key := range keys {
		g := groups[key]
		sort.Slice(g.pods, func(i, j int) bool {
			a, b := evictedAt(g.pods[i]), evictedAt(g.pods[j])
			if !a.Equal(b) {
				return a.After(b)
			}
			return g.pods[i].Name < g.pods[j].Name
		})
		byResource, byNode := map[string]int{}, map[string]int{}
		var lines []string
		for _, p := range g.pods {
			r := evictionResource(p.Status.Message)
			if r == "" {
				r = "unknown resource"
			}
			byResource[r]++
			byNode[p.Spec.NodeName]++
			when := "at an unknown time"
			if t := evictedAt(p); !t.IsZero() {
				when = evidence.Ago(now, t)
			}
			lines = append(lines, fmt.Sprintf("%s/%s on node %s, %s: %s", p.Namespace, p.Name, p.Spec.NodeName, when, evidence.Short(p.Status.Message)))
		}
		ev := []string{fmt.Sprintf("%s with status.phase=Failed status.reason=Evicted: %s; nodes: %s",
			evidence.Plural(len(g.pods), "pod"), counts(byResource, "for "), counts(byNode, ""))}
		ev = append(ev, evidence.Capped(lines)...)

		latest := evictedAt(g.pods[0])
		sev := findings.Warning
		if !latest.IsZero() && now.Sub(latest) > recent {
			sev = findings.Info
		}
		obj := findings.ObjectRef{Kind: g.owner.Kind, Namespace: g.ns, Name: g.owner.Name}
		why := counts(byResource, "for ")
		if len(byResource) == 1 {
			for r := range byResource {
				why = "for " + r
			}
		}
		var title string
		if g.owner.Kind == "Pod" {
			title = fmt.Sprintf("Pod %s/%s was evicted by the kubelet (%s)", g.ns, g.owner.Name, why)
			if !latest.IsZero() {
				title += " " + evidence.Ago(now, latest)
			}
		} else {
			title = fmt.Sprintf("%s %s/%s: %s evicted by the kubelet (%s)", g.owner.Kind, g.ns, g.owner.Name,
				evidence.Plural(len(g.pods), "pod"), why)
			if !latest.IsZero() {
				title += ", latest " + evidence.Ago(now, latest)
			}
		}
		rem := []findings.Remediation{
			findings.Inspect("List the failed pods of the namespace with their nodes",
				"kubectl get pods -n "+g.ns+" --field-selector status.phase=Failed -o wide"),
			findings.Inspect("Show the latest eviction: message and the usage the kubelet measured",
				"kubectl describe pod "+g.pods[0].Name+" -n "+g.ns),
		}
		if n := g.pods[0].Spec.NodeName; n != "" {
			rem = append(rem, findings.Inspect("Show the pressure of the node that evicted it", "kubectl describe node "+n))
		}
		if byResource["memory"] > 0 {
			rem = append(rem, findings.Inspect("Compare memory usage with requests", "kubectl top pod -n "+g.ns+" --containers"))
		}
		out = append(out, findings.Finding{
			ID: idEvicted, Severity: sev, Area: findings.AreaNode,
			Object:   obj,
			Title:    title,
			Evidence: ev,
			Explanation: "The kubelet evicted these pods because their node ran short of the resource named; pods using " +
				"more than they request (or requesting nothing) go first. An evicted pod is not restarted: its controller " +
				"creates a replacement and the Failed pod stays as a record until it is deleted. Repeated evictions mean the " +
				"pods' requests are below their real usage or the nodes are too small.",
			Remediation: rem,
		})
	}
	return out
}

// counts renders a tally as "5 for memory, 2 for pids", largest first.
func counts(m map[string]int, prefix string) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		if m[keys[i]] != m[keys[j]] {
			return m[keys[i]] > m[keys[j]]
		}
		return keys[i] < keys[j]
	})
	parts := make([]string, len(keys))
	for i, k := range keys {
		name := k
		if name == "" {
			name = "(none)"
		}
		parts[i] = fmt.Sprintf("%d %s%s", m[k], prefix, name)
	}
	return strings.Join(parts, ", ")
}
