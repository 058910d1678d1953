package ops_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	rbacv1 "k8s.io/api/rbac/v1"
	apiextensionsclient "k8s.io/apiextensions-apiserver/pkg/client/clientset/clientset"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"

	"github.com/kdiag/kdiag/pkg/apis/kdiag/v1alpha1"
	"github.com/kdiag/kdiag/pkg/lab/labtest"
	"github.com/kdiag/kdiag/pkg/ops"
)

func TestMain(m *testing.M) {
	labtest.Main(m, labtest.Options{Nodes: 2})
}

// removeCRD deletes the Operation CRD and waits until operations are no
// longer served, so that a test sees a cluster without it whatever ran
// before.
func removeCRD(t *testing.T, ctx context.Context, c *apiextensionsclient.Clientset, dyn dynamic.Interface) {
	t.Helper()
	err := c.ApiextensionsV1().CustomResourceDefinitions().Delete(ctx, "operations.kdiag.io", metav1.DeleteOptions{})
	if err != nil && !apierrors.IsNotFound(err) {
		t.Fatalf("delete CRD: %v", err)
	}
	labtest.WaitFor(t, ctx, "operations.kdiag.io no longer served", func(ctx context.Context) (bool, error) {
		_, err := dyn.Resource(v1alpha1.OperationGVR()).List(ctx, metav1.ListOptions{})
		return apierrors.IsNotFound(err), nil
	})
}

// TestIntegrationRecorder: without the CRD recording degrades to one
// warning line and the operation goes on; EnsureCRD installs it (twice is
// fine); then a full record is written and read back.
func TestIntegrationRecorder(t *testing.T) {
	c := labtest.Cluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cfg := c.RESTConfig()
	dyn := dynamic.NewForConfigOrDie(cfg)
	removeCRD(t, ctx, apiextensionsclient.NewForConfigOrDie(cfg), dyn)

	// No CRD: one warning, in-memory record, metrics still counted.
	var warn bytes.Buffer
	reg := prometheus.NewRegistry()
	m := ops.NewMetrics(reg)
	r, err := ops.NewRecorder(cfg, ops.RecorderOptions{Initiator: "test", Warn: &warn, Metrics: m})
	if err != nil {
		t.Fatal(err)
	}
	rec, err := r.Start(ctx, v1alpha1.Operation{Spec: v1alpha1.OperationSpec{Type: v1alpha1.TypeDrain, Target: v1alpha1.OperationTarget{Nodes: []string{"lab-node-1"}}}})
	if err != nil {
		t.Fatalf("Start without the CRD: %v, want a warning, not an error", err)
	}
	rec.Step(ctx, "cordon lab-node-1", "").Done(ctx, nil, "")
	_ = rec.Finish(ctx, errors.New("boom"), "a hint")
	if rec.Persisted() {
		t.Error("record persisted without a CRD")
	}
	if got := strings.Count(warn.String(), "\n"); got != 1 || !strings.Contains(warn.String(), "Operation CRD (operations.kdiag.io) is not installed") {
		t.Errorf("warning without the CRD = %q, want exactly one line saying the CRD is not installed", warn.String())
	}
	if op := rec.Operation(); op.Status.Phase != v1alpha1.PhaseFailed || len(op.Status.Steps) != 1 || op.Status.Hint != "a hint" {
		t.Errorf("in-memory record = %+v, want Failed with 1 step and the hint", op.Status)
	}
	if v := metricValue(t, reg, "kdiag_operations_total", map[string]string{"type": "Drain", "result": "failed"}); v != 1 {
		t.Errorf("kdiag_operations_total{Drain,failed} = %v, want 1", v)
	}
	if v := metricValue(t, reg, "kdiag_operation_record_failures_total", map[string]string{"reason": "crd_missing"}); v < 1 {
		t.Errorf("kdiag_operation_record_failures_total{crd_missing} = %v, want >= 1", v)
	}

	for i := 0; i < 2; i++ {
		if err := ops.EnsureCRD(ctx, cfg); err != nil {
			t.Fatalf("EnsureCRD (call %d): %v", i+1, err)
		}
	}

	// A full record, read back from the API server.
	warn.Reset()
	r, _ = ops.NewRecorder(cfg, ops.RecorderOptions{Initiator: "kdiag test", Warn: &warn})
	rec, err = r.Start(ctx, v1alpha1.Operation{Spec: v1alpha1.OperationSpec{Type: v1alpha1.TypeDrain, Target: v1alpha1.OperationTarget{Name: "agentpool=np1", Selector: "agentpool=np1", Nodes: []string{"lab-node-1", "lab-node-2"}}}})
	if err != nil || !rec.Persisted() {
		t.Fatalf("Start with the CRD: %v (persisted %v, warning %q)", err, rec.Persisted(), warn.String())
	}
	name := rec.Operation().Name
	if !strings.HasPrefix(name, "drain-agentpool-np1-") {
		t.Errorf("name %q, want drain-agentpool-np1-<suffix>", name)
	}
	s := rec.Step(ctx, "cordon lab-node-1", "")
	// Someone else touches the object: the next write must retry on the
	// conflict and keep both.
	if _, err := dyn.Resource(v1alpha1.OperationGVR()).Patch(ctx, name, "application/merge-patch+json", []byte(`{"metadata":{"annotations":{"other":"x"}}}`), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	s.Done(ctx, nil, "cordoned")
	rec.Step(ctx, "evict pod shop/nginx-1", "")
	_ = rec.Finish(ctx, errors.New("drain timed out"), "scale deployment/nginx to 2")
	if !rec.Persisted() || warn.Len() > 0 {
		t.Fatalf("record lost after a conflict: persisted %v, warning %q", rec.Persisted(), warn.String())
	}
	u, err := dyn.Resource(v1alpha1.OperationGVR()).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var got v1alpha1.Operation
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &got); err != nil {
		t.Fatal(err)
	}
	st := got.Status
	if st.Phase != v1alpha1.PhaseFailed || st.Error != "drain timed out" || st.Hint != "scale deployment/nginx to 2" || st.EndTime == nil || len(st.Steps) != 2 ||
		st.Steps[0].Phase != v1alpha1.PhaseSucceeded || st.Steps[0].Message != "cordoned" || st.Steps[1].Phase != v1alpha1.PhaseFailed {
		t.Errorf("stored status = %+v, want Failed, error, hint, end time, cordon Succeeded, eviction Failed", st)
	}
	if got.Annotations["other"] != "x" || got.Labels[v1alpha1.LabelType] != "Drain" || got.Spec.Initiator != "kdiag test" {
		t.Errorf("stored metadata/spec = %v %v %+v", got.Annotations, got.Labels, got.Spec)
	}
}

// TestIntegrationCRDRoundTrip: an Operation with every field set comes
// back from the API server unchanged. The CRD's structural schema prunes
// unknown fields, so a Go field missing from the manifest (or a changed
// JSON name) fails here.
func TestIntegrationCRDRoundTrip(t *testing.T) {
	c := labtest.Cluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := ops.EnsureCRD(ctx, c.RESTConfig()); err != nil {
		t.Fatal(err)
	}
	dyn := dynamic.NewForConfigOrDie(c.RESTConfig())
	t0 := metav1.NewTime(time.Date(2026, 11, 28, 10, 0, 0, 0, time.UTC))
	t1 := metav1.NewTime(t0.Add(time.Minute))
	want := v1alpha1.Operation{
		TypeMeta:   metav1.TypeMeta{APIVersion: "kdiag.io/v1alpha1", Kind: "Operation"},
		ObjectMeta: metav1.ObjectMeta{Name: "roundtrip", Labels: map[string]string{"a": "b"}},
		Spec: v1alpha1.OperationSpec{Type: v1alpha1.TypeFix, Initiator: "me", Reason: "why",
			Target: v1alpha1.OperationTarget{Name: "deployment/shop/nginx", Nodes: []string{"n1", "n2"}, Selector: "agentpool=np1",
				Object: &v1alpha1.ObjectReference{APIVersion: "apps/v1", Kind: "Deployment", Namespace: "shop", Name: "nginx"}}},
		Status: v1alpha1.OperationStatus{Phase: v1alpha1.PhaseFailed, StartTime: &t0, EndTime: &t1, CurrentStep: "s",
			Steps: []v1alpha1.OperationStep{{Name: "s", Phase: v1alpha1.PhaseFailed, StartTime: &t0, EndTime: &t1, Message: "m"}},
			Error: "e", Hint: "h"},
	}
	assertAllFieldsSet(t, reflect.ValueOf(want.Spec), "spec")
	assertAllFieldsSet(t, reflect.ValueOf(want.Status), "status")
	obj, err := runtime.DefaultUnstructuredConverter.ToUnstructured(&want)
	if err != nil {
		t.Fatal(err)
	}
	res := dyn.Resource(v1alpha1.OperationGVR())
	_ = res.Delete(ctx, "roundtrip", metav1.DeleteOptions{})
	u, err := res.Create(ctx, &unstructured.Unstructured{Object: obj}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create an Operation with every field: %v", err)
	}
	u, err = res.Get(ctx, u.GetName(), metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var got v1alpha1.Operation
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &got); err != nil {
		t.Fatal(err)
	}
	for _, part := range []struct {
		name      string
		got, want any
	}{{"spec", got.Spec, want.Spec}, {"status", got.Status, want.Status}} {
		g, _ := json.Marshal(part.got)
		w, _ := json.Marshal(part.want)
		if string(g) != string(w) {
			t.Errorf("round trip changed the %s (manifest and Go types disagree):\n got %s\nwant %s", part.name, g, w)
		}
	}
	// The schema rejects a phase outside the enum.
	bad := u.DeepCopy()
	_ = unstructured.SetNestedField(bad.Object, "Exploded", "status", "phase")
	if _, err := res.Update(ctx, bad, metav1.UpdateOptions{}); !apierrors.IsInvalid(err) {
		t.Errorf("status.phase=Exploded accepted (%v), want Invalid", err)
	}
}

// assertAllFieldsSet fails for a zero field of v, so that a field added
// to the types without being added to the round trip is noticed.
func assertAllFieldsSet(t *testing.T, v reflect.Value, path string) {
	t.Helper()
	for i := 0; i < v.NumField(); i++ {
		f := v.Field(i)
		p := path + "." + v.Type().Field(i).Name
		if f.IsZero() {
			t.Errorf("round trip leaves %s unset; set it", p)
			continue
		}
		if f.Kind() == reflect.Struct && f.Type().PkgPath() == reflect.TypeOf(v1alpha1.OperationSpec{}).PkgPath() {
			assertAllFieldsSet(t, f, p)
		}
	}
}

// TestIntegrationRecorderForbidden: an account that may not write
// Operations gets one warning line; the operation goes on.
func TestIntegrationRecorderForbidden(t *testing.T) {
	c := labtest.Cluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := ops.EnsureCRD(ctx, c.RESTConfig()); err != nil {
		t.Fatal(err)
	}
	cs := kubernetes.NewForConfigOrDie(c.RESTConfig())
	role := &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: "ops-read-only"}, Rules: []rbacv1.PolicyRule{
		{APIGroups: []string{"kdiag.io"}, Resources: []string{"operations"}, Verbs: []string{"get", "list"}}}}
	if _, err := cs.RbacV1().ClusterRoles().Create(ctx, role, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	bind := &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "ops-read-only"},
		RoleRef:  rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: "ops-read-only"},
		Subjects: []rbacv1.Subject{{Kind: "User", APIGroup: "rbac.authorization.k8s.io", Name: "reader"}}}
	if _, err := cs.RbacV1().ClusterRoleBindings().Create(ctx, bind, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	cfg, err := c.ClientCertConfig("reader", nil, time.Now().Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	var warn bytes.Buffer
	r, err := ops.NewRecorder(cfg, ops.RecorderOptions{Warn: &warn})
	if err != nil {
		t.Fatal(err)
	}
	rec, err := r.Start(ctx, v1alpha1.Operation{Spec: v1alpha1.OperationSpec{Type: v1alpha1.TypeRepair, Target: v1alpha1.OperationTarget{Nodes: []string{"lab-node-2"}}}})
	if err != nil {
		t.Fatalf("Start when forbidden: %v, want a warning, not an error", err)
	}
	rec.Step(ctx, "reboot", "")
	_ = rec.Finish(ctx, nil, "")
	if rec.Persisted() || strings.Count(warn.String(), "\n") != 1 || !strings.Contains(warn.String(), "may not create or update operations.kdiag.io (RBAC)") {
		t.Errorf("forbidden: persisted %v, warning %q; want one line naming RBAC", rec.Persisted(), warn.String())
	}
	if op := rec.Operation(); op.Status.Phase != v1alpha1.PhaseSucceeded {
		t.Errorf("in-memory phase %q, want Succeeded", op.Status.Phase)
	}
}

// metricValue returns the value of one counter or gauge series of g.
func metricValue(t *testing.T, g prometheus.Gatherer, name string, labels map[string]string) float64 {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	metrics:
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if labels[l.GetName()] != l.GetValue() {
					continue metrics
				}
			}
			if m.Counter != nil {
				return m.GetCounter().GetValue()
			}
			return m.GetGauge().GetValue()
		}
	}
	t.Fatalf("no series %s%v", name, labels)
	return 0
}

func runtimeToUnstructured(op *v1alpha1.Operation) (*unstructured.Unstructured, error) {
	m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(op)
	if err != nil {
		return nil, err
	}
	return &unstructured.Unstructured{Object: m}, nil
}
