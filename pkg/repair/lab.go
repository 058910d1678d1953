package repair

import (
	"context"
	"fmt"
	"slices"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"

	"github.com/kdiag/kdiag/pkg/lab/kubelet"
)

// LabProvider simulates the actions on the lab's simulated nodes (package
// pkg/lab/kubelet). An action that "works" hands the node back to its
// simulated kubelet: it removes lab.kdiag.io/heartbeat=false (the kubelet
// was dead) and lab.kdiag.io/manual-status (a test or scenario held the
// status), so the simulator reports the node Ready again. An action before
// HealsAt "runs" but leaves the node broken, so the tutorial can show the
// escalation: with HealsAt=reimage, the reboot does not help and the
// reimage does.
type LabProvider struct {
	// Client writes the Nodes.
	Client kubernetes.Interface
	// HealsAt is the first action that repairs a node (default reboot).
	HealsAt Action
}

// Name implements Provider.
func (p LabProvider) Name() string { return "lab" }

// Do implements Provider.
func (p LabProvider) Do(ctx context.Context, n *corev1.Node, a Action) (string, error) {
	if n.Labels[kubelet.LabelSimulated] != "true" {
		return "", fmt.Errorf("lab provider: node %s is not a simulated lab node (no %s=true label)", n.Name, kubelet.LabelSimulated)
	}
	heals := p.HealsAt
	if heals == "" {
		heals = Reboot
	}
	e := Escalation()
	if slices.Index(e, a) < slices.Index(e, heals) {
		return fmt.Sprintf("lab: simulated %s of %s; the node stays broken (it heals at %s)", a, n.Name, heals), nil
	}
	patch := fmt.Sprintf(`{"metadata":{"annotations":{%q:null,%q:null}}}`, kubelet.AnnotationHeartbeat, kubelet.AnnotationManualStatus)
	if _, err := p.Client.CoreV1().Nodes().Patch(ctx, n.Name, types.MergePatchType, []byte(patch), metav1.PatchOptions{FieldManager: fieldManager}); err != nil {
		return "", fmt.Errorf("lab provider: %s node %s: %w", a, n.Name, err)
	}
	return fmt.Sprintf("lab: simulated %s of %s; its kubelet reports again", a, n.Name), nil
}
