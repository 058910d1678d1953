package workload

import (
	"fmt"
	"sort"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/duration"

	"github.com/kdiag/kdiag/pkg/cluster"
	"github.com/kdiag/kdiag/pkg/findings"
)

// maxListed caps lists in evidence: the first maxListed items, then a line
// saying how many more there are.
const maxListed = 5

// maxMessage caps kubelet, scheduler and controller messages in evidence.
const maxMessage = 300

// stuckAfter is how long a pod may stay Pending (unbound, or bound with
// containers not yet created) or Terminating past its grace period before
// kdiag calls it stuck. Image pulls and volume attachments normally finish
// well within it.
const stuckAfter = 5 * time.Minute

// capped returns the first maxListed items and, when there are more, a line
// "... and N more".
func capped(items []string) []string {
	if len(items) <= maxListed {
		return items
	}
	out := append([]string(nil), items[:maxListed]...)
	return append(out, fmt.Sprintf("... and %d more", len(items)-maxListed))
}

// ago renders how long before now t was, as kubectl does ("12m ago").
func ago(now, t time.Time) string {
	if t.IsZero() {
		return "at an unknown time"
	}
	d := now.Sub(t)
	if d < 0 {
		return duration.HumanDuration(-d) + " in the future (clock skew)"
	}
	return duration.HumanDuration(d) + " ago"
}

// stamp renders a timestamp and its age: "2026-05-20T11:48:00Z (12m ago)".
func stamp(now time.Time, t metav1.Time) string {
	if t.IsZero() {
		return "unknown"
	}
	return t.UTC().Format(time.RFC3339) + " (" + ago(now, t.Time) + ")"
}

// short collapses whitespace and caps a message for evidence.
func short(msg string) string {
	msg = strings.Join(strings.Fields(msg), " ")
	if r := []rune(msg); len(r) > maxMessage {
		return string(r[:maxMessage]) + "…"
	}
	return msg
}

// plural returns "1 pod" or "3 pods".
func plural(n int, word string) string {
	if n == 1 {
		return fmt.Sprintf("%d %s", n, word)
	}
	return fmt.Sprintf("%d %ss", n, word)
}

// gapped reports whether resource r could not be read for namespace ns (a
// gap for all namespaces covers every one). Checks skip what a gap covers
// and never conclude from the absence of its objects.
func gapped(s *cluster.Snapshot, r cluster.Resource, ns string) bool {
	for _, g := range s.Gaps {
		if g.Resource == r && (g.Namespace == "" || g.Namespace == ns) {
			return true
		}
	}
	return false
}

// eventCount returns how many times an event was seen.
func eventCount(e *corev1.Event) int32 {
	if e.Series != nil && e.Series.Count > 0 {
		return e.Series.Count
	}
	if e.Count > 0 {
		return e.Count
	}
	return 1
}

// eventLine renders an event for evidence:
// "event Warning Failed x3, last 2m ago: Failed to pull image ...".
func eventLine(now time.Time, e *corev1.Event) string {
	line := fmt.Sprintf("event %s %s x%d", e.Type, e.Reason, eventCount(e))
	if t := cluster.EventTime(e); !t.IsZero() {
		line += ", last " + ago(now, t.Time)
	}
	if e.Message != "" {
		line += ": " + short(e.Message)
	}
	return line
}

// podEvents returns the events about a pod, oldest first, or nil when the
// events of its namespace were not read.
func podEvents(s *cluster.Snapshot, p *corev1.Pod) []*corev1.Event {
	if gapped(s, cluster.ResEvents, p.Namespace) {
		return nil
	}
	return s.Index().EventsFor("Pod", p.Namespace, p.Name)
}

// latestEvent returns the most recent of evs (oldest first) that keep
// accepts, or nil.
func latestEvent(evs []*corev1.Event, keep func(*corev1.Event) bool) *corev1.Event {
	for i := len(evs) - 1; i >= 0; i-- {
		if keep(evs[i]) {
			return evs[i]
		}
	}
	return nil
}

// terminal reports whether the pod has finished (Succeeded or Failed).
func terminal(p *corev1.Pod) bool {
	return p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed
}

// containerStatuses calls fn for every init and app container status of
// the pod, init containers first.
func containerStatuses(p *corev1.Pod, fn func(cs *corev1.ContainerStatus, init bool)) {
	for i := range p.Status.InitContainerStatuses {
		fn(&p.Status.InitContainerStatuses[i], true)
	}
	for i := range p.Status.ContainerStatuses {
		fn(&p.Status.ContainerStatuses[i], false)
	}
}

// containerSpec returns the named container (or init container) of a pod,
// or nil.
func containerSpec(p *corev1.Pod, name string, init bool) *corev1.Container {
	list := p.Spec.Containers
	if init {
		list = p.Spec.InitContainers
	}
	for i := range list {
		if list[i].Name == name {
			return &list[i]
		}
	}
	return nil
}

// containerWord names a container for evidence: "container app" or
// "init container migrate".
func containerWord(name string, init bool) string {
	if init {
		return "init container " + name
	}
	return "container " + name
}

// group collects the pods of one owning workload that share a problem.
type group struct {
	ns    string
	owner cluster.Workload
	// key distinguishes groups of the same owner (e.g. per image).
	key  string
	pods []*corev1.Pod
	// lines are evidence lines, one per affected pod or container.
	lines []string
	seen  map[*corev1.Pod]bool
}

// add records one affected pod (once) and its evidence line.
func (g *group) add(p *corev1.Pod, line string) {
	if g.seen == nil {
		g.seen = map[*corev1.Pod]bool{}
	}
	if !g.seen[p] {
		g.seen[p] = true
		g.pods = append(g.pods, p)
	}
	if line != "" {
		g.lines = append(g.lines, line)
	}
}

// object is the object a group's finding concerns: the owning workload, or
// the pod itself when it has none.
func (g *group) object() findings.ObjectRef {
	return findings.ObjectRef{Kind: g.owner.Kind, Namespace: g.ns, Name: g.owner.Name}
}

// subject names the group in titles: "Deployment shop/web".
func (g *group) subject() string {
	return g.owner.Kind + " " + g.ns + "/" + g.owner.Name
}

// ofReplicas renders "2 of 3 pods" when the owner's replica count is known,
// else "2 pods"; a bare pod is "pod".
func (g *group) ofReplicas() string {
	if g.owner.Kind == "Pod" {
		return "pod"
	}
	if g.owner.Replicas != nil {
		return fmt.Sprintf("%d of %d pods", len(g.pods), *g.owner.Replicas)
	}
	return plural(len(g.pods), "pod")
}

// groups collects groups by owner and an extra key, in a stable order.
type groups struct {
	m map[string]*group
}

// get returns the group for the pod's owner and key, creating it.
func (gs *groups) get(s *cluster.Snapshot, p *corev1.Pod, key string) *group {
	if gs.m == nil {
		gs.m = map[string]*group{}
	}
	w := s.Index().OwnerOf(p)
	k := p.Namespace + "\x00" + w.Kind + "\x00" + w.Name + "\x00" + key
	g := gs.m[k]
	if g == nil {
		g = &group{ns: p.Namespace, owner: w, key: key}
		gs.m[k] = g
	}
	return g
}

// sorted returns the groups ordered by namespace, owner and key.
func (gs *groups) sorted() []*group {
	out := make([]*group, 0, len(gs.m))
	for _, g := range gs.m {
		out = append(out, g)
	}
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if a.ns != b.ns {
			return a.ns < b.ns
		}
		if a.owner.Kind != b.owner.Kind {
			return a.owner.Kind < b.owner.Kind
		}
		if a.owner.Name != b.owner.Name {
			return a.owner.Name < b.owner.Name
		}
		return a.key < b.key
	})
	return out
}

// sortedPods returns the snapshot's pods that no gap covers, ordered by
// namespace and name, so that findings come out in a stable order.
func sortedPods(s *cluster.Snapshot) []*corev1.Pod {
	out := make([]*corev1.Pod, 0, len(s.Pods))
	for i := range s.Pods {
		if !gapped(s, cluster.ResPods, s.Pods[i].Namespace) {
			out = append(out, &s.Pods[i])
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Namespace != out[j].Namespace {
			return out[i].Namespace < out[j].Namespace
		}
		return out[i].Name < out[j].Name
	})
	return out
}

// ownerCommands returns read-only commands about the owning workload.
func ownerCommands(g *group) []findings.Remediation {
	switch g.owner.Kind {
	case "Deployment", "StatefulSet", "DaemonSet":
		k := strings.ToLower(g.owner.Kind)
		return []findings.Remediation{
			findings.Inspect("See whether a recent rollout introduced the problem",
				"kubectl rollout history "+k+"/"+g.owner.Name+" -n "+g.ns),
		}
	}
	return nil
}
