package ops_test

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/dynamic"

	"github.com/kdiag/kdiag/pkg/apis/kdiag/v1alpha1"
	"github.com/kdiag/kdiag/pkg/lab/labtest"
	"github.com/kdiag/kdiag/pkg/ops"
)

// TestIntegrationResume: a record started by one Recorder (a process that
// then died with a step open) is listed as Running, reopened by a second
// Recorder, gets further steps and ends once; an ended or missing record
// cannot be resumed.
func TestIntegrationResume(t *testing.T) {
	c := labtest.Cluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cfg := c.RESTConfig()
	if err := ops.EnsureCRD(ctx, cfg); err != nil {
		t.Fatalf("install the CRD: %v", err)
	}
	const node = "lab-node-2"
	first, err := ops.NewRecorder(cfg, ops.RecorderOptions{Initiator: "first"})
	if err != nil {
		t.Fatal(err)
	}
	rec, err := first.Start(ctx, v1alpha1.Operation{Spec: v1alpha1.OperationSpec{Type: v1alpha1.TypeRepair, Target: v1alpha1.OperationTarget{Nodes: []string{node}}}})
	if err != nil || !rec.Persisted() {
		t.Fatalf("Start: %v (persisted %v)", err, rec.Persisted())
	}
	name := rec.Operation().Name
	rec.Step(ctx, "reboot "+node, "").Done(ctx, nil, "")
	rec.Step(ctx, "wait for Ready", "") // the process dies here

	second, err := ops.NewRecorder(cfg, ops.RecorderOptions{Initiator: "second"})
	if err != nil {
		t.Fatal(err)
	}
	running, err := second.Running(ctx, v1alpha1.TypeRepair, node)
	if err != nil || !slices.Contains(running, name) {
		t.Fatalf("Running(Repair, %s) = %v, %v; want it to list %s", node, running, err, name)
	}
	resumed, err := second.Resume(ctx, name)
	if err != nil {
		t.Fatalf("Resume(%s): %v", name, err)
	}
	resumed.OpenStep().Done(ctx, errors.New("not Ready after the reboot"), "")
	if st := resumed.OpenStep(); st != nil {
		t.Errorf("OpenStep after its Done: want nil, got %+v", st)
	}
	resumed.Step(ctx, "reimage "+node, "").Done(ctx, nil, "")
	if err := resumed.Finish(ctx, nil, ""); err != nil {
		t.Fatal(err)
	}

	u, err := dynamic.NewForConfigOrDie(cfg).Resource(v1alpha1.OperationGVR()).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("get %s: %v", name, err)
	}
	var op v1alpha1.Operation
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &op); err != nil {
		t.Fatal(err)
	}
	var steps []string
	for _, s := range op.Status.Steps {
		steps = append(steps, s.Name+"="+string(s.Phase))
	}
	want := []string{"reboot " + node + "=Succeeded", "wait for Ready=Failed", "reimage " + node + "=Succeeded"}
	if op.Status.Phase != v1alpha1.PhaseSucceeded || op.Status.EndTime == nil || !slices.Equal(steps, want) || op.Spec.Initiator != "first" {
		t.Errorf("resumed record: want Succeeded, ended, initiator first, steps %v; got %s (end %v), initiator %s, steps %v", want, op.Status.Phase, op.Status.EndTime, op.Spec.Initiator, steps)
	}
	if running, err := second.Running(ctx, v1alpha1.TypeRepair, node); err != nil || slices.Contains(running, name) {
		t.Errorf("after Finish, Running = %v, %v; want %s not listed", running, err, name)
	}

	for _, tc := range []struct{ what, name string }{{"an ended record", name}, {"a missing record", "repair-no-such-record"}, {"no name", ""}} {
		if _, err := second.Resume(ctx, tc.name); !errors.Is(err, ops.ErrNotResumable) {
			t.Errorf("Resume of %s: %v, want ErrNotResumable", tc.what, err)
		}
	}
	if rec, err := (*ops.Recorder)(nil).Resume(ctx, name); rec != nil || err != nil {
		t.Errorf("nil Recorder: Resume = %v, %v; want nil, nil", rec, err)
	}
}
