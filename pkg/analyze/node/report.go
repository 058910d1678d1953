package node

import (
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/duration"

	"github.com/kdiag/kdiag/pkg/analyze/internal/evidence"
	"github.com/kdiag/kdiag/pkg/cluster"
	"github.com/kdiag/kdiag/pkg/findings"
	"github.com/kdiag/kdiag/pkg/nodehealth/diagnose"
)

// recentReport is how long after the kdiag agent recorded a diagnostic of a
// node that has recovered the check still shows it.
const recentReport = 24 * time.Hour

// diagnosticReport surfaces the kdiag agent's latest NotReady diagnostic of
// a node that is not Ready now, or that degraded within recentReport.
func diagnosticReport(s *cluster.Snapshot, n *corev1.Node) (findings.Finding, bool) {
	if evidence.Gapped(s, cluster.ResConfigMaps, metav1.NamespaceSystem) {
		return findings.Finding{}, false
	}
	cm := s.Index().ConfigMap(diagnose.Namespace, diagnose.ConfigMapName(n.Name))
	if cm == nil {
		return findings.Finding{}, false
	}
	now := s.TakenAt
	ready := isReady(n)
	ref := findings.ObjectRef{Kind: "Node", Name: n.Name}
	rem := []findings.Remediation{
		findings.Inspect("Show the stored diagnostic in full", "kdiag node diagnose "+n.Name+" --stored"),
		findings.Inspect("Take a fresh diagnostic from the node's agent", "kdiag node diagnose "+n.Name),
	}
	r, err := diagnose.Parse(cm)
	if err != nil {
		return findings.Finding{
			ID: idDiagnosticReport, Severity: findings.Warning, Area: findings.AreaNode, Object: ref,
			Title:       fmt.Sprintf("Node %s's stored diagnostic cannot be read", n.Name),
			Evidence:    []string{"ConfigMap " + diagnose.Namespace + "/" + cm.Name + ": " + evidence.Short(err.Error())},
			Explanation: "The kdiag agent stores its NotReady diagnostic as JSON in this ConfigMap; this one does not hold a report kdiag can read (edited by hand, or written by an incompatible agent version).",
			Remediation: rem,
		}, true
	}
	age := now.Sub(r.Time)
	if ready && (age > recentReport || r.Trigger == "request") {
		return findings.Finding{}, false
	}
	ev := []string{
		fmt.Sprintf("ConfigMap %s/%s: report of %s (%s ago), trigger: %s", diagnose.Namespace, cm.Name,
			r.Time.UTC().Format(time.RFC3339), duration.HumanDuration(age), r.Trigger),
		"verdict (rule " + r.Verdict.Rule + "): " + r.Verdict.Summary,
	}
	ev = append(ev, sectionLines(r)...)
	sev, state := findings.Warning, "is not Ready"
	if ready {
		sev, state = findings.Info, "was degraded "+duration.HumanDuration(age)+" ago"
	}
	title := fmt.Sprintf("Node %s %s; the agent's diagnostic blames %s", n.Name, state, r.Verdict.Culprit)
	if !ready && age > recentReport {
		title += fmt.Sprintf(" (but it is %s old)", duration.HumanDuration(age))
	}
	return findings.Finding{
		ID: idDiagnosticReport, Severity: sev, Area: findings.AreaNode, Object: ref,
		Title:    title,
		Evidence: ev,
		Explanation: "The kdiag agent on the node recorded this NotReady diagnostic when the node degraded: CPU, memory and I/O " +
			"pressure with the top pods, disk usage and its top consumers, the default route, API server and cluster DNS, and the " +
			"kubelet and container runtime. Its verdict names the most likely culprit by fixed rules (docs/config/node-report.md); " +
			"the report outlives the incident, so it explains a node that has recovered or been repaired.",
		Remediation: rem,
	}, true
}

// sectionLines summarizes the report's sections in a few evidence lines.
func sectionLines(r *diagnose.Report) []string {
	var out []string
	var psi []string
	for _, res := range []string{"cpu", "memory", "io"} {
		if p, ok := r.Pressure.PSI[res]; ok {
			psi = append(psi, fmt.Sprintf("%s some avg10=%.1f%%", res, p.SomeAvg10))
		}
	}
	if len(psi) > 0 {
		line := "pressure: " + strings.Join(psi, ", ")
		if len(r.Pressure.TopMemory) > 0 {
			u := r.Pressure.TopMemory[0]
			line += fmt.Sprintf("; top memory %s/%s (%d MiB)", u.Namespace, u.Name, u.MemoryBytes>>20)
		}
		out = append(out, line)
	}
	for _, fs := range r.Disk.Filesystems {
		out = append(out, fmt.Sprintf("disk: %s %.0f%% used, inodes %.0f%%", strings.Join(fs.Paths, ","), fs.UsedPercent, fs.InodesUsedPercent))
	}
	if p := r.Network.APIServer; p != nil {
		out = append(out, "API server: "+probeWord(p))
	}
	if p := r.Network.DNS; p != nil {
		out = append(out, "cluster DNS: "+probeWord(p))
	}
	for _, c := range []diagnose.Component{r.Health.Kubelet, r.Health.Runtime} {
		if c.ProcessChecked {
			out = append(out, fmt.Sprintf("%s: %d process(es) running", c.Name, len(c.Processes)))
		}
	}
	return out
}

func probeWord(p *diagnose.Probe) string {
	if p.OK {
		return "ok in " + p.Latency.Round(time.Millisecond).String()
	}
	return "FAILED: " + evidence.Short(p.Error)
}
