package workload

import (
	"fmt"
	"sort"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/kdiag/kdiag/pkg/analyze/internal/evidence"
	"github.com/kdiag/kdiag/pkg/analyze/internal/podready"
	"github.com/kdiag/kdiag/pkg/cluster"
	"github.com/kdiag/kdiag/pkg/findings"
)

// probeKind returns the probe an Unhealthy event is about and the rest of
// its message, or "" when the message is not a probe failure. The kubelet
// starts the message with the probe's name ("Readiness probe failed: ...").
func probeKind(msg string) (kind, detail string) {
	for _, k := range []string{"Liveness", "Readiness", "Startup"} {
		for _, verb := range []string{" probe failed: ", " probe errored: "} {
			if rest, ok := strings.CutPrefix(msg, k+verb); ok {
				return k, strings.TrimSpace(rest)
			}
		}
	}
	return "", ""
}

// probeSpec returns the container's probe of the given kind.
func probeSpec(c *corev1.Container, kind string) *corev1.Probe {
	if c == nil {
		return nil
	}
	switch kind {
	case "Liveness":
		return c.LivenessProbe
	case "Readiness":
		return c.ReadinessProbe
	case "Startup":
		return c.StartupProbe
	}
	return nil
}

// probeLine renders a probe's handler and timing, e.g.
// "httpGet :8080/healthz, initialDelaySeconds=0 periodSeconds=10 timeoutSeconds=1 failureThreshold=3".
func probeLine(p *corev1.Probe) string {
	var h string
	switch {
	case p.HTTPGet != nil:
		scheme := strings.ToLower(string(p.HTTPGet.Scheme))
		if scheme == "" {
			scheme = "http"
		}
		h = fmt.Sprintf("httpGet %s://:%s%s", scheme, p.HTTPGet.Port.String(), p.HTTPGet.Path)
	case p.TCPSocket != nil:
		h = "tcpSocket :" + p.TCPSocket.Port.String()
	case p.GRPC != nil:
		h = fmt.Sprintf("grpc :%d", p.GRPC.Port)
	case p.Exec != nil:
		h = "exec " + evidence.Short(strings.Join(p.Exec.Command, " "))
	default:
		h = "no handler"
	}
	// The API server defaults periodSeconds 10, timeoutSeconds 1 and
	// failureThreshold 3; zero here means the object was not defaulted.
	return fmt.Sprintf("%s, initialDelaySeconds=%d periodSeconds=%d timeoutSeconds=%d failureThreshold=%d",
		h, p.InitialDelaySeconds, orDefault(p.PeriodSeconds, 10), orDefault(p.TimeoutSeconds, 1), orDefault(p.FailureThreshold, 3))
}

// orDefault returns v, or d when v is zero.
func orDefault(v, d int32) int32 {
	if v == 0 {
		return d
	}
	return v
}

// probeFailures reports failing probes, from the kubelet's Unhealthy
// events, one finding per owning workload, container and probe kind.
func probeFailures(s *cluster.Snapshot) []findings.Finding {
	now := s.TakenAt
	type stats struct {
		count    int32
		last     time.Time
		lastMsg  string
		probe    *corev1.Probe
		perPod   map[*corev1.Pod]int32
		podLast  map[*corev1.Pod]time.Time
		podMsg   map[*corev1.Pod]string
		kind     string
		ctr      string
		restarts int32
	}
	var gs groups
	st := map[*group]*stats{}
	// Pods by name, to resolve each event's pod in O(1).
	pods := map[[2]string]*corev1.Pod{}
	for i := range s.Pods {
		p := &s.Pods[i]
		pods[[2]string{p.Namespace, p.Name}] = p
	}
	for i := range s.Events {
		e := &s.Events[i]
		if e.Reason != "Unhealthy" || e.InvolvedObject.Kind != "Pod" || evidence.Gapped(s, cluster.ResEvents, e.InvolvedObject.Namespace) {
			continue
		}
		kind, detail := probeKind(e.Message)
		if kind == "" {
			continue
		}
		ns, name, ctr := e.InvolvedObject.Namespace, e.InvolvedObject.Name, containerOf(e)
		p := pods[[2]string{ns, name}]
		if p == nil {
			if !evidence.Gapped(s, cluster.ResPods, ns) {
				continue // the pod is gone: its old events say nothing about now
			}
			// Pods not read: the event alone is the evidence.
			p = &corev1.Pod{}
			p.Namespace, p.Name = ns, name
			pods[[2]string{ns, name}] = p
		}
		if podready.Terminal(p) {
			continue
		}
		g := gs.get(s, p, ctr+"\x00"+kind)
		x := st[g]
		if x == nil {
			x = &stats{kind: kind, ctr: ctr, perPod: map[*corev1.Pod]int32{}, podLast: map[*corev1.Pod]time.Time{}, podMsg: map[*corev1.Pod]string{}}
			x.probe = probeSpec(podready.Container(&p.Spec, ctr, false), kind)
			st[g] = x
		}
		n := cluster.EventCount(e)
		t := cluster.EventTime(e).Time
		x.count += n
		x.perPod[p] += n
		if t.After(x.last) || x.lastMsg == "" {
			x.last, x.lastMsg = t, detail
		}
		if t.After(x.podLast[p]) || x.podMsg[p] == "" {
			x.podLast[p], x.podMsg[p] = t, detail
		}
		g.add(p, "")
	}

	var out []findings.Finding
	for _, g := range gs.sorted() {
		x := st[g]
		sort.Slice(g.pods, func(i, j int) bool { return g.pods[i].Name < g.pods[j].Name })
		var ev []string
		lower := strings.ToLower(x.kind)
		var lines []string
		notReady := 0
		for _, p := range g.pods {
			line := fmt.Sprintf("%s/%s container %s: %s probe failed x%d, last %s: %s", p.Namespace, p.Name, x.ctr,
				x.kind, x.perPod[p], evidence.Ago(now, x.podLast[p]), evidence.Short(x.podMsg[p]))
			if cs := statusOf(p, x.ctr); cs != nil {
				line += fmt.Sprintf(" (ready=%t, restartCount=%d)", cs.Ready, cs.RestartCount)
				if !cs.Ready {
					notReady++
				}
				x.restarts += cs.RestartCount
			}
			lines = append(lines, line)
		}
		ev = append(ev, evidence.Capped(lines)...)
		if x.probe != nil {
			ev = append(ev, fmt.Sprintf("spec.containers[%s].%sProbe: %s", x.ctr, lower, probeLine(x.probe)))
		}
		if x.kind == "Liveness" {
			kills := 0
			for _, p := range g.pods {
				for _, e := range podEvents(s, p) {
					if e.Reason == "Killing" && containerOf(e) == x.ctr && strings.Contains(e.Message, "liveness probe") {
						kills += int(cluster.EventCount(e))
					}
				}
			}
			if kills > 0 {
				ev = append(ev, fmt.Sprintf("the kubelet restarted the container %s after failed liveness probes (Killing events)", evidence.Plural(kills, "time")))
			}
		}
		title := fmt.Sprintf("%s: %s probe of container %s failed %d times on %s, last %s (%s)", g.subject(), x.kind, x.ctr,
			x.count, evidence.Plural(len(g.pods), "pod"), evidence.Ago(now, x.last), evidence.Short(x.lastMsg))
		if x.kind == "Readiness" && notReady > 0 {
			title += fmt.Sprintf("; %s not ready", evidence.Plural(notReady, "pod"))
		}
		p := g.pods[0]
		rem := []findings.Remediation{
			findings.Inspect("Show the probe, its failures and the container's state", "kubectl describe pod "+p.Name+" -n "+g.ns),
			findings.Inspect("List the probe failures of the namespace", "kubectl get events -n "+g.ns+" --field-selector reason=Unhealthy --sort-by=.lastTimestamp"),
		}
		if x.ctr != "" {
			rem = append(rem, findings.Inspect("Read the container's logs around the failures", "kubectl logs "+p.Name+" -n "+g.ns+" -c "+x.ctr))
		}
		out = append(out, findings.Finding{
			ID: idProbeFailing, Severity: findings.Warning, Area: findings.AreaWorkload,
			Object: g.object(), Title: title, Evidence: ev,
			Explanation: probeExplanation(x.kind),
			Remediation: rem,
		})
	}
	return out
}

// statusOf returns the status of the named app container, or nil.
func statusOf(p *corev1.Pod, name string) *corev1.ContainerStatus {
	for i := range p.Status.ContainerStatuses {
		if p.Status.ContainerStatuses[i].Name == name {
			return &p.Status.ContainerStatuses[i]
		}
	}
	return nil
}

// probeExplanation explains what a failing probe of the kind does.
func probeExplanation(kind string) string {
	common := " Check that the probe's port and path match what the application serves, and that timeoutSeconds " +
		"and failureThreshold leave room for slow responses under load."
	switch kind {
	case "Liveness":
		return "A failing liveness probe makes the kubelet kill and restart the container after failureThreshold " +
			"failures, which can turn a slow application into a crash loop." + common
	case "Startup":
		return "A failing startup probe keeps the container from being considered started; after failureThreshold " +
			"failures the kubelet kills and restarts it. Slow-starting applications need a longer " +
			"failureThreshold x periodSeconds." + common
	}
	return "A failing readiness probe takes the pod out of its Services' endpoints, so it receives no traffic; " +
		"when every pod fails, the Service has no ready endpoint and clients see connection errors." + common
}
