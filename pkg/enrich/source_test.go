package enrich

import (
	"context"
	"net/netip"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
)

func TestInformerSource(t *testing.T) {
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "kube-dns", Namespace: "kube-system"},
		Spec:       corev1.ServiceSpec{ClusterIP: "10.96.0.10", ClusterIPs: []string{"10.96.0.10"}},
	}
	cs := fake.NewSimpleClientset(pod("web-1", "shop", uid, cid, nil), svc)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	src, err := NewInformerSource(ctx, cs, InformerOptions{NodeName: "n1", ResolveRemote: true, SyncTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if p := src.PodByUID(uid); p == nil || p.Name != "web-1" {
		t.Errorf("PodByUID = %v", p)
	}
	if p := src.PodByIP(netip.MustParseAddr("10.244.0.5")); p == nil || p.Name != "web-1" {
		t.Errorf("PodByIP = %v", p)
	}
	if s := src.ServiceByIP(netip.MustParseAddr("10.96.0.10")); s == nil || s.Name != "kube-dns" {
		t.Errorf("ServiceByIP = %v", s)
	}
	if n := len(src.Pods()); n != 1 {
		t.Errorf("Pods() has %d pods, want 1", n)
	}
	if got := containerName(src.PodByUID(uid), cid[:12]); got != "app" {
		t.Errorf("containerName by short ID = %q", got)
	}
}

func TestInformerSourceForbiddenIsAClearError(t *testing.T) {
	cs := fake.NewSimpleClientset()
	cs.PrependReactor("list", "pods", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, apierrors.NewForbidden(schema.GroupResource{Resource: "pods"}, "", nil)
	})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	_, err := NewInformerSource(ctx, cs, InformerOptions{SyncTimeout: 300 * time.Millisecond})
	if err == nil || !strings.Contains(err.Error(), "not synced") {
		t.Fatalf("err = %v, want a 'not synced' error", err)
	}
}
