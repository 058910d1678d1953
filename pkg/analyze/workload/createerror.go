package workload

import (
	"fmt"
	"regexp"
	"strings"

	corev1 "k8s.io/api/core/v1"

	"github.com/kdiag/kdiag/pkg/analyze/internal/evidence"
	"github.com/kdiag/kdiag/pkg/analyze/internal/podready"
	"github.com/kdiag/kdiag/pkg/cluster"
	"github.com/kdiag/kdiag/pkg/findings"
)

// createReason explains a kubelet waiting reason for a container it cannot
// create or start, or returns "" for any other reason.
func createReason(reason string) string {
	switch reason {
	case "CreateContainerConfigError":
		return "the kubelet cannot build the container's configuration: usually a ConfigMap, Secret or key " +
			"it references does not exist, or runAsNonRoot is set for an image that runs as root"
	case "CreateContainerError":
		return "the container runtime refused to create the container: e.g. a volume mount or device " +
			"that cannot be set up, or a leftover container with the same name"
	case "RunContainerError":
		return "the container runtime could not start the process: e.g. the entrypoint does not exist in " +
			"the image or is not executable"
	case "PreStartHookError":
		return "the container's preStart hook failed"
	}
	return ""
}

var (
	// `configmap "app-config" not found`, `secret "db" not found`
	missingObject = regexp.MustCompile(`(?i)(configmap|secret) "([^"]+)" not found`)
	// `couldn't find key DB_URL in Secret shop/db`
	missingKey = regexp.MustCompile(`couldn't find key (\S+) in (ConfigMap|Secret) ([^/\s]+)/(\S+)`)
)

// missingRef returns the kind and name of the ConfigMap or Secret a
// kubelet message says is missing (or lacks a key), and the key.
func missingRef(msg string) (kind, name, key string) {
	if m := missingKey.FindStringSubmatch(msg); m != nil {
		return strings.ToLower(m[2]), m[4], m[1]
	}
	if m := missingObject.FindStringSubmatch(msg); m != nil {
		return strings.ToLower(m[1]), m[2], ""
	}
	return "", "", ""
}

// createErrors reports containers the kubelet cannot create or start, one
// finding per owning workload, container and reason.
func createErrors(s *cluster.Snapshot) []findings.Finding {
	now := s.TakenAt
	var gs groups
	msgs := map[*group]string{}
	for _, p := range sortedPods(s) {
		if podready.Terminal(p) || p.DeletionTimestamp != nil {
			continue
		}
		containerStatuses(p, func(cs *corev1.ContainerStatus, init bool) {
			w := cs.State.Waiting
			if w == nil {
				return
			}
			if createReason(w.Reason) == "" {
				return
			}
			g := gs.get(s, p, cs.Name+"\x00"+w.Reason)
			line := fmt.Sprintf("%s/%s %s: state.waiting.reason=%s", p.Namespace, p.Name, containerWord(cs.Name, init), w.Reason)
			if w.Message != "" {
				line += ", message: " + evidence.Short(w.Message)
				if msgs[g] == "" {
					msgs[g] = w.Message
				}
			}
			if e := evidence.LatestEvent(podEvents(s, p), func(e *corev1.Event) bool {
				return e.Type == corev1.EventTypeWarning && e.Reason == "Failed" && (containerOf(e) == "" || containerOf(e) == cs.Name)
			}); e != nil {
				line += "; " + evidence.EventLine(now, e)
				if msgs[g] == "" {
					msgs[g] = e.Message
				}
			}
			g.add(p, line)
		})
	}

	var out []findings.Finding
	for _, g := range gs.sorted() {
		ctr, reason, _ := strings.Cut(g.key, "\x00")
		title := fmt.Sprintf("%s: %s cannot start container %s (%s)", g.subject(), g.ofReplicas(), ctr, reason)
		if m := msgs[g]; m != "" {
			title += ": " + evidence.Short(m)
		}
		p := g.pods[0]
		rem := []findings.Remediation{
			findings.Inspect("Show the container's waiting message and events", "kubectl describe pod "+p.Name+" -n "+g.ns),
		}
		if kind, name, key := missingRef(msgs[g]); kind != "" {
			d := fmt.Sprintf("Check that %s %s/%s exists", kind, g.ns, name)
			if key != "" {
				d = fmt.Sprintf("Check that %s %s/%s has the key %s (kubectl describe lists keys, not values)", kind, g.ns, name, key)
			}
			rem = append(rem, findings.Inspect(d, "kubectl describe "+kind+" "+name+" -n "+g.ns))
		}
		rem = append(rem, ownerCommands(g)...)
		out = append(out, findings.Finding{
			ID: idCreateError, Severity: findings.Critical, Area: findings.AreaWorkload,
			Object: g.object(), Title: title, Evidence: evidence.Capped(g.lines),
			Explanation: "The pod was scheduled but its container never starts: " + createReason(reason) +
				". The kubelet retries, so the pod recovers by itself once the reference exists or the spec is fixed.",
			Remediation: rem,
		})
	}
	return out
}
