package ops

import (
	"context"
	"errors"
	"fmt"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/kdiag/kdiag/pkg/apis/kdiag/v1alpha1"
)

// ErrNotResumable is wrapped by Resume's error when the record can never be
// continued: it is gone, it already ended, or the Recorder writes nowhere.
// Other errors (the API server failed) may pass on a retry.
var ErrNotResumable = errors.New("operation record cannot be continued")

// Resume reopens the stored operation name, still Running, so that a
// process that restarted (the repair controller) continues the record a
// previous process started instead of leaving it Running forever: new
// steps are appended to it and Finish ends it. The operation is not
// counted again in the metrics' started total. A nil Recorder returns a
// nil Record (whose methods do nothing) and no error.
func (r *Recorder) Resume(ctx context.Context, name string) (*Record, error) {
	if r == nil {
		return nil, nil
	}
	if name == "" {
		return nil, fmt.Errorf("resume operation: no name: %w", ErrNotResumable)
	}
	if r.client == nil {
		return nil, fmt.Errorf("resume operation %s: the recorder has no cluster client: %w", name, ErrNotResumable)
	}
	rctx, cancel := writeContext(ctx)
	defer cancel()
	u, err := r.client.Get(rctx, name, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		return nil, fmt.Errorf("resume operation %s: not found: %w", name, ErrNotResumable)
	case err != nil:
		return nil, fmt.Errorf("resume operation %s: %s", name, describeWriteError(err))
	}
	rec := &Record{r: r, persisted: true}
	if err := fromUnstructured(u, &rec.op); err != nil {
		return nil, fmt.Errorf("resume operation %s: %w: %w", name, err, ErrNotResumable)
	}
	if p := rec.op.Status.Phase; p != v1alpha1.PhaseRunning {
		return nil, fmt.Errorf("resume operation %s: it already ended (%s): %w", name, p, ErrNotResumable)
	}
	return rec, nil
}

// Running returns the names of the stored operations of type typ on node
// (label kdiag.io/node) that are still Running, for a process that takes
// over to end those nobody will continue.
func (r *Recorder) Running(ctx context.Context, typ v1alpha1.OperationType, node string) ([]string, error) {
	if r == nil || r.client == nil {
		return nil, nil
	}
	sel := labels.Set{v1alpha1.LabelType: string(typ), v1alpha1.LabelNode: node}.String()
	rctx, cancel := writeContext(ctx)
	defer cancel()
	list, err := r.client.List(rctx, metav1.ListOptions{LabelSelector: sel})
	if err != nil {
		return nil, fmt.Errorf("list running %s operations of node %s: %s", typ, node, describeWriteError(err))
	}
	var names []string
	for _, u := range list.Items {
		var op v1alpha1.Operation
		if err := fromUnstructured(&u, &op); err != nil {
			continue // not ours to judge: a malformed record is left alone
		}
		if op.Status.Phase == v1alpha1.PhaseRunning {
			names = append(names, op.Name)
		}
	}
	return names, nil
}

// OpenStep returns the newest step of the record not ended yet (after
// Resume: the step that was open when the previous process stopped), nil
// if every step ended. Ending it with Done records its outcome.
func (rec *Record) OpenStep() *Step {
	if rec == nil {
		return nil
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	for i := len(rec.op.Status.Steps) - 1; i >= 0; i-- {
		if rec.op.Status.Steps[i].EndTime == nil {
			return &Step{rec: rec, i: i}
		}
	}
	return nil
}
