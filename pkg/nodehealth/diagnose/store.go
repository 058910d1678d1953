package diagnose

import (
	"context"
	"fmt"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// Store writes r to its ConfigMap: an unconditional update (the latest
// report wins), or a create the first time. The agent needs only update
// and create on ConfigMaps in kube-system for this (deploy/agent/rbac.yaml).
func Store(ctx context.Context, cs kubernetes.Interface, r *Report) error {
	cm, err := r.ConfigMap()
	if err != nil {
		return err
	}
	cms := cs.CoreV1().ConfigMaps(Namespace)
	_, err = cms.Update(ctx, cm, metav1.UpdateOptions{FieldManager: "kdiag-agent"})
	if apierrors.IsNotFound(err) {
		_, err = cms.Create(ctx, cm, metav1.CreateOptions{FieldManager: "kdiag-agent"})
	}
	if err != nil {
		return fmt.Errorf("store node report in ConfigMap %s/%s: %w", Namespace, cm.Name, err)
	}
	return nil
}

// ErrNoReport reports that no report is stored for a node.
var ErrNoReport = fmt.Errorf("no stored node report")

// Load reads the stored report of node.
func Load(ctx context.Context, cs kubernetes.Interface, node string) (*Report, error) {
	cm, err := cs.CoreV1().ConfigMaps(Namespace).Get(ctx, ConfigMapName(node), metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, fmt.Errorf("node %s: %w (ConfigMap %s/%s not found: the agent has not recorded one, it records one when the node degrades)",
			node, ErrNoReport, Namespace, ConfigMapName(node))
	}
	if err != nil {
		if apierrors.IsForbidden(err) {
			return nil, fmt.Errorf("read ConfigMap %s/%s: %w (kdiag needs configmaps get in %s)", Namespace, ConfigMapName(node), err, Namespace)
		}
		return nil, fmt.Errorf("read ConfigMap %s/%s: %w", Namespace, ConfigMapName(node), err)
	}
	return Parse(cm)
}
