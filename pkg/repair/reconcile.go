package repair

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
)

// fieldManager is the field manager of every write of the controller.
const fieldManager = "kdiag-repair"

// Event reasons besides the AKS action reasons.
const (
	// ReasonHalted: more nodes than --max-unhealthy are unhealthy.
	ReasonHalted = "NodeRepairHalted"
	// ReasonGaveUp: every attempt of the sequence failed.
	ReasonGaveUp = "NodeRepairFailed"
	// ReasonSkipped: the node is unhealthy but a safety rail keeps the
	// controller away.
	ReasonSkipped = "NodeRepairSkipped"
	// ReasonInvalidState: the kdiag.io/repair-state annotation is not
	// valid JSON; the controller starts over.
	ReasonInvalidState = "NodeRepairStateInvalid"
)

// Drainer cordons and drains a node before a reimage or a redeploy.
type Drainer func(ctx context.Context, node string) error

// Reconciler is the repair state machine of one node, run by
// controller-runtime for every Node. Build it with NewReconciler.
type Reconciler struct {
	// Client lists Nodes from the cache and patches them.
	Client client.Client
	// Reader reads the Node and the Lease straight from the API server:
	// the state annotation must never be read stale, or a step could run
	// twice.
	Reader client.Reader
	// Events records Events on the Node.
	Events events.EventRecorder
	// Provider performs the actions.
	Provider Provider
	// Drain cordons and drains the node.
	Drain Drainer
	// Ops records every attempt as an Operation; nil records nothing.
	Ops OperationRecorder
	// Clock is the time source (a fake one in unit tests).
	Clock clock.PassiveClock
	// Log receives the controller's logs.
	Log *slog.Logger
	// Options are the policy and the safety rails.
	Options Options

	metrics *metrics

	// mu guards claims: the nodes this process has put in flight. The
	// cache may not show a state written a moment ago; the claims keep
	// two concurrent reconciles from exceeding --max-in-flight.
	mu     sync.Mutex
	claims map[string]bool
	// warned remembers the last skip reason per node, to log it once.
	warned map[string]string
	// waiting holds the unhealthy nodes held back by max-in-flight or
	// max-unhealthy; they are woken (through wake) when a node leaves
	// its sequence or becomes Ready, instead of at their next poll.
	waiting map[string]bool
	wake    chan event.TypedGenericEvent[*corev1.Node]
}

// Reconcile implements reconcile.Reconciler for one Node.
func (r *Reconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	now := r.Clock.Now()
	// The fleet comes from the informer cache and the node from the API
	// server, which is never behind the cache: counting the fleet first
	// means a node seen healed by the count is also seen healed below,
	// instead of a stale NotReady node being repaired because the count
	// already saw it Ready (and so dropped under --max-unhealthy).
	fleet, err := r.fleet(ctx, now)
	if err != nil {
		return ctrl.Result{}, err
	}
	node := &corev1.Node{}
	if err := r.Reader.Get(ctx, req.NamespacedName, node); err != nil {
		if apierrors.IsNotFound(err) {
			// A redeployed (deleted) node ends its sequence with it.
			r.ops().NodeGone(ctx, req.Name)
			r.release(req.Name)
			return ctrl.Result{}, nil
		}
		return ctrl.Result{}, fmt.Errorf("get node %s: %w", req.Name, err)
	}
	st, err := StateOf(node)
	if err != nil {
		if r.warnOnce(node.Name+"\x00state", err.Error()) {
			r.Log.Warn("invalid repair state; starting over", "node", node.Name, "error", err)
			r.event(node, corev1.EventTypeWarning, ReasonInvalidState, "%v; starting over", err)
		}
		st = State{}
	} else {
		r.warnOnce(node.Name+"\x00state", "")
	}
	health := HealthOf(node)
	if health.Ready {
		return ctrl.Result{}, r.recovered(ctx, node, st, now)
	}
	unhealthy, left := health.Unhealthy(now, r.Options.UnhealthyAfter)
	if !unhealthy {
		if !health.Known {
			return ctrl.Result{}, nil
		}
		return ctrl.Result{RequeueAfter: left + time.Second}, nil
	}
	paused, err := r.paused(ctx)
	r.metrics.paused.Set(b2f(paused))
	if err != nil {
		return ctrl.Result{}, err
	}
	if paused {
		r.Log.Info("paused; node left alone", "node", node.Name)
		return ctrl.Result{RequeueAfter: r.Options.PollInterval}, nil
	}
	if limit := maxUnhealthyOf(r.Options.MaxUnhealthy, fleet.total); fleet.notReady > limit {
		r.wait(node.Name)
		r.Log.Warn("too many unhealthy nodes: every repair stopped", "notReady", fleet.notReady, "nodes", fleet.total, "maxUnhealthy", r.Options.MaxUnhealthy.String())
		r.event(node, corev1.EventTypeWarning, ReasonHalted, "%d of %d nodes are not Ready, more than --max-unhealthy=%s (%d): every repair is stopped, since this looks like a wider outage", fleet.notReady, fleet.total, r.Options.MaxUnhealthy.String(), limit)
		return ctrl.Result{RequeueAfter: r.Options.PollInterval}, nil
	}
	if why := SkipReason(node, r.Options.SkipTaints, st); why != "" {
		if r.warnOnce(node.Name, why) {
			r.Log.Info("unhealthy node skipped", "node", node.Name, "reason", why)
			r.event(node, corev1.EventTypeNormal, ReasonSkipped, "node is unhealthy but not repaired: %s", why)
		}
		return ctrl.Result{RequeueAfter: r.Options.PollInterval}, nil
	}
	r.warnOnce(node.Name, "")
	return r.advance(ctx, node, st, now, fleet)
}

// advance moves an unhealthy node's sequence one or more steps on.
func (r *Reconciler) advance(ctx context.Context, node *corev1.Node, st State, now time.Time, fleet fleetStatus) (ctrl.Result, error) {
	switch st.Phase {
	case PhaseFailed:
		return ctrl.Result{}, nil
	case PhaseBackoff:
		if now.Before(st.NotBefore) {
			return ctrl.Result{RequeueAfter: st.NotBefore.Sub(now)}, nil
		}
		fallthrough
	case "", PhaseSucceeded:
		if !r.claim(node.Name, fleet.inFlight, st) {
			r.wait(node.Name)
			r.Log.Info("max-in-flight reached; node waits", "node", node.Name, "maxInFlight", r.Options.MaxInFlight)
			return ctrl.Result{RequeueAfter: r.Options.PollInterval}, nil
		}
		st = r.newAttempt(ctx, node, st, now)
		return r.startStep(ctx, node, st, Reboot)
	case PhaseDraining:
		r.claim(node.Name, 0, st)
		st = r.resumeOperation(ctx, node, st)
		return r.startStep(ctx, node, st, st.Step)
	case PhaseActing:
		// A controller stopped during the provider call: the action may
		// or may not have happened. It is not repeated (a second reimage
		// is worse than a lost one); the step waits for Ready as if done.
		r.claim(node.Name, 0, st)
		st = r.resumeOperation(ctx, node, st)
		st.Phase, st.StepStart = PhaseWaiting, now
		st.Message = fmt.Sprintf("controller restarted during the %s; not repeated", st.Step)
		r.Log.Warn("resumed a step interrupted during its action; not repeating it", "node", node.Name, "step", st.Step)
		if err := r.save(ctx, node, st); err != nil {
			return ctrl.Result{}, err
		}
		return ctrl.Result{RequeueAfter: min(r.Options.StepTimeout, r.Options.PollInterval)}, nil
	case PhaseWaiting:
		r.claim(node.Name, 0, st)
		if resumed := r.resumeOperation(ctx, node, st); resumed.Operation != st.Operation {
			st = resumed
			if err := r.save(ctx, node, st); err != nil {
				return ctrl.Result{}, err
			}
		}
		left := st.StepStart.Add(r.Options.StepTimeout).Sub(now)
		if left > 0 {
			return ctrl.Result{RequeueAfter: min(left, r.Options.PollInterval)}, nil
		}
		err := fmt.Errorf("node %s not Ready %s after the %s", node.Name, r.Options.StepTimeout, st.Step)
		r.stepFailed(ctx, node, st, err)
		return r.escalate(ctx, node, st, now, err.Error())
	}
	return ctrl.Result{}, fmt.Errorf("node %s: unknown repair phase %q", node.Name, st.Phase)
}

// resumeOperation makes the Operation record named in the state the node's
// open record (after a controller restart; a no-op when it is open
// already) and returns the state naming the record open now: the same, or
// a new one when the old could not be continued. The caller saves it.
func (r *Reconciler) resumeOperation(ctx context.Context, node *corev1.Node, st State) State {
	st.Operation = r.ops().Resume(ctx, node.Name, st.Operation)
	return st
}

// nextAttempt is the number of the attempt newAttempt starts after st.
func nextAttempt(st State) int {
	if st.Phase != PhaseBackoff {
		return 1
	}
	return st.Attempt + 1
}

// newAttempt starts attempt st.Attempt+1 (1 after a finished sequence),
// with its own Operation record.
func (r *Reconciler) newAttempt(ctx context.Context, node *corev1.Node, st State, now time.Time) State {
	if st.Operation != "" {
		// The previous attempt's record was finished when it ended, unless
		// the controller stopped in between or the write failed.
		r.ops().Abandon(ctx, node.Name, st.Operation, fmt.Errorf("repair attempt %d ended (%s: %s) but its record was not finished; ended when attempt %d started", st.Attempt, st.Phase, st.Message, nextAttempt(st)))
	}
	if st.Phase != PhaseBackoff {
		st.Attempt = 0
	}
	st.Attempt++
	st.SequenceStart, st.NotBefore, st.Message, st.Done = now, time.Time{}, "", nil
	reason := fmt.Sprintf("node %s Ready condition %s for more than %s; attempt %d of %d", node.Name, readyStatus(node), r.Options.UnhealthyAfter, st.Attempt, r.Options.MaxAttempts)
	st.Operation = r.ops().Start(ctx, node.Name, reason)
	r.Log.Info("repair sequence started", "node", node.Name, "attempt", st.Attempt, "maxAttempts", r.Options.MaxAttempts, "operation", st.Operation)
	return st
}

// startStep drains when the action needs it, then calls the provider.
func (r *Reconciler) startStep(ctx context.Context, node *corev1.Node, st State, a Action) (ctrl.Result, error) {
	now := r.Clock.Now()
	if st.done(a) {
		// Never repeat a step of this attempt.
		return r.escalate(ctx, node, st, now, fmt.Sprintf("%s already done in attempt %d", a, st.Attempt))
	}
	resumedDrain := st.Phase == PhaseDraining && st.Step == a
	st.Step, st.StepStart = a, now
	if !resumedDrain {
		r.metrics.started.WithLabelValues(string(a)).Inc()
		note := fmt.Sprintf("%s of node %s (attempt %d/%d, provider %s)", a, node.Name, st.Attempt, r.Options.MaxAttempts, r.Provider.Name())
		if a.needsDrain() {
			note += ": cordon and drain first"
		}
		r.event(node, corev1.EventTypeNormal, a.reason("Start"), "%s", note)
	}
	if a.needsDrain() {
		st.Phase, st.Cordoned = PhaseDraining, true
		if err := r.save(ctx, node, st); err != nil {
			return ctrl.Result{}, err
		}
		r.ops().Step(ctx, node.Name, "drain "+node.Name, fmt.Sprintf("cordon and drain before the %s (timeout %s)", a, r.Options.DrainTimeout))
		if err := r.Drain(ctx, node.Name); err != nil {
			if ctx.Err() != nil {
				return ctrl.Result{}, ctx.Err()
			}
			err = fmt.Errorf("drain before the %s failed: %w", a, err)
			r.ops().StepDone(ctx, node.Name, err, "")
			r.stepFailed(ctx, node, st, err)
			// The next actions need a drain too: the attempt ends here.
			return r.endAttempt(ctx, node, st, r.Clock.Now(), err.Error(),
				fmt.Sprintf("the drain of node %s did not finish: run `kdiag drain check %s` for the blocking pods and dry-run-checked fixes", node.Name, node.Name))
		}
		r.ops().StepDone(ctx, node.Name, nil, fmt.Sprintf("node %s cordoned and drained", node.Name))
	}
	st.Phase, st.StepStart = PhaseActing, r.Clock.Now()
	if err := r.save(ctx, node, st); err != nil {
		return ctrl.Result{}, err
	}
	r.Log.Info("repair action", "node", node.Name, "action", a, "attempt", st.Attempt, "provider", r.Provider.Name())
	r.ops().Step(ctx, node.Name, string(a)+" "+node.Name, fmt.Sprintf("provider %s", r.Provider.Name()))
	actx, cancel := context.WithTimeout(ctx, r.Options.StepTimeout)
	out, err := r.Provider.Do(actx, node, a)
	cancel()
	now = r.Clock.Now()
	st.Done = append(st.Done, fmt.Sprintf("%d/%s", st.Attempt, a))
	if err != nil {
		if out != "" {
			err = fmt.Errorf("%w; output: %s", err, out)
		}
		r.stepFailed(ctx, node, st, err)
		return r.escalate(ctx, node, st, now, err.Error())
	}
	msg := fmt.Sprintf("%s done by provider %s; waiting up to %s for Ready", a, r.Provider.Name(), r.Options.StepTimeout)
	if out != "" {
		msg += "; output: " + out
	}
	r.Log.Info("repair action done; waiting for Ready", "node", node.Name, "action", a, "output", out)
	st.Phase, st.StepStart, st.Message = PhaseWaiting, now, msg
	if err := r.save(ctx, node, st); err != nil {
		return ctrl.Result{}, err
	}
	return ctrl.Result{RequeueAfter: min(r.Options.StepTimeout, r.Options.PollInterval)}, nil
}

// stepFailed reports a failed step: the Error event, the metric and the
// Operation step.
func (r *Reconciler) stepFailed(ctx context.Context, node *corev1.Node, st State, err error) {
	r.metrics.failed.WithLabelValues(string(st.Step)).Inc()
	r.event(node, corev1.EventTypeWarning, st.Step.reason("Error"), "%s", err.Error())
	r.ops().StepDone(ctx, node.Name, err, "")
	r.Log.Warn("repair step failed", "node", node.Name, "step", st.Step, "attempt", st.Attempt, "error", err)
}

// escalate moves to the next action, or ends the attempt after the last.
func (r *Reconciler) escalate(ctx context.Context, node *corev1.Node, st State, now time.Time, why string) (ctrl.Result, error) {
	st.Message = why
	if next := st.Step.next(); next != "" {
		return r.startStep(ctx, node, st, next)
	}
	return r.endAttempt(ctx, node, st, now, why,
		fmt.Sprintf("node %s stayed NotReady through reboot, reimage and redeploy: look for the root cause (kubectl describe node %s, the kdiag agent's NotReady diagnostic)", node.Name, node.Name))
}

// endAttempt backs off before the next attempt, or gives up after the last.
func (r *Reconciler) endAttempt(ctx context.Context, node *corev1.Node, st State, now time.Time, why, hint string) (ctrl.Result, error) {
	defer r.release(node.Name)
	st.LastEnd, st.Message = now, why
	r.ops().Finish(ctx, node.Name, fmt.Errorf("repair attempt %d of %d failed: %s", st.Attempt, r.Options.MaxAttempts, why), hint)
	if st.Attempt >= r.Options.MaxAttempts {
		st.Phase = PhaseFailed
		r.event(node, corev1.EventTypeWarning, ReasonGaveUp, "node %s still not Ready after %d repair attempts (last: %s); giving up until it is Ready", node.Name, st.Attempt, why)
		r.Log.Warn("repair failed; giving up", "node", node.Name, "attempts", st.Attempt, "last", why)
		return ctrl.Result{}, r.save(ctx, node, st)
	}
	wait := r.Options.Backoff << (st.Attempt - 1)
	st.Phase, st.NotBefore = PhaseBackoff, now.Add(wait)
	r.Log.Info("repair attempt failed; backing off", "node", node.Name, "attempt", st.Attempt, "backoff", wait, "last", why)
	if err := r.save(ctx, node, st); err != nil {
		return ctrl.Result{}, err
	}
	return ctrl.Result{RequeueAfter: wait}, nil
}

// recovered ends the sequence of a node that is Ready again: the End event
// of the step that brought it back, the success in metrics and Operation,
// an uncordon if the controller cordoned the node; the state stays as
// history (Repairs, LastEnd).
func (r *Reconciler) recovered(ctx context.Context, node *corev1.Node, st State, now time.Time) error {
	defer r.release(node.Name)
	r.warnOnce(node.Name, "")
	if st.Phase == "" || st.Phase == PhaseSucceeded {
		return nil
	}
	inFlight := st.InFlight()
	msg := fmt.Sprintf("node %s is Ready again", node.Name)
	if inFlight {
		msg = fmt.Sprintf("node %s is Ready after the %s (attempt %d)", node.Name, st.Step, st.Attempt)
	}
	if st.Cordoned {
		patch := []byte(`{"spec":{"unschedulable":false}}`)
		if err := r.Client.Patch(ctx, node, client.RawPatch(types.MergePatchType, patch), client.FieldOwner(fieldManager)); err != nil {
			return fmt.Errorf("uncordon node %s: %w", node.Name, err)
		}
		st.Cordoned = false
		msg += "; uncordoned"
	}
	if inFlight {
		st = r.resumeOperation(ctx, node, st)
		r.metrics.succeeded.WithLabelValues(string(st.Step)).Inc()
		r.event(node, corev1.EventTypeNormal, st.Step.reason("End"), "%s", msg)
		r.ops().StepDone(ctx, node.Name, nil, msg)
		r.ops().Finish(ctx, node.Name, nil, "")
		st.Repairs++
	}
	r.Log.Info("node Ready again", "node", node.Name, "step", st.Step, "attempt", st.Attempt, "repaired", inFlight)
	st.Phase, st.LastEnd, st.Message, st.NotBefore = PhaseSucceeded, now, msg, time.Time{}
	return r.save(ctx, node, st)
}

// readyStatus is the node's Ready condition status for messages.
func readyStatus(n *corev1.Node) string {
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return string(c.Status)
		}
	}
	return "missing"
}

// save writes the state annotation with a JSON merge patch.
func (r *Reconciler) save(ctx context.Context, node *corev1.Node, st State) error {
	patch := fmt.Sprintf(`{"metadata":{"annotations":{%q:%q}}}`, AnnotationState, st.encode())
	if err := r.Client.Patch(ctx, node, client.RawPatch(types.MergePatchType, []byte(patch)), client.FieldOwner(fieldManager)); err != nil {
		return fmt.Errorf("save repair state of node %s: %w", node.Name, err)
	}
	return nil
}

// fleetStatus counts the nodes for the safety rails.
type fleetStatus struct {
	total, unhealthy, inFlight int
	// notReady counts the nodes whose Ready is not True now, however
	// briefly: the max-unhealthy rail halts on it, so that nodes failing
	// together stop repairs before the first of them passes
	// --unhealthy-after (counting only those past it would let the first
	// one be repaired in the middle of an outage).
	notReady int
}

// fleet counts the nodes from the cache and updates the gauges.
func (r *Reconciler) fleet(ctx context.Context, now time.Time) (fleetStatus, error) {
	var list corev1.NodeList
	// Read-only use: the cache's objects are not copied, which would cost
	// a copy of every Node per reconcile.
	if err := r.Client.List(ctx, &list, client.UnsafeDisableDeepCopy); err != nil {
		return fleetStatus{}, fmt.Errorf("list nodes: %w", err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	f := fleetStatus{total: len(list.Items)}
	counted := map[string]bool{}
	for i := range list.Items {
		n := &list.Items[i]
		h := HealthOf(n)
		if bad, _ := h.Unhealthy(now, r.Options.UnhealthyAfter); bad {
			f.unhealthy++
		}
		if bad, _ := h.Unhealthy(now, 0); bad {
			f.notReady++
		}
		if st, err := StateOf(n); err == nil && st.InFlight() {
			counted[n.Name] = true
		}
	}
	for n := range r.claims {
		counted[n] = true
	}
	f.inFlight = len(counted)
	r.metrics.unhealthy.Set(float64(f.unhealthy))
	r.metrics.halted.Set(b2f(f.notReady > maxUnhealthyOf(r.Options.MaxUnhealthy, f.total)))
	r.metrics.inFlight.Set(float64(f.inFlight))
	return f, nil
}

// claim puts the node in flight if fewer than MaxInFlight nodes are; a
// node already in flight (resumed) is always admitted.
func (r *Reconciler) claim(node string, inFlight int, st State) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.claims[node] || st.InFlight() {
		r.claims[node] = true
		return true
	}
	if max(inFlight, len(r.claims)) >= r.Options.MaxInFlight {
		return false
	}
	r.claims[node] = true
	return true
}

// release ends the node's claim and wakes the nodes waiting for a slot or
// for the fleet to be healthy enough.
func (r *Reconciler) release(node string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.claims, node)
	delete(r.waiting, node)
	for n := range r.waiting {
		select {
		case r.wake <- event.TypedGenericEvent[*corev1.Node]{Object: &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: n}}}:
			delete(r.waiting, n)
		default:
			// No controller reads wake (unit tests), or it is full: the
			// node's poll picks it up.
		}
	}
}

// wait remembers a node held back by a safety rail.
func (r *Reconciler) wait(node string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.waiting[node] = true
}

// warnOnce remembers why a node is skipped and reports whether the reason
// is new; "" forgets it.
func (r *Reconciler) warnOnce(node, why string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if why == "" {
		delete(r.warned, node)
		return false
	}
	if r.warned[node] == why {
		return false
	}
	r.warned[node] = why
	return true
}

// paused reports whether --paused is set or the controller's Lease carries
// kdiag.io/repair-paused=true.
func (r *Reconciler) paused(ctx context.Context) (bool, error) {
	if r.Options.Paused {
		return true, nil
	}
	if r.Options.LeaseName == "" {
		return false, nil
	}
	var lease coordinationv1.Lease
	err := r.Reader.Get(ctx, types.NamespacedName{Namespace: r.Options.LeaseNamespace, Name: r.Options.LeaseName}, &lease)
	if apierrors.IsNotFound(err) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("read the pause annotation on Lease %s/%s: %w", r.Options.LeaseNamespace, r.Options.LeaseName, err)
	}
	return lease.Annotations[AnnotationPaused] == "true", nil
}

func (r *Reconciler) event(node *corev1.Node, typ, reason, format string, args ...any) {
	if r.Events == nil {
		return
	}
	r.Events.Eventf(node, nil, typ, reason, "Repair", format, args...)
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
