package drain_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/kdiag/kdiag/pkg/apis/kdiag/v1alpha1"
	"github.com/kdiag/kdiag/pkg/cluster"
	"github.com/kdiag/kdiag/pkg/drain"
	"github.com/kdiag/kdiag/pkg/findings"
	"github.com/kdiag/kdiag/pkg/lab/labtest"
	"github.com/kdiag/kdiag/pkg/ops"
)

// Four simulated nodes: lab-node-1 and -2 in pool np1, -3 and -4 in np2.
func TestMain(m *testing.M) {
	labtest.Main(m, labtest.Options{Nodes: 4})
}

var (
	np1 = []string{"lab-node-1", "lab-node-2"}
	np2 = []string{"lab-node-3", "lab-node-4"}
)

func createPDB(t *testing.T, ctx context.Context, cs kubernetes.Interface, ns, name string, minAvailable int32, lbls map[string]string) {
	t.Helper()
	v := intstr.FromInt32(minAvailable)
	p := &policyv1.PodDisruptionBudget{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: policyv1.PodDisruptionBudgetSpec{MinAvailable: &v, Selector: &metav1.LabelSelector{MatchLabels: lbls}}}
	if _, err := cs.PolicyV1().PodDisruptionBudgets(ns).Create(ctx, p, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create pdb %s/%s: %v", ns, name, err)
	}
}

// waitPDB waits until the disruption controller reports allowed disruptions.
func waitPDB(t *testing.T, ctx context.Context, cs kubernetes.Interface, ns, name string, allowed int32) {
	t.Helper()
	labtest.WaitFor(t, ctx, "pdb "+ns+"/"+name+" status", func(ctx context.Context) (bool, error) {
		p, err := cs.PolicyV1().PodDisruptionBudgets(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		return p.Status.ObservedGeneration == p.Generation && p.Status.DisruptionsAllowed == allowed && p.Status.CurrentHealthy >= p.Status.DesiredHealthy, nil
	})
}

func uncordon(t *testing.T, cs kubernetes.Interface, nodes []string) {
	t.Helper()
	for _, n := range nodes {
		labtest.PatchNode(t, context.Background(), cs, n, `{"spec":{"unschedulable":false}}`)
	}
}

// TestIntegrationRollingStall: a Deployment of 2 replicas pinned to pool
// np2 by nodeSelector under minAvailable: 1. Each pod passes a per-pod check
// (a server-side dry-run eviction of each succeeds, as kubectl drain
// --dry-run=server would say), but draining the pool cordons both nodes, so
// the first pod's replacement cannot start and the second pod is refused.
func TestIntegrationRollingStall(t *testing.T) {
	c := labtest.Cluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cs := kubernetes.NewForConfigOrDie(c.RESTConfig())
	const ns = "drain-rolling"
	labtest.CreateNamespace(t, ctx, cs, ns)
	lbls := map[string]string{"app": "web"}
	spec := labtest.PauseSpec()
	spec.NodeSelector = map[string]string{"agentpool": "np2"}
	labtest.CreateDeployment(t, ctx, cs, ns, "web", 2, lbls, spec)
	createPDB(t, ctx, cs, ns, "web", 1, lbls)
	pods := labtest.WaitForPods(t, ctx, cs, ns, metav1.ListOptions{LabelSelector: "app=web"}, 2, labtest.PodReady)
	waitPDB(t, ctx, cs, ns, "web", 1)

	// The per-pod check kubectl --dry-run=server does: each passes.
	for _, p := range pods {
		ev := &policyv1.Eviction{ObjectMeta: metav1.ObjectMeta{Name: p.Name, Namespace: ns},
			DeleteOptions: &metav1.DeleteOptions{DryRun: []string{metav1.DryRunAll}}}
		if err := cs.PolicyV1().Evictions(ns).Evict(ctx, ev); err != nil {
			t.Fatalf("dry-run eviction of %s refused, want it admitted (per-pod check): %v", p.Name, err)
		}
	}

	snap := labtest.ReadLive(t, ctx, cs, cluster.LiveOptions{})
	nodes, err := drain.ResolveNodes(snap.Nodes, nil, "agentpool=np2")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(nodes, ",") != strings.Join(np2, ",") {
		t.Fatalf("ResolveNodes(agentpool=np2) = %v, want %v", nodes, np2)
	}
	rep := drain.Check(snap, nodes, drain.Options{IgnoreDaemonSets: true})
	if err := drain.Verify(ctx, &findings.Verifier{Client: dynamic.NewForConfigOrDie(c.RESTConfig())}, rep); err != nil {
		t.Fatal(err)
	}
	var text bytes.Buffer
	_ = rep.Write(&text, "text")
	t.Logf("drain check --selector agentpool=np2:\n%s", text.String())
	if !rep.Stalls || len(rep.Blockers) != 1 {
		t.Fatalf("want exactly 1 blocker, got %+v", rep.Blockers)
	}
	b := rep.Blockers[0]
	if b.PDB != ns+"/web" || b.Reason != drain.ReasonDisruptionBudget || !b.Rolling || len(b.SpentBy) != 1 {
		t.Errorf("blocker = %+v, want a rolling DisruptionBudget blocker on %s/web spent by one pod", b, ns)
	}
	var relax bool
	for _, r := range b.Remediation {
		if r.Action != nil && (r.DryRun == nil || r.DryRun.Status != findings.DryRunPassed) {
			t.Errorf("fix %q: dry run %+v, want passed", r.Command, r.DryRun)
		}
		if strings.Contains(r.Command, "kubectl patch pdb web") && strings.Contains(r.Command, `"minAvailable":0`) {
			relax = true
		}
		if strings.HasPrefix(r.Command, "kubectl scale") {
			t.Errorf("scaling cannot help pods pinned to the drained pool, yet it is proposed: %s", r.Command)
		}
	}
	if !relax {
		t.Errorf("want a relax fix to minAvailable 0 (two pods without a replacement); got %+v", b.Remediation)
	}
}

// TestIntegrationSeed is the seed's story: nginx with 1 replica and a PDB
// minAvailable: 1 on pool np1. check names the blocker and both fixes with
// passing dry runs; run times out naming the PDB; after scaling to 2, check
// passes and run drains the pool.
func TestIntegrationSeed(t *testing.T) {
	c := labtest.Cluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	cs := kubernetes.NewForConfigOrDie(c.RESTConfig())
	dyn := dynamic.NewForConfigOrDie(c.RESTConfig())
	const ns = "drain-seed"
	labtest.CreateNamespace(t, ctx, cs, ns)
	lbls := map[string]string{"app": "nginx"}
	spec := labtest.PauseSpec()
	// Prefer (not require) np1, so that the pod starts there and its
	// replacement may start in np2.
	spec.Affinity = &corev1.Affinity{NodeAffinity: &corev1.NodeAffinity{PreferredDuringSchedulingIgnoredDuringExecution: []corev1.PreferredSchedulingTerm{{
		Weight: 100, Preference: corev1.NodeSelectorTerm{MatchExpressions: []corev1.NodeSelectorRequirement{{Key: "agentpool", Operator: corev1.NodeSelectorOpIn, Values: []string{"np1"}}}}}}}}
	labtest.CreateDeployment(t, ctx, cs, ns, "nginx", 1, lbls, spec)
	createPDB(t, ctx, cs, ns, "nginx", 1, lbls)
	pods := labtest.WaitForPods(t, ctx, cs, ns, metav1.ListOptions{LabelSelector: "app=nginx"}, 1, labtest.PodReady)
	if n := pods[0].Spec.NodeName; n != np1[0] && n != np1[1] {
		t.Fatalf("nginx scheduled on %s, want pool np1", n)
	}
	waitPDB(t, ctx, cs, ns, "nginx", 0)

	check := func() *drain.Report {
		t.Helper()
		snap := labtest.ReadLive(t, ctx, cs, cluster.LiveOptions{})
		nodes, err := drain.ResolveNodes(snap.Nodes, nil, "agentpool=np1")
		if err != nil {
			t.Fatal(err)
		}
		rep := drain.Check(snap, nodes, drain.Options{IgnoreDaemonSets: true, DeleteEmptyDirData: true})
		if err := drain.Verify(ctx, &findings.Verifier{Client: dyn}, rep); err != nil {
			t.Fatal(err)
		}
		var text bytes.Buffer
		_ = rep.Write(&text, "text")
		t.Logf("drain check --selector agentpool=np1:\n%s", text.String())
		return rep
	}

	rep := check()
	if len(rep.Blockers) != 1 {
		t.Fatalf("want 1 blocker, got %+v", rep.Blockers)
	}
	b := rep.Blockers[0]
	if b.Pod != ns+"/"+pods[0].Name || b.PDB != ns+"/nginx" || b.Reason != drain.ReasonDisruptionBudget || b.Rolling {
		t.Errorf("blocker = %+v, want pod %s blocked now by %s/nginx", b, pods[0].Name, ns)
	}
	var scale, relax bool
	for _, r := range b.Remediation {
		if r.Action == nil {
			continue
		}
		if r.DryRun == nil || r.DryRun.Status != findings.DryRunPassed {
			t.Errorf("fix %q: dry run %+v, want passed", r.Command, r.DryRun)
		}
		scale = scale || r.Command == "kubectl scale deployment/nginx -n "+ns+" --replicas=2"
		relax = relax || strings.HasPrefix(r.Command, "kubectl patch pdb nginx -n "+ns)
	}
	if !scale || !relax {
		t.Errorf("want the scale-to-2 and the relax fixes, got %+v", b.Remediation)
	}
	// JSON shape: top-level blockers with pod, pdb, reason, remediation.
	var js bytes.Buffer
	if err := rep.Write(&js, "json"); err != nil {
		t.Fatal(err)
	}
	var out struct {
		Blockers []map[string]any `json:"blockers"`
	}
	t.Logf("drain check -o json:\n%s", js.String())
	if err := json.Unmarshal(js.Bytes(), &out); err != nil || len(out.Blockers) != 1 {
		t.Fatalf("json output: %v, %s", err, js.String())
	}
	for _, k := range []string{"pod", "pdb", "reason", "remediation"} {
		if _, ok := out.Blockers[0][k]; !ok {
			t.Errorf("json blocker lacks %q: %v", k, out.Blockers[0])
		}
	}

	// drain run times out naming the PDB; the nodes stay cordoned. It is
	// recorded as an Operation.
	if err := ops.EnsureCRD(ctx, c.RESTConfig()); err != nil {
		t.Fatal(err)
	}
	var warn bytes.Buffer
	recorder, err := ops.NewRecorder(c.RESTConfig(), ops.RecorderOptions{Initiator: ops.Initiator(ctx, cs, "kdiag drain run"), Warn: &warn})
	if err != nil {
		t.Fatal(err)
	}
	defer uncordon(t, cs, np1)
	var runOut bytes.Buffer
	err = drain.RunRecorded(ctx, cs, recorder, np1, "agentpool=np1", drain.RunOptions{Options: drain.Options{IgnoreDaemonSets: true, DeleteEmptyDirData: true}, Timeout: 8 * time.Second, RetryInterval: time.Second, Out: &runOut, Progress: &runOut})
	t.Logf("drain run (blocked):\n%s%v", runOut.String(), err)
	if !drain.IsStalled(err) || !strings.Contains(err.Error(), "PodDisruptionBudget "+ns+"/nginx") || !strings.Contains(err.Error(), pods[0].Name) {
		t.Fatalf("drain run error = %v, want a timeout naming pod %s and PodDisruptionBudget %s/nginx", err, pods[0].Name, ns)
	}
	if warn.Len() > 0 {
		t.Errorf("recording warned: %s", warn.String())
	}
	// client-go's own retries of a 429 with Retry-After are off: every
	// refusal comes back at once and is retried every RetryInterval.
	if n := strings.Count(runOut.String(), "will retry after 1s"); n < 3 {
		t.Errorf("%d refused evictions reported in 8s with a 1s retry interval, want at least 3 (client-go retrying 429s by itself?)", n)
	}
	uncordon(t, cs, np1)

	// The fix: scale to 2 (for real), then check passes and run drains.
	if _, err := cs.AppsV1().Deployments(ns).Patch(ctx, "nginx", "application/merge-patch+json", []byte(`{"spec":{"replicas":2}}`), metav1.PatchOptions{}, "scale"); err != nil {
		t.Fatalf("scale nginx: %v", err)
	}
	labtest.WaitForPods(t, ctx, cs, ns, metav1.ListOptions{LabelSelector: "app=nginx"}, 2, labtest.PodReady)
	waitPDB(t, ctx, cs, ns, "nginx", 1)
	if rep := check(); rep.Stalls {
		t.Errorf("after scaling to 2, check still stalls: %+v", rep.Blockers)
	}
	runOut.Reset()
	err = drain.RunRecorded(ctx, cs, recorder, np1, "agentpool=np1", drain.RunOptions{Options: drain.Options{IgnoreDaemonSets: true, DeleteEmptyDirData: true}, Timeout: 90 * time.Second, RetryInterval: time.Second, Out: &runOut})
	t.Logf("drain run (after the fix):\n%s%v", runOut.String(), err)
	if err != nil {
		t.Fatalf("drain run after the fix: %v", err)
	}
	checkOperations(t, ctx, c.RESTConfig(), cs, ns, pods[0].Name)
	left, err := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "app=nginx"})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range left.Items {
		if p.Spec.NodeName == np1[0] || p.Spec.NodeName == np1[1] {
			t.Errorf("pod %s still on drained node %s", p.Name, p.Spec.NodeName)
		}
	}
}

// TestIntegrationBadInput: unknown node, a selector matching nothing, and a
// user without eviction rights.
func TestIntegrationBadInput(t *testing.T) {
	c := labtest.Cluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cs := kubernetes.NewForConfigOrDie(c.RESTConfig())

	err := drain.Run(ctx, cs, []string{"no-such-node"}, drain.RunOptions{Timeout: 10 * time.Second})
	if err == nil || !strings.Contains(err.Error(), `node "no-such-node" not found`) {
		t.Errorf("run on an unknown node: %v, want not found", err)
	}
	snap := labtest.ReadLive(t, ctx, cs, cluster.LiveOptions{})
	if _, err := drain.ResolveNodes(snap.Nodes, nil, "agentpool=nope"); err == nil || !strings.Contains(err.Error(), "matches no node") {
		t.Errorf("selector matching nothing: %v", err)
	}

	// A user who may cordon and list but not evict.
	const ns = "drain-rbac"
	labtest.CreateNamespace(t, ctx, cs, ns)
	spec := labtest.PauseSpec()
	spec.NodeName = np2[1]
	labtest.CreateDeployment(t, ctx, cs, ns, "victim", 1, nil, spec)
	labtest.WaitForPods(t, ctx, cs, ns, metav1.ListOptions{LabelSelector: "app=victim"}, 1, labtest.PodRunning)
	role := &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: "drain-no-evict"}, Rules: []rbacv1.PolicyRule{
		{APIGroups: []string{""}, Resources: []string{"nodes"}, Verbs: []string{"get", "list", "patch"}},
		{APIGroups: []string{""}, Resources: []string{"pods"}, Verbs: []string{"get", "list"}},
		{APIGroups: []string{"apps"}, Resources: []string{"daemonsets"}, Verbs: []string{"get"}},
		{APIGroups: []string{"policy"}, Resources: []string{"poddisruptionbudgets"}, Verbs: []string{"list"}},
	}}
	if _, err := cs.RbacV1().ClusterRoles().Create(ctx, role, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	bind := &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "drain-no-evict"},
		RoleRef:  rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: "drain-no-evict"},
		Subjects: []rbacv1.Subject{{Kind: "User", APIGroup: "rbac.authorization.k8s.io", Name: "mallory"}}}
	if _, err := cs.RbacV1().ClusterRoleBindings().Create(ctx, bind, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	cfg, err := c.ClientCertConfig("mallory", nil, time.Now().Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	defer uncordon(t, cs, np2[1:])
	err = drain.Run(ctx, kubernetes.NewForConfigOrDie(cfg), np2[1:], drain.RunOptions{Options: drain.Options{IgnoreDaemonSets: true, DeleteEmptyDirData: true}, Timeout: 30 * time.Second})
	if err == nil || !strings.Contains(err.Error(), "forbidden: your account may not create pods/eviction") {
		t.Errorf("run without eviction rights: %v, want a clear forbidden error", err)
	}
}

// checkOperations: both seed runs are recorded, the first Failed with the
// blocking pod and PDB in its steps and hint, the second Succeeded; `ops
// last --node` shows the second with the first before it.
func checkOperations(t *testing.T, ctx context.Context, cfg *rest.Config, cs kubernetes.Interface, ns, pod string) {
	t.Helper()
	h, err := ops.Read(ctx, dynamic.NewForConfigOrDie(cfg), cs, ops.Filter{Node: np1[0], Type: v1alpha1.TypeDrain})
	if err != nil {
		t.Fatal(err)
	}
	var recorded []v1alpha1.Operation
	for _, op := range h.Operations {
		if ops.Source(&op) == "record" {
			recorded = append(recorded, op)
		}
	}
	var table bytes.Buffer
	_ = ops.WriteTable(&table, h.Operations, true, time.Now())
	t.Logf("kdiag ops list --node %s --type Drain -o wide:\n%s", np1[0], table.String())
	if len(recorded) < 2 {
		t.Fatalf("want the 2 recorded drain runs, got %d (warnings %v)", len(recorded), h.Warnings)
	}
	failed, ok := recorded[len(recorded)-2], recorded[len(recorded)-1]
	if failed.Status.Phase != v1alpha1.PhaseFailed || !strings.Contains(failed.Status.Error, "PodDisruptionBudget "+ns+"/nginx") ||
		!strings.Contains(failed.Status.Hint, "PodDisruptionBudget "+ns+"/nginx allows no disruption") || failed.Spec.Target.Name != "agentpool=np1" {
		t.Errorf("first run's record = %+v, want Failed naming %s/nginx in error and hint", failed.Status, ns)
	}
	var evictStep *v1alpha1.OperationStep
	for i, st := range failed.Status.Steps {
		if st.Name == "evict pod "+ns+"/"+pod {
			evictStep = &failed.Status.Steps[i]
		}
	}
	if len(failed.Status.Steps) < 3 || failed.Status.Steps[0].Name != "cordon "+np1[0] || evictStep == nil ||
		evictStep.Phase != v1alpha1.PhaseFailed || !strings.Contains(evictStep.Message, "blocked by PodDisruptionBudget "+ns+"/nginx") {
		t.Errorf("first run's steps = %+v, want cordons then a failed eviction of %s blocked by %s/nginx", failed.Status.Steps, pod, ns)
	}
	if ok.Status.Phase != v1alpha1.PhaseSucceeded || ok.Status.Error != "" || ok.Status.EndTime == nil {
		t.Errorf("second run's record = %+v, want Succeeded", ok.Status)
	}
	if last := h.Last(); last == nil || last.Name != ok.Name {
		t.Errorf("ops last = %v, want %s", last, ok.Name)
	}
	var detail bytes.Buffer
	_ = ops.WriteDetail(&detail, &failed, time.Now())
	t.Logf("kdiag ops show %s:\n%s", failed.Name, detail.String())
}

// TestIntegrationSkipWaitForDelete: a pod held Terminating by a finalizer
// (as on a node whose kubelet is dead: nothing completes its deletion). A
// drain with SkipWaitForDeleteTimeoutSeconds stops waiting for it once its
// deletionTimestamp (eviction + grace period) is older than that, long
// before its timeout; without the option the same drain waits out its
// timeout and names the terminating pod.
func TestIntegrationSkipWaitForDelete(t *testing.T) {
	c := labtest.Cluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cs := kubernetes.NewForConfigOrDie(c.RESTConfig())
	const ns, finalizer = "drain-skip-wait", "kdiag.io/test-hold"
	node := np2[0]
	labtest.CreateNamespace(t, ctx, cs, ns)
	defer uncordon(t, cs, []string{node})
	// The drain takes every pod of the node: wait until the pods of the
	// tests before (their namespaces are being deleted) are gone.
	labtest.WaitFor(t, ctx, "no pods of other tests on "+node, func(ctx context.Context) (bool, error) {
		pods, err := cs.CoreV1().Pods("").List(ctx, metav1.ListOptions{FieldSelector: "spec.nodeName=" + node})
		return err == nil && len(pods.Items) == 0, err
	})
	spec := labtest.PauseSpec()
	spec.NodeName = node
	grace := int64(1)
	spec.TerminationGracePeriodSeconds = &grace
	newPod := func(name string) {
		p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Finalizers: []string{finalizer}}, Spec: spec}
		if _, err := cs.CoreV1().Pods(ns).Create(ctx, p, metav1.CreateOptions{}); err != nil {
			t.Fatalf("create pod %s: %v", name, err)
		}
		t.Cleanup(func() {
			_, err := cs.CoreV1().Pods(ns).Patch(context.Background(), name, types.MergePatchType, []byte(`{"metadata":{"finalizers":null}}`), metav1.PatchOptions{})
			if err != nil && !apierrors.IsNotFound(err) {
				t.Errorf("release pod %s: %v", name, err)
			}
		})
		labtest.WaitForPods(t, ctx, cs, ns, metav1.ListOptions{FieldSelector: "metadata.name=" + name}, 1, labtest.PodRunning)
	}
	opts := drain.Options{IgnoreDaemonSets: true, DeleteEmptyDirData: true, Force: true}

	// Without the option: the drain waits its whole timeout.
	newPod("held-1")
	start := time.Now()
	err := drain.Run(ctx, cs, []string{node}, drain.RunOptions{Options: opts, Timeout: 6 * time.Second})
	var st *drain.StalledError
	if !errors.As(err, &st) || len(st.Refused) != 1 || st.Refused[0].Message != drain.TerminatingMessage {
		t.Fatalf("drain without --skip-wait-for-delete-timeout: want a timeout naming the terminating pod, got %v", err)
	}
	if took := time.Since(start); took < 6*time.Second {
		t.Errorf("drain without the option returned after %s, before its timeout", took)
	}

	// With it: held-1 has been Terminating for a while: it is skipped by
	// the filter, held-2 is evicted and skipped once its deletionTimestamp
	// is older than 1 s, well before the 2-minute timeout.
	newPod("held-2")
	var out bytes.Buffer
	start = time.Now()
	err = drain.Run(ctx, cs, []string{node}, drain.RunOptions{Options: opts, Timeout: 2 * time.Minute, Out: &out, SkipWaitForDeleteTimeoutSeconds: 1})
	took := time.Since(start)
	if err != nil {
		t.Fatalf("drain with --skip-wait-for-delete-timeout=1: %v\n%s", err, out.String())
	}
	if took > 30*time.Second {
		t.Errorf("drain with --skip-wait-for-delete-timeout=1 took %s: it waited for the terminating pods", took)
	}
	for _, want := range []string{`pod "held-1" has DeletionTimestamp older than 1 seconds, skipping`, "evicting pod " + ns + "/held-2", `pod "held-2" has DeletionTimestamp older than 1 seconds, skipping`, "node/" + node + " drained"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("drain output lacks %q:\n%s", want, out.String())
		}
	}
	for _, name := range []string{"held-1", "held-2"} {
		p, err := cs.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil || p.DeletionTimestamp == nil {
			t.Errorf("pod %s: want it still Terminating (held by its finalizer), got %v (err %v)", name, p.GetDeletionTimestamp(), err)
		}
	}
}
