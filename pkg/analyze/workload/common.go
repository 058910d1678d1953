package workload

import (
	"fmt"
	"sort"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/kdiag/kdiag/pkg/analyze/internal/evidence"
	"github.com/kdiag/kdiag/pkg/cluster"
	"github.com/kdiag/kdiag/pkg/findings"
)

// stuckAfter is how long a pod may stay Pending (unbound, or bound with
// containers not yet created) or Terminating past its grace period before
// kdiag calls it stuck. Image pulls and volume attachments normally finish
// well within it.
const stuckAfter = 5 * time.Minute

// podEvents returns the events about a pod, oldest first, or nil when the
// events of its namespace were not read.
func podEvents(s *cluster.Snapshot, p *corev1.Pod) []*corev1.Event {
	if evidence.Gapped(s, cluster.ResEvents, p.Namespace) {
		return nil
	}
	return s.Index().EventsFor("Pod", p.Namespace, p.Name)
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
	return evidence.Plural(len(g.pods), "pod")
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
		if !evidence.Gapped(s, cluster.ResPods, s.Pods[i].Namespace) {
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
