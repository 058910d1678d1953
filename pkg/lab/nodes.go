package lab

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

// WaitForNodes waits until at least n Nodes exist and report Ready=True,
// for example after starting the simulated kubelet.
func WaitForNodes(ctx context.Context, cfg *rest.Config, n int, timeout time.Duration) error {
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return fmt.Errorf("wait for nodes: %w", err)
	}
	var ready, total int
	var lastErr error
	err = wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, timeout, true, func(ctx context.Context) (bool, error) {
		list, err := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
		if err != nil {
			lastErr = err
			return false, nil
		}
		ready, total = 0, len(list.Items)
		for _, node := range list.Items {
			for _, c := range node.Status.Conditions {
				if c.Type == corev1.NodeReady && c.Status == corev1.ConditionTrue {
					ready++
				}
			}
		}
		return ready >= n, nil
	})
	if err != nil {
		if lastErr != nil {
			return fmt.Errorf("wait for %d Ready nodes: %w (last error: %v)", n, err, lastErr)
		}
		return fmt.Errorf("wait for %d Ready nodes: %d of %d nodes Ready: %w", n, ready, total, err)
	}
	return nil
}

// AdminConfig returns the admin client configuration of the lab in dir,
// read from DIR/kubeconfig, without checking that the lab runs.
func AdminConfig(dir string) (*rest.Config, error) {
	return loadRESTConfig(Layout{Dir: dir}.Kubeconfig())
}
