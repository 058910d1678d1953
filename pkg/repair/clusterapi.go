package repair

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
)

// Cluster API names the provider relies on. They are spelled out here
// instead of importing sigs.k8s.io/cluster-api, which would pull a second
// copy of half the Kubernetes libraries for four strings.
const (
	// CAPIMachineAnnotation on a Node names its Machine.
	CAPIMachineAnnotation = "cluster.x-k8s.io/machine"
	// CAPIClusterNamespaceAnnotation on a Node names the Machine's
	// namespace.
	CAPIClusterNamespaceAnnotation = "cluster.x-k8s.io/cluster-namespace"
	// CAPIRemediateAnnotation on a Machine asks Cluster API to remediate it
	// (its MachineHealthCheck marks it unhealthy, and the owner or an
	// external remediation template reboots or replaces it).
	CAPIRemediateAnnotation = "cluster.x-k8s.io/remediate-machine"
)

// CAPIMachineKind is the Machine kind; its version is discovered.
func CAPIMachineKind() schema.GroupKind {
	return schema.GroupKind{Group: "cluster.x-k8s.io", Kind: "Machine"}
}

// ClusterAPIProvider repairs nodes through their Cluster API Machine: for a
// reboot or a reimage it annotates the Machine with
// cluster.x-k8s.io/remediate-machine; for a redeploy it deletes the Machine,
// which its MachineSet replaces. It uses the dynamic client, so kdiag does
// not depend on Cluster API's Go module.
type ClusterAPIProvider struct {
	// Client reads and writes Machines.
	Client dynamic.Interface
	// Mapper resolves the served version of Machine.
	Mapper meta.RESTMapper
}

// Name implements Provider.
func (p ClusterAPIProvider) Name() string { return "clusterapi" }

// Do implements Provider.
func (p ClusterAPIProvider) Do(ctx context.Context, n *corev1.Node, a Action) (string, error) {
	name := n.Annotations[CAPIMachineAnnotation]
	ns := n.Annotations[CAPIClusterNamespaceAnnotation]
	if name == "" || ns == "" {
		return "", fmt.Errorf("clusterapi provider: node %s has no Machine (annotations %s and %s missing): is it managed by Cluster API?", n.Name, CAPIMachineAnnotation, CAPIClusterNamespaceAnnotation)
	}
	m, err := p.Mapper.RESTMapping(CAPIMachineKind())
	if r, ok := p.Mapper.(meta.ResettableRESTMapper); ok && meta.IsNoMatchError(err) {
		// Cluster API may have been installed since the last discovery.
		r.Reset()
		m, err = p.Mapper.RESTMapping(CAPIMachineKind())
	}
	if err != nil {
		return "", fmt.Errorf("clusterapi provider: the cluster serves no %s (is Cluster API installed?): %w", CAPIMachineKind(), err)
	}
	machines := p.Client.Resource(m.Resource).Namespace(ns)
	ref := fmt.Sprintf("Machine %s/%s", ns, name)
	switch a {
	case Reboot, Reimage:
		patch := fmt.Sprintf(`{"metadata":{"annotations":{%q:""}}}`, CAPIRemediateAnnotation)
		if _, err := machines.Patch(ctx, name, types.MergePatchType, []byte(patch), metav1.PatchOptions{FieldManager: fieldManager}); err != nil {
			return "", capiError(ref, "annotate", err)
		}
		return fmt.Sprintf("annotated %s with %s for the %s of node %s", ref, CAPIRemediateAnnotation, a, n.Name), nil
	case Redeploy:
		err := machines.Delete(ctx, name, metav1.DeleteOptions{})
		if apierrors.IsNotFound(err) {
			return fmt.Sprintf("%s already deleted", ref), nil
		}
		if err != nil {
			return "", capiError(ref, "delete", err)
		}
		return fmt.Sprintf("deleted %s; its MachineSet creates a replacement", ref), nil
	}
	return "", fmt.Errorf("clusterapi provider: unknown action %q", a)
}

func capiError(ref, verb string, err error) error {
	switch {
	case apierrors.IsNotFound(err):
		return fmt.Errorf("clusterapi provider: %s not found: %w", ref, err)
	case apierrors.IsForbidden(err):
		return fmt.Errorf("clusterapi provider: %s %s forbidden: grant %s on machines.cluster.x-k8s.io: %w", verb, ref, verbRBAC(verb), err)
	}
	return fmt.Errorf("clusterapi provider: %s %s: %w", verb, ref, err)
}

func verbRBAC(verb string) string {
	if verb == "delete" {
		return "delete"
	}
	return "patch"
}
