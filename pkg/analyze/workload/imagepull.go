package workload

import (
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"

	"github.com/kdiag/kdiag/pkg/analyze/internal/evidence"
	"github.com/kdiag/kdiag/pkg/analyze/internal/podready"
	"github.com/kdiag/kdiag/pkg/cluster"
	"github.com/kdiag/kdiag/pkg/findings"
)

// pullReason reports the kubelet's waiting reasons for a container whose
// image cannot be pulled.
func pullReason(reason string) bool {
	switch reason {
	case "ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull", "ImageInspectError", "RegistryUnavailable":
		return true
	}
	return false
}

// pullCause classifies the registry's answer, as quoted by the kubelet, into
// the cause an engineer fixes. The phrases are those containerd, CRI-O and
// the common registries return.
func pullCause(reason, msg string) string {
	m := strings.ToLower(msg)
	has := func(subs ...string) bool {
		for _, s := range subs {
			if strings.Contains(m, s) {
				return true
			}
		}
		return false
	}
	switch {
	case reason == "InvalidImageName":
		return "the image reference is malformed"
	case reason == "ErrImageNeverPull":
		return "imagePullPolicy is Never and the image is not on the node"
	case has("does not exist or may require"):
		return "the repository does not exist or needs credentials (the registry answers both the same way)"
	case has("toomanyrequests", "too many requests", "rate limit", " 429"):
		return "the registry is rate-limiting pulls"
	case has("unauthorized", "authentication required", "authorization failed", "access denied", "denied:", "403 forbidden", "no basic auth credentials", "insufficient_scope"):
		return "the registry refused the credentials: check imagePullSecrets and the registry's permissions"
	case has("not found", "manifest unknown", "name unknown", "does not exist", "no such image"):
		return "the image or tag does not exist in the registry"
	case has("no such host", "i/o timeout", "connection refused", "dial tcp", "tls handshake timeout", "network is unreachable", "context deadline exceeded", "x509"):
		return "the node cannot reach the registry (DNS, network, proxy or TLS)"
	case has("no match for platform", "exec format"):
		return "the image has no variant for the node's OS or CPU architecture"
	}
	return ""
}

// imagePullErrors reports containers that cannot pull their image, one
// finding per owning workload and image.
func imagePullErrors(s *cluster.Snapshot) []findings.Finding {
	now := s.TakenAt
	var gs groups
	registryAnswer := map[*group]string{}
	reasons := map[*group]string{}
	for _, p := range sortedPods(s) {
		if podready.Terminal(p) || p.DeletionTimestamp != nil {
			continue
		}
		containerStatuses(p, func(cs *corev1.ContainerStatus, init bool) {
			w := cs.State.Waiting
			if w == nil || !pullReason(w.Reason) {
				return
			}
			image := cs.Image
			if c := podready.Container(&p.Spec, cs.Name, init); c != nil {
				image = c.Image
			}
			g := gs.get(s, p, image)
			line := fmt.Sprintf("%s/%s %s image %q: state.waiting.reason=%s", p.Namespace, p.Name, containerWord(cs.Name, init), image, w.Reason)
			if w.Message != "" {
				line += ", message: " + evidence.Short(w.Message)
			}
			if _, ok := reasons[g]; !ok || w.Reason != "ImagePullBackOff" {
				reasons[g] = w.Reason
			}
			// The kubelet's Failed event quotes the registry's answer;
			// the waiting message often only says "Back-off pulling image".
			if e := evidence.LatestEvent(podEvents(s, p), func(e *corev1.Event) bool {
				return e.Type == corev1.EventTypeWarning && e.Reason == "Failed" && strings.Contains(e.Message, "image") &&
					(containerOf(e) == "" || containerOf(e) == cs.Name)
			}); e != nil {
				line += "; " + evidence.EventLine(now, e)
				if _, ok := registryAnswer[g]; !ok {
					registryAnswer[g] = e.Message
				}
			}
			if _, ok := registryAnswer[g]; !ok && w.Reason != "ImagePullBackOff" && w.Message != "" {
				registryAnswer[g] = w.Message
			}
			g.add(p, line)
		})
	}

	var out []findings.Finding
	for _, g := range gs.sorted() {
		cause := pullCause(reasons[g], registryAnswer[g])
		title := fmt.Sprintf("%s: %s cannot pull image %s (%s)", g.subject(), g.ofReplicas(), g.key, reasons[g])
		if cause != "" {
			title += ": " + cause
		}
		ev := evidence.Capped(g.lines)
		if secrets := pullSecrets(g.pods[0]); secrets != "" {
			ev = append(ev, "spec.imagePullSecrets="+secrets)
		} else {
			ev = append(ev, "spec.imagePullSecrets is empty (the service account's pull secrets, if any, apply)")
		}
		p := g.pods[0]
		rem := []findings.Remediation{
			findings.Inspect("Show the pull errors and the registry's answer in the pod's events", "kubectl describe pod "+p.Name+" -n "+g.ns),
			findings.Inspect("List the pod's image pull failures", "kubectl get events -n "+g.ns+" --field-selector involvedObject.name="+p.Name+",reason=Failed"),
		}
		if p.Spec.ServiceAccountName != "" {
			rem = append(rem, findings.Inspect("Show the service account's imagePullSecrets",
				"kubectl get serviceaccount "+p.Spec.ServiceAccountName+" -n "+g.ns+" -o jsonpath={.imagePullSecrets}"))
		}
		rem = append(rem, ownerCommands(g)...)
		out = append(out, findings.Finding{
			ID: idImagePull, Severity: findings.Critical, Area: findings.AreaWorkload,
			Object: g.object(), Title: title, Evidence: ev,
			Explanation: "The kubelet cannot pull the container image, so the container never starts; it retries with a " +
				"growing back-off (ImagePullBackOff). The registry's answer in the Failed event tells which: a tag or " +
				"repository that does not exist (a typo or an image never pushed), missing or wrong pull credentials, " +
				"or a registry the node cannot reach. Fix the image reference or the credentials in the workload.",
			Remediation: rem,
		})
	}
	return out
}

// pullSecrets lists the names of the pod's imagePullSecrets (names only:
// kdiag never reads Secrets).
func pullSecrets(p *corev1.Pod) string {
	names := make([]string, 0, len(p.Spec.ImagePullSecrets))
	for _, r := range p.Spec.ImagePullSecrets {
		names = append(names, r.Name)
	}
	return strings.Join(names, ",")
}
