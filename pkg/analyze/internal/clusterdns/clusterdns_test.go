package clusterdns

import (
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestIsService(t *testing.T) {
	cases := []struct {
		name string
		meta metav1.ObjectMeta
		want bool
	}{
		{"kube-dns", metav1.ObjectMeta{Namespace: "kube-system", Name: "kube-dns"}, true},
		{"labelled under another name", metav1.ObjectMeta{Namespace: "kube-system", Name: "coredns", Labels: map[string]string{"k8s-app": "kube-dns"}}, true},
		{"kube-dns elsewhere", metav1.ObjectMeta{Namespace: "shop", Name: "kube-dns"}, false},
		{"another kube-system Service", metav1.ObjectMeta{Namespace: "kube-system", Name: "metrics-server", Labels: map[string]string{"k8s-app": "metrics-server"}}, false},
	}
	for _, tc := range cases {
		if got := IsService(&corev1.Service{ObjectMeta: tc.meta}); got != tc.want {
			t.Errorf("%s: IsService = %t, want %t", tc.name, got, tc.want)
		}
	}
}

func TestIsDeployment(t *testing.T) {
	sel := func(v string) *metav1.LabelSelector {
		return &metav1.LabelSelector{MatchLabels: map[string]string{"k8s-app": v}}
	}
	cases := []struct {
		name string
		meta metav1.ObjectMeta
		sel  *metav1.LabelSelector
		want bool
	}{
		{"coredns", metav1.ObjectMeta{Namespace: "kube-system", Name: "coredns"}, nil, true},
		{"kube-dns", metav1.ObjectMeta{Namespace: "kube-system", Name: "kube-dns"}, nil, true},
		{"labelled", metav1.ObjectMeta{Namespace: "kube-system", Name: "dns", Labels: map[string]string{"k8s-app": "kube-dns"}}, nil, true},
		{"selecting", metav1.ObjectMeta{Namespace: "kube-system", Name: "dns"}, sel("kube-dns"), true},
		{"coredns elsewhere", metav1.ObjectMeta{Namespace: "shop", Name: "coredns"}, sel("kube-dns"), false},
		{"another kube-system Deployment", metav1.ObjectMeta{Namespace: "kube-system", Name: "metrics-server"}, sel("metrics-server"), false},
	}
	for _, tc := range cases {
		d := &appsv1.Deployment{ObjectMeta: tc.meta, Spec: appsv1.DeploymentSpec{Selector: tc.sel}}
		if got := IsDeployment(d); got != tc.want {
			t.Errorf("%s: IsDeployment = %t, want %t", tc.name, got, tc.want)
		}
	}
}
