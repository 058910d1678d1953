package operations

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"

	"github.com/kdiag/kdiag/pkg/cluster"
	ct "github.com/kdiag/kdiag/pkg/cluster/clustertest"
	"github.com/kdiag/kdiag/pkg/findings"
	"github.com/kdiag/kdiag/pkg/lab/labtest"
	"github.com/kdiag/kdiag/pkg/pdb"
)

func TestMain(m *testing.M) {
	labtest.Main(m, labtest.Options{Nodes: 3})
}

const itNS = "ops-it"

// TestIntegrationOperations runs the operations checks against a real
// kube-apiserver and kube-controller-manager, whose disruption controller
// writes the budgets' status. It checks that:
//   - pkg/pdb computes exactly the status the controller writes, for every
//     shape of budget (integer, percentage, maxUnavailable 0, none,
//     DaemonSet, bare pods, unready pods);
//   - pdb.Evict predicts the eviction API's answer for every pod (dry-run
//     evictions);
//   - each check fires on its broken object and stays silent on the healthy
//     neighbours;
//   - every mutating remediation passes a server-side dry run, and applying
//     the scale and relax fixes for real clears the finding.
func TestIntegrationOperations(t *testing.T) {
	c := labtest.Cluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cs := kubernetes.NewForConfigOrDie(c.RESTConfig())
	dyn := dynamic.NewForConfigOrDie(c.RESTConfig())

	labtest.CreateNamespace(t, ctx, cs, itNS)

	// Workloads and budgets: one per shape, plus healthy neighbours.
	deploy := func(name string, replicas int32, lbls map[string]string) {
		labtest.CreateDeployment(t, ctx, cs, itNS, name, replicas, lbls, labtest.PauseSpec())
	}
	deploy("nginx", 1, map[string]string{"app": "nginx"}) // the seed
	deploy("web", 3, map[string]string{"app": "web"})     // healthy neighbour
	deploy("solo", 1, map[string]string{"app": "solo"})   // relaxed for real below
	deploy("pct", 1, map[string]string{"app": "pct"})
	deploy("api", 3, map[string]string{"app": "api"})
	deploy("fe", 2, map[string]string{"app": "fe", "tier": "fe"})
	deploy("db", 2, map[string]string{"app": "db"})
	deploy("nomin", 2, map[string]string{"app": "nomin"})
	daemonSet(t, cs, "agent", map[string]string{"app": "agent"})
	labtest.CreatePod(t, ctx, cs, itNS, "bare", map[string]string{"app": "bare"}, labtest.PauseSpec(), false)

	sel := func(k, v string) *metav1.LabelSelector {
		return &metav1.LabelSelector{MatchLabels: map[string]string{k: v}}
	}
	i := func(v int) *intstr.IntOrString { x := intstr.FromInt32(int32(v)); return &x }
	s := func(v string) *intstr.IntOrString { x := intstr.FromString(v); return &x }
	budgets := []policyv1.PodDisruptionBudgetSpec{}
	names := []string{"nginx", "web", "solo", "pct", "api", "fe", "frontend", "db", "nomin", "agent", "bare", "typo", "nullsel"}
	budgets = append(budgets,
		policyv1.PodDisruptionBudgetSpec{Selector: sel("app", "nginx"), MinAvailable: i(1)},
		policyv1.PodDisruptionBudgetSpec{Selector: sel("app", "web"), MinAvailable: i(2)},
		policyv1.PodDisruptionBudgetSpec{Selector: sel("app", "solo"), MinAvailable: i(1)},
		policyv1.PodDisruptionBudgetSpec{Selector: sel("app", "pct"), MinAvailable: s("80%")},
		policyv1.PodDisruptionBudgetSpec{Selector: sel("app", "api"), MaxUnavailable: i(1)},
		policyv1.PodDisruptionBudgetSpec{Selector: sel("app", "fe"), MaxUnavailable: i(1)},
		policyv1.PodDisruptionBudgetSpec{Selector: sel("tier", "fe"), MaxUnavailable: s("50%")},
		policyv1.PodDisruptionBudgetSpec{Selector: sel("app", "db"), MaxUnavailable: i(0)},
		policyv1.PodDisruptionBudgetSpec{Selector: sel("app", "nomin")},
		policyv1.PodDisruptionBudgetSpec{Selector: sel("app", "agent"), MaxUnavailable: i(1)},
		policyv1.PodDisruptionBudgetSpec{Selector: sel("app", "bare"), MaxUnavailable: i(1)},
		policyv1.PodDisruptionBudgetSpec{Selector: sel("app", "ngnix"), MinAvailable: i(1)},
		policyv1.PodDisruptionBudgetSpec{Selector: nil, MinAvailable: i(1)},
	)
	for k, spec := range budgets {
		p := &policyv1.PodDisruptionBudget{ObjectMeta: metav1.ObjectMeta{Name: names[k], Namespace: itNS}, Spec: spec}
		if _, err := cs.PolicyV1().PodDisruptionBudgets(itNS).Create(ctx, p, metav1.CreateOptions{}); err != nil {
			t.Fatalf("create pdb %s: %v", names[k], err)
		}
	}

	// All 19 pods Running and Ready (3 DaemonSet pods, one per node).
	labtest.WaitForPods(t, ctx, cs, itNS, metav1.ListOptions{}, 19, pdb.IsHealthy)
	// One api pod turns unready, by hand.
	apiPods, err := cs.CoreV1().Pods(itNS).List(ctx, metav1.ListOptions{LabelSelector: "app=api"})
	if err != nil || len(apiPods.Items) != 3 {
		t.Fatalf("api pods: %v (%d)", err, len(apiPods.Items))
	}
	sort.Slice(apiPods.Items, func(a, b int) bool { return apiPods.Items[a].Name < apiPods.Items[b].Name })
	unready := apiPods.Items[0].Name
	setUnready(t, ctx, cs, unready)

	// The controller's status converges to kdiag's computation for every
	// budget: this pins pkg/pdb to the real disruption controller.
	var snap *cluster.Snapshot
	labtest.WaitFor(t, ctx, "PDB status written by kube-controller-manager matches pkg/pdb", func(ctx context.Context) (bool, error) {
		snap = labtest.ReadLive(t, ctx, cs, cluster.LiveOptions{})
		diffs := statusDiffs(snap)
		if len(diffs) > 0 {
			t.Logf("waiting: %s", strings.Join(diffs, "; "))
		}
		return len(diffs) == 0, nil
	})

	// The eviction API agrees with pdb.Evict for every pod (dry run: nothing
	// is evicted).
	a := newAnalysis(snap)
	var nginxPod *corev1.Pod
	for _, p := range a.ix.PodsInNamespace(itNS) {
		want := pdb.Evict(p, a.cov.PDBsOf(p))
		code, err := evictDryRun(ctx, cs, p.Name)
		if err != nil {
			t.Fatalf("evict %s (dry run): %v", p.Name, err)
		}
		if (code == 0) != want.Allowed || (!want.Allowed && code != want.Code) {
			t.Errorf("pod %s: eviction API answered %d, pdb.Evict predicted allowed=%v code=%d (%s)", p.Name, code, want.Allowed, want.Code, want.Message)
		}
		if p.Labels["app"] == "nginx" {
			nginxPod = p
		}
	}
	if nginxPod == nil {
		t.Fatal("no nginx pod")
	}

	// A drain of nginx's node is under way: it is cordoned and a drainer
	// recorded its failure, as cluster-autoscaler does.
	node := nginxPod.Spec.NodeName
	labtest.PatchNode(t, ctx, cs, node, `{"spec":{"unschedulable":true}}`)
	t.Cleanup(func() { labtest.PatchNode(t, context.Background(), cs, node, `{"spec":{"unschedulable":false}}`) })
	ev := &corev1.Event{
		ObjectMeta:     metav1.ObjectMeta{Name: node + ".scaledownfailed", Namespace: metav1.NamespaceDefault},
		InvolvedObject: corev1.ObjectReference{Kind: "Node", Name: node, APIVersion: "v1"},
		Type:           corev1.EventTypeWarning, Reason: "ScaleDownFailed",
		Message: fmt.Sprintf("failed to drain and delete node: Failed to drain node /%s, due to following errors: [failed to evict pod %s/%s within allowed timeout (last error: Cannot evict pod as it would violate the pod's disruption budget.)]",
			node, itNS, nginxPod.Name),
		Source:         corev1.EventSource{Component: "cluster-autoscaler"},
		FirstTimestamp: metav1.Now(), LastTimestamp: metav1.Now(), Count: 3,
	}
	if _, err := cs.CoreV1().Events(metav1.NamespaceDefault).Create(ctx, ev, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cs.CoreV1().Events(metav1.NamespaceDefault).Delete(context.Background(), ev.Name, metav1.DeleteOptions{})
	})

	snap = labtest.ReadLive(t, ctx, cs, cluster.LiveOptions{})
	fs := Analyze(snap)
	ct.LogFindings(t, fs)

	// pdb-blocks-disruption: fires on every blocking shape, with its reason.
	blocks := map[string]struct {
		sev  findings.Severity
		frag string
	}{
		"nginx": {findings.Critical, "desiredHealthy=1 >= expectedPods=1"},
		"solo":  {findings.Critical, "desiredHealthy=1 >= expectedPods=1"},
		"pct":   {findings.Critical, "minAvailable=80%"},
		"api":   {findings.Critical, unready + " on "},
		"db":    {findings.Critical, "maxUnavailable=0 allows no pod to be unavailable"},
		"nomin": {findings.Critical, "neither spec.minAvailable nor spec.maxUnavailable is set"},
		"agent": {findings.Warning, "does not implement the scale subresource"},
		"bare":  {findings.Critical, "bare pods count for nothing"},
	}
	for name, want := range blocks {
		f := ct.Find(fs, idPDBBlocks, name)
		if f == nil {
			t.Errorf("pdb-blocks-disruption did not fire for %s", name)
			continue
		}
		if f.Severity != want.sev {
			t.Errorf("%s: severity %s, want %s", name, f.Severity, want.sev)
		}
		ct.AssertEvidence(t, f, want.frag)
		if name != "agent" && name != "bare" {
			ct.AssertEvidence(t, f, "(matches the status)")
		}
	}
	for _, name := range []string{"web", "fe", "frontend", "typo", "nullsel"} {
		if f := ct.Find(fs, idPDBBlocks, name); f != nil {
			t.Errorf("pdb-blocks-disruption fired for %s: %s", name, f.Title)
		}
	}
	nginx := ct.Find(fs, idPDBBlocks, "nginx")
	if nginx != nil {
		ct.AssertEvidence(t, nginx, "will stall: node "+node)
	}

	// pod-multiple-pdbs: fe's pods are under fe and frontend.
	if f := ct.Find(fs, idMultiplePDBs, "fe"); f == nil {
		t.Errorf("pod-multiple-pdbs did not fire for Deployment fe")
	} else {
		ct.AssertEvidence(t, f, "PodDisruptionBudget ops-it/fe", "PodDisruptionBudget ops-it/frontend")
	}
	if got := ct.WithID(fs, idMultiplePDBs); len(got) != 1 {
		t.Errorf("pod-multiple-pdbs: %d findings, want 1 (fe)", len(got))
	}

	// pdb-no-matching-pods: the typo and the null selector, nothing else.
	for _, name := range []string{"typo", "nullsel"} {
		if ct.Find(fs, idNoMatchingPods, name) == nil {
			t.Errorf("pdb-no-matching-pods did not fire for %s", name)
		}
	}
	if f := ct.Find(fs, idNoMatchingPods, "typo"); f != nil {
		ct.AssertEvidence(t, f, "pods in namespace ops-it carry app=nginx (1 pod) close to app=ngnix: a typo?")
	}
	for _, f := range ct.WithID(fs, idNoMatchingPods) {
		if f.Object.Name != "typo" && f.Object.Name != "nullsel" {
			t.Errorf("pdb-no-matching-pods fired for %s", f.Object.Name)
		}
	}

	// drain-blocked: the cordoned node only.
	if f := ct.Find(fs, idDrainBlocked, node); f == nil {
		t.Errorf("drain-blocked did not fire for cordoned %s", node)
	} else {
		ct.AssertEvidence(t, f, itNS+"/"+nginxPod.Name+": HTTP 429 from PodDisruptionBudget "+itNS+"/nginx")
	}
	if got := ct.WithID(fs, idDrainBlocked); len(got) != 1 {
		t.Errorf("drain-blocked: %d findings, want 1", len(got))
	}

	// eviction-failed: the autoscaler's event, linked to the nginx budget.
	if f := ct.Find(fs, idEvictionFailed, node); f == nil {
		t.Errorf("eviction-failed did not fire for %s", node)
	} else {
		if !strings.Contains(f.Title, "blocked by PodDisruptionBudget "+itNS+"/nginx") {
			t.Errorf("eviction-failed title = %q", f.Title)
		}
		ct.AssertEvidence(t, f, "(from cluster-autoscaler)", "still blocking")
	}

	// Every mutating remediation passes a server-side dry run.
	dryRuns := 0
	for _, f := range fs {
		for _, r := range ct.Mutating(&f) {
			if err := apply(ctx, dyn, r.Action, true); err != nil {
				t.Errorf("%s %s: dry run of %q failed: %v", f.ID, f.Object.Name, r.Command, err)
			}
			dryRuns++
		}
	}
	if dryRuns < 10 {
		t.Errorf("only %d mutating remediations verified", dryRuns)
	}

	// Apply the seed's two fixes for real: scale nginx, relax solo. Both
	// budgets must then allow a disruption and leave the report.
	if r := ct.PatchOf(nginx, "deployments", "scale"); r == nil {
		t.Error("no scale fix for nginx")
	} else if err := apply(ctx, dyn, r.Action, false); err != nil {
		t.Fatalf("scale nginx: %v", err)
	}
	if r := ct.PatchOf(ct.Find(fs, idPDBBlocks, "solo"), "poddisruptionbudgets", ""); r == nil {
		t.Error("no relax fix for solo")
	} else if err := apply(ctx, dyn, r.Action, false); err != nil {
		t.Fatalf("relax solo: %v", err)
	}
	labtest.WaitFor(t, ctx, "nginx and solo allow a disruption after the fixes", func(ctx context.Context) (bool, error) {
		snap = labtest.ReadLive(t, ctx, cs, cluster.LiveOptions{})
		fs = Analyze(snap)
		return ct.Find(fs, idPDBBlocks, "nginx") == nil && ct.Find(fs, idPDBBlocks, "solo") == nil, nil
	})
	for _, name := range []string{"nginx", "solo"} {
		p := findPDBIn(snap, name)
		if p == nil || p.Status.DisruptionsAllowed < 1 {
			t.Errorf("PodDisruptionBudget %s after the fix: %+v", name, p)
		}
	}
	if p := findPDBIn(snap, "nginx"); p != nil && p.Status.ExpectedPods != 2 {
		t.Errorf("nginx budget expects %d pods after scaling to 2", p.Status.ExpectedPods)
	}
	if p := findPDBIn(snap, "solo"); p != nil && (p.Spec.MinAvailable != nil || p.Spec.MaxUnavailable == nil || p.Spec.MaxUnavailable.IntValue() != 1) {
		t.Errorf("solo budget after the relax patch: %+v", p.Spec)
	}
	if f := ct.Find(fs, idDrainBlocked, node); f != nil && strings.Contains(strings.Join(f.Evidence, "\n"), "PodDisruptionBudget "+itNS+"/nginx ") {
		t.Errorf("drain-blocked still names nginx after the fix: %v", f.Evidence)
	}
}

func findPDBIn(s *cluster.Snapshot, name string) *policyv1.PodDisruptionBudget {
	for i := range s.PodDisruptionBudgets {
		if p := &s.PodDisruptionBudgets[i]; p.Namespace == itNS && p.Name == name {
			return p
		}
	}
	return nil
}

// statusDiffs compares the controller's status of every budget in the test
// namespace with pkg/pdb's computation; budgets the controller cannot sync
// must show SyncFailed and 0 allowed.
func statusDiffs(s *cluster.Snapshot) []string {
	a := newAnalysis(s)
	var diffs []string
	for _, p := range a.pdbs {
		if p.Namespace != itNS {
			continue
		}
		b := a.budget(p)
		st := p.Status
		if b.SyncError != "" {
			c := meta.FindStatusCondition(st.Conditions, policyv1.DisruptionAllowedCondition)
			if c == nil || c.Reason != policyv1.SyncFailedReason || st.DisruptionsAllowed != 0 {
				diffs = append(diffs, fmt.Sprintf("%s: kdiag predicts SyncFailed (%s), status has %+v", p.Name, b.SyncError, c))
			}
			continue
		}
		if st.ObservedGeneration != p.Generation {
			diffs = append(diffs, p.Name+": status not observed yet")
			continue
		}
		got := [4]int32{st.ExpectedPods, st.DesiredHealthy, st.CurrentHealthy, st.DisruptionsAllowed}
		want := [4]int32{b.ExpectedPods, b.DesiredHealthy, b.CurrentHealthy, b.DisruptionsAllowed}
		if got != want {
			diffs = append(diffs, fmt.Sprintf("%s: status expected/desired/current/allowed=%v, kdiag computes %v", p.Name, got, want))
		}
	}
	return diffs
}

func daemonSet(t *testing.T, cs kubernetes.Interface, name string, lbls map[string]string) {
	t.Helper()
	d := &appsv1.DaemonSet{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: itNS},
		Spec: appsv1.DaemonSetSpec{
			Selector: &metav1.LabelSelector{MatchLabels: lbls},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: lbls}, Spec: labtest.PauseSpec()},
		},
	}
	if _, err := cs.AppsV1().DaemonSets(itNS).Create(context.Background(), d, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create daemonset %s: %v", name, err)
	}
}

// setUnready hands the pod's status to the test and marks it not Ready.
func setUnready(t *testing.T, ctx context.Context, cs kubernetes.Interface, name string) {
	t.Helper()
	labtest.TakeStatus(t, ctx, cs.CoreV1().Pods(itNS).Patch, name)
	p, err := cs.CoreV1().Pods(itNS).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for k := range p.Status.Conditions {
		if c := &p.Status.Conditions[k]; c.Type == corev1.PodReady || c.Type == corev1.ContainersReady {
			c.Status, c.Reason = corev1.ConditionFalse, "ContainersNotReady"
		}
	}
	for k := range p.Status.ContainerStatuses {
		p.Status.ContainerStatuses[k].Ready = false
	}
	if _, err := cs.CoreV1().Pods(itNS).UpdateStatus(ctx, p, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// evictDryRun asks the eviction API about a pod with dryRun=All and returns
// 0 when it would evict, else the HTTP status of the refusal.
func evictDryRun(ctx context.Context, cs kubernetes.Interface, pod string) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	// The request Evict sends, without client-go's retries: a 429 with
	// Retry-After (a budget still being processed) would be retried.
	err := cs.PolicyV1().RESTClient().Post().AbsPath("/api/v1").Namespace(itNS).
		Resource("pods").Name(pod).SubResource("eviction").MaxRetries(0).
		Body(&policyv1.Eviction{
			ObjectMeta:    metav1.ObjectMeta{Name: pod, Namespace: itNS},
			DeleteOptions: &metav1.DeleteOptions{DryRun: []string{metav1.DryRunAll}},
		}).Do(ctx).Error()
	if err == nil {
		return 0, nil
	}
	var st apierrors.APIStatus
	if errors.As(err, &st) {
		return int(st.Status().Code), nil
	}
	return 0, err
}

// apply sends a remediation's PATCH, as a server-side dry run or for real.
func apply(ctx context.Context, dyn dynamic.Interface, a *findings.Action, dryRun bool) error {
	opts := metav1.PatchOptions{}
	if dryRun {
		opts.DryRun = []string{metav1.DryRunAll}
	}
	var sub []string
	if a.Subresource != "" {
		sub = []string{a.Subresource}
	}
	_, err := dyn.Resource(a.GVR()).Namespace(a.Namespace).Patch(ctx, a.Name, a.PatchType, a.Patch, opts, sub...)
	return err
}
