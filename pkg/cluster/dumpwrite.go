package cluster

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"

	appsv1 "k8s.io/api/apps/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// WriteDump writes the snapshot as a dump tree under dir, in the layout
// `kubectl cluster-info dump --output-directory` uses, plus kdiag's extra
// resources and DumpMetaFile. Every namespace folder gets every namespaced
// file, empty lists included, so that a reader can tell "none" from "not
// dumped". Gaps of the snapshot are carried over in the metadata.
func WriteDump(dir string, s *Snapshot) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("create dump folder: %w", err)
	}
	meta := DumpMeta{Source: s.Source, Namespace: s.Namespace, TakenAt: s.TakenAt, Gaps: s.Gaps}
	if err := writeJSON(filepath.Join(dir, DumpMetaFile), meta); err != nil {
		return err
	}
	if err := writeJSON(filepath.Join(dir, "nodes.json"), &corev1.NodeList{TypeMeta: listType("v1", "NodeList"), Items: s.Nodes}); err != nil {
		return err
	}
	nsSet := map[string]bool{}
	note := func(ns string) { nsSet[ns] = true }
	pods := group(s.Pods, func(o *corev1.Pod) string { return o.Namespace }, note)
	services := group(s.Services, func(o *corev1.Service) string { return o.Namespace }, note)
	slices := group(s.EndpointSlices, func(o *discoveryv1.EndpointSlice) string { return o.Namespace }, note)
	deps := group(s.Deployments, func(o *appsv1.Deployment) string { return o.Namespace }, note)
	rss := group(s.ReplicaSets, func(o *appsv1.ReplicaSet) string { return o.Namespace }, note)
	stss := group(s.StatefulSets, func(o *appsv1.StatefulSet) string { return o.Namespace }, note)
	dss := group(s.DaemonSets, func(o *appsv1.DaemonSet) string { return o.Namespace }, note)
	pdbs := group(s.PodDisruptionBudgets, func(o *policyv1.PodDisruptionBudget) string { return o.Namespace }, note)
	events := group(s.Events, func(o *corev1.Event) string { return o.Namespace }, note)
	cms := group(s.ConfigMaps, func(o *corev1.ConfigMap) string { return o.Namespace }, func(string) {})
	leases := group(s.Leases, func(o *coordinationv1.Lease) string { return o.Namespace }, note)
	nsSet[metav1.NamespaceSystem] = true
	nsSet[corev1.NamespaceNodeLease] = true

	var namespaces []string
	for ns := range nsSet {
		namespaces = append(namespaces, ns)
	}
	sort.Strings(namespaces)
	for _, ns := range namespaces {
		files := map[string]any{
			"pods.json":                 &corev1.PodList{TypeMeta: listType("v1", "PodList"), Items: pods[ns]},
			"services.json":             &corev1.ServiceList{TypeMeta: listType("v1", "ServiceList"), Items: services[ns]},
			"endpointslices.json":       &discoveryv1.EndpointSliceList{TypeMeta: listType("discovery.k8s.io/v1", "EndpointSliceList"), Items: slices[ns]},
			"deployments.json":          &appsv1.DeploymentList{TypeMeta: listType("apps/v1", "DeploymentList"), Items: deps[ns]},
			"replicasets.json":          &appsv1.ReplicaSetList{TypeMeta: listType("apps/v1", "ReplicaSetList"), Items: rss[ns]},
			"statefulsets.json":         &appsv1.StatefulSetList{TypeMeta: listType("apps/v1", "StatefulSetList"), Items: stss[ns]},
			"daemonsets.json":           &appsv1.DaemonSetList{TypeMeta: listType("apps/v1", "DaemonSetList"), Items: dss[ns]},
			"poddisruptionbudgets.json": &policyv1.PodDisruptionBudgetList{TypeMeta: listType("policy/v1", "PodDisruptionBudgetList"), Items: pdbs[ns]},
			"events.json":               &corev1.EventList{TypeMeta: listType("v1", "EventList"), Items: events[ns]},
		}
		if ns == corev1.NamespaceNodeLease {
			files["leases.json"] = &coordinationv1.LeaseList{TypeMeta: listType("coordination.k8s.io/v1", "LeaseList"), Items: leases[ns]}
		}
		if ns == metav1.NamespaceSystem {
			files["configmaps.json"] = &corev1.ConfigMapList{TypeMeta: listType("v1", "ConfigMapList"), Items: cms[ns]}
		}
		if err := os.MkdirAll(filepath.Join(dir, ns), 0o755); err != nil {
			return fmt.Errorf("create dump folder: %w", err)
		}
		for name, v := range files {
			if err := writeJSON(filepath.Join(dir, ns, name), v); err != nil {
				return err
			}
		}
	}
	return nil
}

func listType(apiVersion, kind string) metav1.TypeMeta {
	return metav1.TypeMeta{APIVersion: apiVersion, Kind: kind}
}

func group[T any](items []T, ns func(*T) string, note func(string)) map[string][]T {
	out := map[string][]T{}
	for i := range items {
		k := ns(&items[i])
		note(k)
		out[k] = append(out[k], items[i])
	}
	return out
}

func writeJSON(path string, v any) error {
	data, err := json.MarshalIndent(v, "", "    ")
	if err != nil {
		return fmt.Errorf("encode %s: %w", path, err)
	}
	if err := os.WriteFile(path, append(data, '\n'), 0o644); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}
