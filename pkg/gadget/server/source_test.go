package server

import (
	"context"
	"net/netip"
	"testing"

	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
)

// The agent names the far ends of connections only when RBAC lets it list
// and watch every pod and Service; otherwise it still names its own pods
// instead of failing every filtered trace after the sync timeout.
func TestClusterSourceFollowsRBAC(t *testing.T) {
	local := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "web-1", Namespace: "shop", UID: "u1"}, Spec: corev1.PodSpec{NodeName: "n1"}}
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "orders", Namespace: "shop"}, Spec: corev1.ServiceSpec{ClusterIP: "10.96.0.20"}}
	for _, allow := range []bool{false, true} {
		cs := fake.NewClientset(local, svc)
		var asked []string
		cs.PrependReactor("create", "selfsubjectaccessreviews", func(a k8stesting.Action) (bool, runtime.Object, error) {
			r := a.(k8stesting.CreateAction).GetObject().(*authorizationv1.SelfSubjectAccessReview)
			asked = append(asked, r.Spec.ResourceAttributes.Verb+" "+r.Spec.ResourceAttributes.Resource)
			r.Status.Allowed = allow || r.Spec.ResourceAttributes.Resource == "pods"
			return true, r, nil
		})
		ctx, cancel := context.WithCancel(context.Background())
		src, err := clusterSource(ctx, cs, "n1", nil)
		if err != nil {
			cancel()
			t.Fatalf("allow=%v: %v", allow, err)
		}
		if p := src.PodByUID("u1"); p == nil || p.Name != "web-1" {
			t.Errorf("allow=%v: the node's pod is not found: %v", allow, p)
		}
		got := src.ServiceByIP(netip.MustParseAddr("10.96.0.20")) != nil
		if got != allow {
			t.Errorf("allow services=%v: Service named = %v (asked %v)", allow, got, asked)
		}
		if len(asked) != 4 {
			t.Errorf("asked %v, want list and watch of pods and services", asked)
		}
		cancel()
	}
}
