package fix

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/dynamic"

	"github.com/kdiag/kdiag/pkg/apis/kdiag/v1alpha1"
	"github.com/kdiag/kdiag/pkg/findings"
	"github.com/kdiag/kdiag/pkg/ops"
)

// FieldManager is the field manager of every applied fix.
const FieldManager = "kdiag"

// ErrCancelled is returned when the user declined the confirmation.
var ErrCancelled = errors.New("cancelled at the confirmation prompt; nothing was changed")

// RefusedError says that the API server refused the fix's dry run at apply
// time, so the fix was not applied.
type RefusedError struct {
	// Reason is the server's answer, on one line.
	Reason string
	// Stale is true when a JSON patch "test" operation failed: the object
	// changed since the fix was computed.
	Stale bool
}

// Error implements error.
func (e *RefusedError) Error() string {
	if e.Stale {
		return "fix refused: the object changed since the problem was read (a JSON patch test operation failed); run the check again for a fresh fix: " + e.Reason
	}
	return "fix refused: the server-side dry run failed: " + e.Reason
}

// Options tune Apply.
type Options struct {
	// DryRunOnly verifies without applying (--dry-run=server).
	DryRunOnly bool
	// Confirm, if set, is asked after a passing dry run, with the plan
	// (diff and dry-run result) filled in; false cancels. Nil applies
	// without asking (--yes).
	Confirm func(ctx context.Context, plan *Result) (bool, error)
	// Wait, if positive, reruns the check until the problem is gone, at
	// most this long.
	Wait time.Duration
	// WaitInterval is the pause between rechecks; 0 means 2s.
	WaitInterval time.Duration
}

// Applier applies fixes through a dynamic client and records them.
type Applier struct {
	Client dynamic.Interface
	// Recorder writes the Operation; nil records nothing.
	Recorder *ops.Recorder
}

// Change is one field the fix changes, as the server's dry run shows it.
type Change struct {
	Path   string `json:"path"`
	Before string `json:"before,omitempty"`
	After  string `json:"after,omitempty"`
}

// RecheckResult says whether the problem was gone after the fix.
type RecheckResult struct {
	Gone bool `json:"gone"`
	// After is how long it took to see it gone, or how long was waited.
	After   string `json:"after"`
	Message string `json:"message"`
}

// Result is what Apply did.
type Result struct {
	// Source, Check, Title and Object say which problem the fix is for.
	Source string             `json:"source"`
	Check  string             `json:"check"`
	Title  string             `json:"title"`
	Object findings.ObjectRef `json:"object"`
	// Number is the fix's --remediation number; Fix is the fix.
	Number int                  `json:"number"`
	Fix    findings.Remediation `json:"fix"`
	// Target names the patched object as kind/namespace/name.
	Target string `json:"target"`
	// Diff lists the fields the server said would change; DiffNote says
	// why it is missing when it is.
	Diff     []Change        `json:"diff"`
	DiffNote string          `json:"diffNote,omitempty"`
	DryRun   findings.DryRun `json:"dryRun"`
	Applied  bool            `json:"applied"`
	// Operation is the name of the Operation record, if it was written.
	Operation string         `json:"operation,omitempty"`
	Recheck   *RecheckResult `json:"recheck,omitempty"`
	Error     string         `json:"error,omitempty"`
}

// Apply verifies c's PATCH with a server-side dry run, asks for
// confirmation, applies it and records an Operation of type Fix with the
// steps "dry-run" and "apply" (and "recheck" with Options.Wait). A failed
// dry run is a *RefusedError and is recorded Failed; a dry-run-only run
// records nothing. The Result is filled in as far as Apply got, also on error.
func (a *Applier) Apply(ctx context.Context, c Candidate, o Options) (*Result, error) {
	act := c.Fix.Action
	if act == nil {
		return nil, fmt.Errorf("%s: not a mutating fix", c.Fix.Command)
	}
	res := &Result{Source: c.Source, Check: c.Check, Title: c.Title, Object: c.Object, Number: c.Number, Fix: c.Fix, Diff: []Change{}}
	// The dry run that counts is this one (Result.DryRun), not the report's.
	res.Fix.DryRun = nil
	before, kind, err := a.get(ctx, act)
	res.Target = targetName(kind, act)
	if err != nil {
		res.DiffNote = "cannot read the object: " + oneLine(err)
	}
	after, dryErr := a.patch(ctx, act, true)
	res.DryRun = outcome(dryErr, act, before)
	if dryErr == nil && before != nil {
		res.Diff = Diff(before.Object, after.Object)
	}
	if o.DryRunOnly {
		return res, a.fail(res, refused(dryErr, act, before))
	}
	confirmed := false
	if dryErr == nil && o.Confirm != nil {
		ok, err := o.Confirm(ctx, res)
		if err != nil {
			return res, a.fail(res, fmt.Errorf("confirmation: %w", err))
		}
		if !ok {
			return res, a.fail(res, ErrCancelled)
		}
		confirmed = true
	}

	rec, err := a.Recorder.Start(ctx, v1alpha1.Operation{Spec: v1alpha1.OperationSpec{
		Type: v1alpha1.TypeFix,
		Target: v1alpha1.OperationTarget{Name: res.Target, Object: &v1alpha1.ObjectReference{
			APIVersion: act.GVR().GroupVersion().String(), Kind: kind, Namespace: act.Namespace, Name: act.Name}},
		Reason: fmt.Sprintf("%s fix %d for %s on %s: %s", c.Source, c.Number, c.Check, c.Object, c.Title),
	}})
	if err != nil {
		return res, a.fail(res, err)
	}
	defer func() {
		if rec.Persisted() {
			res.Operation = rec.Operation().Name
		}
	}()
	step := rec.Step(ctx, "dry-run", c.Fix.Command)
	if confirmed {
		// Time passed at the prompt: the recorded verification is the one
		// just before the apply.
		if now, _, err := a.get(ctx, act); err == nil {
			before = now
		}
		_, dryErr = a.patch(ctx, act, true)
		res.DryRun = outcome(dryErr, act, before)
	}
	if dryErr != nil {
		step.Done(ctx, dryErr, "refused: "+res.DryRun.Reason)
		err := refused(dryErr, act, before)
		return res, rec.Finish(ctx, a.fail(res, err), hintRefused(c, err))
	}
	step.Done(ctx, nil, "passed")

	step = rec.Step(ctx, "apply", fmt.Sprintf("PATCH %s (%s, field manager %s)", res.Target, act.PatchType, FieldManager))
	if _, err := a.patch(ctx, act, false); err != nil {
		err = fmt.Errorf("apply %s: %s", res.Target, oneLine(err))
		step.Done(ctx, err, "")
		return res, rec.Finish(ctx, a.fail(res, err), "the dry run passed but the PATCH failed: the object changed or admission differs between dry run and apply; run the check again")
	}
	res.Applied = true
	step.Done(ctx, nil, "patched "+res.Target)

	if o.Wait <= 0 || c.Recheck == nil {
		return res, rec.Finish(ctx, nil, hintDone(c))
	}
	step = rec.Step(ctx, "recheck", "rerun "+c.Source+" until "+c.Check+" is gone for "+c.Object.String())
	res.Recheck = recheck(ctx, c, o)
	if !res.Recheck.Gone {
		err := errors.New(res.Recheck.Message)
		step.Done(ctx, err, "")
		return res, rec.Finish(ctx, a.fail(res, err), "the fix was applied but the check still reports the problem: look at the object again (kdiag doctor --check "+c.Check+")")
	}
	step.Done(ctx, nil, res.Recheck.Message)
	return res, rec.Finish(ctx, nil, hintDone(c))
}

// fail notes err on the result and returns it.
func (a *Applier) fail(res *Result, err error) error {
	if err != nil {
		res.Error = oneLine(err)
	}
	return err
}

func recheck(ctx context.Context, c Candidate, o Options) *RecheckResult {
	interval := o.WaitInterval
	if interval <= 0 {
		interval = 2 * time.Second
	}
	start := time.Now()
	var lastErr error
	err := wait.PollUntilContextTimeout(ctx, interval, o.Wait, true, func(ctx context.Context) (bool, error) {
		present, err := c.Recheck(ctx)
		lastErr = err
		return err == nil && !present, nil
	})
	took := time.Since(start).Round(time.Second)
	gone, still := "no longer reports "+c.Check+" on "+c.Object.String(), "still reports "+c.Check+" on "+c.Object.String()
	if c.Source == SourceDrain {
		pod := c.Object.Namespace + "/" + c.Object.Name
		gone, still = "no longer stalls on pod "+pod, "still stalls on pod "+pod
	}
	if err == nil {
		return &RecheckResult{Gone: true, After: took.String(), Message: fmt.Sprintf("%s %s (after %s)", c.Source, gone, took)}
	}
	msg := fmt.Sprintf("%s %s after %s", c.Source, still, took)
	if lastErr != nil {
		msg = fmt.Sprintf("could not rerun %s within %s: %s", c.Source, took, oneLine(lastErr))
	}
	return &RecheckResult{After: took.String(), Message: msg}
}

func hintDone(c Candidate) string {
	h := "applied `" + c.Fix.Command + "`; if Helm or GitOps manages the object, change it there too or the next sync reverts it"
	if c.Source == SourceDrain {
		h += "; check the drain again with kdiag drain check"
	}
	return h
}

func hintRefused(c Candidate, err error) string {
	var r *RefusedError
	if errors.As(err, &r) && r.Stale {
		return "the object changed since " + c.Source + " read it: run it again for a fresh fix"
	}
	return "the server refused the fix (" + c.Check + ": " + c.Title + "): fix what it says, or ask for the rights the fix needs"
}

// refusal turns a failed dry run into a *RefusedError (nil stays nil).
// The API server answers a failed JSON patch "test" operation with a bare
// 422 ("the server rejected our request due to an error in our request"),
// so the test operations are checked against the object as read before
// (before may be nil) to say which value changed.
func refusal(err error, act *findings.Action, before *unstructured.Unstructured) *RefusedError {
	if err == nil {
		return nil
	}
	reason := oneLine(err)
	if apierrors.IsForbidden(err) {
		reason = "forbidden (RBAC): " + reason
	}
	if apierrors.IsInvalid(err) && before != nil {
		if changed := failedTests(act, before.Object); len(changed) > 0 {
			return &RefusedError{Reason: strings.Join(changed, "; "), Stale: true}
		}
	}
	return &RefusedError{Reason: reason}
}

// refused is refusal as an error, nil when there is none.
func refused(err error, act *findings.Action, before *unstructured.Unstructured) error {
	if r := refusal(err, act, before); r != nil {
		return r
	}
	return nil
}

func outcome(err error, act *findings.Action, before *unstructured.Unstructured) findings.DryRun {
	r := refusal(err, act, before)
	if r == nil {
		return findings.DryRun{Status: findings.DryRunPassed}
	}
	return findings.DryRun{Status: findings.DryRunFailed, Reason: r.Reason}
}

// patch sends the action's PATCH, as a dry run (dryRun=All) or for real:
// the same request either way.
func (a *Applier) patch(ctx context.Context, act *findings.Action, dryRun bool) (*unstructured.Unstructured, error) {
	opts := metav1.PatchOptions{FieldManager: FieldManager}
	if dryRun {
		opts.DryRun = []string{metav1.DryRunAll}
	}
	return a.resource(act).Patch(ctx, act.Name, act.PatchType, act.Patch, opts, subresources(act)...)
}

// get reads the object the action patches (its subresource, for the diff)
// and the object's kind.
func (a *Applier) get(ctx context.Context, act *findings.Action) (*unstructured.Unstructured, string, error) {
	ri := a.resource(act)
	obj, err := ri.Get(ctx, act.Name, metav1.GetOptions{})
	if err != nil {
		return nil, "", err
	}
	kind := obj.GetKind()
	if act.Subresource != "" {
		if obj, err = ri.Get(ctx, act.Name, metav1.GetOptions{}, act.Subresource); err != nil {
			return nil, kind, err
		}
	}
	return obj, kind, nil
}

func (a *Applier) resource(act *findings.Action) dynamic.ResourceInterface {
	ri := a.Client.Resource(act.GVR())
	if act.Namespace != "" {
		return ri.Namespace(act.Namespace)
	}
	return ri
}

func subresources(act *findings.Action) []string {
	if act.Subresource == "" {
		return nil
	}
	return []string{act.Subresource}
}

// targetName is kind/namespace/name (lower-case kind, as kubectl names
// objects); the resource stands in for the kind when it is unknown.
func targetName(kind string, act *findings.Action) string {
	k := strings.ToLower(kind)
	if k == "" {
		k = act.Resource
	}
	if act.Namespace == "" {
		return k + "/" + act.Name
	}
	return k + "/" + act.Namespace + "/" + act.Name
}

// PatchText renders the action's patch body for display (compact JSON).
func PatchText(act *findings.Action) string {
	if act == nil {
		return ""
	}
	var v any
	if err := json.Unmarshal(act.Patch, &v); err != nil {
		return string(act.Patch)
	}
	b, _ := json.Marshal(v)
	return string(b)
}

// patchTypeName is kubectl's --type name of a patch type.
func patchTypeName(t types.PatchType) string {
	switch t {
	case types.JSONPatchType:
		return "json"
	case types.MergePatchType:
		return "merge"
	case types.StrategicMergePatchType:
		return "strategic"
	case types.ApplyPatchType:
		return "apply"
	}
	return string(t)
}

func oneLine(err error) string { return strings.Join(strings.Fields(err.Error()), " ") }
