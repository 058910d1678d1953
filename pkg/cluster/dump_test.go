package cluster_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/kdiag/kdiag/pkg/cluster"
	"github.com/kdiag/kdiag/pkg/cluster/clustertest"
)

func sampleSnapshot() *cluster.Snapshot {
	s := clustertest.Snapshot()
	s.Source = "ctx-lab"
	s.Nodes = append(s.Nodes, clustertest.ReadyNode("n1"), clustertest.ReadyNode("n2"))
	d, rs := clustertest.Deployment("shop", "web", 2, map[string]string{"app": "web"})
	s.Deployments = append(s.Deployments, d)
	s.ReplicaSets = append(s.ReplicaSets, rs)
	p := clustertest.RunningPod("shop", "web-1", "n1", map[string]string{"app": "web"})
	clustertest.OwnPod(&p, rs)
	s.Pods = append(s.Pods, p, clustertest.RunningPod("kube-system", "coredns-1", "n2", map[string]string{"k8s-app": "kube-dns"}))
	s.Services = append(s.Services, corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "web"}})
	one := intstr.FromInt32(1)
	s.PodDisruptionBudgets = append(s.PodDisruptionBudgets, policyv1.PodDisruptionBudget{
		ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "web"}, Spec: policyv1.PodDisruptionBudgetSpec{MinAvailable: &one}})
	s.Events = append(s.Events, clustertest.Event("Pod", "shop", "web-1", "Warning", "Unhealthy", "Readiness probe failed", time.Minute, 3))
	s.ConfigMaps = append(s.ConfigMaps, corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "kube-system", Name: "coredns"},
		Data: map[string]string{"Corefile": ".:53 {\n    forward . /etc/resolv.conf\n}\n"}})
	rt := metav1.NewMicroTime(clustertest.Now())
	s.Leases = append(s.Leases, coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Namespace: "kube-node-lease", Name: "n1"}, Spec: coordinationv1.LeaseSpec{RenewTime: &rt}})
	return s
}

func TestDumpRoundTrip(t *testing.T) {
	dir := t.TempDir()
	in := sampleSnapshot()
	if err := cluster.WriteDump(dir, in); err != nil {
		t.Fatalf("WriteDump: %v", err)
	}
	out, err := cluster.ReadDump(os.DirFS(dir), dir)
	if err != nil {
		t.Fatalf("ReadDump: %v", err)
	}
	if len(out.Gaps) != 0 {
		t.Errorf("round trip produced gaps: %v", out.Gaps)
	}
	counts := []struct {
		what      string
		got, want int
	}{
		{"nodes", len(out.Nodes), 2}, {"pods", len(out.Pods), 2}, {"deployments", len(out.Deployments), 1},
		{"replicasets", len(out.ReplicaSets), 1}, {"services", len(out.Services), 1}, {"pdbs", len(out.PodDisruptionBudgets), 1},
		{"events", len(out.Events), 1}, {"configmaps", len(out.ConfigMaps), 1}, {"leases", len(out.Leases), 1},
	}
	for _, c := range counts {
		if c.got != c.want {
			t.Errorf("%s: got %d after round trip, want %d", c.what, c.got, c.want)
		}
	}
	if !out.TakenAt.Equal(in.TakenAt) {
		t.Errorf("TakenAt = %v, want %v from the metadata file", out.TakenAt, in.TakenAt)
	}
	if !strings.Contains(out.Source, "ctx-lab") {
		t.Errorf("Source = %q, want it to name the original context", out.Source)
	}
	if w := out.Index().OwnerOf(out.Index().PodsInNamespace("shop")[0]); w.Kind != "Deployment" || w.Name != "web" {
		t.Errorf("owner of shop pod = %+v, want Deployment web", w)
	}
}

// kubectl cluster-info dump writes only seven files per namespace and no
// metadata: kdiag reads them and records the rest as not in the dump.
func TestReadKubectlDumpRecordsMissingResources(t *testing.T) {
	fsys := fstest.MapFS{
		"nodes.json":            {Data: []byte(`{"kind":"NodeList","apiVersion":"v1","items":[{"metadata":{"name":"n1"},"status":{"conditions":[{"type":"Ready","status":"True","lastHeartbeatTime":"2026-05-20T11:59:00Z"}]}}]}`)},
		"shop/pods.json":        {Data: []byte(`{"kind":"PodList","apiVersion":"v1","items":[{"metadata":{"name":"a","namespace":"shop"}}]}`)},
		"shop/services.json":    {Data: []byte(`{"kind":"ServiceList","apiVersion":"v1","items":[]}`)},
		"shop/events.json":      {Data: []byte(`{"kind":"EventList","apiVersion":"v1","items":[{"metadata":{"name":"e","namespace":"shop"},"lastTimestamp":"2026-05-20T12:00:00Z"}]}`)},
		"shop/deployments.json": {Data: []byte("kind: DeploymentList\napiVersion: apps/v1\nitems: []\n")},
		"shop/replicasets.json": {Data: []byte(`{"items":[]}`)},
		"shop/daemonsets.json":  {Data: []byte(`{"items":[]}`)},
		"shop/a/logs.txt":       {Data: []byte("log line\n")},
	}
	s, err := cluster.ReadDump(fsys, "dump")
	if err != nil {
		t.Fatalf("ReadDump: %v", err)
	}
	if len(s.Nodes) != 1 || len(s.Pods) != 1 || len(s.Events) != 1 {
		t.Fatalf("read nodes=%d pods=%d events=%d, want 1 each", len(s.Nodes), len(s.Pods), len(s.Events))
	}
	for _, r := range []cluster.Resource{cluster.ResPDBs, cluster.ResEndpointSlices, cluster.ResStatefulSets, cluster.ResConfigMaps, cluster.ResLeases} {
		if s.Has(r) {
			t.Errorf("Has(%s) = true, want a NotInDump gap", r)
		}
	}
	for _, r := range []cluster.Resource{cluster.ResPods, cluster.ResNodes, cluster.ResDeployments} {
		if !s.Has(r) {
			t.Errorf("Has(%s) = false, want it read; gaps: %v", r, s.Gaps)
		}
	}
	want := time.Date(2026, 5, 20, 12, 0, 0, 0, time.UTC)
	if !s.TakenAt.Equal(want) {
		t.Errorf("TakenAt = %v, want the newest timestamp in the dump %v", s.TakenAt, want)
	}
}

func TestReadDumpBadInput(t *testing.T) {
	t.Run("not a dump", func(t *testing.T) {
		_, err := cluster.ReadDump(fstest.MapFS{"README.md": {Data: []byte("hi")}}, "somewhere")
		if err == nil || !strings.Contains(err.Error(), "does not look like a cluster dump") {
			t.Fatalf("err = %v, want a clear 'not a dump' error", err)
		}
	})
	t.Run("missing folder", func(t *testing.T) {
		_, err := cluster.ReadDump(os.DirFS(filepath.Join(t.TempDir(), "nope")), "nope")
		if err == nil {
			t.Fatal("want an error for a folder that does not exist")
		}
	})
	t.Run("malformed and truncated files keep the rest", func(t *testing.T) {
		fsys := fstest.MapFS{
			"nodes.json":         {Data: []byte(`{"kind":"NodeList","items":[{"metadata":{"name":"n1"}}]}`)},
			"shop/pods.json":     {Data: []byte("{\"items\":[\n{\"metadata\":{\"name\":\"a\"}},\n{oops}]}")},
			"shop/services.json": {Data: []byte(`{"items":[{"metadata":{"name":"s"`)},
			"shop/events.json":   {Data: []byte(`{"items":[]}`)},
		}
		s, err := cluster.ReadDump(fsys, "dump")
		if err != nil {
			t.Fatalf("ReadDump: %v", err)
		}
		if len(s.Nodes) != 1 {
			t.Errorf("nodes = %d, want the valid file still read", len(s.Nodes))
		}
		var pods, svcs *cluster.Gap
		for i := range s.Gaps {
			switch {
			case s.Gaps[i].Resource == cluster.ResPods && s.Gaps[i].Reason == cluster.GapMalformed:
				pods = &s.Gaps[i]
			case s.Gaps[i].Resource == cluster.ResServices && s.Gaps[i].Reason == cluster.GapMalformed:
				svcs = &s.Gaps[i]
			}
		}
		if pods == nil || !strings.Contains(pods.Message, "shop/pods.json: line 3") {
			t.Errorf("pods gap = %+v, want Malformed naming shop/pods.json line 3", pods)
		}
		if svcs == nil || !strings.Contains(svcs.Message, "truncated") {
			t.Errorf("services gap = %+v, want Malformed saying the file is truncated", svcs)
		}
	})
}
