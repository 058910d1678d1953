package ops

import (
	"context"
	"fmt"
	"time"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apiextensionsclient "k8s.io/apiextensions-apiserver/pkg/client/clientset/clientset"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/yaml"

	"github.com/kdiag/kdiag/deploy/crds"
)

// crdEstablishTimeout bounds the wait for the API server to serve the CRD.
const crdEstablishTimeout = time.Minute

// OperationCRD returns the Operation CRD from the manifest embedded in the
// binary (deploy/crds/kdiag.io_operations.yaml).
func OperationCRD() (*apiextensionsv1.CustomResourceDefinition, error) {
	crd := &apiextensionsv1.CustomResourceDefinition{}
	if err := yaml.UnmarshalStrict(crds.Operations(), crd); err != nil {
		return nil, fmt.Errorf("decode the embedded Operation CRD manifest: %w", err)
	}
	return crd, nil
}

// EnsureCRD installs or updates the Operation CRD (operations.kdiag.io)
// and waits until the API server serves it (condition Established), at
// most a minute. `kdiag lab up` and the repair controller call it.
func EnsureCRD(ctx context.Context, cfg *rest.Config) error {
	want, err := OperationCRD()
	if err != nil {
		return err
	}
	cs, err := apiextensionsclient.NewForConfig(cfg)
	if err != nil {
		return fmt.Errorf("apiextensions client: %w", err)
	}
	crds := cs.ApiextensionsV1().CustomResourceDefinitions()
	cur, err := crds.Get(ctx, want.Name, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		if _, err := crds.Create(ctx, want, metav1.CreateOptions{FieldManager: "kdiag"}); err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("create CRD %s: %w", want.Name, err)
		}
	case err != nil:
		return fmt.Errorf("get CRD %s: %w", want.Name, err)
	default:
		cur.Spec = want.Spec
		cur.Annotations = want.Annotations
		if _, err := crds.Update(ctx, cur, metav1.UpdateOptions{FieldManager: "kdiag"}); err != nil {
			return fmt.Errorf("update CRD %s: %w", want.Name, err)
		}
	}
	var last string
	err = wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, crdEstablishTimeout, true, func(ctx context.Context) (bool, error) {
		got, err := crds.Get(ctx, want.Name, metav1.GetOptions{})
		if err != nil {
			last = err.Error()
			return false, nil
		}
		for _, c := range got.Status.Conditions {
			if c.Type == apiextensionsv1.NamesAccepted && c.Status == apiextensionsv1.ConditionFalse {
				return false, fmt.Errorf("CRD %s: names not accepted: %s", want.Name, c.Message)
			}
			if c.Type == apiextensionsv1.Established && c.Status == apiextensionsv1.ConditionTrue {
				return true, nil
			}
			if c.Type == apiextensionsv1.Established {
				last = c.Message
			}
		}
		return false, nil
	})
	if err != nil {
		return fmt.Errorf("wait for CRD %s to be established (%s): %w", want.Name, last, err)
	}
	return nil
}
