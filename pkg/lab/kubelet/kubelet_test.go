package kubelet

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/rest"
	k8stesting "k8s.io/client-go/testing"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// startFake runs the simulator against a fake clientset until the test ends.
func startFake(t *testing.T, cs *fake.Clientset, opts Options) {
	t.Helper()
	if opts.Logger == nil {
		opts.Logger = quiet
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- newSimulator(cs, opts).run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("run returned %v after cancel, want nil", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("run did not return within 10s of cancel")
		}
	})
}

func eventually(t *testing.T, what string, cond func(ctx context.Context) (bool, error)) {
	t.Helper()
	err := wait.PollUntilContextTimeout(context.Background(), 20*time.Millisecond, 10*time.Second, true, cond)
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

func setPodCIDR(t *testing.T, cs *fake.Clientset, node, cidr string) {
	t.Helper()
	ctx := context.Background()
	n, err := cs.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	n.Spec.PodCIDR, n.Spec.PodCIDRs = cidr, []string{cidr}
	if _, err := cs.CoreV1().Nodes().Update(ctx, n, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
}

func scheduledPod(ns, name, node string, annotations map[string]string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, UID: types.UID("uid-" + name), Annotations: annotations},
		Spec:       corev1.PodSpec{NodeName: node, Containers: []corev1.Container{{Name: "app", Image: "kdiag.io/lab/http-server"}}},
		Status:     corev1.PodStatus{Phase: corev1.PodPending},
	}
}

func TestRunRegistersNodesWithLeases(t *testing.T) {
	cs := fake.NewClientset()
	startFake(t, cs, Options{Nodes: 3, LeaseDuration: 4 * time.Second})
	ctx := context.Background()
	eventually(t, "3 nodes registered with owned leases", func(ctx context.Context) (bool, error) {
		leases, err := cs.CoordinationV1().Leases(corev1.NamespaceNodeLease).List(ctx, metav1.ListOptions{})
		if err != nil || len(leases.Items) != 3 {
			return false, err
		}
		for _, l := range leases.Items {
			if len(l.OwnerReferences) != 1 || l.OwnerReferences[0].Kind != "Node" || l.OwnerReferences[0].Name != l.Name {
				return false, nil
			}
		}
		return true, nil
	})
	nodes, err := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range nodes.Items {
		if !strings.HasPrefix(n.Name, "lab-node-") || n.Labels[LabelSimulated] != "true" {
			t.Errorf("unexpected node %s labels %v", n.Name, n.Labels)
		}
	}
	first, err := cs.CoordinationV1().Leases(corev1.NamespaceNodeLease).Get(ctx, "lab-node-2", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, "lease renewed", func(ctx context.Context) (bool, error) {
		l, err := cs.CoordinationV1().Leases(corev1.NamespaceNodeLease).Get(ctx, "lab-node-2", metav1.GetOptions{})
		return err == nil && l.Spec.RenewTime.After(first.Spec.RenewTime.Time), err
	})
}

func TestRunKeepsExistingNodeAndRestoresReady(t *testing.T) {
	s := newSimulator(nil, Options{Nodes: 1})
	node := s.newNode(1)
	for i := range node.Status.Conditions {
		if node.Status.Conditions[i].Type == corev1.NodeReady {
			node.Status.Conditions[i].Status = corev1.ConditionUnknown
			node.Status.Conditions[i].Reason = "NodeStatusUnknown"
		}
	}
	node.Labels["team"] = "kept"
	cs := fake.NewClientset(node)
	startFake(t, cs, Options{Nodes: 1})
	eventually(t, "node Unknown turned Ready again", func(ctx context.Context) (bool, error) {
		n, err := cs.CoreV1().Nodes().Get(ctx, "lab-node-1", metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		return nodeReady(n) == corev1.ConditionTrue && n.Labels["team"] == "kept", nil
	})
}

func nodeReady(n *corev1.Node) corev1.ConditionStatus {
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status
		}
	}
	return ""
}

func TestRunRunsPodsOnceNodeHasPodCIDR(t *testing.T) {
	cs := fake.NewClientset()
	startFake(t, cs, Options{Nodes: 2})
	ctx := context.Background()
	eventually(t, "nodes registered", func(ctx context.Context) (bool, error) {
		l, err := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
		return err == nil && len(l.Items) == 2, err
	})
	for _, name := range []string{"a", "b", "c"} {
		if _, err := cs.CoreV1().Pods("shop").Create(ctx, scheduledPod("shop", name, "lab-node-1", nil), metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	other := scheduledPod("shop", "elsewhere", "some-real-node", nil)
	if _, err := cs.CoreV1().Pods("shop").Create(ctx, other, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	p, err := cs.CoreV1().Pods("shop").Get(ctx, "a", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if p.Status.Phase != corev1.PodPending {
		t.Fatalf("pod ran before its node had a podCIDR: phase %s", p.Status.Phase)
	}

	setPodCIDR(t, cs, "lab-node-1", "10.244.1.0/24")
	cidr := netip.MustParsePrefix("10.244.1.0/24")
	seen := map[string]string{}
	eventually(t, "pods Running with distinct IPs in the podCIDR", func(ctx context.Context) (bool, error) {
		clear(seen)
		for _, name := range []string{"a", "b", "c"} {
			p, err := cs.CoreV1().Pods("shop").Get(ctx, name, metav1.GetOptions{})
			if err != nil || p.Status.Phase != corev1.PodRunning {
				return false, err
			}
			ip, err := netip.ParseAddr(p.Status.PodIP)
			if err != nil || !cidr.Contains(ip) || p.Status.HostIP != "127.0.1.1" {
				return false, nil
			}
			if seen[p.Status.PodIP] != "" {
				t.Fatalf("pods %s and %s share IP %s", seen[p.Status.PodIP], name, p.Status.PodIP)
			}
			seen[p.Status.PodIP] = name
		}
		return true, nil
	})
	p, err = cs.CoreV1().Pods("shop").Get(ctx, "elsewhere", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if p.Status.Phase != corev1.PodPending {
		t.Errorf("pod on a node the simulator does not own was run: phase %s", p.Status.Phase)
	}
}

func TestRunLeavesManualPodAndNodeAlone(t *testing.T) {
	cs := fake.NewClientset()
	startFake(t, cs, Options{Nodes: 2})
	ctx := context.Background()
	eventually(t, "nodes registered", func(ctx context.Context) (bool, error) {
		l, err := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
		return err == nil && len(l.Items) == 2, err
	})
	setPodCIDR(t, cs, "lab-node-1", "10.244.1.0/24")

	// A manual node whose status says NotReady stays NotReady.
	n, err := cs.CoreV1().Nodes().Get(ctx, "lab-node-2", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	n.Annotations[AnnotationManualStatus] = "true"
	for i := range n.Status.Conditions {
		if n.Status.Conditions[i].Type == corev1.NodeReady {
			n.Status.Conditions[i].Status = corev1.ConditionFalse
			n.Status.Conditions[i].Reason = "KubeletNotReady"
		}
	}
	if _, err := cs.CoreV1().Nodes().Update(ctx, n, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}

	manual := scheduledPod("shop", "oom", "lab-node-1", map[string]string{AnnotationManualStatus: "true"})
	manual.Status = corev1.PodStatus{
		Phase: corev1.PodRunning,
		PodIP: "10.244.1.2", PodIPs: []corev1.PodIP{{IP: "10.244.1.2"}},
		ContainerStatuses: []corev1.ContainerStatus{{
			Name: "app", RestartCount: 4,
			State:                corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "CrashLoopBackOff"}},
			LastTerminationState: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{Reason: "OOMKilled", ExitCode: 137}},
		}},
	}
	if _, err := cs.CoreV1().Pods("shop").Create(ctx, manual, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// A normal pod created afterwards must not get the manual pod's IP.
	if _, err := cs.CoreV1().Pods("shop").Create(ctx, scheduledPod("shop", "web", "lab-node-1", nil), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "normal pod Running", func(ctx context.Context) (bool, error) {
		p, err := cs.CoreV1().Pods("shop").Get(ctx, "web", metav1.GetOptions{})
		return err == nil && p.Status.Phase == corev1.PodRunning, err
	})
	web, _ := cs.CoreV1().Pods("shop").Get(ctx, "web", metav1.GetOptions{})
	if web.Status.PodIP == "10.244.1.2" {
		t.Errorf("normal pod got the manual pod's IP %s", web.Status.PodIP)
	}
	// Give the simulator time to (wrongly) touch the manual objects.
	time.Sleep(500 * time.Millisecond)
	got, err := cs.CoreV1().Pods("shop").Get(ctx, "oom", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cst := got.Status.ContainerStatuses
	if len(cst) != 1 || cst[0].State.Waiting == nil || cst[0].LastTerminationState.Terminated == nil ||
		cst[0].LastTerminationState.Terminated.Reason != "OOMKilled" || cst[0].RestartCount != 4 {
		t.Errorf("manual pod status was changed: %+v", got.Status)
	}
	n, err = cs.CoreV1().Nodes().Get(ctx, "lab-node-2", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if nodeReady(n) != corev1.ConditionFalse {
		t.Errorf("manual node Ready = %s, want the patched False", nodeReady(n))
	}
	if _, err := cs.CoordinationV1().Leases(corev1.NamespaceNodeLease).Get(ctx, "lab-node-2", metav1.GetOptions{}); err != nil {
		t.Errorf("manual node has no lease: %v", err)
	}
}

func TestRunDeletesTerminatingPods(t *testing.T) {
	cs := fake.NewClientset()
	startFake(t, cs, Options{Nodes: 1})
	ctx := context.Background()
	eventually(t, "node registered", func(ctx context.Context) (bool, error) {
		l, err := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
		return err == nil && len(l.Items) == 1, err
	})
	setPodCIDR(t, cs, "lab-node-1", "10.244.0.0/24")
	p := scheduledPod("shop", "going", "lab-node-1", map[string]string{AnnotationManualStatus: "true"})
	now := metav1.Now()
	p.DeletionTimestamp = &now
	p.DeletionGracePeriodSeconds = new(int64(30))
	if _, err := cs.CoreV1().Pods("shop").Create(ctx, p, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "terminating pod deleted", func(ctx context.Context) (bool, error) {
		_, err := cs.CoreV1().Pods("shop").Get(ctx, "going", metav1.GetOptions{})
		return apierrors.IsNotFound(err), nil
	})
	var graceZero bool
	for _, a := range cs.Actions() {
		if d, ok := a.(k8stesting.DeleteAction); ok && d.GetName() == "going" {
			o := d.GetDeleteOptions()
			graceZero = o.GracePeriodSeconds != nil && *o.GracePeriodSeconds == 0 &&
				o.Preconditions != nil && o.Preconditions.UID != nil && *o.Preconditions.UID == "uid-going"
		}
	}
	if !graceZero {
		t.Error("pod not deleted with grace 0 and a UID precondition")
	}
}

func TestRunDeadNodeStopsLeaseAndPods(t *testing.T) {
	cs := fake.NewClientset()
	startFake(t, cs, Options{Nodes: 1, LeaseDuration: 2 * time.Second})
	ctx := context.Background()
	eventually(t, "lease created", func(ctx context.Context) (bool, error) {
		_, err := cs.CoordinationV1().Leases(corev1.NamespaceNodeLease).Get(ctx, "lab-node-1", metav1.GetOptions{})
		return err == nil, nil
	})
	n, err := cs.CoreV1().Nodes().Get(ctx, "lab-node-1", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	n.Annotations[AnnotationHeartbeat] = "false"
	n.Spec.PodCIDR, n.Spec.PodCIDRs = "10.244.0.0/24", []string{"10.244.0.0/24"}
	if _, err := cs.CoreV1().Nodes().Update(ctx, n, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond) // let the simulator see the annotation
	before, err := cs.CoordinationV1().Leases(corev1.NamespaceNodeLease).Get(ctx, "lab-node-1", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cs.CoreV1().Pods("shop").Create(ctx, scheduledPod("shop", "p", "lab-node-1", nil), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(1500 * time.Millisecond) // three renew intervals
	after, err := cs.CoordinationV1().Leases(corev1.NamespaceNodeLease).Get(ctx, "lab-node-1", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !after.Spec.RenewTime.Equal(before.Spec.RenewTime) {
		t.Errorf("lease of a dead node renewed: %v -> %v", before.Spec.RenewTime, after.Spec.RenewTime)
	}
	p, err := cs.CoreV1().Pods("shop").Get(ctx, "p", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if p.Status.Phase != corev1.PodPending {
		t.Errorf("pod on a dead node was run: phase %s", p.Status.Phase)
	}

	// Heartbeat back: lease renewed and pod run.
	n, _ = cs.CoreV1().Nodes().Get(ctx, "lab-node-1", metav1.GetOptions{})
	delete(n.Annotations, AnnotationHeartbeat)
	if _, err := cs.CoreV1().Nodes().Update(ctx, n, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "node revived: lease renewed and pod Running", func(ctx context.Context) (bool, error) {
		l, err := cs.CoordinationV1().Leases(corev1.NamespaceNodeLease).Get(ctx, "lab-node-1", metav1.GetOptions{})
		if err != nil || !l.Spec.RenewTime.After(after.Spec.RenewTime.Time) {
			return false, err
		}
		p, err := cs.CoreV1().Pods("shop").Get(ctx, "p", metav1.GetOptions{})
		return err == nil && p.Status.Phase == corev1.PodRunning, err
	})
}

func TestRunRegistrationForbidden(t *testing.T) {
	cs := fake.NewClientset()
	cs.PrependReactor("create", "nodes", func(a k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, apierrors.NewForbidden(schema.GroupResource{Resource: "nodes"}, "lab-node-1",
			errors.New(`User "alice" cannot create resource "nodes"`))
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := newSimulator(cs, Options{Nodes: 1, Logger: quiet}).run(ctx)
	if err == nil || !strings.Contains(err.Error(), "register node lab-node-1") || !apierrors.IsForbidden(err) {
		t.Fatalf("run with forbidden node creation: err = %v; want a wrapped Forbidden naming the node", err)
	}
}

func TestRunUnreachableAPIServer(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	// Port 1 on loopback: nothing listens, the dial is refused at once.
	err := Run(ctx, &rest.Config{Host: "https://127.0.0.1:1", Timeout: 5 * time.Second}, Options{Nodes: 1, Logger: quiet})
	if err == nil || !strings.Contains(err.Error(), "cannot list nodes") || strings.Contains(err.Error(), "\n") {
		t.Fatalf("Run against an unreachable API server: err = %v; want one line saying it cannot list nodes", err)
	}
	if err := Run(ctx, nil, Options{}); err == nil {
		t.Fatal("Run with a nil config: want an error")
	}
}

func TestRunRecreatesDeletedLeaseAndSurvivesConflicts(t *testing.T) {
	cs := fake.NewClientset()
	startFake(t, cs, Options{Nodes: 1, LeaseDuration: 2 * time.Second})
	ctx := context.Background()
	leases := cs.CoordinationV1().Leases(corev1.NamespaceNodeLease)
	eventually(t, "lease created", func(ctx context.Context) (bool, error) {
		_, err := leases.Get(ctx, "lab-node-1", metav1.GetOptions{})
		return err == nil, nil
	})
	if err := leases.Delete(ctx, "lab-node-1", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "deleted lease created again, owned by the node", func(ctx context.Context) (bool, error) {
		l, err := leases.Get(ctx, "lab-node-1", metav1.GetOptions{})
		return err == nil && len(l.OwnerReferences) == 1 && *l.Spec.HolderIdentity == "lab-node-1", nil
	})

	// Another writer makes the simulator's cached Lease stale: it must
	// fetch the Lease again and keep renewing.
	var conflicts atomic.Int32
	cs.PrependReactor("update", "leases", func(a k8stesting.Action) (bool, runtime.Object, error) {
		if conflicts.Load() < 2 {
			conflicts.Add(1)
			return true, nil, apierrors.NewConflict(schema.GroupResource{Group: "coordination.k8s.io", Resource: "leases"}, "lab-node-1", errors.New("the object has been modified"))
		}
		return false, nil, nil
	})
	before, err := leases.Get(ctx, "lab-node-1", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, "lease renewed after conflicts", func(ctx context.Context) (bool, error) {
		l, err := leases.Get(ctx, "lab-node-1", metav1.GetOptions{})
		return err == nil && conflicts.Load() == 2 && l.Spec.RenewTime.After(before.Spec.RenewTime.Time), nil
	})
}

// syncBuffer is a log sink safe for concurrent writers.
type syncBuffer struct {
	mu  sync.Mutex
	buf strings.Builder
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func TestRunWarnsOnceAboutNodeWithoutPodCIDR(t *testing.T) {
	var logs syncBuffer
	cs := fake.NewClientset()
	startFake(t, cs, Options{Nodes: 1, Logger: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelWarn}))})
	ctx := context.Background()
	eventually(t, "node registered", func(ctx context.Context) (bool, error) {
		_, err := cs.CoreV1().Nodes().Get(ctx, "lab-node-1", metav1.GetOptions{})
		return err == nil, nil
	})
	// The fake sets no creationTimestamp: the node looks ancient, so the
	// simulator has waited long enough for a podCIDR.
	for _, name := range []string{"a", "b"} {
		if _, err := cs.CoreV1().Pods("shop").Create(ctx, scheduledPod("shop", name, "lab-node-1", nil), metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, "warning logged", func(context.Context) (bool, error) {
		return strings.Contains(logs.String(), "node has no podCIDR"), nil
	})
	time.Sleep(200 * time.Millisecond)
	if n := strings.Count(logs.String(), "node has no podCIDR"); n != 1 {
		t.Errorf("warned %d times about the same node, want once:\n%s", n, logs.String())
	}
}
