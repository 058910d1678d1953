package cluster

import (
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Restrict returns a copy of the snapshot limited to one namespace, the way
// a live read with -n is: namespaced objects of ns, plus the cluster DNS
// objects in kube-system and every cluster-scoped object. It is used for a
// dump read with -n.
func (s *Snapshot) Restrict(ns string) *Snapshot {
	inNS := func(m *metav1.ObjectMeta) bool { return m.Namespace == ns }
	orDNS := func(m *metav1.ObjectMeta) bool {
		return m.Namespace == ns || (m.Namespace == metav1.NamespaceSystem &&
			(m.Labels["k8s-app"] == "kube-dns" || m.Labels[discoveryv1.LabelServiceName] == "kube-dns" || m.Name == "kube-dns"))
	}
	return &Snapshot{
		Source: s.Source, Live: s.Live, Namespace: ns, TakenAt: s.TakenAt,
		Nodes: s.Nodes, Leases: s.Leases, ConfigMaps: s.ConfigMaps, Gaps: s.Gaps,
		Pods:                 keepWhere(s.Pods, func(o *corev1.Pod) *metav1.ObjectMeta { return &o.ObjectMeta }, orDNS),
		Services:             keepWhere(s.Services, func(o *corev1.Service) *metav1.ObjectMeta { return &o.ObjectMeta }, orDNS),
		EndpointSlices:       keepWhere(s.EndpointSlices, func(o *discoveryv1.EndpointSlice) *metav1.ObjectMeta { return &o.ObjectMeta }, orDNS),
		Deployments:          keepWhere(s.Deployments, func(o *appsv1.Deployment) *metav1.ObjectMeta { return &o.ObjectMeta }, orDNS),
		ReplicaSets:          keepWhere(s.ReplicaSets, func(o *appsv1.ReplicaSet) *metav1.ObjectMeta { return &o.ObjectMeta }, orDNS),
		StatefulSets:         keepWhere(s.StatefulSets, func(o *appsv1.StatefulSet) *metav1.ObjectMeta { return &o.ObjectMeta }, inNS),
		DaemonSets:           keepWhere(s.DaemonSets, func(o *appsv1.DaemonSet) *metav1.ObjectMeta { return &o.ObjectMeta }, inNS),
		PodDisruptionBudgets: keepWhere(s.PodDisruptionBudgets, func(o *policyv1.PodDisruptionBudget) *metav1.ObjectMeta { return &o.ObjectMeta }, inNS),
		Events:               keepWhere(s.Events, func(o *corev1.Event) *metav1.ObjectMeta { return &o.ObjectMeta }, inNS),
	}
}

func keepWhere[T any](items []T, meta func(*T) *metav1.ObjectMeta, ok func(*metav1.ObjectMeta) bool) []T {
	var out []T
	for i := range items {
		if ok(meta(&items[i])) {
			out = append(out, items[i])
		}
	}
	return out
}
