package remote

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/kdiag/kdiag/pkg/enrich"
)

func pod(ns, name, node string, lbls map[string]string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: lbls},
		Spec:       corev1.PodSpec{NodeName: node, Containers: []corev1.Container{{Name: "app"}}},
		Status:     corev1.PodStatus{Phase: corev1.PodRunning},
	}
}

func node(name string) *corev1.Node { return &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}} }

func TestDecide(t *testing.T) {
	objs := []runtime.Object{
		node("n1"), node("n2"), node("n3"),
		pod("shop", "store-front-1", "n1", map[string]string{"app": "store-front"}),
		pod("shop", "store-front-2", "n2", map[string]string{"app": "store-front"}),
		pod("shop", "order-1", "n2", map[string]string{"app": "order"}),
		pod("shop", "pending-1", "", nil),
		pod("kube-system", "coredns-1", "n3", map[string]string{"k8s-app": "kube-dns"}),
	}
	sel := func(s string) labels.Selector { l, _ := labels.Parse(s); return l }
	tests := []struct {
		name        string
		in          PlanInput
		noClient    bool
		wantCluster bool
		wantNodes   []string
		wantErr     string
	}{
		{name: "nothing: local", in: PlanInput{LocalNodes: []string{"laptop"}}},
		{name: "--local", in: PlanInput{LocalNodes: []string{"n1"}, Local: true, Filter: enrich.Filter{Namespace: "shop"}}},
		{name: "--local with another node", in: PlanInput{LocalNodes: []string{"n1"}, Local: true, Nodes: []string{"n2"}}, wantErr: "--local traces only this machine"},
		{name: "--all-nodes", in: PlanInput{AllNodes: true}, wantCluster: true, wantNodes: []string{"n1", "n2", "n3"}},
		{name: "--all-nodes and --node", in: PlanInput{AllNodes: true, Nodes: []string{"n1"}}, wantErr: "exclude each other"},
		{name: "--all-nodes without kubeconfig", in: PlanInput{AllNodes: true}, noClient: true, wantErr: "needs the API server"},
		{name: "--node this node", in: PlanInput{LocalNodes: []string{"n1"}, Nodes: []string{"n1"}}},
		{name: "--node other nodes", in: PlanInput{LocalNodes: []string{"n1"}, Nodes: []string{"n3", "n2", "n3"}}, wantCluster: true, wantNodes: []string{"n2", "n3"}},
		{name: "--node other without kubeconfig", in: PlanInput{LocalNodes: []string{"n1"}, Nodes: []string{"n2"}}, noClient: true, wantErr: "local tracing sees only the nodes hosted on this machine (n1)"},
		{name: "lab: pods on two nodes of this machine", in: PlanInput{LocalNodes: []string{"n1", "n2"}, Filter: enrich.Filter{Namespace: "shop", PodPrefix: "store-front"}}},
		{name: "lab: --node naming two local nodes", in: PlanInput{LocalNodes: []string{"n1", "n2"}, Nodes: []string{"n2", "n1"}}},
		{name: "lab: pods also on a node elsewhere", in: PlanInput{LocalNodes: []string{"n1"}, Filter: enrich.Filter{Namespace: "shop", PodPrefix: "store-front"}}, wantCluster: true, wantNodes: []string{"n1", "n2"}},
		{name: "no local node known, --node without kubeconfig", in: PlanInput{Nodes: []string{"n2"}}, noClient: true, wantErr: "unknown: set NODE_NAME"},
		{name: "pod prefix on two nodes", in: PlanInput{LocalNodes: []string{"laptop"}, Filter: enrich.Filter{Namespace: "shop", PodPrefix: "store-front"}}, wantCluster: true, wantNodes: []string{"n1", "n2"}},
		{name: "selector on one other node", in: PlanInput{LocalNodes: []string{"n1"}, Filter: enrich.Filter{Selector: sel("k8s-app=kube-dns")}}, wantCluster: true, wantNodes: []string{"n3"}},
		{name: "pods only on this node", in: PlanInput{LocalNodes: []string{"n2"}, Filter: enrich.Filter{Namespace: "shop", PodPrefix: "order"}}},
		{name: "filter matches nothing", in: PlanInput{LocalNodes: []string{"n1"}, Filter: enrich.Filter{Namespace: "shop", PodPrefix: "nope"}}, wantErr: "no pod matches the filter"},
		{name: "only unscheduled pods", in: PlanInput{LocalNodes: []string{"n1"}, Filter: enrich.Filter{Namespace: "shop", PodPrefix: "pending"}}, wantErr: "none is scheduled"},
		{name: "filter without kubeconfig: local reports it", in: PlanInput{LocalNodes: []string{"n1"}, Filter: enrich.Filter{Namespace: "shop"}}, noClient: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var cs kubernetes.Interface
			if !tt.noClient {
				cs = fake.NewClientset(objs...)
			}
			p, err := Decide(context.Background(), cs, tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want it to contain %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Decide: %v", err)
			}
			if p.Cluster != tt.wantCluster || !slices.Equal(p.Nodes, tt.wantNodes) {
				t.Fatalf("plan %+v, want cluster=%v nodes=%v", p, tt.wantCluster, tt.wantNodes)
			}
			if p.Reason == "" {
				t.Error("a plan must say why")
			}
		})
	}
}

// Without RBAC on nodes, --all-nodes still runs: on every node with an
// agent, and says so. Without RBAC on pods, a filter falls back to local
// mode, which reports what the filter needs.
func TestDecideForbidden(t *testing.T) {
	cs := fake.NewClientset(node("n1"), pod("shop", "a", "n1", nil))
	cs.PrependReactor("list", "*", func(a k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, apierrors.NewForbidden(schema.GroupResource{Resource: a.GetResource().Resource}, "", errors.New("RBAC"))
	})
	p, err := Decide(context.Background(), cs, PlanInput{AllNodes: true})
	if err != nil || !p.Cluster || len(p.Nodes) != 0 || !strings.Contains(p.Reason, "every node with an agent") {
		t.Errorf("--all-nodes without nodes list: %+v, %v", p, err)
	}
	p, err = Decide(context.Background(), cs, PlanInput{LocalNodes: []string{"n1"}, Filter: enrich.Filter{Namespace: "shop"}})
	if err != nil || p.Cluster || !strings.Contains(p.Reason, "could not be listed") {
		t.Errorf("filter without pods list: %+v, %v", p, err)
	}
}
