package operations

import (
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kdiag/kdiag/pkg/analyze/internal/evidence"
	"github.com/kdiag/kdiag/pkg/cluster"
	"github.com/kdiag/kdiag/pkg/findings"
	"github.com/kdiag/kdiag/pkg/nodehealth/diagnose"
	"github.com/kdiag/kdiag/pkg/ops/opevents"
)

const idRepairedRepeatedly = "node-repaired-repeatedly"

// minRepairs is how many repair sequences in the events' window make a
// node "repaired repeatedly".
const minRepairs = 2

// repairedRepeatedly reports nodes that auto-repair (AKS's, or `kdiag
// repair`) has had to repair at least twice within the snapshot's events:
// each repair cured the symptom, not the cause.
func (a *analysis) repairedRepeatedly() []findings.Finding {
	seqs := opevents.RepairSequences(a.s.Events)
	byNode := map[string][]opevents.RepairSequence{}
	var nodes []string
	for _, s := range seqs {
		if byNode[s.Node] == nil {
			nodes = append(nodes, s.Node)
		}
		byNode[s.Node] = append(byNode[s.Node], s)
	}
	var out []findings.Finding
	for _, n := range nodes { // RepairSequences sorts by node
		if f, ok := a.repairedRepeatedlyOne(n, byNode[n]); ok {
			out = append(out, f)
		}
	}
	return out
}

func (a *analysis) repairedRepeatedlyOne(node string, seqs []opevents.RepairSequence) (findings.Finding, bool) {
	var count int32
	for _, s := range seqs {
		count += s.Repeats
	}
	if count < minRepairs {
		return findings.Finding{}, false
	}
	first, last := seqs[0], seqs[len(seqs)-1]
	lastStep := last.Last()
	lastAction := describeRepairStep(a.now, lastStep, false)

	ev := []string{fmt.Sprintf("%d repair sequences (events NodeReboot*/NodeReimage*/NodeRedeploy*), the first started %s, the last %s",
		count, evidence.Ago(a.now, first.Start()), evidence.Ago(a.now, last.Start()))}
	var lines []string
	for i, s := range seqs {
		var steps []string
		for _, st := range s.Steps {
			steps = append(steps, describeRepairStep(a.now, st, true))
		}
		line := fmt.Sprintf("sequence %d, started %s: %s", i+1, evidence.Ago(a.now, s.Start()), strings.Join(steps, " → "))
		if s.Repeats > 1 {
			line += fmt.Sprintf(" (its Start event was seen %d times)", s.Repeats)
		}
		lines = append(lines, line)
	}
	// The newest sequences matter most: keep the last MaxListed.
	if len(lines) > evidence.MaxListed {
		lines = append([]string{fmt.Sprintf("... %d earlier sequences", len(lines)-evidence.MaxListed)}, lines[len(lines)-evidence.MaxListed:]...)
	}
	ev = append(ev, lines...)

	var n *corev1.Node
	if a.s.Has(cluster.ResNodes) {
		n = a.ix.Node(node)
	}
	if n != nil {
		for _, c := range n.Status.Conditions {
			if c.Type == corev1.NodeReady {
				ev = append(ev, fmt.Sprintf("now: Ready=%s (%s) for %s", c.Status, c.Reason, evidence.Since(a.now, c.LastTransitionTime)))
			}
		}
	}
	verdict := ""
	if a.s.Has(cluster.ResConfigMaps) {
		line, v := a.nodeReport(node)
		ev = append(ev, line)
		verdict = v
	}

	sev := findings.Warning
	if last.Failed() {
		sev = findings.Critical
	}
	title := fmt.Sprintf("Node %s was auto-repaired %d times in %s (last: %s): the root cause is still to find",
		node, count, evidence.Since(a.now, metav1.NewTime(first.Start())), lastAction)
	if verdict != "" {
		title += "; its NotReady diagnostic blames " + verdict
	}
	cm := diagnose.ConfigMapName(node)
	return findings.Finding{
		ID: idRepairedRepeatedly, Severity: sev, Area: findings.AreaOperations,
		Object:   findings.ObjectRef{Kind: "Node", Name: node},
		Title:    title,
		Evidence: ev,
		Explanation: "Node auto-repair reboots, then reimages, then redeploys a node that stays NotReady. Each repair clears the symptom, " +
			"so a node that needs it again and again has a cause that survives a reboot or a reimage: a workload exhausting memory or disk, " +
			"a broken image or driver, a failing disk or NIC of the host, or a network path. Until it is found, every repair costs its pods a restart.",
		Remediation: []findings.Remediation{
			findings.Inspect("Show the node's repair history (recorded and reconstructed from events)", "kdiag ops list --node "+node+" --type Repair"),
			findings.Inspect("Read the node's last NotReady diagnostic (written by the kdiag agent)",
				"kubectl get configmap "+cm+" -n "+diagnose.Namespace+` -o jsonpath='{.data.report\.json}'`),
			findings.Inspect("Show the node's events, oldest first", "kubectl get events -A --field-selector involvedObject.kind=Node,involvedObject.name="+node+" --sort-by=.lastTimestamp"),
			findings.Inspect("Show the node's conditions, taints and the pods on it", "kubectl describe node "+node),
		},
	}, true
}

// describeRepairStep renders a step as "reimage failed 30m ago", with the
// event's message when withMessage.
func describeRepairStep(now time.Time, st opevents.RepairStep, withMessage bool) string {
	a := strings.ToLower(st.Action)
	switch {
	case st.End.IsZero():
		return a + " started " + evidence.Ago(now, st.Start)
	case st.Failed:
		s := a + " failed " + evidence.Ago(now, st.End)
		if withMessage && st.Message != "" {
			s += " (" + evidence.ShortN(st.Message, 80) + ")"
		}
		return s
	default:
		return a + " done " + evidence.Ago(now, st.End)
	}
}

// nodeReport returns the evidence line about the node's NotReady diagnostic
// and, when there is a readable one, its culprit and summary.
func (a *analysis) nodeReport(node string) (line, verdict string) {
	name := diagnose.ConfigMapName(node)
	if cm := a.ix.ConfigMap(diagnose.Namespace, name); cm != nil {
		r, err := diagnose.Parse(cm)
		if err != nil {
			return fmt.Sprintf("NotReady diagnostic %s/%s unreadable: %v", cm.Namespace, cm.Name, err), ""
		}
		v := string(r.Verdict.Culprit)
		if r.Verdict.Culprit == diagnose.CulpritNone || r.Verdict.Culprit == diagnose.CulpritUnknown {
			v = ""
		}
		return fmt.Sprintf("NotReady diagnostic %s/%s taken %s (trigger %s): verdict %s: %s",
			cm.Namespace, cm.Name, evidence.Ago(a.now, r.Time), orDash(r.Trigger), orDash(string(r.Verdict.Culprit)), orDash(r.Verdict.Summary)), v
	}
	return fmt.Sprintf("no NotReady diagnostic stored for the node (%s/%s, written by the kdiag agent when the node degrades)", diagnose.Namespace, name), ""
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
