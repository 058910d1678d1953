package ops_test

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"

	"github.com/kdiag/kdiag/pkg/apis/kdiag/v1alpha1"
	"github.com/kdiag/kdiag/pkg/lab/labtest"
	"github.com/kdiag/kdiag/pkg/ops"
)

// TestIntegrationHistory: operations reconstructed from real events (a
// repair sequence, a cordon with a refused eviction of a pod on the node,
// then an uncordon) merge with a record; a record covering a
// reconstructed repair hides it; --node filters; a user who may read
// events but not Operations still gets the reconstructed history and a
// warning.
func TestIntegrationHistory(t *testing.T) {
	c := labtest.Cluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cfg := c.RESTConfig()
	cs := kubernetes.NewForConfigOrDie(cfg)
	dyn := dynamic.NewForConfigOrDie(cfg)
	if err := ops.EnsureCRD(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	const ns = "ops-history"
	labtest.CreateNamespace(t, ctx, cs, ns)
	spec := labtest.PauseSpec()
	spec.NodeName = "lab-node-1"
	labtest.CreatePod(t, ctx, cs, ns, "nginx-0", map[string]string{"app": "nginx"}, spec, false)

	now := time.Now().Truncate(time.Second)
	event := func(kind, evNS, name, typ, reason, msg string, ago time.Duration) {
		t.Helper()
		ts := metav1.NewTime(now.Add(-ago))
		e := &corev1.Event{ObjectMeta: metav1.ObjectMeta{GenerateName: name + ".", Namespace: evNS},
			InvolvedObject: corev1.ObjectReference{Kind: kind, Namespace: map[bool]string{true: "", false: evNS}[kind == "Node"], Name: name},
			Type:           typ, Reason: reason, Message: msg, FirstTimestamp: ts, LastTimestamp: ts, Count: 1}
		if _, err := cs.CoreV1().Events(evNS).Create(ctx, e, metav1.CreateOptions{}); err != nil {
			t.Fatalf("create event %s: %v", reason, err)
		}
	}
	event("Node", "default", "lab-node-1", "Normal", "NodeNotSchedulable", "Node lab-node-1 status is now: NodeNotSchedulable", 40*time.Minute)
	event("Pod", ns, "nginx-0", "Warning", "EvictionFailed", "Cannot evict pod as it would violate the pod's disruption budget. The disruption budget nginx needs 1 healthy pods and has 1 currently", 39*time.Minute)
	event("Node", "default", "lab-node-1", "Normal", "NodeSchedulable", "Node lab-node-1 status is now: NodeSchedulable", 30*time.Minute)
	event("Node", "default", "lab-node-2", "Normal", "NodeRebootStart", "rebooting", 20*time.Minute)
	event("Node", "default", "lab-node-2", "Normal", "NodeRebootEnd", "rebooted", 19*time.Minute)
	event("Node", "default", "lab-node-2", "Normal", "NodeRebootStart", "rebooting", 5*time.Minute)

	// A record of the second repair: its events must not show twice.
	r, _ := ops.NewRecorder(cfg, ops.RecorderOptions{Initiator: "kdiag repair"})
	rec, err := r.Start(ctx, v1alpha1.Operation{Spec: v1alpha1.OperationSpec{Type: v1alpha1.TypeRepair, Target: v1alpha1.OperationTarget{Nodes: []string{"lab-node-2"}}}})
	if err != nil || !rec.Persisted() {
		t.Fatalf("record the repair: %v", err)
	}
	// Its start is now, the events' 5 minutes ago: outside the ±1 minute
	// slack, so the recorder's clock is what matters. Backdate it as a
	// controller resuming a sequence would have started it.
	op := rec.Operation()
	op.Status.StartTime = &metav1.Time{Time: now.Add(-5*time.Minute - 10*time.Second)}
	if u, err := runtimeToUnstructured(&op); err != nil {
		t.Fatal(err)
	} else if _, err := dyn.Resource(v1alpha1.OperationGVR()).Update(ctx, u, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}

	h, err := ops.Read(ctx, dyn, cs, ops.Filter{})
	if err != nil {
		t.Fatal(err)
	}
	var table bytes.Buffer
	_ = ops.WriteTable(&table, h.Operations, true, time.Now())
	t.Logf("ops list -o wide:\n%s", table.String())
	if len(h.Warnings) > 0 {
		t.Errorf("warnings: %v", h.Warnings)
	}
	find := func(h *ops.History, typ v1alpha1.OperationType, node, source string) []v1alpha1.Operation {
		var out []v1alpha1.Operation
		for _, o := range h.Operations {
			if o.Spec.Type == typ && ops.Source(&o) == source && (ops.Filter{Node: node}).Match(&o) {
				out = append(out, o)
			}
		}
		return out
	}
	drains := find(h, v1alpha1.TypeDrain, "lab-node-1", ops.SourceEvents)
	if len(drains) != 1 {
		t.Fatalf("reconstructed drains of lab-node-1: %d, want 1", len(drains))
	}
	d := drains[0]
	var steps []string
	for _, s := range d.Status.Steps {
		steps = append(steps, s.Name+"="+string(s.Phase))
	}
	if got := strings.Join(steps, ","); got != "cordon lab-node-1=Succeeded,evict pod "+ns+"/nginx-0=Failed,uncordon lab-node-1=Succeeded" ||
		d.Status.Phase != v1alpha1.PhaseFailed || !strings.Contains(d.Status.Hint, "PodDisruptionBudget nginx refused the eviction") {
		t.Errorf("reconstructed drain: steps %s, phase %s, hint %q", got, d.Status.Phase, d.Status.Hint)
	}
	if got := find(h, v1alpha1.TypeRepair, "lab-node-2", ops.SourceEvents); len(got) != 1 || got[0].Status.Phase != v1alpha1.PhaseSucceeded {
		t.Errorf("reconstructed repairs of lab-node-2: %+v, want only the first (the second is recorded)", got)
	}
	if got := find(h, v1alpha1.TypeRepair, "lab-node-2", "record"); len(got) != 1 {
		t.Errorf("recorded repairs of lab-node-2: %d, want 1", len(got))
	}
	hn, err := ops.Read(ctx, dyn, cs, ops.Filter{Node: "lab-node-1"})
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range hn.Operations {
		if !(ops.Filter{Node: "lab-node-1"}).Match(&o) {
			t.Errorf("--node lab-node-1 returned %s on %v", o.Name, o.Spec.Target)
		}
	}

	// A user who may read events and pods but not Operations.
	role := &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: "events-reader"}, Rules: []rbacv1.PolicyRule{
		{APIGroups: []string{""}, Resources: []string{"events", "pods"}, Verbs: []string{"list"}}}}
	if _, err := cs.RbacV1().ClusterRoles().Create(ctx, role, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	bind := &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "events-reader"},
		RoleRef:  rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: "events-reader"},
		Subjects: []rbacv1.Subject{{Kind: "User", APIGroup: "rbac.authorization.k8s.io", Name: "events-reader"}}}
	if _, err := cs.RbacV1().ClusterRoleBindings().Create(ctx, bind, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	ucfg, err := c.ClientCertConfig("events-reader", nil, time.Now().Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	hu, err := ops.Read(ctx, dynamic.NewForConfigOrDie(ucfg), kubernetes.NewForConfigOrDie(ucfg), ops.Filter{})
	if err != nil {
		t.Fatalf("read as events-reader: %v", err)
	}
	if len(hu.Warnings) != 1 || !strings.Contains(hu.Warnings[0], "operation records not read: forbidden (RBAC)") {
		t.Errorf("warnings as events-reader = %q, want one saying the records are forbidden", hu.Warnings)
	}
	if len(find(hu, v1alpha1.TypeDrain, "lab-node-1", ops.SourceEvents)) != 1 || len(find(hu, v1alpha1.TypeRepair, "lab-node-2", ops.SourceEvents)) != 2 {
		t.Errorf("as events-reader the reconstructed history is incomplete:\n%+v", hu.Operations)
	}

	// Nobody: neither records nor events: a one-line error.
	ncfg, err := c.ClientCertConfig("nobody", nil, time.Now().Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ops.Read(ctx, dynamic.NewForConfigOrDie(ncfg), kubernetes.NewForConfigOrDie(ncfg), ops.Filter{}); err == nil ||
		!strings.Contains(err.Error(), "records: forbidden") || !strings.Contains(err.Error(), "events: forbidden") || strings.Contains(err.Error(), "\n") {
		t.Errorf("read with no rights: %v, want a one-line error naming both", err)
	}
}
