package labtest_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"

	"github.com/kdiag/kdiag/pkg/cluster"
	ct "github.com/kdiag/kdiag/pkg/cluster/clustertest"
	"github.com/kdiag/kdiag/pkg/findings"
	"github.com/kdiag/kdiag/pkg/lab/kubelet"
	"github.com/kdiag/kdiag/pkg/lab/labtest"
)

// TestObjects runs the helpers for integration tests against the shared
// lab: a namespace with a Deployment whose pods the simulated kubelet runs,
// a pod whose status the test owns, a node patch, a live read and the dry
// run of a fix, and checks each against what the API server then holds.
func TestObjects(t *testing.T) {
	c := labtest.Cluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cs := kubernetes.NewForConfigOrDie(c.RESTConfig())
	dyn := dynamic.NewForConfigOrDie(c.RESTConfig())
	const ns = "labtest-objects"

	labtest.CreateNamespace(t, ctx, cs, ns)
	if _, err := cs.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{}); err != nil {
		t.Fatalf("namespace %s after CreateNamespace: %v", ns, err)
	}

	d := labtest.CreateDeployment(t, ctx, cs, ns, "web", 2, nil, labtest.PauseSpec())
	if d.Spec.Selector.MatchLabels["app"] != "web" || d.Spec.Template.Spec.Containers[0].Image != labtest.PauseImage {
		t.Errorf("deployment: selector %v, image %s", d.Spec.Selector.MatchLabels, d.Spec.Template.Spec.Containers[0].Image)
	}
	pods := labtest.WaitForPods(t, ctx, cs, ns, metav1.ListOptions{LabelSelector: "app=web"}, 2, labtest.PodRunning)
	if len(pods) != 2 || pods[0].Name > pods[1].Name || !labtest.PodReady(&pods[0]) {
		t.Errorf("WaitForPods: %d pods, sorted=%t, first ready=%t", len(pods), len(pods) == 2 && pods[0].Name < pods[1].Name, len(pods) > 0 && labtest.PodReady(&pods[0]))
	}

	// A Running pod taken over from the simulated kubelet keeps the status
	// the test writes.
	labtest.TakeStatus(t, ctx, cs.CoreV1().Pods(ns).Patch, pods[0].Name)
	unready := func(p *corev1.Pod) {
		for i := range p.Status.Conditions {
			if c := &p.Status.Conditions[i]; c.Type == corev1.PodReady {
				c.Status, c.Reason = corev1.ConditionFalse, "TestOwned"
			}
		}
	}
	labtest.SetPodStatus(t, ctx, cs, ns, pods[0].Name, unready, func(p *corev1.Pod) bool { return !labtest.PodReady(p) })
	time.Sleep(2 * time.Second) // a simulator sync would have undone it by now
	if p, err := cs.CoreV1().Pods(ns).Get(ctx, pods[0].Name, metav1.GetOptions{}); err != nil || labtest.PodReady(p) ||
		p.Annotations[kubelet.AnnotationManualStatus] != "true" {
		t.Errorf("pod after TakeStatus and SetPodStatus: %v, ready %t, annotations %v", err, labtest.PodReady(p), p.Annotations)
	}

	// A manual pod is never touched by the simulator.
	manual := labtest.CreatePod(t, ctx, cs, ns, "manual", map[string]string{"app": "manual"}, labtest.PauseSpec(), true)
	if manual.Annotations[kubelet.AnnotationManualStatus] != "true" || manual.Labels["app"] != "manual" {
		t.Errorf("CreatePod(manual): annotations %v, labels %v", manual.Annotations, manual.Labels)
	}

	nodes, err := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil || len(nodes.Items) == 0 {
		t.Fatalf("list nodes: %v", err)
	}
	node := nodes.Items[0].Name
	labtest.PatchNode(t, ctx, cs, node, `{"metadata":{"labels":{"labtest.kdiag.io/patched":"yes"}}}`)
	t.Cleanup(func() {
		labtest.PatchNode(t, context.Background(), cs, node, `{"metadata":{"labels":{"labtest.kdiag.io/patched":null}}}`)
	})
	if n, err := cs.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{}); err != nil || n.Labels["labtest.kdiag.io/patched"] != "yes" {
		t.Errorf("node after PatchNode: %v, labels %v", err, n.Labels)
	}
	if r := ct.Record(func(tb testing.TB) { labtest.PatchNode(tb, ctx, cs, "no-such-node", `{}`) }); len(r.Errors) != 1 {
		t.Errorf("PatchNode of a missing node: %d failures, want 1", len(r.Errors))
	}

	s := labtest.ReadLive(t, ctx, cs, cluster.LiveOptions{})
	if s.Source != "lab" || s.Index().Deployment(ns, "web") == nil || len(s.Index().PodsInNamespace(ns)) != 3 {
		t.Errorf("ReadLive: source %q, deployment %s/web found=%t, %d pods in %s, want 3", s.Source, ns,
			s.Index().Deployment(ns, "web") != nil, len(s.Index().PodsInNamespace(ns)), ns)
	}

	fs := []findings.Finding{
		{ID: "scale", Object: findings.ObjectRef{Kind: "Deployment", Namespace: ns, Name: "web"},
			Remediation: []findings.Remediation{findings.Inspect("look", "kubectl get deploy web"), findings.Scale("Scale up", "deployment", ns, "web", 3)}},
	}
	if n := labtest.VerifyFixes(t, ctx, dyn, fs); n != 1 {
		t.Errorf("VerifyFixes verified %d fixes, want 1", n)
	}
	if got, err := cs.AppsV1().Deployments(ns).Get(ctx, "web", metav1.GetOptions{}); err != nil || *got.Spec.Replicas != 2 {
		t.Errorf("the dry run changed the Deployment: %v", err)
	}
	missing := []findings.Finding{{ID: "scale", Remediation: []findings.Remediation{findings.Scale("Scale", "deployment", ns, "absent", 3)}}}
	if r := ct.Record(func(tb testing.TB) { labtest.VerifyFixes(tb, ctx, dyn, missing) }); len(r.Errors) != 1 {
		t.Errorf("VerifyFixes of a fix for a missing Deployment: %d failures, want 1: %q", len(r.Errors), r.Errors)
	}

	// WaitFor fails the test, naming what it waited for, when cond errs.
	r := ct.Record(func(tb testing.TB) {
		labtest.WaitFor(tb, ctx, "the impossible", func(context.Context) (bool, error) { return false, fmt.Errorf("boom") })
	})
	if len(r.Errors) != 1 || r.Errors[0] != "the impossible: boom" || !r.Stopped {
		t.Errorf("WaitFor with a failing condition: %q", r.Errors)
	}
}
