package repair

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"strings"
	"testing"

	"github.com/kdiag/kdiag/pkg/apis/kdiag/v1alpha1"
	"github.com/kdiag/kdiag/pkg/ops"
)

// newMemoryRecorder records in memory only (pkg/ops without a client).
func newMemoryRecorder(t *testing.T) *opsRecorder {
	t.Helper()
	rec, err := ops.NewRecorder(nil, ops.RecorderOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return &opsRecorder{rec: rec, log: slog.New(slog.NewTextHandler(io.Discard, nil)), open: map[string]*ops.Record{}, steps: map[string]*ops.Step{}}
}

func TestOpsRecorderAttempt(t *testing.T) {
	ctx := context.Background()
	o := newMemoryRecorder(t)
	o.Start(ctx, "n1", "node n1 NotReady")
	o.Step(ctx, "n1", "reboot n1", "provider exec")
	o.StepDone(ctx, "n1", errors.New("not Ready 5m after the reboot"), "")
	o.Step(ctx, "n1", "reimage n1", "provider exec")
	rec := o.record("n1")
	o.StepDone(ctx, "n1", nil, "Ready after the reimage")
	o.Finish(ctx, "n1", nil, "")
	op := rec.Operation()
	if op.Spec.Type != v1alpha1.TypeRepair || op.Spec.Target.Name != "n1" || op.Status.Phase != v1alpha1.PhaseSucceeded {
		t.Fatalf("want a Succeeded Repair of n1, got %+v", op)
	}
	if len(op.Status.Steps) != 2 || op.Status.Steps[0].Phase != v1alpha1.PhaseFailed || op.Status.Steps[1].Phase != v1alpha1.PhaseSucceeded {
		t.Errorf("steps: want reboot Failed then reimage Succeeded, got %+v", op.Status.Steps)
	}
	if o.record("n1") != nil {
		t.Error("the record is still open after Finish")
	}
}

// A controller restarted mid-attempt has no open record: the rest of the
// attempt goes into a new one that says so.
func TestOpsRecorderAfterRestart(t *testing.T) {
	ctx := context.Background()
	o := newMemoryRecorder(t)
	o.StepDone(ctx, "n1", nil, "Ready after the reboot")
	rec := o.record("n1")
	o.Finish(ctx, "n1", nil, "")
	op := rec.Operation()
	if !strings.Contains(op.Spec.Reason, "controller restarted") {
		t.Errorf("reason: want it to say the controller restarted, got %q", op.Spec.Reason)
	}
	if len(op.Status.Steps) != 1 || op.Status.Steps[0].Name != "wait for Ready" || op.Status.Phase != v1alpha1.PhaseSucceeded {
		t.Errorf("want one Succeeded step 'wait for Ready', got %+v", op.Status)
	}
}

func TestOpsRecorderNodeGone(t *testing.T) {
	ctx := context.Background()
	o := newMemoryRecorder(t)
	o.NodeGone(ctx, "n1") // nothing open: nothing recorded
	if o.record("n1") != nil {
		t.Fatal("NodeGone opened a record")
	}
	o.Start(ctx, "n1", "node n1 NotReady")
	o.Step(ctx, "n1", "redeploy n1", "provider clusterapi")
	rec := o.record("n1")
	o.NodeGone(ctx, "n1")
	if op := rec.Operation(); op.Status.Phase != v1alpha1.PhaseSucceeded || op.Status.Steps[0].Message != "the node was deleted" {
		t.Errorf("want the redeploy Succeeded with 'the node was deleted', got %+v", op.Status)
	}
	if o.record("n1") != nil {
		t.Error("the record is still open after NodeGone")
	}
}
