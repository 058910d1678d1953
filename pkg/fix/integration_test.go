package fix_test

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/kdiag/kdiag/pkg/apis/kdiag/v1alpha1"
	"github.com/kdiag/kdiag/pkg/drain"
	"github.com/kdiag/kdiag/pkg/findings"
	"github.com/kdiag/kdiag/pkg/fix"
	"github.com/kdiag/kdiag/pkg/lab/labtest"
	"github.com/kdiag/kdiag/pkg/ops"
)

func TestMain(m *testing.M) { labtest.Main(m, labtest.Options{Nodes: 2}) }

const targetPortCheck = "service-target-port-mismatch"

// setup returns an admin config with the Operation CRD installed.
func setup(t *testing.T) (*rest.Config, kubernetes.Interface, context.Context) {
	t.Helper()
	c := labtest.Cluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	t.Cleanup(cancel)
	cfg := c.RESTConfig()
	if err := ops.EnsureCRD(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	return cfg, kubernetes.NewForConfigOrDie(cfg), ctx
}

// seedService creates the seed's broken Service in its own namespace: the
// pods listen on 3000 (containerPort "http"), the Service sends to 8080.
func seedService(t *testing.T, ctx context.Context, cs kubernetes.Interface, ns string) {
	t.Helper()
	labtest.CreateNamespace(t, ctx, cs, ns)
	lbls := map[string]string{"app": "order-service"}
	labtest.CreateDeployment(t, ctx, cs, ns, "order-service", 1, lbls, corev1.PodSpec{Containers: []corev1.Container{{
		Name: "app", Image: "kdiag.io/lab/http-server", Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 3000}},
	}}})
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "order-service"},
		Spec: corev1.ServiceSpec{Selector: lbls, Ports: []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080)}}}}
	if _, err := cs.CoreV1().Services(ns).Create(ctx, svc, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create service: %v", err)
	}
	waitRunning(t, ctx, cs, ns, 1)
}

func waitRunning(t *testing.T, ctx context.Context, cs kubernetes.Interface, ns string, n int) {
	t.Helper()
	labtest.WaitFor(t, ctx, "pods running in "+ns, func(ctx context.Context) (bool, error) {
		pods, err := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, err
		}
		running := 0
		for i := range pods.Items {
			if labtest.PodRunning(&pods.Items[i]) {
				running++
			}
		}
		return running == n, nil
	})
}

func targetPortFix(t *testing.T, ctx context.Context, cfg *rest.Config, ns string) fix.Candidate {
	t.Helper()
	problems, err := fix.FromDoctor(ctx, cfg, "lab", targetPortCheck, ns)
	if err != nil {
		t.Fatalf("FromDoctor: %v", err)
	}
	c, err := fix.Select(problems, fix.Query{Object: "service/" + ns + "/order-service"})
	if err != nil {
		t.Fatalf("Select the targetPort fix: %v", err)
	}
	return c
}

func getOperation(t *testing.T, ctx context.Context, cfg *rest.Config, name string) v1alpha1.Operation {
	t.Helper()
	u, err := dynamic.NewForConfigOrDie(cfg).Resource(v1alpha1.OperationGVR()).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("get operation %s: %v", name, err)
	}
	var op v1alpha1.Operation
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &op); err != nil {
		t.Fatal(err)
	}
	return op
}

func stepPhases(op v1alpha1.Operation) string {
	var s []string
	for _, st := range op.Status.Steps {
		s = append(s, st.Name+"="+string(st.Phase))
	}
	return strings.Join(s, ",")
}

// TestIntegrationFixTargetPort: the seed's wrong targetPort is fixed: the
// dry run passes and shows the change, the PATCH applies it, the Operation
// is recorded Succeeded with its steps, and the finding is gone.
func TestIntegrationFixTargetPort(t *testing.T) {
	cfg, cs, ctx := setup(t)
	const ns = "fix-port"
	seedService(t, ctx, cs, ns)
	c := targetPortFix(t, ctx, cfg, ns)

	// --dry-run=server verifies and changes nothing, records nothing.
	a := &fix.Applier{Client: dynamic.NewForConfigOrDie(cfg), Recorder: ops.NewRecorderForClient(dynamic.NewForConfigOrDie(cfg), ops.RecorderOptions{Initiator: "test"})}
	res, err := a.Apply(ctx, c, fix.Options{DryRunOnly: true})
	if err != nil || res.DryRun.Status != findings.DryRunPassed || res.Applied || res.Operation != "" {
		t.Fatalf("dry run only: err %v, result %+v; want passed, not applied, not recorded", err, res)
	}
	if len(res.Diff) != 1 || res.Diff[0].Path != "spec.ports[0].targetPort" || res.Diff[0].Before != "8080" {
		t.Errorf("diff = %+v, want spec.ports[0].targetPort from 8080", res.Diff)
	}
	svc, _ := cs.CoreV1().Services(ns).Get(ctx, "order-service", metav1.GetOptions{})
	if svc.Spec.Ports[0].TargetPort.IntValue() != 8080 {
		t.Fatalf("--dry-run=server changed the Service: targetPort %v", svc.Spec.Ports[0].TargetPort)
	}

	asked := false
	res, err = a.Apply(ctx, c, fix.Options{Wait: time.Minute, WaitInterval: 500 * time.Millisecond,
		Confirm: func(_ context.Context, plan *fix.Result) (bool, error) {
			asked = true
			return plan.DryRun.Status == findings.DryRunPassed, nil
		}})
	if err != nil {
		t.Fatalf("apply: %v (result %+v)", err, res)
	}
	if !asked || !res.Applied || res.Recheck == nil || !res.Recheck.Gone {
		t.Fatalf("asked %v, result %+v, recheck %+v; want confirmed, applied, finding gone", asked, res, res.Recheck)
	}
	svc, err = cs.CoreV1().Services(ns).Get(ctx, "order-service", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if tp := svc.Spec.Ports[0].TargetPort; tp.String() != "3000" && tp.String() != "http" {
		t.Errorf("targetPort after the fix = %v, want 3000 or http", tp.String())
	}
	managed := false
	for _, mf := range svc.ManagedFields {
		managed = managed || mf.Manager == fix.FieldManager
	}
	if !managed {
		t.Errorf("no managedFields entry of field manager %q", fix.FieldManager)
	}
	if res.Operation == "" {
		t.Fatal("no Operation recorded")
	}
	op := getOperation(t, ctx, cfg, res.Operation)
	if op.Spec.Type != v1alpha1.TypeFix || op.Status.Phase != v1alpha1.PhaseSucceeded ||
		stepPhases(op) != "dry-run=Succeeded,apply=Succeeded,recheck=Succeeded" ||
		op.Spec.Target.Name != "service/"+ns+"/order-service" || op.Spec.Target.Object == nil || op.Spec.Target.Object.Kind != "Service" ||
		!strings.Contains(op.Spec.Reason, targetPortCheck) || !strings.Contains(op.Spec.Reason, c.Title) || !strings.Contains(op.Status.Hint, "kubectl patch service order-service") {
		t.Errorf("operation = %+v / %+v, want Fix Succeeded on service/%s/order-service with 3 steps and the check ID", op.Spec, op.Status, ns)
	}
	var table bytes.Buffer
	if err := ops.WriteTable(&table, []v1alpha1.Operation{op}, true, time.Now()); err != nil || !strings.Contains(table.String(), "service/"+ns+"/order-service") {
		t.Errorf("ops list row: %q (err %v)", table.String(), err)
	}
	if problems, err := fix.FromDoctor(ctx, cfg, "lab", targetPortCheck, ns); err != nil || len(problems) != 0 {
		t.Errorf("after the fix the check still reports %d problems (err %v)", len(problems), err)
	}
}

// TestIntegrationFixStale: the Service changed after the fix was read, so
// the JSON patch's test operation fails: refused, recorded Failed, not applied.
func TestIntegrationFixStale(t *testing.T) {
	cfg, cs, ctx := setup(t)
	const ns = "fix-stale"
	seedService(t, ctx, cs, ns)
	c := targetPortFix(t, ctx, cfg, ns)
	patch := []byte(`{"spec":{"ports":[{"name":"http","port":80,"targetPort":9090}]}}`)
	if _, err := cs.CoreV1().Services(ns).Patch(ctx, "order-service", types.StrategicMergePatchType, patch, metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	dyn := dynamic.NewForConfigOrDie(cfg)
	res, err := (&fix.Applier{Client: dyn, Recorder: ops.NewRecorderForClient(dyn, ops.RecorderOptions{})}).Apply(ctx, c, fix.Options{})
	var refused *fix.RefusedError
	if !errors.As(err, &refused) || !refused.Stale || !strings.Contains(err.Error(), "changed since") {
		t.Fatalf("err = %v, want a stale *RefusedError saying the object changed", err)
	}
	if res.Applied || res.DryRun.Status != findings.DryRunFailed {
		t.Errorf("result %+v: want not applied, dry run failed", res)
	}
	svc, _ := cs.CoreV1().Services(ns).Get(ctx, "order-service", metav1.GetOptions{})
	if svc.Spec.Ports[0].TargetPort.IntValue() != 9090 {
		t.Errorf("targetPort = %v, want 9090 (untouched)", svc.Spec.Ports[0].TargetPort)
	}
	op := getOperation(t, ctx, cfg, res.Operation)
	if op.Status.Phase != v1alpha1.PhaseFailed || stepPhases(op) != "dry-run=Failed" || !strings.Contains(op.Status.Hint, "changed since") {
		t.Errorf("operation status %+v, want Failed with a failed dry-run step and a hint", op.Status)
	}
}

// limitedUser returns a config for a user who may read everything but not
// patch Services; withOps also lets it write Operations.
func limitedUser(t *testing.T, ctx context.Context, cs kubernetes.Interface, name string, withOps bool) *rest.Config {
	t.Helper()
	rules := []rbacv1.PolicyRule{{APIGroups: []string{"*"}, Resources: []string{"*"}, Verbs: []string{"get", "list"}},
		{APIGroups: []string{"authentication.k8s.io"}, Resources: []string{"selfsubjectreviews"}, Verbs: []string{"create"}}}
	if withOps {
		rules = append(rules, rbacv1.PolicyRule{APIGroups: []string{"kdiag.io"}, Resources: []string{"operations"}, Verbs: []string{"create", "update", "get"}})
	}
	role := &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: "fix-" + name}, Rules: rules}
	if _, err := cs.RbacV1().ClusterRoles().Create(ctx, role, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	bind := &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "fix-" + name},
		RoleRef:  rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: role.Name},
		Subjects: []rbacv1.Subject{{Kind: "User", APIGroup: "rbac.authorization.k8s.io", Name: name}}}
	if _, err := cs.RbacV1().ClusterRoleBindings().Create(ctx, bind, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	ucfg, err := labtest.Cluster(t).ClientCertConfig(name, nil, time.Now().Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	// RBAC takes effect shortly after the binding.
	ucs := kubernetes.NewForConfigOrDie(ucfg)
	labtest.WaitFor(t, ctx, "RBAC for "+name, func(ctx context.Context) (bool, error) {
		_, err := ucs.CoreV1().Services("default").List(ctx, metav1.ListOptions{})
		return err == nil, nil
	})
	return ucfg
}

// TestIntegrationFixForbidden: a user who may not patch Services is refused
// with the server's reason; the refusal is recorded Failed when the user
// may write Operations, and is one warning line when not.
func TestIntegrationFixForbidden(t *testing.T) {
	cfg, cs, ctx := setup(t)
	const ns = "fix-rbac"
	seedService(t, ctx, cs, ns)
	for _, tc := range []struct {
		user    string
		withOps bool
	}{{"fixer-recorded", true}, {"fixer-unrecorded", false}} {
		t.Run(tc.user, func(t *testing.T) {
			ucfg := limitedUser(t, ctx, cs, tc.user, tc.withOps)
			c := targetPortFix(t, ctx, ucfg, ns)
			var warn bytes.Buffer
			dyn := dynamic.NewForConfigOrDie(ucfg)
			rec := ops.NewRecorderForClient(dyn, ops.RecorderOptions{Warn: &warn})
			res, err := (&fix.Applier{Client: dyn, Recorder: rec}).Apply(ctx, c, fix.Options{})
			var refused *fix.RefusedError
			if !errors.As(err, &refused) || refused.Stale || !strings.Contains(err.Error(), "forbidden") {
				t.Fatalf("err = %v, want a *RefusedError with the server's forbidden reason", err)
			}
			t.Logf("refused as expected: %v", err)
			if res.Applied {
				t.Error("applied despite the refusal")
			}
			if tc.withOps {
				if res.Operation == "" || warn.Len() != 0 {
					t.Fatalf("operation %q, warning %q: want a record and no warning", res.Operation, warn.String())
				}
				op := getOperation(t, ctx, cfg, res.Operation)
				if op.Status.Phase != v1alpha1.PhaseFailed || !strings.Contains(op.Status.Error, "forbidden") || !strings.Contains(op.Spec.Initiator+op.Spec.Reason, targetPortCheck) {
					t.Errorf("operation %+v / %+v: want Failed with the forbidden error and the check ID", op.Spec, op.Status)
				}
			} else if res.Operation != "" || strings.Count(warn.String(), "\n") != 1 || !strings.Contains(warn.String(), "RBAC") {
				t.Errorf("operation %q, warning %q: want no record and one warning line naming RBAC", res.Operation, warn.String())
			}
			svc, _ := cs.CoreV1().Services(ns).Get(ctx, "order-service", metav1.GetOptions{})
			if svc.Spec.Ports[0].TargetPort.IntValue() != 8080 {
				t.Errorf("targetPort changed to %v by a user without patch rights", svc.Spec.Ports[0].TargetPort)
			}
		})
	}
}

// TestIntegrationFixDrainBlocker: the seed's nginx (1 replica, PDB
// minAvailable 1) blocks the drain of its node; the scale fix is applied and
// the drain check then passes.
func TestIntegrationFixDrainBlocker(t *testing.T) {
	cfg, cs, ctx := setup(t)
	const ns = "fix-drain"
	labtest.CreateNamespace(t, ctx, cs, ns)
	lbls := map[string]string{"app": "nginx"}
	labtest.CreateDeployment(t, ctx, cs, ns, "nginx", 1, lbls, labtest.PauseSpec())
	minAvail := intstr.FromInt32(1)
	p := &policyv1.PodDisruptionBudget{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "nginx"},
		Spec: policyv1.PodDisruptionBudgetSpec{MinAvailable: &minAvail, Selector: &metav1.LabelSelector{MatchLabels: lbls}}}
	if _, err := cs.PolicyV1().PodDisruptionBudgets(ns).Create(ctx, p, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitRunning(t, ctx, cs, ns, 1)
	labtest.WaitFor(t, ctx, "PDB status", func(ctx context.Context) (bool, error) {
		p, err := cs.PolicyV1().PodDisruptionBudgets(ns).Get(ctx, "nginx", metav1.GetOptions{})
		return err == nil && p.Status.ObservedGeneration == p.Generation && p.Status.ExpectedPods == 1, err
	})
	pods, err := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
	if err != nil || len(pods.Items) != 1 {
		t.Fatalf("pods: %v %v", pods, err)
	}
	pod := pods.Items[0]
	q := fix.DrainQuery{Nodes: []string{pod.Spec.NodeName}, Options: drain.Options{IgnoreDaemonSets: true}, Source: "lab"}
	problems, err := fix.FromDrain(ctx, cfg, q)
	if err != nil {
		t.Fatal(err)
	}
	// Two fixes (scale, relax): without --remediation the choice is listed.
	_, err = fix.Select(problems, fix.Query{Object: "pod/" + ns + "/" + pod.Name, Hint: "kdiag fix --drain " + pod.Spec.NodeName})
	var amb *fix.AmbiguousError
	if !errors.As(err, &amb) || len(amb.Choices) < 2 || !strings.Contains(amb.Error(), "--pod "+ns+"/"+pod.Name+" --remediation 1") {
		t.Fatalf("select without --remediation: %v, want the fixes listed", err)
	}
	scale := 0
	for _, pr := range problems {
		if pr.Object.Name == pod.Name {
			for i, r := range pr.Mutating() {
				if r.Action.Subresource == "scale" {
					scale = i + 1
				}
			}
		}
	}
	c, err := fix.Select(problems, fix.Query{Object: "pod/" + ns + "/" + pod.Name, Number: scale})
	if err != nil {
		t.Fatalf("select the scale fix (%d): %v", scale, err)
	}
	dyn := dynamic.NewForConfigOrDie(cfg)
	res, err := (&fix.Applier{Client: dyn, Recorder: ops.NewRecorderForClient(dyn, ops.RecorderOptions{})}).Apply(ctx, c,
		fix.Options{Wait: 2 * time.Minute, WaitInterval: time.Second})
	if err != nil {
		t.Fatalf("apply the scale fix: %v (%+v)", err, res)
	}
	if !res.Applied || res.Recheck == nil || !res.Recheck.Gone || res.Target != "deployment/"+ns+"/nginx" {
		t.Fatalf("result %+v recheck %+v: want deployment/%s/nginx scaled and the blocker gone", res, res.Recheck, ns)
	}
	if len(res.Diff) != 1 || res.Diff[0].Path != "spec.replicas" || res.Diff[0].Before != "1" {
		t.Errorf("diff %+v, want spec.replicas from 1", res.Diff)
	}
	d, _ := cs.AppsV1().Deployments(ns).Get(ctx, "nginx", metav1.GetOptions{})
	if d == nil || d.Spec.Replicas == nil || *d.Spec.Replicas < 2 {
		t.Errorf("deployment after the fix: %+v", d)
	}
	again, err := fix.FromDrain(ctx, cfg, q)
	if err != nil {
		t.Fatal(err)
	}
	for _, pr := range again {
		if pr.Object.Namespace == ns {
			t.Errorf("drain check still blocked after the fix: %s %s", pr.Check, pr.Title)
		}
	}
	op := getOperation(t, ctx, cfg, res.Operation)
	if op.Status.Phase != v1alpha1.PhaseSucceeded || !strings.Contains(op.Spec.Reason, "drain check") || op.Spec.Target.Object.Kind != "Deployment" {
		t.Errorf("operation %+v / %+v: want a Succeeded Fix of the Deployment from drain check", op.Spec, op.Status)
	}
}
