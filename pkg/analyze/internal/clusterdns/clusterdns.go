// Package clusterdns recognizes the cluster DNS objects (CoreDNS or
// kube-dns) in kube-system. The dns analyzer reports on them; the network
// analyzer leaves the kube-dns Service to it, so both must use one rule.
package clusterdns

import (
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
)

// Namespace is where the cluster DNS runs.
const Namespace = "kube-system"

// IsService recognizes the kube-dns Service (CoreDNS keeps that name): in
// kube-system, named kube-dns or labelled k8s-app=kube-dns.
func IsService(svc *corev1.Service) bool {
	return svc.Namespace == Namespace && (svc.Name == "kube-dns" || svc.Labels["k8s-app"] == "kube-dns")
}

// IsDeployment recognizes the CoreDNS or kube-dns Deployment: in
// kube-system, named coredns or kube-dns, or labelled or selecting
// k8s-app=kube-dns.
func IsDeployment(d *appsv1.Deployment) bool {
	if d.Namespace != Namespace {
		return false
	}
	if d.Name == "coredns" || d.Name == "kube-dns" || d.Labels["k8s-app"] == "kube-dns" {
		return true
	}
	return d.Spec.Selector != nil && d.Spec.Selector.MatchLabels["k8s-app"] == "kube-dns"
}
