// Package ops records operations (drains, node repairs, applied fixes) as
// kdiag.io/v1alpha1 Operation objects, and reads them back together with
// the operations it can reconstruct from cluster events (`kdiag ops`).
//
// Recording never stands in the way of the operation it records: when the
// Operation CRD is not installed, when RBAC forbids writing Operations or
// the API server fails, the Recorder prints one warning line and the
// operation goes on unrecorded (its metrics are still counted).
package ops

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/util/retry"

	"github.com/kdiag/kdiag/pkg/apis/kdiag/v1alpha1"
)

// writeTimeout bounds each write of a record. Writes do not use the
// caller's context as is: a drain that timed out must still record that it
// failed, so the writes outlive its cancelled context, up to this bound.
const writeTimeout = 10 * time.Second

// RecorderOptions configure a Recorder.
type RecorderOptions struct {
	// Initiator is written to spec.initiator of operations that do not set
	// their own, e.g. "kdiag drain run".
	Initiator string
	// Metrics, if set, counts every operation, recorded or not.
	Metrics *Metrics
	// Warn receives the one-line warning when recording is impossible
	// (CRD missing, RBAC, API errors). Nil logs it with slog.Warn.
	Warn io.Writer
	// Now is the clock; nil means time.Now. Tests set it.
	Now func() time.Time
}

// Recorder writes Operation records. It is safe for concurrent use; a
// long-running process (the repair controller) shares one.
type Recorder struct {
	client dynamic.NamespaceableResourceInterface
	opts   RecorderOptions
	// warnOnce makes the "not recorded" warning one line per Recorder,
	// however many operations and steps fail to be written.
	warnOnce sync.Once
}

// NewRecorder returns a Recorder that writes through cfg. A nil cfg gives
// a Recorder that records nothing but still counts metrics.
func NewRecorder(cfg *rest.Config, opts RecorderOptions) (*Recorder, error) {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	r := &Recorder{opts: opts}
	if cfg != nil {
		dyn, err := dynamic.NewForConfig(cfg)
		if err != nil {
			return nil, fmt.Errorf("operation recorder client: %w", err)
		}
		r.client = dyn.Resource(v1alpha1.OperationGVR())
	}
	return r, nil
}

// NewRecorderForClient returns a Recorder writing through a dynamic client
// (tests use it with a client of restricted rights).
func NewRecorderForClient(dyn dynamic.Interface, opts RecorderOptions) *Recorder {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	return &Recorder{client: dyn.Resource(v1alpha1.OperationGVR()), opts: opts}
}

// Record is one operation being recorded. Its methods are safe for
// concurrent use, and all are no-ops on a nil *Record, so callers that
// record only sometimes can pass nil.
type Record struct {
	r  *Recorder
	mu sync.Mutex
	op v1alpha1.Operation
	// persisted is false once a write failed (or for a Recorder without a
	// client): the record then lives only in memory.
	persisted bool
	finished  bool
}

// Step is one step of a Record, open until Done.
type Step struct {
	rec *Record
	i   int
}

// Start begins recording op: it sets the phase to Running and the start
// time, names the object (generateName "<type>-<target>-") unless op has a
// name, labels it by type and node, and creates it. Only an invalid op (no
// type or target) is an error; a failed create degrades to a warning and
// an in-memory record. A nil Recorder records nothing and returns a nil
// Record, whose methods do nothing.
func (r *Recorder) Start(ctx context.Context, op v1alpha1.Operation) (*Record, error) {
	if r == nil {
		return nil, nil
	}
	if op.Spec.Type == "" {
		return nil, errors.New("operation record: spec.type is empty")
	}
	if op.Spec.Target.Name == "" {
		if len(op.Spec.Target.Nodes) == 0 {
			return nil, errors.New("operation record: spec.target names nothing")
		}
		op.Spec.Target.Name = strings.Join(op.Spec.Target.Nodes, ",")
	}
	if op.Spec.Initiator == "" {
		op.Spec.Initiator = r.opts.Initiator
	}
	now := metav1.NewTime(r.opts.Now().UTC().Truncate(time.Second))
	op.Status = v1alpha1.OperationStatus{Phase: v1alpha1.PhaseRunning, StartTime: &now}
	if op.Name == "" && op.GenerateName == "" {
		op.GenerateName = objectNamePrefix(op.Spec)
	}
	if op.Labels == nil {
		op.Labels = map[string]string{}
	}
	if len(validation.IsValidLabelValue(string(op.Spec.Type))) == 0 {
		op.Labels[v1alpha1.LabelType] = string(op.Spec.Type)
	}
	if n := op.Spec.Target.Nodes; len(n) == 1 && len(validation.IsValidLabelValue(n[0])) == 0 {
		op.Labels[v1alpha1.LabelNode] = n[0]
	}
	op.TypeMeta = metav1.TypeMeta{APIVersion: v1alpha1.GroupVersion().String(), Kind: "Operation"}
	rec := &Record{r: r, op: op}
	r.opts.Metrics.started(op.Spec.Type)
	if r.client == nil {
		return rec, nil
	}
	u, err := toUnstructured(&rec.op)
	if err != nil {
		return nil, err
	}
	wctx, cancel := writeContext(ctx)
	defer cancel()
	created, err := r.client.Create(wctx, u, metav1.CreateOptions{FieldManager: "kdiag"})
	if err != nil {
		r.warn(err)
		return rec, nil
	}
	if err := fromUnstructured(created, &rec.op); err != nil {
		r.warn(err)
		return rec, nil
	}
	rec.persisted = true
	return rec, nil
}

// objectNamePrefix is "<type>-<target>-" in DNS-1123 form, short enough
// for the API server's random suffix.
func objectNamePrefix(s v1alpha1.OperationSpec) string {
	target := s.Target.Name
	if len(s.Target.Nodes) == 1 {
		target = s.Target.Nodes[0]
	}
	var b strings.Builder
	for _, c := range strings.ToLower(string(s.Type) + "-" + target) {
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9', c == '-', c == '.':
			b.WriteRune(c)
		default:
			b.WriteByte('-')
		}
	}
	name := strings.Trim(b.String(), "-.")
	if len(name) > 52 {
		name = strings.TrimRight(name[:52], "-.")
	}
	if name == "" {
		name = "operation"
	}
	return name + "-"
}

// warn prints the one-line "not recorded" warning, once per Recorder.
func (r *Recorder) warn(err error) {
	r.opts.Metrics.recordFailed(err)
	r.warnOnce.Do(func() {
		msg := "operation not recorded: " + describeWriteError(err) + "; the operation itself goes on"
		if r.opts.Warn != nil {
			fmt.Fprintln(r.opts.Warn, "Warning: "+msg)
			return
		}
		slog.Warn(msg)
	})
}

// describeWriteError turns a failed write into the reason a user can act on.
func describeWriteError(err error) string {
	switch {
	case isCRDMissing(err):
		return "the Operation CRD (operations.kdiag.io) is not installed (kubectl apply -f deploy/crds/kdiag.io_operations.yaml)"
	case apierrors.IsForbidden(err):
		return "your account may not create or update operations.kdiag.io (RBAC): " + oneLine(err)
	default:
		return oneLine(err)
	}
}

// isCRDMissing reports whether err says that the API server does not serve
// operations.kdiag.io: a 404 on the collection itself (not on one named
// object), or a REST mapping miss.
func isCRDMissing(err error) bool {
	if meta.IsNoMatchError(err) {
		return true
	}
	var st apierrors.APIStatus
	if !errors.As(err, &st) || !apierrors.IsNotFound(err) {
		return false
	}
	d := st.Status().Details
	return d == nil || d.Name == ""
}

func oneLine(err error) string { return strings.Join(strings.Fields(err.Error()), " ") }

// Operation returns a copy of the record as it stands.
func (rec *Record) Operation() v1alpha1.Operation {
	if rec == nil {
		return v1alpha1.Operation{}
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	return *rec.op.DeepCopy()
}

// Persisted reports whether the record is in the cluster (every write so
// far succeeded).
func (rec *Record) Persisted() bool {
	if rec == nil {
		return false
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	return rec.persisted
}

// Step opens a step, Running, with an optional message, and writes it.
func (rec *Record) Step(ctx context.Context, name, message string) *Step {
	if rec == nil {
		return nil
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	now := rec.now()
	rec.op.Status.Steps = append(rec.op.Status.Steps, v1alpha1.OperationStep{Name: name, Phase: v1alpha1.PhaseRunning, StartTime: &now, Message: message})
	rec.op.Status.CurrentStep = name
	rec.writeLocked(ctx)
	return &Step{rec: rec, i: len(rec.op.Status.Steps) - 1}
}

// Done ends the step: Succeeded when err is nil, else Failed with err as
// its message unless message is set.
func (s *Step) Done(ctx context.Context, err error, message string) {
	if s == nil || s.rec == nil {
		return
	}
	rec := s.rec
	rec.mu.Lock()
	defer rec.mu.Unlock()
	st := &rec.op.Status.Steps[s.i]
	if st.EndTime != nil {
		return
	}
	now := rec.now()
	st.EndTime = &now
	st.Phase = v1alpha1.PhaseSucceeded
	if err != nil {
		st.Phase = v1alpha1.PhaseFailed
		if message == "" {
			message = oneLine(err)
		}
	}
	if message != "" {
		st.Message = message
	}
	rec.writeLocked(ctx)
}

// Finish ends the operation: Succeeded when err is nil, else Failed with
// err as the error and hint as the troubleshooting hint. Steps still open
// end with the operation's phase. It returns err unchanged, so that a
// caller can `return rec.Finish(ctx, err, hint)`. Calls after the first
// are ignored.
func (rec *Record) Finish(ctx context.Context, err error, hint string) error {
	if rec == nil {
		return err
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if rec.finished {
		return err
	}
	rec.finished = true
	now := rec.now()
	phase := v1alpha1.PhaseSucceeded
	if err != nil {
		phase = v1alpha1.PhaseFailed
		rec.op.Status.Error = oneLine(err)
	}
	rec.op.Status.Phase, rec.op.Status.EndTime, rec.op.Status.Hint = phase, &now, hint
	for i := range rec.op.Status.Steps {
		if st := &rec.op.Status.Steps[i]; st.EndTime == nil {
			st.EndTime, st.Phase = &now, phase
		}
	}
	var took time.Duration
	if s := rec.op.Status.StartTime; s != nil {
		took = rec.r.opts.Now().Sub(s.Time)
	}
	rec.r.opts.Metrics.finished(rec.op.Spec.Type, phase, took, now.Time)
	rec.writeLocked(ctx)
	return err
}

func (rec *Record) now() metav1.Time {
	return metav1.NewTime(rec.r.opts.Now().UTC().Truncate(time.Second))
}

// writeLocked writes the in-memory record over the stored one, retrying on
// conflicts (someone labelled or annotated it meanwhile): only this Record
// writes spec and status, so the newest metadata with our spec and status
// is the right result. After a failure the record stays in memory only.
func (rec *Record) writeLocked(ctx context.Context) {
	if !rec.persisted {
		return
	}
	c := rec.r.client
	wctx, cancel := writeContext(ctx)
	defer cancel()
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		u, err := toUnstructured(&rec.op)
		if err != nil {
			return err
		}
		updated, err := c.Update(wctx, u, metav1.UpdateOptions{FieldManager: "kdiag"})
		if apierrors.IsConflict(err) {
			cur, gerr := c.Get(wctx, rec.op.Name, metav1.GetOptions{})
			if gerr != nil {
				return gerr
			}
			var fresh v1alpha1.Operation
			if gerr := fromUnstructured(cur, &fresh); gerr != nil {
				return gerr
			}
			rec.op.ObjectMeta = fresh.ObjectMeta
			return err
		}
		if err != nil {
			return err
		}
		rec.op.ResourceVersion = updated.GetResourceVersion()
		return nil
	})
	if err != nil {
		rec.persisted = false
		rec.r.warn(fmt.Errorf("update operation %s: %w", rec.op.Name, err))
	}
}

func writeContext(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), writeTimeout)
}

func toUnstructured(op *v1alpha1.Operation) (*unstructured.Unstructured, error) {
	m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(op)
	if err != nil {
		return nil, fmt.Errorf("encode operation: %w", err)
	}
	return &unstructured.Unstructured{Object: m}, nil
}

func fromUnstructured(u *unstructured.Unstructured, op *v1alpha1.Operation) error {
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, op); err != nil {
		return fmt.Errorf("decode operation %s: %w", u.GetName(), err)
	}
	return nil
}
