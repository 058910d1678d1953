package repair

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/client-go/rest"
	crmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"

	"github.com/kdiag/kdiag/pkg/apis/kdiag/v1alpha1"
	"github.com/kdiag/kdiag/pkg/ops"
)

// OperationRecorder records each repair attempt of a node as one Operation
// (type Repair): Start when the attempt starts, a step for each drain and
// action (open until the node is Ready or the step failed), Finish when
// the node is Ready or the attempt failed. A node has at most one open
// record. Recording never stops a repair: failures are logged.
type OperationRecorder interface {
	// Start records a new Running operation on the node and returns its
	// object name ("" when it could not be written).
	Start(ctx context.Context, node, reason string) string
	// Resume makes the stored record name (from the node's repair state)
	// the node's open record again after a controller restart, and returns
	// the name of the record open now: name, or a new record's when name
	// could not be continued (gone, ended, unreadable; the new record's
	// reason says why). It does nothing when the node already has an open
	// record.
	Resume(ctx context.Context, node, name string) string
	// Abandon ends the stored record name Failed with cause when it is
	// still Running and is not the node's open record: an attempt that
	// ended without its record being finished (a controller restarted in
	// between, or the final write failed), so that none stays Running
	// forever.
	Abandon(ctx context.Context, node, name string, cause error)
	// Step opens a step of the node's operation.
	Step(ctx context.Context, node, name, message string)
	// StepDone ends the newest open step: Succeeded when err is nil.
	StepDone(ctx context.Context, node string, err error, message string)
	// Finish ends the node's operation: Succeeded when err is nil, else
	// Failed with err and a troubleshooting hint.
	Finish(ctx context.Context, node string, err error, hint string)
	// NodeGone ends the node's open operation, if any, as Succeeded: the
	// Node was deleted, as a redeploy through Cluster API does (the
	// replacement joins under another name).
	NodeGone(ctx context.Context, node string)
}

// ops returns the recorder, or one that records nothing.
func (r *Reconciler) ops() OperationRecorder {
	if r.Ops == nil {
		return noOps{}
	}
	return r.Ops
}

type noOps struct{}

func (noOps) Start(context.Context, string, string) string    { return "" }
func (noOps) Resume(_ context.Context, _, name string) string { return name }
func (noOps) Abandon(context.Context, string, string, error)  {}
func (noOps) Step(context.Context, string, string, string)    {}
func (noOps) StepDone(context.Context, string, error, string) {}
func (noOps) Finish(context.Context, string, error, string)   {}
func (noOps) NodeGone(context.Context, string)                {}

// opsRecorder records through pkg/ops. It keeps each node's open record in
// memory; a controller restarted mid-attempt reopens the record named in
// the node's repair state (Resume), or, when it cannot be continued, opens
// a new one whose reason says why. It needs only get, create and update on
// operations (deploy/repair/rbac.yaml), no list.
type opsRecorder struct {
	rec *ops.Recorder
	log *slog.Logger

	mu    sync.Mutex
	open  map[string]*ops.Record
	steps map[string]*ops.Step
}

// NewOperationRecorder returns an OperationRecorder writing Operation
// objects through cfg, with pkg/ops's operation metrics registered in
// controller-runtime's registry (next to the repair metrics). When the
// Operation CRD is missing, pkg/ops logs one warning and repairs go on
// unrecorded.
func NewOperationRecorder(cfg *rest.Config, log *slog.Logger) (OperationRecorder, error) {
	if log == nil {
		log = slog.Default()
	}
	m := ops.NewMetrics(onceRegisterer{crmetrics.Registry})
	rec, err := ops.NewRecorder(cfg, ops.RecorderOptions{Initiator: "kdiag repair controller", Metrics: m})
	if err != nil {
		return nil, fmt.Errorf("repair: %w", err)
	}
	return &opsRecorder{rec: rec, log: log, open: map[string]*ops.Record{}, steps: map[string]*ops.Step{}}, nil
}

// onceRegisterer lets a second recorder in one process (the tests start
// several controllers) register pkg/ops's metrics: ops.NewMetrics panics on
// a duplicate, which this registerer ignores (the second recorder's counts
// are then not exported; the first one's still are).
type onceRegisterer struct{ prometheus.Registerer }

func (o onceRegisterer) Register(c prometheus.Collector) error {
	err := o.Registerer.Register(c)
	var are prometheus.AlreadyRegisteredError
	if errors.As(err, &are) {
		return nil
	}
	return err
}

func (o onceRegisterer) MustRegister(cs ...prometheus.Collector) {
	for _, c := range cs {
		if err := o.Register(c); err != nil {
			panic(err)
		}
	}
}

func (o *opsRecorder) Start(ctx context.Context, node, reason string) string {
	o.mu.Lock()
	defer o.mu.Unlock()
	if prev := o.open[node]; prev != nil {
		// Ended elsewhere (the node was deleted by a redeploy).
		prev.Finish(ctx, nil, "")
	}
	return o.startLocked(ctx, node, reason)
}

func (o *opsRecorder) Resume(ctx context.Context, node, name string) string {
	o.mu.Lock()
	defer o.mu.Unlock()
	if rec := o.open[node]; rec != nil {
		return rec.Operation().Name
	}
	rec, err := o.rec.Resume(ctx, name)
	if err == nil && rec != nil {
		o.open[node] = rec
		o.steps[node] = rec.OpenStep()
		if o.steps[node] == nil {
			delete(o.steps, node)
		}
		o.log.Info("repair operation continued after a controller restart", "node", node, "operation", name)
		return name
	}
	reason := "continues a repair attempt started before the controller restarted"
	if name != "" {
		reason += fmt.Sprintf("; its record %s could not be continued: %v", name, err)
		o.log.Warn("repair operation could not be continued after a controller restart; recording the rest of the attempt in a new one", "node", node, "operation", name, "error", err)
	}
	return o.startLocked(ctx, node, reason)
}

func (o *opsRecorder) Abandon(ctx context.Context, node, name string, cause error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if name == "" || (o.open[node] != nil && o.open[node].Operation().Name == name) {
		return
	}
	rec, err := o.rec.Resume(ctx, name)
	if err != nil {
		if !errors.Is(err, ops.ErrNotResumable) {
			o.log.Warn("end a repair operation left Running", "node", node, "operation", name, "error", err)
		}
		return // gone or ended: nothing stays Running
	}
	_ = rec.Finish(ctx, cause, "the repair controller was restarted or could not write this record when the attempt ended: see the node's newer Repair operations")
	o.log.Info("repair operation left Running ended", "node", node, "operation", name, "error", cause)
}

func (o *opsRecorder) startLocked(ctx context.Context, node, reason string) string {
	rec, err := o.rec.Start(ctx, v1alpha1.Operation{Spec: v1alpha1.OperationSpec{
		Type:   v1alpha1.TypeRepair,
		Target: v1alpha1.OperationTarget{Name: node, Nodes: []string{node}},
		Reason: reason,
	}})
	if err != nil {
		o.log.Warn("record the repair operation", "node", node, "error", err)
		return ""
	}
	o.open[node] = rec
	delete(o.steps, node)
	return rec.Operation().Name
}

// record returns the node's open record, opening one for an attempt a
// previous controller started.
func (o *opsRecorder) recordLocked(ctx context.Context, node string) *ops.Record {
	if rec := o.open[node]; rec != nil {
		return rec
	}
	o.startLocked(ctx, node, "continues a repair attempt started before the controller restarted")
	return o.open[node]
}

// record returns the node's open record, nil if none.
func (o *opsRecorder) record(node string) *ops.Record {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.open[node]
}

func (o *opsRecorder) Step(ctx context.Context, node, name, message string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.steps[node] = o.recordLocked(ctx, node).Step(ctx, name, message)
}

func (o *opsRecorder) StepDone(ctx context.Context, node string, err error, message string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	st := o.steps[node]
	if st == nil {
		// The step was opened by a previous controller: record its end as
		// a step of its own.
		st = o.recordLocked(ctx, node).Step(ctx, "wait for Ready", "")
	}
	st.Done(ctx, err, message)
	delete(o.steps, node)
}

func (o *opsRecorder) Finish(ctx context.Context, node string, err error, hint string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	_ = o.recordLocked(ctx, node).Finish(ctx, err, hint)
	delete(o.open, node)
	delete(o.steps, node)
}

func (o *opsRecorder) NodeGone(ctx context.Context, node string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	rec := o.open[node]
	if rec == nil {
		return
	}
	if st := o.steps[node]; st != nil {
		st.Done(ctx, nil, "the node was deleted")
	}
	_ = rec.Finish(ctx, nil, "")
	delete(o.open, node)
	delete(o.steps, node)
}
