package node

import (
	"context"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/kdiag/kdiag/pkg/cluster"
	ct "github.com/kdiag/kdiag/pkg/cluster/clustertest"
	"github.com/kdiag/kdiag/pkg/findings"
	"github.com/kdiag/kdiag/pkg/lab/labtest"
	"github.com/kdiag/kdiag/pkg/nodehealth/diagnose"
	"github.com/kdiag/kdiag/pkg/nodehealth/disk"
)

// storedReport builds the ConfigMap the agent writes for node, taken ago
// before the snapshot.
func storedReport(t *testing.T, s *cluster.Snapshot, node, trigger string, ago time.Duration) corev1.ConfigMap {
	t.Helper()
	r := &diagnose.Report{Node: node, Time: s.TakenAt.Add(-ago), Trigger: trigger,
		Disk: diagnose.Disk{ThresholdPercent: 85, Filesystems: []disk.Filesystem{{Paths: []string{"/var/lib/containerd"}, UsedPercent: 97}}},
		Pressure: diagnose.Pressure{PSI: map[string]diagnose.PSI{"memory": {SomeAvg10: 3}},
			TopMemory: []diagnose.PodUsage{{Namespace: "shop", Name: "cache-0", MemoryBytes: 2 << 30}}},
		Network: diagnose.Network{APIServer: &diagnose.Probe{OK: true, Latency: 4 * time.Millisecond}},
		Verdict: diagnose.Verdict{Culprit: diagnose.CulpritDisk, Rule: "disk-full",
			Summary: "disk: filesystem of /var/lib/containerd is 97% full (inodes 3%, threshold 85%)"}}
	cm, err := r.ConfigMap()
	if err != nil {
		t.Fatal(err)
	}
	return *cm
}

func TestNodeDiagnosticReport(t *testing.T) {
	tests := []struct {
		name  string
		build func(t *testing.T, s *cluster.Snapshot)
		sev   findings.Severity // "" for no finding
		want  []string
	}{
		{"NotReady with a report", func(t *testing.T, s *cluster.Snapshot) {
			s.Nodes = append(s.Nodes, ct.NotReadyNode("n1", corev1.ConditionUnknown, "NodeStatusUnknown", "Kubelet stopped posting node status.", 5*time.Minute))
			s.ConfigMaps = append(s.ConfigMaps, storedReport(t, s, "n1", "Ready is not True (NodeStatusUnknown)", 4*time.Minute))
		}, findings.Warning, []string{"Node n1 is not Ready; the agent's diagnostic blames disk", "97% full", "top memory shop/cache-0 (2048 MiB)", "API server: ok in 4ms"}},
		{"NotReady with an old report", func(t *testing.T, s *cluster.Snapshot) {
			s.Nodes = append(s.Nodes, ct.NotReadyNode("n1", corev1.ConditionFalse, "KubeletNotReady", "", time.Hour))
			s.ConfigMaps = append(s.ConfigMaps, storedReport(t, s, "n1", "DiskUsageHigh=True", 48*time.Hour))
		}, findings.Warning, []string{"(but it is 2d old)"}},
		{"recovered within 24h", func(t *testing.T, s *cluster.Snapshot) {
			s.Nodes = append(s.Nodes, ct.ReadyNode("n1"))
			s.ConfigMaps = append(s.ConfigMaps, storedReport(t, s, "n1", "DiskUsageHigh=True (DiskUsageAboveThreshold)", 3*time.Hour))
		}, findings.Info, []string{"Node n1 was degraded 3h ago; the agent's diagnostic blames disk", "trigger: DiskUsageHigh=True"}},
		{"recovered long ago", func(t *testing.T, s *cluster.Snapshot) {
			s.Nodes = append(s.Nodes, ct.ReadyNode("n1"))
			s.ConfigMaps = append(s.ConfigMaps, storedReport(t, s, "n1", "DiskUsageHigh=True", 30*time.Hour))
		}, "", nil},
		{"Ready without a report", func(t *testing.T, s *cluster.Snapshot) { s.Nodes = append(s.Nodes, ct.ReadyNode("n1")) }, "", nil},
		{"malformed report", func(t *testing.T, s *cluster.Snapshot) {
			s.Nodes = append(s.Nodes, ct.ReadyNode("n1"))
			cm := storedReport(t, s, "n1", "x", time.Minute)
			cm.Data[diagnose.DataKey] = "{not json"
			s.ConfigMaps = append(s.ConfigMaps, cm)
		}, findings.Warning, []string{"stored diagnostic cannot be read", "invalid character"}},
		{"configmaps not read", func(t *testing.T, s *cluster.Snapshot) {
			s.Nodes = append(s.Nodes, ct.NotReadyNode("n1", corev1.ConditionFalse, "KubeletNotReady", "", time.Hour))
			s.Gaps = append(s.Gaps, cluster.Gap{Resource: cluster.ResConfigMaps, Namespace: "kube-system", Reason: cluster.GapForbidden})
		}, "", nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := ct.Snapshot()
			tc.build(t, s)
			var got []findings.Finding
			for _, f := range Analyze(s) {
				if f.ID == idDiagnosticReport {
					got = append(got, f)
				}
			}
			if tc.sev == "" {
				if len(got) != 0 {
					t.Fatalf("want no %s finding, got:\n%s", idDiagnosticReport, ct.Dump(got))
				}
				return
			}
			if len(got) != 1 || got[0].Severity != tc.sev {
				t.Fatalf("want one %s %s finding, got:\n%s", tc.sev, idDiagnosticReport, ct.Dump(got))
			}
			text := got[0].Title + "\n" + strings.Join(got[0].Evidence, "\n")
			for _, w := range tc.want {
				if !strings.Contains(text, w) {
					t.Errorf("finding lacks %q:\n%s", w, text)
				}
			}
		})
	}
}

// TestNodeDiagnosticReportLive stores a report as the agent does, reads a
// live snapshot from the lab's API server and checks that the report was
// kept (and an unlabelled look-alike was not) and is surfaced.
func TestNodeDiagnosticReportLive(t *testing.T) {
	c := labtest.Cluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cs := kubernetes.NewForConfigOrDie(c.RESTConfig())
	s := ct.Snapshot()
	s.TakenAt = time.Now()
	cm := storedReport(t, s, healthyNode, "MemoryContentionPressure=True (MemoryContention)", time.Minute)
	rep, err := diagnose.Parse(&cm)
	if err != nil {
		t.Fatal(err)
	}
	if err := diagnose.Store(ctx, cs, rep); err != nil {
		t.Fatal(err)
	}
	fake := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "kube-system", Name: "kdiag-node-report-unlabelled"}, Data: map[string]string{"x": "y"}}
	if _, err := cs.CoreV1().ConfigMaps("kube-system").Create(ctx, fake, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for _, n := range []string{cm.Name, fake.Name} {
			_ = cs.CoreV1().ConfigMaps("kube-system").Delete(context.Background(), n, metav1.DeleteOptions{})
		}
	})
	live := labtest.ReadLive(t, ctx, cs, cluster.LiveOptions{})
	if live.Index().ConfigMap("kube-system", cm.Name) == nil {
		t.Fatalf("live read dropped ConfigMap kube-system/%s", cm.Name)
	}
	if live.Index().ConfigMap("kube-system", fake.Name) != nil {
		t.Errorf("live read kept the unlabelled ConfigMap %s", fake.Name)
	}
	var found bool
	for _, f := range Analyze(live) {
		if f.ID == idDiagnosticReport && f.Object.Name == healthyNode {
			found = true
			if !strings.Contains(f.Title, "blames disk") {
				t.Errorf("title %q: want the verdict's culprit", f.Title)
			}
		}
	}
	if !found {
		t.Errorf("no %s finding for %s from the live snapshot", idDiagnosticReport, healthyNode)
	}
}
