package operations

import (
	"context"
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
)

// TestIntegrationNodeRepairedRepeatedly: repair events as AKS (and kdiag
// repair) write them, on real nodes, through a real live read. lab-node-2
// was repaired twice and has a stored NotReady diagnostic; lab-node-3 was
// repaired once. Only lab-node-2 is flagged, citing the diagnostic.
func TestIntegrationNodeRepairedRepeatedly(t *testing.T) {
	c := labtest.Cluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cs := kubernetes.NewForConfigOrDie(c.RESTConfig())
	now := time.Now()
	event := func(node, typ, reason, msg string, ago time.Duration) {
		t.Helper()
		ts := metav1.NewTime(now.Add(-ago))
		e := &corev1.Event{ObjectMeta: metav1.ObjectMeta{GenerateName: node + ".", Namespace: metav1.NamespaceDefault},
			InvolvedObject: corev1.ObjectReference{Kind: "Node", Name: node, APIVersion: "v1"}, Type: typ, Reason: reason, Message: msg,
			Source: corev1.EventSource{Component: "kdiag-repair"}, FirstTimestamp: ts, LastTimestamp: ts, Count: 1}
		if _, err := cs.CoreV1().Events(metav1.NamespaceDefault).Create(ctx, e, metav1.CreateOptions{}); err != nil {
			t.Fatalf("create event %s on %s: %v", reason, node, err)
		}
	}
	event("lab-node-2", corev1.EventTypeNormal, "NodeRebootStart", "rebooting: Ready=False for 5m", 50*time.Minute)
	event("lab-node-2", corev1.EventTypeNormal, "NodeRebootEnd", "rebooted", 49*time.Minute)
	event("lab-node-2", corev1.EventTypeNormal, "NodeRebootStart", "rebooting: Ready=False for 5m", 20*time.Minute)
	event("lab-node-2", corev1.EventTypeNormal, "NodeRebootEnd", "rebooted", 19*time.Minute)
	event("lab-node-2", corev1.EventTypeNormal, "NodeReimageStart", "reimaging", 14*time.Minute)
	event("lab-node-2", corev1.EventTypeWarning, "NodeReimageError", "reimage failed: exit status 3", 10*time.Minute)
	event("lab-node-3", corev1.EventTypeNormal, "NodeRebootStart", "rebooting", 30*time.Minute)
	event("lab-node-3", corev1.EventTypeNormal, "NodeRebootEnd", "rebooted", 29*time.Minute)

	r := &diagnose.Report{Node: "lab-node-2", Time: now.Add(-21 * time.Minute), Trigger: "Ready=False (KubeletNotReady)",
		Verdict: diagnose.Verdict{Culprit: diagnose.CulpritDisk, Summary: "disk: / is 97% full; top consumer /var/lib/containerd 41 GiB", Rule: "disk"}}
	cm, err := r.ConfigMap()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cs.CoreV1().ConfigMaps(diagnose.Namespace).Create(ctx, cm, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create the node report: %v", err)
	}
	defer func() {
		_ = cs.CoreV1().ConfigMaps(diagnose.Namespace).Delete(context.Background(), cm.Name, metav1.DeleteOptions{})
	}()

	snap := labtest.ReadLive(t, ctx, cs, cluster.LiveOptions{})
	got := ct.WithID(Analyze(snap), idRepairedRepeatedly)
	ct.LogFindings(t, got)
	ct.AssertFindings(t, findings.AreaOperations, got, []ct.Want{{ID: idRepairedRepeatedly, Severity: findings.Critical, Object: "node/lab-node-2",
		Title: []string{"Node lab-node-2 was auto-repaired 2 times", "last: reimage failed 10m ago", "blames disk"},
		Evidence: []string{"2 repair sequences", "reboot done 49m ago", "reimage failed 10m ago (reimage failed: exit status 3)",
			"NotReady diagnostic kube-system/kdiag-node-report-lab-node-2 taken 21m ago", "verdict disk: disk: / is 97% full", "now: Ready=True"},
		NoPatch: true}})
}
