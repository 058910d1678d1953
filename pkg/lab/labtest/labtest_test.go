package labtest_test

import (
	"context"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"

	"github.com/kdiag/kdiag/pkg/lab"
	"github.com/kdiag/kdiag/pkg/lab/labtest"
	"github.com/kdiag/kdiag/pkg/lab/process"
)

func TestMain(m *testing.M) {
	labtest.Main(m, labtest.Options{Nodes: 2})
}

// TestSharedClusterHasSimulatedNodes checks that the shared lab comes with
// Ready nodes and that a Pod gets scheduled and reported Running by the
// in-process kubelet simulator.
func TestSharedClusterHasSimulatedNodes(t *testing.T) {
	c := labtest.Cluster(t)
	if again := labtest.Cluster(t); again != c {
		t.Fatal("Cluster returned a second lab in the same test binary")
	}
	ctx := context.Background()
	cs := kubernetes.NewForConfigOrDie(c.RESTConfig())
	nodes, err := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(nodes.Items) != 2 {
		t.Fatalf("%d nodes, want 2", len(nodes.Items))
	}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "labtest-pod", Namespace: "default"},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "registry.k8s.io/pause:3.10"}}},
	}
	if _, err := cs.CoreV1().Pods("default").Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cs.CoreV1().Pods("default").Delete(context.Background(), pod.Name, metav1.DeleteOptions{GracePeriodSeconds: new(int64)})
	})
	err = wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		p, err := cs.CoreV1().Pods("default").Get(ctx, pod.Name, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		return p.Spec.NodeName != "" && p.Status.Phase == corev1.PodRunning, nil
	})
	if err != nil {
		t.Fatalf("pod not scheduled and Running: %v", err)
	}
}

// TestNewClusterIsPrivateAndStopped checks that NewCluster gives a test its
// own lab and that the cleanup stops it.
func TestNewClusterIsPrivateAndStopped(t *testing.T) {
	shared := labtest.Cluster(t)
	var recs []process.Record
	t.Run("private", func(t *testing.T) {
		c := labtest.NewCluster(t, lab.Options{})
		if c.Server() == shared.Server() {
			t.Fatal("NewCluster returned the shared lab")
		}
		recs = c.Processes()
		if len(recs) != 4 {
			t.Fatalf("%d processes, want 4", len(recs))
		}
	})
	for _, r := range recs {
		if process.Alive(r) {
			t.Errorf("%s (pid %d) still runs after the subtest's cleanup", r.Name, r.PID)
		}
	}
}
