package labtest

import (
	"context"
	"fmt"
	"sort"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/util/retry"

	"github.com/kdiag/kdiag/pkg/cluster"
	"github.com/kdiag/kdiag/pkg/findings"
	"github.com/kdiag/kdiag/pkg/lab/kubelet"
)

// This file holds what integration tests of analyzers do on the lab: create
// namespaces, Deployments and pods, take a pod's or node's status over from
// the simulated kubelet, wait for the control plane, read a live snapshot
// and dry-run the fixes of the findings.

// PauseImage is the image of the pods PauseSpec describes. The simulated
// kubelet runs no containers; any image name would do, this one is what a
// real cluster would run.
const PauseImage = "registry.k8s.io/pause:3.10"

// WaitTimeout is how long WaitFor and the helpers that wait give the
// control plane.
const WaitTimeout = 2 * time.Minute

// CreateNamespace creates namespace name and deletes it when the test ends.
func CreateNamespace(t testing.TB, ctx context.Context, cs kubernetes.Interface, name string) {
	t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}
	if _, err := cs.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create namespace %s: %v", name, err)
	}
	t.Cleanup(func() { _ = cs.CoreV1().Namespaces().Delete(context.Background(), name, metav1.DeleteOptions{}) })
}

// PauseSpec returns a pod spec with one container "app" running
// PauseImage, deleted without grace period.
func PauseSpec() corev1.PodSpec {
	zero := int64(0)
	return corev1.PodSpec{TerminationGracePeriodSeconds: &zero,
		Containers: []corev1.Container{{Name: "app", Image: PauseImage}}}
}

// CreateDeployment creates a Deployment ns/name of replicas pods that run
// spec and carry lbls (app=name when lbls is nil), and returns it.
func CreateDeployment(t testing.TB, ctx context.Context, cs kubernetes.Interface, ns, name string, replicas int32, lbls map[string]string, spec corev1.PodSpec) *appsv1.Deployment {
	t.Helper()
	if lbls == nil {
		lbls = map[string]string{"app": name}
	}
	d := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: appsv1.DeploymentSpec{Replicas: &replicas, Selector: &metav1.LabelSelector{MatchLabels: lbls},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: lbls}, Spec: spec}},
	}
	out, err := cs.AppsV1().Deployments(ns).Create(ctx, d, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create deployment %s/%s: %v", ns, name, err)
	}
	return out
}

// CreatePod creates a bare pod ns/name with lbls that runs spec, and
// returns it. With manual, the test owns its status from the start: the
// simulated kubelet never writes it (see kubelet.AnnotationManualStatus).
func CreatePod(t testing.TB, ctx context.Context, cs kubernetes.Interface, ns, name string, lbls map[string]string, spec corev1.PodSpec, manual bool) *corev1.Pod {
	t.Helper()
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: lbls}, Spec: spec}
	if manual {
		p.Annotations = map[string]string{kubelet.AnnotationManualStatus: "true"}
	}
	out, err := cs.CoreV1().Pods(ns).Create(ctx, p, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create pod %s/%s: %v", ns, name, err)
	}
	return out
}

// PatchFunc is the Patch method of a typed client, such as
// cs.CoreV1().Pods(ns).Patch or cs.CoreV1().Nodes().Patch.
type PatchFunc[T any] func(ctx context.Context, name string, pt types.PatchType, data []byte, opts metav1.PatchOptions, subresources ...string) (T, error)

// TakeStatus hands the status of an existing pod or node over to the test:
// from now on the simulated kubelet leaves it alone. A sync already in
// flight may still overwrite it once; SetPodStatus allows for that.
func TakeStatus[T any](t testing.TB, ctx context.Context, patch PatchFunc[T], name string) {
	t.Helper()
	body := fmt.Sprintf(`{"metadata":{"annotations":{%q:"true"}}}`, kubelet.AnnotationManualStatus)
	if _, err := patch(ctx, name, types.MergePatchType, []byte(body), metav1.PatchOptions{}); err != nil {
		t.Fatalf("take over the status of %s: %v", name, err)
	}
}

// SetPodStatus rewrites the status of pod ns/name with mutate, retrying on
// conflicts, until holds accepts the pod read back a second later. The
// test must own the pod's status (CreatePod with manual, or TakeStatus).
func SetPodStatus(t testing.TB, ctx context.Context, cs kubernetes.Interface, ns, name string, mutate func(*corev1.Pod), holds func(*corev1.Pod) bool) {
	t.Helper()
	pods := cs.CoreV1().Pods(ns)
	WaitFor(t, ctx, "status of pod "+ns+"/"+name, func(ctx context.Context) (bool, error) {
		err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
			p, err := pods.Get(ctx, name, metav1.GetOptions{})
			if err != nil {
				return err
			}
			mutate(p)
			_, err = pods.UpdateStatus(ctx, p, metav1.UpdateOptions{})
			return err
		})
		if err != nil {
			return false, err
		}
		time.Sleep(time.Second)
		p, err := pods.Get(ctx, name, metav1.GetOptions{})
		return err == nil && holds(p), err
	})
}

// PatchNode applies a JSON merge patch to a node. A refusal fails the test
// without stopping it, so that a cleanup may undo a patch with it.
func PatchNode(t testing.TB, ctx context.Context, cs kubernetes.Interface, node, patch string) {
	t.Helper()
	if _, err := cs.CoreV1().Nodes().Patch(ctx, node, types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
		t.Errorf("patch node %s: %v", node, err)
	}
}

// WaitFor polls cond every second until it holds, and fails the test,
// saying what it waited for, when it has not after WaitTimeout, when ctx
// ends or when cond returns an error. It logs how long the wait took.
func WaitFor(t testing.TB, ctx context.Context, what string, cond func(context.Context) (bool, error)) {
	t.Helper()
	start := time.Now()
	if err := wait.PollUntilContextTimeout(ctx, time.Second, WaitTimeout, true, cond); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	t.Logf("%s: after %s", what, time.Since(start).Round(time.Millisecond))
}

// PodRunning reports whether the pod's phase is Running.
func PodRunning(p *corev1.Pod) bool { return p.Status.Phase == corev1.PodRunning }

// PodReady reports whether the pod's Ready condition is True.
func PodReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// WaitForPods waits until exactly n of the pods in ns that opts lists pass
// ok (nil accepts any pod), and returns those pods sorted by name.
func WaitForPods(t testing.TB, ctx context.Context, cs kubernetes.Interface, ns string, opts metav1.ListOptions, n int, ok func(*corev1.Pod) bool) []corev1.Pod {
	t.Helper()
	var got []corev1.Pod
	what := fmt.Sprintf("%d pods in %s", n, ns)
	if opts.LabelSelector != "" || opts.FieldSelector != "" {
		what += fmt.Sprintf(" (%s)", joinNonEmpty(opts.LabelSelector, opts.FieldSelector))
	}
	WaitFor(t, ctx, what, func(ctx context.Context) (bool, error) {
		pods, err := cs.CoreV1().Pods(ns).List(ctx, opts)
		if err != nil {
			return false, err
		}
		got = got[:0]
		for i := range pods.Items {
			if ok == nil || ok(&pods.Items[i]) {
				got = append(got, pods.Items[i])
			}
		}
		return len(got) == n, nil
	})
	sort.Slice(got, func(i, j int) bool { return got[i].Name < got[j].Name })
	return got
}

func joinNonEmpty(a, b string) string {
	switch {
	case a == "":
		return b
	case b == "":
		return a
	}
	return a + ", " + b
}

// ReadLive reads a live snapshot of the lab (Source "lab" unless opts says
// otherwise) and fails the test when the read fails or leaves any gap: the
// lab's admin credentials can read everything.
func ReadLive(t testing.TB, ctx context.Context, cs kubernetes.Interface, opts cluster.LiveOptions) *cluster.Snapshot {
	t.Helper()
	if opts.Source == "" {
		opts.Source = "lab"
	}
	s, err := cluster.ReadLive(ctx, cs, opts)
	if err != nil {
		t.Fatalf("read the lab: %v", err)
	}
	if len(s.Gaps) > 0 {
		t.Fatalf("gaps in a full read: %v", s.Gaps)
	}
	return s
}

// VerifyFixes sends every mutating remediation of fs to the lab as a
// server-side dry run, which changes nothing, and fails the test for each
// that does not pass. It returns how many it verified.
func VerifyFixes(t testing.TB, ctx context.Context, dyn dynamic.Interface, fs []findings.Finding) int {
	t.Helper()
	if err := (&findings.Verifier{Client: dyn}).Verify(ctx, fs); err != nil {
		t.Fatalf("dry-run the fixes: %v", err)
	}
	n := 0
	for _, f := range fs {
		for _, r := range f.Remediation {
			if r.Action == nil {
				continue
			}
			n++
			if r.DryRun == nil || r.DryRun.Status != findings.DryRunPassed {
				t.Errorf("%s on %s: dry run of %q: %+v", f.ID, f.Object, r.Command, r.DryRun)
			}
		}
	}
	return n
}
