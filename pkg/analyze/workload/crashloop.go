package workload

import (
	"fmt"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"

	"github.com/kdiag/kdiag/pkg/analyze/internal/evidence"
	"github.com/kdiag/kdiag/pkg/analyze/internal/podready"
	"github.com/kdiag/kdiag/pkg/cluster"
	"github.com/kdiag/kdiag/pkg/findings"
)

// signalName names the signals whose 128+n exit codes containers commonly
// end with, or returns "".
func signalName(n int32) string {
	switch n {
	case 1:
		return "SIGHUP"
	case 2:
		return "SIGINT"
	case 3:
		return "SIGQUIT"
	case 4:
		return "SIGILL"
	case 6:
		return "SIGABRT"
	case 7:
		return "SIGBUS"
	case 8:
		return "SIGFPE"
	case 9:
		return "SIGKILL"
	case 11:
		return "SIGSEGV"
	case 13:
		return "SIGPIPE"
	case 15:
		return "SIGTERM"
	}
	return ""
}

// exitCodeMeaning explains a container exit code the way an on-call
// engineer reads it.
func exitCodeMeaning(code int32, reason string) string {
	switch {
	case reason == "OOMKilled":
		return "killed for exceeding its memory limit"
	case code == 0:
		return "exited successfully, but the pod's restartPolicy restarts it (a command that is not a long-running server?)"
	case code == 1:
		return "application error"
	case code == 2:
		return "invalid arguments or shell misuse"
	case code == 126:
		return "command found but not executable"
	case code == 127:
		return "command not found"
	case code == 128+9:
		return "SIGKILL: killed from outside, e.g. after failed liveness probes or by the OOM killer"
	case code == 128+15:
		return "SIGTERM: asked to stop, e.g. after failed liveness probes"
	case code > 128 && code < 128+65:
		if name := signalName(code - 128); name != "" {
			return fmt.Sprintf("killed by signal %d (%s)", code-128, name)
		}
		return fmt.Sprintf("killed by signal %d", code-128)
	}
	return ""
}

// terminationLine renders a container's last termination for evidence.
func terminationLine(s *cluster.Snapshot, t *corev1.ContainerStateTerminated) string {
	line := fmt.Sprintf("lastState.terminated: reason=%s exitCode=%d", t.Reason, t.ExitCode)
	if m := exitCodeMeaning(t.ExitCode, t.Reason); m != "" {
		line += " (" + m + ")"
	}
	line += " finishedAt=" + evidence.Stamp(s.TakenAt, t.FinishedAt)
	if t.Message != "" {
		line += ", message: " + evidence.Short(t.Message)
	}
	return line
}

// crashLoops reports the containers in CrashLoopBackOff, one finding per
// owning workload.
func crashLoops(s *cluster.Snapshot) []findings.Finding {
	now := s.TakenAt
	var gs groups
	type lastExit struct {
		container string
		reason    string
		code      int32
		restarts  int32
		has       bool
	}
	lasts := map[*group]*lastExit{}
	livenessKilled := map[*group]int{}
	for _, p := range sortedPods(s) {
		if podready.Terminal(p) || p.DeletionTimestamp != nil {
			continue
		}
		containerStatuses(p, func(cs *corev1.ContainerStatus, init bool) {
			if cs.State.Waiting == nil || cs.State.Waiting.Reason != "CrashLoopBackOff" {
				return
			}
			g := gs.get(s, p, "")
			line := fmt.Sprintf("%s/%s %s: state.waiting.reason=CrashLoopBackOff, restartCount=%d", p.Namespace, p.Name,
				containerWord(cs.Name, init), cs.RestartCount)
			le := lasts[g]
			if le == nil {
				le = &lastExit{}
				lasts[g] = le
			}
			if t := cs.LastTerminationState.Terminated; t != nil {
				line += "; " + terminationLine(s, t)
				if !le.has || cs.RestartCount > le.restarts {
					*le = lastExit{container: cs.Name, reason: t.Reason, code: t.ExitCode, restarts: cs.RestartCount, has: true}
				}
			} else if !le.has && cs.RestartCount >= le.restarts {
				le.container, le.restarts = cs.Name, cs.RestartCount
			}
			if k := evidence.LatestEvent(podEvents(s, p), func(e *corev1.Event) bool {
				return e.Reason == "Killing" && strings.Contains(e.Message, "liveness probe") && containerOf(e) == cs.Name
			}); k != nil {
				line += "; " + evidence.EventLine(now, k)
				livenessKilled[g]++
			}
			g.add(p, line)
		})
	}

	var out []findings.Finding
	for _, g := range gs.sorted() {
		le := lasts[g]
		title := fmt.Sprintf("%s: %s in CrashLoopBackOff", g.subject(), g.ofReplicas())
		if le.has {
			title += fmt.Sprintf(" (container %s: last exit code %d, %s, after %s)", le.container, le.code, le.reason, evidence.Plural(int(le.restarts), "restart"))
		} else {
			title += fmt.Sprintf(" (container %s, %s)", le.container, evidence.Plural(int(le.restarts), "restart"))
		}
		ev := evidence.Capped(g.lines)
		codes := exitCodeTally(s, g)
		if codes != "" {
			ev = append(ev, "last exit codes across the group: "+codes)
		}
		expl := "The container keeps exiting and the kubelet restarts it with a growing back-off (up to 5 minutes), " +
			"so the pods are never Ready. The last termination says how it ended; the logs of the previous run say why. " +
			"Usual causes: a bad configuration or missing dependency at startup, a wrong command, or a recent image change."
		if livenessKilled[g] > 0 {
			expl += " Here the kubelet also killed containers after failed liveness probes: the probe may be too strict " +
				"(timeout, initialDelaySeconds) for the application's start time (see probe-failing)."
		}
		if le.has && le.reason == "OOMKilled" {
			expl += " The last run was OOMKilled: see oom-killed for its memory limit."
		}
		p := g.pods[0]
		rem := []findings.Remediation{
			findings.Inspect("Read the logs of the crashed run", "kubectl logs "+p.Name+" -n "+g.ns+" -c "+le.container+" --previous"),
			findings.Inspect("Show the container's last state, restart count and events", "kubectl describe pod "+p.Name+" -n "+g.ns),
		}
		rem = append(rem, ownerCommands(g)...)
		out = append(out, findings.Finding{
			ID: idCrashLoop, Severity: findings.Critical, Area: findings.AreaWorkload,
			Object: g.object(), Title: title, Evidence: ev, Explanation: expl, Remediation: rem,
		})
	}
	return out
}

// exitCodeTally renders the last exit codes of the group's crash-looping
// containers: "1 (Error) in 3 containers, 137 (OOMKilled) in 1".
func exitCodeTally(s *cluster.Snapshot, g *group) string {
	tally := map[string]int{}
	for _, p := range g.pods {
		containerStatuses(p, func(cs *corev1.ContainerStatus, _ bool) {
			if cs.State.Waiting == nil || cs.State.Waiting.Reason != "CrashLoopBackOff" || cs.LastTerminationState.Terminated == nil {
				return
			}
			t := cs.LastTerminationState.Terminated
			tally[fmt.Sprintf("%d (%s)", t.ExitCode, t.Reason)]++
		})
	}
	if len(tally) < 2 {
		return ""
	}
	keys := make([]string, 0, len(tally))
	for k := range tally {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		if tally[keys[i]] != tally[keys[j]] {
			return tally[keys[i]] > tally[keys[j]]
		}
		return keys[i] < keys[j]
	})
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s in %s", k, evidence.Plural(tally[k], "container"))
	}
	return strings.Join(parts, ", ")
}

// containerOf returns the container an event is about, from its
// involvedObject.fieldPath "spec.containers{name}" (or initContainers).
func containerOf(e *corev1.Event) string {
	fp := e.InvolvedObject.FieldPath
	i, j := strings.IndexByte(fp, '{'), strings.LastIndexByte(fp, '}')
	if i < 0 || j <= i {
		return ""
	}
	return fp[i+1 : j]
}
