package repair_test

import (
	"context"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apiextensionsclient "k8s.io/apiextensions-apiserver/pkg/client/clientset/clientset"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/utils/ptr"

	"github.com/kdiag/kdiag/pkg/lab/labtest"
	"github.com/kdiag/kdiag/pkg/repair"
)

// machineCRD is a minimal stand-in for Cluster API's Machine CRD: the same
// group, kind and version, any content.
func machineCRD() *apiextensionsv1.CustomResourceDefinition {
	return &apiextensionsv1.CustomResourceDefinition{
		ObjectMeta: metav1.ObjectMeta{Name: "machines.cluster.x-k8s.io"},
		Spec: apiextensionsv1.CustomResourceDefinitionSpec{
			Group: "cluster.x-k8s.io",
			Names: apiextensionsv1.CustomResourceDefinitionNames{Plural: "machines", Singular: "machine", Kind: "Machine", ListKind: "MachineList"},
			Scope: apiextensionsv1.NamespaceScoped,
			Versions: []apiextensionsv1.CustomResourceDefinitionVersion{{
				Name: "v1beta1", Served: true, Storage: true,
				Schema: &apiextensionsv1.CustomResourceValidation{OpenAPIV3Schema: &apiextensionsv1.JSONSchemaProps{
					Type: "object", XPreserveUnknownFields: ptr.To(true),
				}},
			}},
		},
	}
}

// TestClusterAPIProviderOnLab installs a minimal Machine CRD on the lab's
// API server and drives the clusterapi provider as the CLI builds it
// (discovery of Machine's version included).
func TestClusterAPIProviderOnLab(t *testing.T) {
	l := newLab(t)
	ctx := context.Background()
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: node1, Annotations: map[string]string{
		repair.CAPIMachineAnnotation: "md-0-abcde", repair.CAPIClusterNamespaceAnnotation: "capi-test",
	}}}
	p, err := repair.NewProvider(l.cfg, repair.ProviderConfig{Name: "clusterapi"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Do(ctx, node, repair.Reboot); err == nil {
		t.Fatal("reboot without Cluster API installed: want an error, got none")
	} else {
		t.Logf("without Cluster API: %v", err)
	}

	crds := apiextensionsclient.NewForConfigOrDie(l.cfg).ApiextensionsV1().CustomResourceDefinitions()
	if _, err := crds.Create(ctx, machineCRD(), metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatalf("install the Machine CRD: %v", err)
	}
	t.Cleanup(func() { _ = crds.Delete(context.Background(), "machines.cluster.x-k8s.io", metav1.DeleteOptions{}) })
	labtest.WaitFor(t, ctx, "Machine CRD established", func(ctx context.Context) (bool, error) {
		c, err := crds.Get(ctx, "machines.cluster.x-k8s.io", metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		for _, cond := range c.Status.Conditions {
			if cond.Type == apiextensionsv1.Established && cond.Status == apiextensionsv1.ConditionTrue {
				return true, nil
			}
		}
		return false, nil
	})
	labtest.CreateNamespace(t, ctx, l.cs, "capi-test")
	gvr := schema.GroupVersionResource{Group: "cluster.x-k8s.io", Version: "v1beta1", Resource: "machines"}
	machines := dynamic.NewForConfigOrDie(l.cfg).Resource(gvr).Namespace("capi-test")
	m := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "cluster.x-k8s.io/v1beta1", "kind": "Machine",
		"metadata": map[string]any{"name": "md-0-abcde"},
		"spec":     map[string]any{"clusterName": "lab"},
	}}
	if _, err := machines.Create(ctx, m, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create the Machine: %v", err)
	}
	// The provider found no Machine kind above; it discovers again after
	// a miss, so Cluster API installed later is found at once.
	if _, err := p.Do(ctx, node, repair.Reboot); err != nil {
		t.Fatalf("reboot through the Machine: %v", err)
	}
	got, err := machines.Get(ctx, "md-0-abcde", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := got.GetAnnotations()[repair.CAPIRemediateAnnotation]; !ok {
		t.Errorf("reboot: Machine not annotated %s: %v", repair.CAPIRemediateAnnotation, got.GetAnnotations())
	}
	if _, err := p.Do(ctx, node, repair.Redeploy); err != nil {
		t.Fatalf("redeploy: %v", err)
	}
	if _, err := machines.Get(ctx, "md-0-abcde", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("redeploy: want the Machine deleted, get says %v", err)
	}
}
