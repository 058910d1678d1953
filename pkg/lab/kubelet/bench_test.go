package kubelet_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"

	"github.com/kdiag/kdiag/pkg/lab"
	"github.com/kdiag/kdiag/pkg/lab/kubelet"
	"github.com/kdiag/kdiag/pkg/lab/labtest"
)

// BenchmarkKubeletPodCycle measures the whole pod pipeline of the lab on a
// private control plane with 250 simulated nodes: one op scales a
// Deployment from 0 to 3,000 replicas, waits until every pod is Running
// with an IP, then scales it to 0 and waits until every pod is gone. The
// real ReplicaSet controller and scheduler take part, so this bounds what
// the simulator adds rather than isolating it. Setting up the nodes is
// outside the timer.
//
//	go test ./pkg/lab/kubelet -run '^$' -bench PodCycle -benchtime 2x -timeout 30m
func BenchmarkKubeletPodCycle(b *testing.B) {
	const nodes, pods = 250, 3000
	c := labtest.NewCluster(b, lab.Options{})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- kubelet.Run(ctx, c.RESTConfig(), kubelet.Options{
			Nodes: nodes, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		})
	}()
	b.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			b.Errorf("kubelet: %v", err)
		}
	})
	if err := lab.WaitForNodes(ctx, c.RESTConfig(), nodes, 5*time.Minute); err != nil {
		b.Fatal(err)
	}
	cfg := c.RESTConfig()
	cfg.QPS, cfg.Burst = 200, 400
	cs := kubernetes.NewForConfigOrDie(cfg)
	labels := map[string]string{"app": "bench"}
	zero := int32(0)
	dep := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "bench", Namespace: "default"},
		Spec: appsv1.DeploymentSpec{
			Replicas: &zero,
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "kdiag.io/lab/http-server"}}},
			},
		},
	}
	if _, err := cs.AppsV1().Deployments("default").Create(ctx, dep, metav1.CreateOptions{}); err != nil {
		b.Fatal(err)
	}
	scale := func(n int) {
		patch := fmt.Sprintf(`{"spec":{"replicas":%d}}`, n)
		if _, err := cs.AppsV1().Deployments("default").Patch(ctx, "bench", types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
			b.Fatal(err)
		}
	}
	count := func(running bool) func(context.Context) (bool, error) {
		return func(ctx context.Context) (bool, error) {
			l, err := cs.CoreV1().Pods("default").List(ctx, metav1.ListOptions{LabelSelector: "app=bench", ResourceVersion: "0"})
			if err != nil {
				return false, nil
			}
			if !running {
				return len(l.Items) == 0, nil
			}
			n := 0
			for _, p := range l.Items {
				if p.Status.Phase == corev1.PodRunning && p.Status.PodIP != "" {
					n++
				}
			}
			return n == pods, nil
		}
	}
	for b.Loop() {
		scale(pods)
		if err := wait.PollUntilContextTimeout(ctx, time.Second, 10*time.Minute, true, count(true)); err != nil {
			b.Fatalf("pods not Running: %v", err)
		}
		scale(0)
		if err := wait.PollUntilContextTimeout(ctx, time.Second, 10*time.Minute, true, count(false)); err != nil {
			b.Fatalf("pods not deleted: %v", err)
		}
	}
	b.ReportMetric(float64(pods*b.N)/b.Elapsed().Seconds(), "pods/s")
}
