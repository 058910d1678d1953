package repair

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/tools/events"
	clocktesting "k8s.io/utils/clock/testing"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/event"
)

// fakeProvider records the actions it is asked for and fails those in
// fail.
type fakeProvider struct {
	mu      sync.Mutex
	actions []string
	fail    map[Action]bool
}

func (p *fakeProvider) Name() string { return "fake" }

func (p *fakeProvider) Do(_ context.Context, n *corev1.Node, a Action) (string, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.actions = append(p.actions, n.Name+":"+string(a))
	if p.fail[a] {
		return "boom output", errors.New("provider refused")
	}
	return "ok", nil
}

func (p *fakeProvider) got() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.actions)
}

var t0 = time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)

func node(name string, ready corev1.ConditionStatus, since time.Time, mutate ...func(*corev1.Node)) *corev1.Node {
	n := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: name, Annotations: map[string]string{}},
		Status: corev1.NodeStatus{Conditions: []corev1.NodeCondition{{
			Type: corev1.NodeReady, Status: ready, LastTransitionTime: metav1.NewTime(since),
		}}},
	}
	for _, m := range mutate {
		m(n)
	}
	return n
}

type harness struct {
	t        *testing.T
	r        *Reconciler
	c        client.Client
	clock    *clocktesting.FakeClock
	provider *fakeProvider
	events   *events.FakeRecorder
	drained  []string
	drainErr error
	ops      *fakeOps
}

// fakeOps records the OperationRecorder calls as short strings.
type fakeOps struct{ calls []string }

func (f *fakeOps) Start(_ context.Context, node, _ string) string {
	f.calls = append(f.calls, "start "+node)
	return "repair-" + node + "-x"
}

// Resume records nothing: the state machine calls it on every look at a
// node in flight; the lab tests check what it does.
func (f *fakeOps) Resume(_ context.Context, _, name string) string { return name }

func (f *fakeOps) Abandon(_ context.Context, node, name string, _ error) {
	f.calls = append(f.calls, "abandon "+node+" "+name)
}

func (f *fakeOps) Step(_ context.Context, node, name, _ string) {
	f.calls = append(f.calls, "step "+node+" "+name)
}
func (f *fakeOps) StepDone(_ context.Context, node string, err error, _ string) {
	f.calls = append(f.calls, "done "+node+" "+okOrFailed(err))
}
func (f *fakeOps) Finish(_ context.Context, node string, err error, _ string) {
	f.calls = append(f.calls, "finish "+node+" "+okOrFailed(err))
}

func (f *fakeOps) NodeGone(_ context.Context, node string) {
	f.calls = append(f.calls, "gone "+node)
}

func okOrFailed(err error) string {
	if err != nil {
		return "failed"
	}
	return "ok"
}

func newHarness(t *testing.T, o Options, objs ...client.Object) *harness {
	t.Helper()
	h := &harness{t: t, clock: clocktesting.NewFakeClock(t0), provider: &fakeProvider{fail: map[Action]bool{}}, events: events.NewFakeRecorder(100)}
	h.c = fake.NewClientBuilder().WithObjects(objs...).Build()
	if o.UnhealthyAfter == 0 {
		o.UnhealthyAfter = time.Minute
	}
	if o.StepTimeout == 0 {
		o.StepTimeout = 5 * time.Minute
	}
	if o.Backoff == 0 {
		o.Backoff = 10 * time.Minute
	}
	r, err := NewReconciler(o, h.provider, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	h.ops = &fakeOps{}
	r.Client, r.Reader, r.Events, r.Clock, r.Ops = h.c, h.c, h.events, h.clock, h.ops
	r.Drain = func(_ context.Context, n string) error {
		h.drained = append(h.drained, n)
		return h.drainErr
	}
	h.r = r
	return h
}

func (h *harness) reconcile(name string) ctrl.Result {
	h.t.Helper()
	res, err := h.r.Reconcile(context.Background(), ctrl.Request{NamespacedName: types.NamespacedName{Name: name}})
	if err != nil {
		h.t.Fatalf("reconcile %s: %v", name, err)
	}
	return res
}

func (h *harness) state(name string) State {
	h.t.Helper()
	var n corev1.Node
	if err := h.c.Get(context.Background(), types.NamespacedName{Name: name}, &n); err != nil {
		h.t.Fatal(err)
	}
	st, err := StateOf(&n)
	if err != nil {
		h.t.Fatal(err)
	}
	return st
}

func (h *harness) setReady(name string) {
	h.t.Helper()
	var n corev1.Node
	if err := h.c.Get(context.Background(), types.NamespacedName{Name: name}, &n); err != nil {
		h.t.Fatal(err)
	}
	n.Status.Conditions[0].Status = corev1.ConditionTrue
	n.Status.Conditions[0].LastTransitionTime = metav1.NewTime(h.clock.Now())
	if err := h.c.Status().Update(context.Background(), &n); err != nil {
		h.t.Fatal(err)
	}
}

// reasons drains the recorded events and returns their reasons.
func (h *harness) reasons() []string {
	var out []string
	for {
		select {
		case e := <-h.events.Events:
			// FakeRecorder formats "Type Reason Note".
			out = append(out, strings.Fields(e)[1])
		default:
			return out
		}
	}
}

func TestEscalationRetriesAndRecovery(t *testing.T) {
	h := newHarness(t, Options{MaxAttempts: 2}, node("n1", corev1.ConditionFalse, t0.Add(-2*time.Minute)))
	h.reconcile("n1")
	if st := h.state("n1"); st.Phase != PhaseWaiting || st.Step != Reboot || st.Attempt != 1 {
		t.Fatalf("after the first reconcile: want attempt 1 reboot Waiting, got %+v", st)
	}
	// Nothing happens before the step timeout.
	h.clock.Step(time.Minute)
	h.reconcile("n1")
	if got := h.provider.got(); !slices.Equal(got, []string{"n1:reboot"}) {
		t.Fatalf("before the step timeout: want only the reboot, got %v", got)
	}
	h.clock.Step(5 * time.Minute)
	h.reconcile("n1")
	if st := h.state("n1"); st.Step != Reimage || !st.Cordoned || len(h.drained) != 1 {
		t.Fatalf("after the reboot timed out: want reimage after a drain, got %+v (drains %v)", st, h.drained)
	}
	h.clock.Step(6 * time.Minute)
	h.reconcile("n1")
	h.clock.Step(6 * time.Minute)
	res := h.reconcile("n1")
	st := h.state("n1")
	if st.Phase != PhaseBackoff || res.RequeueAfter != 10*time.Minute {
		t.Fatalf("after attempt 1: want Backoff for 10m, got %+v requeue %s", st, res.RequeueAfter)
	}
	h.clock.Step(5 * time.Minute)
	h.reconcile("n1")
	if n := len(h.provider.got()); n != 3 {
		t.Fatalf("during the back-off: want no new action, got %v", h.provider.got())
	}
	h.clock.Step(5 * time.Minute)
	h.reconcile("n1")
	if st := h.state("n1"); st.Attempt != 2 || st.Step != Reboot || st.Phase != PhaseWaiting {
		t.Fatalf("after the back-off: want attempt 2 reboot, got %+v", st)
	}
	h.setReady("n1")
	h.reconcile("n1")
	st = h.state("n1")
	if st.Phase != PhaseSucceeded || st.Repairs != 1 || st.Cordoned {
		t.Fatalf("after Ready: want Succeeded, 1 repair, uncordoned; got %+v", st)
	}
	var n corev1.Node
	_ = h.c.Get(context.Background(), types.NamespacedName{Name: "n1"}, &n)
	if n.Spec.Unschedulable {
		t.Error("the node the controller cordoned is still cordoned after the repair")
	}
	want := []string{"n1:reboot", "n1:reimage", "n1:redeploy", "n1:reboot"}
	if got := h.provider.got(); !slices.Equal(got, want) {
		t.Errorf("actions: want %v, got %v", want, got)
	}
	wantReasons := []string{
		"NodeRebootStart", "NodeRebootError",
		"NodeReimageStart", "NodeReimageError",
		"NodeRedeployStart", "NodeRedeployError",
		"NodeRebootStart", "NodeRebootEnd",
	}
	if got := h.reasons(); !slices.Equal(got, wantReasons) {
		t.Errorf("event reasons:\nwant %v\ngot  %v", wantReasons, got)
	}
	wantOps := []string{
		"start n1", "step n1 reboot n1", "done n1 failed", "step n1 drain n1", "done n1 ok", "step n1 reimage n1", "done n1 failed",
		"step n1 drain n1", "done n1 ok", "step n1 redeploy n1", "done n1 failed", "finish n1 failed",
		// The second attempt makes sure the first's record is not left
		// Running (the real recorder finds it Failed and does nothing).
		"abandon n1 repair-n1-x", "start n1", "step n1 reboot n1", "done n1 ok", "finish n1 ok",
	}
	if got := h.ops.calls; !slices.Equal(got, wantOps) {
		t.Errorf("operation records:\nwant %v\ngot  %v", wantOps, got)
	}
}

func TestStopsAtReadyAndGivesUp(t *testing.T) {
	t.Run("ready after reboot", func(t *testing.T) {
		h := newHarness(t, Options{}, node("n1", corev1.ConditionUnknown, t0.Add(-2*time.Minute)))
		h.reconcile("n1")
		h.setReady("n1")
		h.clock.Step(time.Hour)
		h.reconcile("n1")
		h.reconcile("n1")
		if got := h.provider.got(); !slices.Equal(got, []string{"n1:reboot"}) {
			t.Errorf("want only a reboot, got %v", got)
		}
		if st := h.state("n1"); st.Phase != PhaseSucceeded {
			t.Errorf("want Succeeded, got %+v", st)
		}
	})
	t.Run("gives up after max attempts", func(t *testing.T) {
		h := newHarness(t, Options{MaxAttempts: 1}, node("n1", corev1.ConditionFalse, t0.Add(-2*time.Minute)))
		for range 5 {
			h.reconcile("n1")
			h.clock.Step(6 * time.Minute)
		}
		if st := h.state("n1"); st.Phase != PhaseFailed {
			t.Errorf("want Failed, got %+v", st)
		}
		if n := len(h.provider.got()); n != 3 {
			t.Errorf("want 3 actions (one attempt), got %v", h.provider.got())
		}
		if !slices.Contains(h.reasons(), ReasonGaveUp) {
			t.Errorf("no %s event", ReasonGaveUp)
		}
	})
	t.Run("not yet unhealthy", func(t *testing.T) {
		h := newHarness(t, Options{}, node("n1", corev1.ConditionFalse, t0.Add(-20*time.Second)))
		res := h.reconcile("n1")
		if len(h.provider.got()) != 0 || res.RequeueAfter != 41*time.Second {
			t.Errorf("want no action and a requeue at 41s, got %v %s", h.provider.got(), res.RequeueAfter)
		}
	})
}

func TestProviderAndDrainErrors(t *testing.T) {
	t.Run("provider error escalates at once", func(t *testing.T) {
		h := newHarness(t, Options{}, node("n1", corev1.ConditionFalse, t0.Add(-2*time.Minute)))
		h.provider.fail[Reboot] = true
		h.reconcile("n1")
		if got := h.provider.got(); !slices.Equal(got, []string{"n1:reboot", "n1:reimage"}) {
			t.Errorf("want reboot then reimage in one reconcile, got %v", got)
		}
		if st := h.state("n1"); st.Step != Reimage || st.Phase != PhaseWaiting {
			t.Errorf("want reimage Waiting, got %+v", st)
		}
	})
	t.Run("drain failure ends the attempt", func(t *testing.T) {
		h := newHarness(t, Options{}, node("n1", corev1.ConditionFalse, t0.Add(-2*time.Minute)))
		h.drainErr = errors.New("drain of node n1 timed out: pod shop/nginx blocked by PodDisruptionBudget shop/nginx")
		h.reconcile("n1")
		h.clock.Step(6 * time.Minute)
		h.reconcile("n1")
		st := h.state("n1")
		if st.Phase != PhaseBackoff || !strings.Contains(st.Message, "PodDisruptionBudget") {
			t.Errorf("want Backoff naming the PDB, got %+v", st)
		}
		if got := h.provider.got(); !slices.Equal(got, []string{"n1:reboot"}) {
			t.Errorf("no action may follow a failed drain, got %v", got)
		}
	})
}

func TestResumeDoesNotRepeat(t *testing.T) {
	for _, tc := range []struct {
		name  string
		state State
		want  []string
		phase Phase
	}{
		{"interrupted during the action", State{Attempt: 1, Step: Reimage, Phase: PhaseActing, StepStart: t0, Done: []string{"1/reboot"}}, nil, PhaseWaiting},
		{"waiting", State{Attempt: 1, Step: Reboot, Phase: PhaseWaiting, StepStart: t0.Add(-time.Minute), Done: []string{"1/reboot"}}, nil, PhaseWaiting},
		{"waiting, timed out", State{Attempt: 1, Step: Reboot, Phase: PhaseWaiting, StepStart: t0.Add(-time.Hour), Done: []string{"1/reboot"}}, []string{"n1:reimage"}, PhaseWaiting},
		{"draining", State{Attempt: 1, Step: Reimage, Phase: PhaseDraining, StepStart: t0, Done: []string{"1/reboot"}}, []string{"n1:reimage"}, PhaseWaiting},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := node("n1", corev1.ConditionFalse, t0.Add(-2*time.Hour), func(n *corev1.Node) { n.Annotations[AnnotationState] = tc.state.encode() })
			h := newHarness(t, Options{}, n)
			h.reconcile("n1")
			if got := h.provider.got(); !slices.Equal(got, tc.want) {
				t.Errorf("actions: want %v, got %v", tc.want, got)
			}
			if st := h.state("n1"); st.Phase != tc.phase {
				t.Errorf("phase: want %s, got %+v", tc.phase, st)
			}
		})
	}
}

func TestSafetyRails(t *testing.T) {
	bad := t0.Add(-time.Hour)
	for _, tc := range []struct {
		name   string
		opts   Options
		nodes  []*corev1.Node
		lease  map[string]string
		acted  int
		reason string
	}{
		{name: "autoscaler taint", nodes: []*corev1.Node{node("n1", corev1.ConditionFalse, bad, taint(TaintToBeDeleted))}, reason: ReasonSkipped},
		{name: "shutdown taint", nodes: []*corev1.Node{node("n1", corev1.ConditionUnknown, bad, taint(TaintShutdown))}, reason: ReasonSkipped},
		{name: "skip annotation", nodes: []*corev1.Node{node("n1", corev1.ConditionFalse, bad, annotate(AnnotationSkip, "true"))}, reason: ReasonSkipped},
		{name: "skip annotation false", nodes: []*corev1.Node{node("n1", corev1.ConditionFalse, bad, annotate(AnnotationSkip, "false"))}, acted: 1},
		{name: "cordoned by another actor", nodes: []*corev1.Node{node("n1", corev1.ConditionFalse, bad, func(n *corev1.Node) { n.Spec.Unschedulable = true })}, reason: ReasonSkipped},
		{name: "paused flag", opts: Options{Paused: true}, nodes: []*corev1.Node{node("n1", corev1.ConditionFalse, bad)}},
		{name: "paused lease", nodes: []*corev1.Node{node("n1", corev1.ConditionFalse, bad)}, lease: map[string]string{AnnotationPaused: "true"}},
		{name: "lease not paused", nodes: []*corev1.Node{node("n1", corev1.ConditionFalse, bad)}, lease: map[string]string{AnnotationPaused: "false"}, acted: 1},
		{
			name: "max unhealthy count", opts: Options{MaxUnhealthy: intstr.FromInt32(1), MaxInFlight: 5},
			nodes:  []*corev1.Node{node("n1", corev1.ConditionFalse, bad), node("n2", corev1.ConditionFalse, bad), node("n3", corev1.ConditionTrue, bad)},
			reason: ReasonHalted,
		},
		{
			name: "max unhealthy percent allows", opts: Options{MaxUnhealthy: intstr.FromString("50%"), MaxInFlight: 5},
			nodes: []*corev1.Node{node("n1", corev1.ConditionFalse, bad), node("n2", corev1.ConditionFalse, bad), node("n3", corev1.ConditionTrue, bad), node("n4", corev1.ConditionTrue, bad)},
			acted: 2,
		},
		{
			name: "max in flight", opts: Options{MaxUnhealthy: intstr.FromString("100%"), MaxInFlight: 2},
			nodes: []*corev1.Node{node("n1", corev1.ConditionFalse, bad), node("n2", corev1.ConditionFalse, bad), node("n3", corev1.ConditionFalse, bad)},
			acted: 2,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var objs []client.Object
			for _, n := range tc.nodes {
				objs = append(objs, n)
			}
			if tc.lease != nil {
				objs = append(objs, &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: DefaultLeaseName, Namespace: DefaultLeaseNamespace, Annotations: tc.lease}})
			}
			h := newHarness(t, tc.opts, objs...)
			for _, n := range tc.nodes {
				h.reconcile(n.Name)
			}
			if got := h.provider.got(); len(got) != tc.acted {
				t.Errorf("want %d nodes acted on, got %v", tc.acted, got)
			}
			if reasons := h.reasons(); tc.reason != "" && !slices.Contains(reasons, tc.reason) {
				t.Errorf("want a %s event, got %v", tc.reason, reasons)
			}
		})
	}
}

func TestMaxInFlightFreesSlot(t *testing.T) {
	bad := t0.Add(-time.Hour)
	h := newHarness(t, Options{MaxUnhealthy: intstr.FromString("100%")}, node("n1", corev1.ConditionFalse, bad), node("n2", corev1.ConditionFalse, bad))
	h.r.wake = make(chan event.TypedGenericEvent[*corev1.Node], 4)
	h.reconcile("n1")
	h.reconcile("n2")
	if got := h.provider.got(); !slices.Equal(got, []string{"n1:reboot"}) {
		t.Fatalf("max-in-flight 1: want only n1 acted on, got %v", got)
	}
	h.setReady("n1")
	h.reconcile("n1")
	select {
	case e := <-h.r.wake:
		if e.Object.Name != "n2" {
			t.Errorf("woke %s, want n2", e.Object.Name)
		}
	default:
		t.Error("n1's slot was freed but the waiting n2 was not woken")
	}
	h.reconcile("n2")
	if got := h.provider.got(); !slices.Equal(got, []string{"n1:reboot", "n2:reboot"}) {
		t.Fatalf("after n1 recovered: want n2 acted on, got %v", got)
	}
}

func TestInvalidStateStartsOver(t *testing.T) {
	h := newHarness(t, Options{}, node("n1", corev1.ConditionFalse, t0.Add(-time.Hour), annotate(AnnotationState, "{not json")))
	h.reconcile("n1")
	if got := h.provider.got(); !slices.Equal(got, []string{"n1:reboot"}) {
		t.Errorf("want a fresh reboot, got %v", got)
	}
	if !slices.Contains(h.reasons(), ReasonInvalidState) {
		t.Errorf("no %s event", ReasonInvalidState)
	}
}

func TestParseMaxUnhealthy(t *testing.T) {
	for _, tc := range []struct {
		in      string
		total   int
		want    int
		wantErr bool
	}{
		{"2", 10, 2, false},
		{"40%", 10, 4, false},
		{"40%", 2, 1, false},
		{"100%", 7, 7, false},
		{"0", 3, 0, false},
		{"-1", 3, 0, true},
		{"150%", 3, 0, true},
		{"abc", 3, 0, true},
		{"4x%", 3, 0, true},
	} {
		v, err := ParseMaxUnhealthy(tc.in)
		if (err != nil) != tc.wantErr {
			t.Errorf("ParseMaxUnhealthy(%q): error %v, want error %v", tc.in, err, tc.wantErr)
			continue
		}
		if err == nil {
			if got := maxUnhealthyOf(v, tc.total); got != tc.want {
				t.Errorf("max-unhealthy %q of %d nodes: want %d, got %d", tc.in, tc.total, tc.want, got)
			}
		}
	}
}

func taint(key string) func(*corev1.Node) {
	return func(n *corev1.Node) {
		n.Spec.Taints = append(n.Spec.Taints, corev1.Taint{Key: key, Effect: corev1.TaintEffectNoSchedule})
	}
}

func annotate(k, v string) func(*corev1.Node) {
	return func(n *corev1.Node) { n.Annotations[k] = v }
}
