package doctor_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/kdiag/kdiag/pkg/cluster"
	"github.com/kdiag/kdiag/pkg/doctor"
	"github.com/kdiag/kdiag/pkg/findings"
	"github.com/kdiag/kdiag/pkg/lab/labtest"
	"github.com/kdiag/kdiag/pkg/report"
)

func TestMain(m *testing.M) { labtest.Main(m, labtest.Options{Nodes: 2}) }

const ns = "doctor-it"

// seed creates the seed talk's two broken objects next to healthy
// neighbours: a Service whose targetPort matches no containerPort, and a
// single-replica Deployment under a minAvailable: 1 PDB. It waits until the
// controllers have done their part (pods Running, PDB status observed).
func seed(t *testing.T, cs kubernetes.Interface) {
	t.Helper()
	ctx := context.Background()
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		if !strings.Contains(err.Error(), "already exists") {
			t.Fatalf("create namespace: %v", err)
		}
		return
	}
	deploy := func(name string, replicas int32, port int32) {
		lbls := map[string]string{"app": name}
		d := &appsv1.Deployment{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
			Spec: appsv1.DeploymentSpec{
				Replicas: &replicas,
				Selector: &metav1.LabelSelector{MatchLabels: lbls},
				Template: corev1.PodTemplateSpec{
					ObjectMeta: metav1.ObjectMeta{Labels: lbls},
					Spec: corev1.PodSpec{Containers: []corev1.Container{{
						Name: "app", Image: "kdiag.io/lab/http-server",
						Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: port}},
					}}},
				},
			},
		}
		if _, err := cs.AppsV1().Deployments(ns).Create(ctx, d, metav1.CreateOptions{}); err != nil {
			t.Fatalf("create deployment %s: %v", name, err)
		}
	}
	service := func(name string, target intstr.IntOrString) {
		svc := &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
			Spec: corev1.ServiceSpec{
				Selector: map[string]string{"app": name},
				Ports:    []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: target}},
			},
		}
		if _, err := cs.CoreV1().Services(ns).Create(ctx, svc, metav1.CreateOptions{}); err != nil {
			t.Fatalf("create service %s: %v", name, err)
		}
	}
	pdb := func(name string, min int32) {
		v := intstr.FromInt32(min)
		p := &policyv1.PodDisruptionBudget{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
			Spec: policyv1.PodDisruptionBudgetSpec{MinAvailable: &v,
				Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": name}}},
		}
		if _, err := cs.PolicyV1().PodDisruptionBudgets(ns).Create(ctx, p, metav1.CreateOptions{}); err != nil {
			t.Fatalf("create pdb %s: %v", name, err)
		}
	}
	deploy("order-service", 1, 3000)
	service("order-service", intstr.FromInt32(8080)) // broken: nothing listens on 8080
	deploy("product-service", 1, 3000)
	service("product-service", intstr.FromString("http")) // healthy neighbour
	deploy("nginx", 1, 80)
	pdb("nginx", 1) // broken: blocks every drain
	deploy("web", 3, 80)
	pdb("web", 2) // healthy neighbour: one disruption allowed

	err := wait.PollUntilContextTimeout(ctx, 500*time.Millisecond, 90*time.Second, true, func(ctx context.Context) (bool, error) {
		pods, err := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, err
		}
		running := 0
		for _, p := range pods.Items {
			if p.Status.Phase == corev1.PodRunning {
				running++
			}
		}
		if running != 6 {
			return false, nil
		}
		for _, name := range []string{"nginx", "web"} {
			p, err := cs.PolicyV1().PodDisruptionBudgets(ns).Get(ctx, name, metav1.GetOptions{})
			if err != nil {
				return false, err
			}
			if p.Status.ObservedGeneration != p.Generation || p.Status.ExpectedPods == 0 {
				return false, nil
			}
		}
		return true, nil
	})
	if err != nil {
		t.Fatalf("seeded objects did not converge (6 running pods, PDB status observed): %v", err)
	}
}

func find(r *report.Report, id, name string) *findings.Finding {
	for i := range r.Findings {
		if r.Findings[i].ID == id && r.Findings[i].Object.Name == name && r.Findings[i].Object.Namespace == ns {
			return &r.Findings[i]
		}
	}
	return nil
}

func TestLiveDoctorFindsSeedProblemsAndVerifiesFixes(t *testing.T) {
	c := labtest.Cluster(t)
	cs := kubernetes.NewForConfigOrDie(c.RESTConfig())
	seed(t, cs)
	before, err := cs.CoreV1().Services(ns).Get(context.Background(), "order-service", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}

	// A page size of 2 makes every list paginate with continue tokens.
	rep, err := doctor.Live(context.Background(), c.RESTConfig(), "lab", doctor.Options{Namespace: ns, PageSize: 2})
	if err != nil {
		t.Fatalf("doctor.Live: %v", err)
	}
	if len(rep.Gaps) != 0 {
		t.Errorf("admin read has gaps: %v", rep.Gaps)
	}
	if got := rep.Read[cluster.ResPods]; got < 6 {
		t.Errorf("read %d pods, want at least the 6 seeded ones (pagination lost some?)", got)
	}

	tp := find(rep, "service-target-port-mismatch", "order-service")
	if tp == nil {
		t.Fatalf("no service-target-port-mismatch for order-service; findings: %v", ids(rep))
	}
	if j := strings.Join(tp.Evidence, "\n") + tp.Title; !strings.Contains(j, "8080") || !strings.Contains(j, "3000") {
		t.Errorf("evidence does not name both ports 8080 and 3000:\n%s", j)
	}
	assertVerifiedFix(t, tp)
	if f := find(rep, "service-target-port-mismatch", "product-service"); f != nil {
		t.Errorf("healthy neighbour product-service (named targetPort http) reported: %s", f.Title)
	}

	pdb := find(rep, "pdb-blocks-disruption", "nginx")
	if pdb == nil {
		t.Fatalf("no pdb-blocks-disruption for nginx; findings: %v", ids(rep))
	}
	var scale, relax bool
	for _, r := range pdb.Remediation {
		if r.Action == nil {
			continue
		}
		scale = scale || r.Action.Subresource == "scale"
		relax = relax || r.Action.Resource == "poddisruptionbudgets"
	}
	if !scale || !relax {
		t.Errorf("pdb-blocks-disruption remediation: scale=%v relax=%v, want both", scale, relax)
	}
	assertVerifiedFix(t, pdb)
	if f := find(rep, "pdb-blocks-disruption", "web"); f != nil {
		t.Errorf("healthy neighbour PDB web (3 replicas, minAvailable 2) reported: %s", f.Title)
	}

	// Dry runs change nothing.
	after, err := cs.CoreV1().Services(ns).Get(context.Background(), "order-service", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if after.ResourceVersion != before.ResourceVersion || after.Spec.Ports[0].TargetPort.IntValue() != 8080 {
		t.Errorf("doctor changed the Service: resourceVersion %s -> %s, targetPort %v", before.ResourceVersion, after.ResourceVersion, after.Spec.Ports[0].TargetPort)
	}
	d, err := cs.AppsV1().Deployments(ns).Get(context.Background(), "nginx", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if *d.Spec.Replicas != 1 {
		t.Errorf("doctor changed nginx replicas to %d", *d.Spec.Replicas)
	}
}

func assertVerifiedFix(t *testing.T, f *findings.Finding) {
	t.Helper()
	mutating := 0
	for _, r := range f.Remediation {
		if r.Action == nil {
			continue
		}
		mutating++
		if r.DryRun == nil || r.DryRun.Status != findings.DryRunPassed {
			t.Errorf("%s: fix %q: dry run = %+v, want passed", f.ID, r.Command, r.DryRun)
		}
	}
	if mutating == 0 {
		t.Errorf("%s has no mutating fix to verify", f.ID)
	}
}

func ids(r *report.Report) []string {
	var out []string
	for _, f := range r.Findings {
		out = append(out, f.ID+" "+f.Object.String())
	}
	return out
}

func TestDryRunFailureCarriesServerReason(t *testing.T) {
	c := labtest.Cluster(t)
	dc := dynamic.NewForConfigOrDie(c.RESTConfig())
	fs := []findings.Finding{{ID: "x", Remediation: []findings.Remediation{
		findings.Scale("scale a Deployment that does not exist", "deployment", ns, "no-such-deployment", 2),
		findings.MustPatch("an invalid PDB patch", schema.GroupVersionResource{Group: "policy", Version: "v1", Resource: "poddisruptionbudgets"},
			"pdb", "default", "missing", types.MergePatchType, map[string]any{"spec": map[string]any{"minAvailable": "abc%"}}),
	}}}
	if err := (&findings.Verifier{Client: dc}).Verify(context.Background(), fs); err != nil {
		t.Fatalf("Verify: %v", err)
	}
	for _, r := range fs[0].Remediation {
		if r.DryRun == nil || r.DryRun.Status != findings.DryRunFailed || !strings.Contains(r.DryRun.Reason, "not found") {
			t.Errorf("%q: dry run = %+v, want failed with the server's 'not found'", r.Command, r.DryRun)
		}
	}
}

func TestRBACDenialGivesPartialReport(t *testing.T) {
	c := labtest.Cluster(t)
	ctx := context.Background()
	admin := kubernetes.NewForConfigOrDie(c.RESTConfig())
	seed(t, admin)
	// The user may read everything doctor reads except events.
	role := &rbacv1.ClusterRole{
		ObjectMeta: metav1.ObjectMeta{Name: "kdiag-no-events"},
		Rules: []rbacv1.PolicyRule{
			{APIGroups: []string{""}, Resources: []string{"nodes", "pods", "services", "configmaps"}, Verbs: []string{"get", "list"}},
			{APIGroups: []string{"apps"}, Resources: []string{"deployments", "replicasets", "statefulsets", "daemonsets"}, Verbs: []string{"get", "list"}},
			{APIGroups: []string{"policy"}, Resources: []string{"poddisruptionbudgets"}, Verbs: []string{"get", "list", "patch"}},
			{APIGroups: []string{"discovery.k8s.io"}, Resources: []string{"endpointslices"}, Verbs: []string{"get", "list"}},
			{APIGroups: []string{"coordination.k8s.io"}, Resources: []string{"leases"}, Verbs: []string{"get", "list"}},
		},
	}
	if _, err := admin.RbacV1().ClusterRoles().Create(ctx, role, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create role: %v", err)
	}
	binding := &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "kdiag-no-events"},
		RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: role.Name},
		Subjects:   []rbacv1.Subject{{Kind: "User", APIGroup: "rbac.authorization.k8s.io", Name: "oncall"}},
	}
	if _, err := admin.RbacV1().ClusterRoleBindings().Create(ctx, binding, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create binding: %v", err)
	}
	cfg, err := c.ClientCertConfig("oncall", nil, time.Now().Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	var rep *report.Report
	// RBAC caches refresh quickly but not instantly after the binding.
	err = wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, 20*time.Second, true, func(ctx context.Context) (bool, error) {
		rep, err = doctor.Live(ctx, cfg, "lab-oncall", doctor.Options{Namespace: ns})
		if err != nil {
			return false, err
		}
		return rep.Read[cluster.ResPods] > 0, nil
	})
	if err != nil {
		t.Fatalf("doctor as oncall: %v", err)
	}
	var gap *cluster.Gap
	for i := range rep.Gaps {
		if rep.Gaps[i].Resource == cluster.ResEvents {
			gap = &rep.Gaps[i]
		}
	}
	if gap == nil || gap.Reason != cluster.GapForbidden {
		t.Fatalf("gaps = %v, want events Forbidden", rep.Gaps)
	}
	if find(rep, "service-target-port-mismatch", "order-service") == nil {
		t.Errorf("the partial report lost the Service finding; findings: %v", ids(rep))
	}
	// The user may not patch Services: that fix's dry run fails and says why.
	tp := find(rep, "service-target-port-mismatch", "order-service")
	for _, r := range tp.Remediation {
		if r.Action != nil && (r.DryRun == nil || r.DryRun.Status != findings.DryRunFailed || !strings.Contains(r.DryRun.Reason, "forbidden")) {
			t.Errorf("fix %q as a user without patch rights: dry run = %+v, want failed/forbidden", r.Command, r.DryRun)
		}
	}
}

func TestExpiredCredentialsGiveOneLineError(t *testing.T) {
	c := labtest.Cluster(t)
	cfg, err := c.ClientCertConfig("expired-user", []string{"system:masters"}, time.Now().Add(-time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	_, err = doctor.Live(context.Background(), cfg, "lab", doctor.Options{})
	if !errors.Is(err, cluster.ErrUnauthorized) {
		t.Fatalf("err = %v, want ErrUnauthorized", err)
	}
	if strings.Contains(err.Error(), "\n") || !strings.Contains(err.Error(), "expired") {
		t.Errorf("error %q should be one line and mention expiry", err)
	}
}

func TestUnreachableAPIServerGivesOneLineError(t *testing.T) {
	cfg := &rest.Config{Host: "https://127.0.0.1:1", Timeout: 5 * time.Second,
		TLSClientConfig: rest.TLSClientConfig{Insecure: true}}
	_, err := doctor.Live(context.Background(), cfg, "nowhere", doctor.Options{})
	if !errors.Is(err, cluster.ErrUnreachable) {
		t.Fatalf("err = %v, want ErrUnreachable", err)
	}
	if strings.Contains(err.Error(), "\n") || !strings.Contains(err.Error(), "127.0.0.1:1") {
		t.Errorf("error %q should be one line naming the address", err)
	}
}
