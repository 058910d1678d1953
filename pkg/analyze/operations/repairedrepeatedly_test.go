package operations

import (
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/kdiag/kdiag/pkg/cluster"
	ct "github.com/kdiag/kdiag/pkg/cluster/clustertest"
	"github.com/kdiag/kdiag/pkg/findings"
	"github.com/kdiag/kdiag/pkg/nodehealth/diagnose"
)

// repairEvents returns one reboot → reimage sequence on node, starting
// ago before the snapshot; the reimage ends with stage.
func repairEvents(node string, ago time.Duration, stage string) []corev1.Event {
	return []corev1.Event{
		ct.NodeEvent(node, corev1.EventTypeNormal, "NodeRebootStart", "rebooting", ago, 1),
		ct.NodeEvent(node, corev1.EventTypeNormal, "NodeRebootEnd", "rebooted", ago-time.Minute, 1),
		ct.NodeEvent(node, corev1.EventTypeNormal, "NodeReimageStart", "reimaging", ago-5*time.Minute, 1),
		ct.NodeEvent(node, map[bool]string{true: corev1.EventTypeWarning, false: corev1.EventTypeNormal}[stage == "Error"], "NodeReimage"+stage, "reimage: "+stage, ago-10*time.Minute, 1),
	}
}

func nodeReport(t *testing.T, node string, culprit diagnose.Culprit, summary string) corev1.ConfigMap {
	t.Helper()
	r := &diagnose.Report{Node: node, Time: ct.Now().Add(-50 * time.Minute), Trigger: "Ready=False (KubeletNotReady)",
		Verdict: diagnose.Verdict{Culprit: culprit, Summary: summary, Rule: "memory"}}
	cm, err := r.ConfigMap()
	if err != nil {
		t.Fatal(err)
	}
	return *cm
}

func TestNodeRepairedRepeatedly(t *testing.T) {
	tests := []struct {
		name  string
		build func(s *cluster.Snapshot)
		want  []ct.Want
	}{
		{name: "two sequences, the last failed, with a diagnostic: critical, cites the verdict",
			build: func(s *cluster.Snapshot) {
				s.Events = append(s.Events, repairEvents("n1", 3*time.Hour, "End")...)
				s.Events = append(s.Events, repairEvents("n1", 40*time.Minute, "Error")...)
				s.ConfigMaps = append(s.ConfigMaps, nodeReport(t, "n1", diagnose.CulpritMemory, "memory: PSI full avg60 42% (pod shop/leaky uses 6.1 GiB)"))
			},
			want: []ct.Want{{ID: idRepairedRepeatedly, Severity: findings.Critical, Object: "node/n1",
				Title:    []string{"Node n1 was auto-repaired 2 times in 3h", "last: reimage failed 30m ago", "blames memory"},
				Evidence: []string{"2 repair sequences", "sequence 1, started 3h ago: reboot done", "→ reimage done", "sequence 2", "reimage failed 30m ago (reimage: Error)", "verdict memory: memory: PSI full avg60 42%", "now: Ready="},
				NoPatch:  true}}},
		{name: "two successful sequences without a diagnostic: warning, says none is stored",
			build: func(s *cluster.Snapshot) {
				s.Events = append(s.Events, repairEvents("n2", 2*time.Hour, "End")...)
				s.Events = append(s.Events, repairEvents("n2", 30*time.Minute, "End")...)
			},
			want: []ct.Want{{ID: idRepairedRepeatedly, Severity: findings.Warning, Object: "node/n2",
				Title:    []string{"Node n2 was auto-repaired 2 times", "last: reimage done 20m ago"},
				Evidence: []string{"no NotReady diagnostic stored for the node (kube-system/kdiag-node-report-n2"}, NoPatch: true}}},
		{name: "one aggregated Start event seen 3 times counts 3",
			build: func(s *cluster.Snapshot) {
				s.Events = append(s.Events, ct.NodeEvent("n3", corev1.EventTypeNormal, "NodeRebootStart", "rebooting", 10*time.Minute, 3))
			},
			want: []ct.Want{{ID: idRepairedRepeatedly, Severity: findings.Warning, Object: "node/n3",
				Title: []string{"auto-repaired 3 times"}, Evidence: []string{"seen 3 times"}, NoPatch: true}}},
		{name: "one sequence is a repair, not a pattern",
			build: func(s *cluster.Snapshot) { s.Events = append(s.Events, repairEvents("n1", time.Hour, "End")...) }},
		{name: "reboot → reimage → redeploy escalation is one sequence",
			build: func(s *cluster.Snapshot) {
				s.Events = append(s.Events, repairEvents("n1", time.Hour, "End")...)
				s.Events = append(s.Events, ct.NodeEvent("n1", corev1.EventTypeNormal, "NodeRedeployStart", "", 30*time.Minute, 1))
			}},
		{name: "unreadable diagnostic is said, not hidden",
			build: func(s *cluster.Snapshot) {
				s.Events = append(s.Events, repairEvents("n1", 3*time.Hour, "End")...)
				s.Events = append(s.Events, repairEvents("n1", 40*time.Minute, "End")...)
				s.ConfigMaps = append(s.ConfigMaps, ct.ConfigMapOf("kube-system", "kdiag-node-report-n1", map[string]string{"report.json": "{not json"}))
			},
			want: []ct.Want{{ID: idRepairedRepeatedly, Severity: findings.Warning, Object: "node/n1",
				Title: []string{"auto-repaired 2 times"}, Evidence: []string{"NotReady diagnostic kube-system/kdiag-node-report-n1 unreadable"}, NoPatch: true}}},
		{name: "configmaps not read: no claim about the diagnostic",
			build: func(s *cluster.Snapshot) {
				s.Events = append(s.Events, repairEvents("n1", 3*time.Hour, "End")...)
				s.Events = append(s.Events, repairEvents("n1", 40*time.Minute, "End")...)
				s.Gaps = append(s.Gaps, ct.Gap(cluster.ResConfigMaps))
			},
			want: []ct.Want{{ID: idRepairedRepeatedly, Severity: findings.Warning, Object: "node/n1",
				Title: []string{"auto-repaired 2 times"}, NotEvidence: []string{"NotReady diagnostic"}, NoPatch: true}}},
		{name: "events not read: silent",
			build: func(s *cluster.Snapshot) { s.Gaps = append(s.Gaps, ct.Gap(cluster.ResEvents)) }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := base()
			tc.build(s)
			ct.AssertFindings(t, findings.AreaOperations, ct.WithID(Analyze(s), idRepairedRepeatedly), tc.want)
		})
	}
}

func TestRepairedRepeatedlyTitleNamesLastAction(t *testing.T) {
	s := base()
	s.Events = append(s.Events, repairEvents("n1", 3*time.Hour, "End")...)
	s.Events = append(s.Events, ct.NodeEvent("n1", corev1.EventTypeNormal, "NodeRebootStart", "", 2*time.Minute, 1))
	f := ct.MustFind(t, Analyze(s), idRepairedRepeatedly, "n1")
	if !strings.Contains(f.Title, "last: reboot started 2m ago") {
		t.Errorf("title %q, want the running reboot as the last action", f.Title)
	}
}
