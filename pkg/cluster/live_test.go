package cluster_test

import (
	"context"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/kdiag/kdiag/pkg/cluster"
)

// Unit test with a fake clientset: the real paginated read against a real
// API server is covered by the integration tests in pkg/doctor.
func TestReadLiveRecordsForbiddenResourceAsGap(t *testing.T) {
	cs := fake.NewClientset(
		&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n1"}},
		&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "a"}},
		&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "other", Name: "b"}},
		&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "kube-system", Name: "coredns"}},
		&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "kube-system", Name: "unrelated"}},
	)
	cs.PrependReactor("list", "events", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, apierrors.NewForbidden(schema.GroupResource{Resource: "events"}, "", nil)
	})
	s, err := cluster.ReadLive(context.Background(), cs, cluster.LiveOptions{Source: "fake"})
	if err != nil {
		t.Fatalf("ReadLive: %v", err)
	}
	if len(s.Nodes) != 1 || len(s.Pods) != 2 {
		t.Errorf("nodes=%d pods=%d, want 1 and 2", len(s.Nodes), len(s.Pods))
	}
	if len(s.ConfigMaps) != 1 || s.ConfigMaps[0].Name != "coredns" {
		t.Errorf("configmaps = %v, want only coredns kept", s.ConfigMaps)
	}
	if s.Has(cluster.ResEvents) {
		t.Fatal("events were forbidden but Has(events) is true")
	}
	if len(s.Gaps) != 1 || s.Gaps[0].Reason != cluster.GapForbidden {
		t.Errorf("gaps = %v, want one Forbidden gap for events", s.Gaps)
	}
}

func TestReadLiveNamespaceAlsoReadsClusterDNS(t *testing.T) {
	cs := fake.NewClientset(
		&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "a"}},
		&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "other", Name: "b"}},
		&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "kube-system", Name: "coredns-1", Labels: map[string]string{"k8s-app": "kube-dns"}}},
		&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "kube-system", Name: "etcd"}},
	)
	s, err := cluster.ReadLive(context.Background(), cs, cluster.LiveOptions{Namespace: "shop"})
	if err != nil {
		t.Fatalf("ReadLive: %v", err)
	}
	got := map[string]bool{}
	for _, p := range s.Pods {
		got[p.Namespace+"/"+p.Name] = true
	}
	want := map[string]bool{"shop/a": true, "kube-system/coredns-1": true}
	if len(got) != len(want) || !got["shop/a"] || !got["kube-system/coredns-1"] {
		t.Errorf("pods read = %v, want %v", got, want)
	}
}

func TestReadLiveSkipsRoutineNormalEvents(t *testing.T) {
	ev := func(name, typ, reason string) *corev1.Event {
		return &corev1.Event{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: name}, Type: typ, Reason: reason}
	}
	cs := fake.NewClientset(
		ev("a", corev1.EventTypeNormal, "Scheduled"),
		ev("b", corev1.EventTypeNormal, "Pulled"),
		ev("c", corev1.EventTypeNormal, "NodeNotReady"),
		ev("d", corev1.EventTypeWarning, "Started"),
		ev("e", corev1.EventTypeWarning, "FailedScheduling"),
	)
	s, err := cluster.ReadLive(context.Background(), cs, cluster.LiveOptions{})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	for _, e := range s.Events {
		got[e.Name] = true
	}
	if len(got) != 3 || !got["c"] || !got["d"] || !got["e"] {
		t.Errorf("kept events %v, want c (Normal but not routine), d and e (Warning)", got)
	}
}
