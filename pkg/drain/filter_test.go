package drain

import (
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	ct "github.com/kdiag/kdiag/pkg/cluster/clustertest"
)

func withController(p corev1.Pod, apiVersion, kind, name string) corev1.Pod {
	yes := true
	p.OwnerReferences = []metav1.OwnerReference{{APIVersion: apiVersion, Kind: kind, Name: name, UID: "uid-" + "owner", Controller: &yes}}
	return p
}

func TestClassify(t *testing.T) {
	base := ct.RunningPod("ns", "p", "n1", nil)
	managed := withController(base, "apps/v1", "ReplicaSet", "rs")
	ds := withController(base, "apps/v1", "DaemonSet", "agent")
	dsDone := ds
	dsDone.Status.Phase = corev1.PodSucceeded
	mirror := withController(base, "v1", "Node", "n1")
	mirror.Annotations = map[string]string{corev1.MirrorPodAnnotationKey: "x"}
	emptyDir := managed
	emptyDir.Spec.Volumes = []corev1.Volume{{Name: "tmp", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}}
	emptyDirDone := emptyDir
	emptyDirDone.Status.Phase = corev1.PodFailed
	bare := base
	bareDone := base
	bareDone.Status.Phase = corev1.PodSucceeded
	bareEmptyDir := bare
	bareEmptyDir.Spec.Volumes = emptyDir.Spec.Volumes

	dsExists := func(string, string) (bool, bool) { return true, true }
	dsGone := func(string, string) (bool, bool) { return false, true }

	tests := []struct {
		name   string
		pod    corev1.Pod
		ds     DaemonSetLookup
		opts   Options
		action Action
		reason string
		msg    string
	}{
		{name: "managed pod is evicted", pod: managed, action: Evict},
		{name: "DaemonSet pod refused by default", pod: ds, ds: dsExists, action: Refuse, reason: ReasonDaemonSet, msg: "DaemonSet-managed Pods (use --ignore-daemonsets to ignore)"},
		{name: "DaemonSet pod skipped with --ignore-daemonsets", pod: ds, ds: dsExists, opts: Options{IgnoreDaemonSets: true}, action: Skip, reason: ReasonDaemonSet},
		{name: "DaemonSet unknown is taken to exist", pod: ds, opts: Options{IgnoreDaemonSets: true}, action: Skip, reason: ReasonDaemonSet},
		{name: "orphaned DaemonSet pod refused without --force", pod: ds, ds: dsGone, opts: Options{IgnoreDaemonSets: true}, action: Refuse, reason: ReasonDaemonSetMissing},
		{name: "orphaned DaemonSet pod evicted with --force", pod: ds, ds: dsGone, opts: Options{Force: true}, action: Evict, msg: `daemonsets.apps "agent" not found`},
		{name: "finished DaemonSet pod is deleted", pod: dsDone, ds: dsExists, action: Evict},
		{name: "mirror pod skipped", pod: mirror, action: Skip, reason: ReasonMirrorPod},
		{name: "emptyDir refused by default", pod: emptyDir, action: Refuse, reason: ReasonLocalStorage, msg: "Pods with local storage (use --delete-emptydir-data to override)"},
		{name: "emptyDir evicted with --delete-emptydir-data", pod: emptyDir, opts: Options{DeleteEmptyDirData: true}, action: Evict, msg: "deleting Pods with local storage"},
		{name: "finished emptyDir pod is deleted", pod: emptyDirDone, action: Evict},
		{name: "bare pod refused by default", pod: bare, action: Refuse, reason: ReasonUnmanaged, msg: "Pods that declare no controller (use --force to override)"},
		{name: "bare pod evicted with --force", pod: bare, opts: Options{Force: true}, action: Evict, msg: "deleting Pods that declare no controller"},
		{name: "finished bare pod is deleted", pod: bareDone, action: Evict},
		{name: "emptyDir checked before unmanaged (kubectl order)", pod: bareEmptyDir, action: Refuse, reason: ReasonLocalStorage},
		{name: "bare emptyDir pod needs both flags", pod: bareEmptyDir, opts: Options{DeleteEmptyDirData: true}, action: Refuse, reason: ReasonUnmanaged},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := Classify(&tc.pod, tc.ds, tc.opts)
			if d.Action != tc.action || d.Reason != tc.reason || (tc.msg != "" && d.Message != tc.msg) {
				t.Errorf("Classify = %+v, want action %q reason %q message %q", d, tc.action, tc.reason, tc.msg)
			}
		})
	}
}

func TestResolveNodes(t *testing.T) {
	a, b, c := ct.ReadyNode("b-node"), ct.ReadyNode("a-node"), ct.ReadyNode("c-node")
	a.Labels["agentpool"], b.Labels["agentpool"], c.Labels["agentpool"] = "np1", "np1", "np2"
	nodes := []corev1.Node{a, b, c}
	tests := []struct {
		name     string
		args     []string
		selector string
		want     []string
		err      string
	}{
		{name: "names keep their order", args: []string{"c-node", "a-node", "c-node"}, want: []string{"c-node", "a-node"}},
		{name: "selector sorts by name", selector: "agentpool=np1", want: []string{"a-node", "b-node"}},
		{name: "unknown node", args: []string{"x"}, err: `node "x" not found`},
		{name: "selector matches nothing", selector: "agentpool=np9", err: `--selector "agentpool=np9" matches no node`},
		{name: "bad selector", selector: "a in (", err: `--selector "a in ("`},
		{name: "neither", err: "give node names or --selector"},
		{name: "both", args: []string{"a-node"}, selector: "agentpool=np1", err: "give node names or --selector"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ResolveNodes(nodes, tc.args, tc.selector)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err = %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil || !slices.Equal(got, tc.want) {
				t.Fatalf("ResolveNodes = %v, %v; want %v", got, err, tc.want)
			}
		})
	}
}
