package repair_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/util/retry"
	crmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"

	"github.com/kdiag/kdiag/pkg/apis/kdiag/v1alpha1"
	"github.com/kdiag/kdiag/pkg/drain"
	"github.com/kdiag/kdiag/pkg/lab/kubelet"
	"github.com/kdiag/kdiag/pkg/lab/labtest"
	"github.com/kdiag/kdiag/pkg/ops"
	"github.com/kdiag/kdiag/pkg/repair"
)

func TestMain(m *testing.M) { labtest.Main(m, labtest.Options{Nodes: 4}) }

const (
	node1 = "lab-node-1"
	node2 = "lab-node-2"
	node3 = "lab-node-3"
	node4 = "lab-node-4"
)

// lab is the shared lab with clients and a file the exec provider appends
// "NODE ACTION" lines to.
type lab struct {
	t       *testing.T
	cfg     *rest.Config
	cs      kubernetes.Interface
	actions string
}

func newLab(t *testing.T) *lab {
	t.Helper()
	c := labtest.Cluster(t)
	cfg := c.RESTConfig()
	l := &lab{t: t, cfg: cfg, cs: kubernetes.NewForConfigOrDie(cfg), actions: filepath.Join(t.TempDir(), "actions")}
	for _, n := range []string{node1, node2, node3, node4} {
		l.reset(n)
		t.Cleanup(func() { l.reset(n) })
	}
	return l
}

// exec is the exec provider recording every action to l.actions.
func (l *lab) exec() repair.Provider {
	return repair.ExecProvider{Command: []string{`echo "$KDIAG_NODE $KDIAG_ACTION" >> ` + l.actions + `; echo "$KDIAG_ACTION of $KDIAG_NODE requested"`}}
}

// recorded returns the actions the exec provider ran, as "node action".
func (l *lab) recorded() []string {
	b, err := os.ReadFile(l.actions)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		l.t.Fatal(err)
	}
	return strings.Split(strings.TrimSpace(string(b)), "\n")
}

func (l *lab) recordedOn(node string) []string {
	var out []string
	for _, a := range l.recorded() {
		if n, act, _ := strings.Cut(a, " "); n == node {
			out = append(out, act)
		}
	}
	return out
}

// options are fast timings for the lab.
func options(lease string) repair.Options {
	return repair.Options{
		UnhealthyAfter: 2 * time.Second,
		StepTimeout:    4 * time.Second,
		Backoff:        2 * time.Second,
		PollInterval:   time.Second,
		DrainTimeout:   20 * time.Second,
		MaxUnhealthy:   intstr.FromString("50%"),
		LeaseName:      lease,
		LeaseNamespace: "kube-system",
		LeaseDuration:  4 * time.Second,
		RenewDeadline:  3 * time.Second,
		RetryPeriod:    500 * time.Millisecond,
		MetricsAddr:    "0",
	}
}

// start runs a controller until the returned stop is called (or the test
// ends).
func (l *lab) start(o repair.Options, p repair.Provider) (stop func()) {
	l.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	logger := slog.New(slog.NewTextHandler(testLog{l.t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
	rec, err := repair.NewOperationRecorder(l.cfg, logger)
	if err != nil {
		l.t.Fatal(err)
	}
	go func() { done <- repair.Run(ctx, repair.Config{REST: l.cfg, Provider: p, Ops: rec, Logger: logger}, o) }()
	stopped := false
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		select {
		case err := <-done:
			if err != nil {
				l.t.Errorf("controller: %v", err)
			}
		case <-time.After(30 * time.Second):
			l.t.Errorf("controller did not stop within 30s")
		}
	}
	l.t.Cleanup(stop)
	return stop
}

type testLog struct{ t *testing.T }

func (w testLog) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// breakNode makes the node NotReady by hand: the test takes its status
// from the simulated kubelet and sets Ready=False.
func (l *lab) breakNode(node string) {
	l.t.Helper()
	ctx := context.Background()
	labtest.TakeStatus(l.t, ctx, l.cs.CoreV1().Nodes().Patch, node)
	labtest.WaitFor(l.t, ctx, "node "+node+" NotReady", func(ctx context.Context) (bool, error) {
		err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
			n, err := l.cs.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{})
			if err != nil {
				return err
			}
			for i, c := range n.Status.Conditions {
				if c.Type == corev1.NodeReady && c.Status == corev1.ConditionTrue {
					n.Status.Conditions[i].Status = corev1.ConditionFalse
					n.Status.Conditions[i].Reason = "KubeletNotReady"
					n.Status.Conditions[i].Message = "container runtime is down (set by the test)"
					n.Status.Conditions[i].LastTransitionTime = metav1.Now()
				}
			}
			_, err = l.cs.CoreV1().Nodes().UpdateStatus(ctx, n, metav1.UpdateOptions{})
			return err
		})
		if err != nil {
			return false, err
		}
		time.Sleep(500 * time.Millisecond)
		n, err := l.cs.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{})
		return err == nil && !ready(n), err
	})
}

// heal hands the node back to the simulated kubelet, which reports it
// Ready.
func (l *lab) heal(node string) {
	l.t.Helper()
	labtest.PatchNode(l.t, context.Background(), l.cs, node, fmt.Sprintf(`{"metadata":{"annotations":{%q:null}}}`, kubelet.AnnotationManualStatus))
}

// reset heals the node and removes everything a test put on it.
func (l *lab) reset(node string) {
	ctx := context.Background()
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		n, err := l.cs.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{})
		if err != nil {
			return err
		}
		for _, k := range []string{kubelet.AnnotationManualStatus, kubelet.AnnotationHeartbeat, repair.AnnotationState, repair.AnnotationSkip} {
			delete(n.Annotations, k)
		}
		n.Spec.Unschedulable = false
		n.Spec.Taints = slices.DeleteFunc(n.Spec.Taints, func(t corev1.Taint) bool {
			return t.Key == repair.TaintToBeDeleted || t.Key == repair.TaintShutdown
		})
		_, err = l.cs.CoreV1().Nodes().Update(ctx, n, metav1.UpdateOptions{})
		return err
	})
	if err != nil {
		l.t.Errorf("reset node %s: %v", node, err)
	}
	l.waitFor("node "+node+" Ready", func(n *corev1.Node) bool { return ready(n) }, node)
}

func (l *lab) waitFor(what string, ok func(*corev1.Node) bool, node string) *corev1.Node {
	l.t.Helper()
	var last *corev1.Node
	labtest.WaitFor(l.t, context.Background(), what, func(ctx context.Context) (bool, error) {
		n, err := l.cs.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		last = n
		return ok(n), nil
	})
	return last
}

func (l *lab) waitActions(what string, ok func([]string) bool) {
	l.t.Helper()
	labtest.WaitFor(l.t, context.Background(), what, func(context.Context) (bool, error) { return ok(l.recorded()), nil })
}

// quiet asserts that cond holds during d.
func (l *lab) quiet(d time.Duration, what string, cond func() bool) {
	l.t.Helper()
	end := time.Now().Add(d)
	for time.Now().Before(end) {
		if !cond() {
			l.t.Fatalf("%s: no longer true after %s (actions %v)", what, d-time.Until(end), l.recorded())
		}
		time.Sleep(250 * time.Millisecond)
	}
}

func ready(n *corev1.Node) bool { return repair.HealthOf(n).Ready }

func stateOf(t *testing.T, n *corev1.Node) repair.State {
	t.Helper()
	st, err := repair.StateOf(n)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func phase(t *testing.T, p repair.Phase) func(*corev1.Node) bool {
	return func(n *corev1.Node) bool { return stateOf(t, n).Phase == p }
}

// reasons lists the reasons of the repair events on the node since since.
func (l *lab) reasons(node string, since time.Time) []string {
	l.t.Helper()
	list, err := l.cs.CoreV1().Events("").List(context.Background(), metav1.ListOptions{
		FieldSelector: fields.Set{"involvedObject.kind": "Node", "involvedObject.name": node}.String(),
	})
	if err != nil {
		l.t.Fatal(err)
	}
	slices.SortFunc(list.Items, func(a, b corev1.Event) int { return eventTime(a).Compare(eventTime(b)) })
	var out []string
	for _, e := range list.Items {
		if !eventTime(e).Before(since.Truncate(time.Second)) && e.ReportingController == "kdiag-repair" {
			out = append(out, e.Reason)
		}
	}
	return out
}

func eventTime(e corev1.Event) time.Time {
	if !e.EventTime.IsZero() {
		return e.EventTime.Time
	}
	return e.LastTimestamp.Time
}

func gauge(t *testing.T, name string) float64 {
	t.Helper()
	mfs, err := crmetrics.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			return value(mf.GetMetric()[0])
		}
	}
	t.Fatalf("metric %s not registered", name)
	return 0
}

func counter(t *testing.T, name, action string) float64 {
	t.Helper()
	mfs, err := crmetrics.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if lp.GetName() == "action" && lp.GetValue() == action {
					return value(m)
				}
			}
		}
	}
	return 0
}

func value(m *dto.Metric) float64 {
	if m.Gauge != nil {
		return m.Gauge.GetValue()
	}
	return m.Counter.GetValue()
}

// TestEscalationStopsWhenReady: a node set NotReady by hand goes through
// reboot, reimage (after a drain) and redeploy; the test heals it after the
// redeploy and the controller stops there, uncordons the node and records
// the events and the Operation.
func TestEscalationStopsWhenReady(t *testing.T) {
	l := newLab(t)
	ctx := context.Background()
	if err := ops.EnsureCRD(ctx, l.cfg); err != nil {
		t.Fatalf("install the Operation CRD: %v", err)
	}
	since := time.Now()
	before := counter(t, "kdiag_repair_actions_succeeded_total", "redeploy")
	l.start(options("repair-escalation"), l.exec())
	l.breakNode(node1)
	l.waitActions("reboot, reimage and redeploy of "+node1, func(a []string) bool { return slices.Contains(a, node1+" redeploy") })
	l.heal(node1)
	n := l.waitFor("repair of "+node1+" succeeded", phase(t, repair.PhaseSucceeded), node1)
	st := stateOf(t, n)
	if st.Repairs != 1 || st.Attempt != 1 || n.Spec.Unschedulable {
		t.Errorf("after the repair: want 1 repair in attempt 1 and the node uncordoned, got %+v (unschedulable %v)", st, n.Spec.Unschedulable)
	}
	time.Sleep(3 * time.Second) // longer than the step timeout: nothing more may happen
	if got, want := l.recordedOn(node1), []string{"reboot", "reimage", "redeploy"}; !slices.Equal(got, want) {
		t.Errorf("actions on %s: want %v, got %v", node1, want, got)
	}
	if got := counter(t, "kdiag_repair_actions_succeeded_total", "redeploy") - before; got != 1 {
		t.Errorf("kdiag_repair_actions_succeeded_total{action=redeploy}: want +1, got %+v", got)
	}
	want := []string{"NodeRebootStart", "NodeRebootError", "NodeReimageStart", "NodeReimageError", "NodeRedeployStart", "NodeRedeployEnd"}
	labtest.WaitFor(t, ctx, "the repair events on "+node1, func(context.Context) (bool, error) {
		return slices.Equal(l.reasons(node1, since), want), nil
	})
	dyn := dynamic.NewForConfigOrDie(l.cfg)
	list, err := dyn.Resource(v1alpha1.OperationGVR()).List(ctx, metav1.ListOptions{LabelSelector: v1alpha1.LabelNode + "=" + node1})
	if err != nil {
		t.Fatalf("list Operations: %v", err)
	}
	var found bool
	for _, u := range list.Items {
		if u.GetName() != st.Operation {
			continue
		}
		found = true
		phase, _, _ := unstructured.NestedString(u.Object, "status", "phase")
		steps, _, _ := unstructured.NestedSlice(u.Object, "status", "steps")
		var names []string
		for _, s := range steps {
			name, _, _ := unstructured.NestedString(s.(map[string]any), "name")
			names = append(names, name)
		}
		want := []string{"reboot " + node1, "drain " + node1, "cordon " + node1, "reimage " + node1, "drain " + node1, "cordon " + node1, "redeploy " + node1}
		if phase != "Succeeded" || !slices.Equal(names, want) {
			t.Errorf("Operation %s: want Succeeded with steps %v, got %s with %v", u.GetName(), want, phase, names)
		}
	}
	if !found {
		t.Errorf("no Operation %q for node %s among %d", st.Operation, node1, len(list.Items))
	}
}

// TestRailsInFlightAndUnhealthy: two nodes fail at once with max-in-flight
// 1: one is repaired, the other waits for its turn. Then three of four
// fail with max-unhealthy 2: nothing is done at all until one recovers.
func TestRailsInFlightAndUnhealthy(t *testing.T) {
	l := newLab(t)
	o := options("repair-rails")
	o.StepTimeout = time.Minute // the first node stays in flight
	// No polling: a waiting node must be woken when the slot frees.
	o.PollInterval = time.Hour
	stop := l.start(o, l.exec())
	l.breakNode(node1)
	l.breakNode(node2)
	l.waitActions("a reboot", func(a []string) bool { return len(a) > 0 })
	first := strings.Fields(l.recorded()[0])[0]
	other := node1
	if first == node1 {
		other = node2
	}
	l.quiet(5*time.Second, "max-in-flight 1: only "+first+" acted on", func() bool {
		return len(l.recordedOn(other)) == 0 && len(l.recorded()) == 1
	})
	if g := gauge(t, "kdiag_repair_in_flight"); g != 1 {
		t.Errorf("kdiag_repair_in_flight: want 1, got %v", g)
	}
	l.heal(first)
	l.waitActions("reboot of "+other+" once "+first+" is Ready", func([]string) bool { return len(l.recordedOn(other)) == 1 })
	l.heal(other)
	l.waitFor(other+" repaired", phase(t, repair.PhaseSucceeded), other)
	stop()

	o = options("repair-rails-2")
	o.PollInterval = time.Hour // woken when the fleet is healthy enough
	// Long enough for the three nodes to be broken one after the other
	// before the first one counts as unhealthy.
	o.UnhealthyAfter = 6 * time.Second
	o.MaxUnhealthy = intstr.FromInt32(2)
	o.MaxInFlight = 3
	since := time.Now()
	l.start(o, l.exec())
	n := len(l.recorded())
	for _, node := range []string{node2, node3, node4} {
		l.breakNode(node)
	}
	labtest.WaitFor(t, context.Background(), "kdiag_repair_halted 1", func(context.Context) (bool, error) {
		return gauge(t, "kdiag_repair_halted") == 1, nil
	})
	// The rail counts nodes from the moment they turn NotReady, so the
	// halt comes before any of them passes --unhealthy-after, and no node
	// is acted on when they do; each says why in an event once it is due.
	l.quiet(8*time.Second, "max-unhealthy 2 with 3 not Ready: no action, also past --unhealthy-after", func() bool { return len(l.recorded()) == n })
	labtest.WaitFor(t, context.Background(), repair.ReasonHalted+" event on the unhealthy nodes", func(context.Context) (bool, error) {
		for _, node := range []string{node2, node3, node4} {
			if slices.Contains(l.reasons(node, since), repair.ReasonHalted) {
				return true, nil
			}
		}
		return false, nil
	})
	l.heal(node4)
	l.waitActions("repairs once only 2 nodes are unhealthy", func([]string) bool {
		return len(l.recordedOn(node2)) > 0 && len(l.recordedOn(node3)) > 0
	})
	if len(l.recordedOn(node4)) != 0 {
		t.Errorf("%s recovered by itself but was acted on: %v", node4, l.recordedOn(node4))
	}
}

// TestResumeAfterRestart stops the controller while it waits for Ready after
// the reboot, and starts a new one: it goes on with the reimage without
// rebooting again, in the same Operation record, which ends Succeeded with
// the steps from before and after the restart.
func TestResumeAfterRestart(t *testing.T) {
	l := newLab(t)
	ctx := context.Background()
	if err := ops.EnsureCRD(ctx, l.cfg); err != nil {
		t.Fatalf("install the Operation CRD: %v", err)
	}
	since := time.Now().Truncate(time.Second)
	o := options("repair-resume")
	o.StepTimeout = 8 * time.Second
	stop := l.start(o, l.exec())
	l.breakNode(node3)
	n := l.waitFor(node3+" waiting after the reboot", func(n *corev1.Node) bool {
		st := stateOf(t, n)
		return st.Phase == repair.PhaseWaiting && st.Step == repair.Reboot
	}, node3)
	stop()
	if got := l.recordedOn(node3); !slices.Equal(got, []string{"reboot"}) {
		t.Fatalf("before the restart: want one reboot, got %v", got)
	}
	before := stateOf(t, n).Operation
	if op := getOperation(t, l.cfg, before); op.Status.Phase != v1alpha1.PhaseRunning {
		t.Fatalf("Operation %s before the restart: want Running, got %s", before, op.Status.Phase)
	}
	l.start(o, l.exec())
	l.waitActions("reimage of "+node3+" by the second controller", func([]string) bool {
		return slices.Contains(l.recordedOn(node3), "reimage")
	})
	l.heal(node3)
	n = l.waitFor(node3+" repaired", phase(t, repair.PhaseSucceeded), node3)
	if got, want := l.recordedOn(node3), []string{"reboot", "reimage"}; !slices.Equal(got, want) {
		t.Errorf("actions on %s across the restart: want %v, got %v", node3, want, got)
	}
	if after := stateOf(t, n).Operation; after != before {
		t.Errorf("the repair state names Operation %s after the restart, want the one started before it, %s", after, before)
	}

	// Exactly one Operation for the attempt: the one started before the
	// restart, continued by the second controller.
	list, err := dynamic.NewForConfigOrDie(l.cfg).Resource(v1alpha1.OperationGVR()).List(ctx, metav1.ListOptions{LabelSelector: v1alpha1.LabelNode + "=" + node3})
	if err != nil {
		t.Fatalf("list Operations: %v", err)
	}
	var names []string
	for _, u := range list.Items {
		if !u.GetCreationTimestamp().Time.Before(since) {
			names = append(names, u.GetName())
		}
	}
	if len(names) != 1 || names[0] != before {
		t.Fatalf("Operations of %s since the test began: want exactly [%s], got %v", node3, before, names)
	}
	op := getOperation(t, l.cfg, before)
	var steps []string
	for _, s := range op.Status.Steps {
		if !strings.HasPrefix(s.Name, "evict pod ") {
			steps = append(steps, s.Name+"="+string(s.Phase))
		}
	}
	want := []string{
		"reboot " + node3 + "=Failed", // opened before the restart, ended by the second controller
		"drain " + node3 + "=Succeeded",
		"cordon " + node3 + "=Succeeded",
		"reimage " + node3 + "=Succeeded",
	}
	if op.Status.Phase != v1alpha1.PhaseSucceeded || !slices.Equal(steps, want) {
		t.Errorf("Operation %s: want Succeeded with steps %v, got %s with %v", before, want, op.Status.Phase, steps)
	}
}

// TestRecordLeftRunningEnds: the repair state names a previous attempt
// whose record was never finished (its controller stopped before it could
// write the end); the next attempt ends that record Failed with an error
// saying so, and records itself in a new one.
func TestRecordLeftRunningEnds(t *testing.T) {
	l := newLab(t)
	ctx := context.Background()
	if err := ops.EnsureCRD(ctx, l.cfg); err != nil {
		t.Fatalf("install the Operation CRD: %v", err)
	}
	r, err := ops.NewRecorder(l.cfg, ops.RecorderOptions{Initiator: "a controller that died"})
	if err != nil {
		t.Fatal(err)
	}
	old, err := r.Start(ctx, v1alpha1.Operation{Spec: v1alpha1.OperationSpec{Type: v1alpha1.TypeRepair, Target: v1alpha1.OperationTarget{Nodes: []string{node2}}}})
	if err != nil || !old.Persisted() {
		t.Fatalf("start the stale record: %v", err)
	}
	name := old.Operation().Name
	stale := repair.State{Attempt: 1, Phase: repair.PhaseBackoff, NotBefore: time.Now().Add(-time.Minute), Operation: name, Message: "node not Ready after the redeploy"}
	raw, err := json.Marshal(stale)
	if err != nil {
		t.Fatal(err)
	}
	labtest.PatchNode(t, ctx, l.cs, node2, fmt.Sprintf(`{"metadata":{"annotations":{%q:%q}}}`, repair.AnnotationState, raw))
	l.start(options("repair-stale-record"), l.exec())
	l.breakNode(node2)
	l.waitActions("reboot of "+node2+" in attempt 2", func([]string) bool { return slices.Contains(l.recordedOn(node2), "reboot") })
	l.heal(node2)
	n := l.waitFor(node2+" repaired", phase(t, repair.PhaseSucceeded), node2)
	st := stateOf(t, n)
	if st.Attempt != 2 || st.Operation == name || st.Operation == "" {
		t.Errorf("want attempt 2 recorded in a new Operation, got state %+v", st)
	}
	op := getOperation(t, l.cfg, name)
	if op.Status.Phase != v1alpha1.PhaseFailed || !strings.Contains(op.Status.Error, "its record was not finished") || op.Status.EndTime == nil {
		t.Errorf("the stale record %s: want Failed with an error saying it was not finished, got %s: %q", name, op.Status.Phase, op.Status.Error)
	}
	if op := getOperation(t, l.cfg, st.Operation); op.Status.Phase != v1alpha1.PhaseSucceeded {
		t.Errorf("attempt 2's record %s: want Succeeded, got %s", st.Operation, op.Status.Phase)
	}
}

// TestMissingRecordStartsNew: after a restart the state names a record
// that is gone; the controller records the rest of the attempt in a new
// record whose reason says why, and ends it (here the node is Ready again).
func TestMissingRecordStartsNew(t *testing.T) {
	l := newLab(t)
	ctx := context.Background()
	if err := ops.EnsureCRD(ctx, l.cfg); err != nil {
		t.Fatalf("install the Operation CRD: %v", err)
	}
	const gone = "repair-lab-node-1-gone"
	st := repair.State{Attempt: 1, Step: repair.Reboot, Phase: repair.PhaseWaiting, SequenceStart: time.Now(), StepStart: time.Now(), Done: []string{"1/reboot"}, Operation: gone}
	raw, err := json.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	labtest.PatchNode(t, ctx, l.cs, node1, fmt.Sprintf(`{"metadata":{"annotations":{%q:%q}}}`, repair.AnnotationState, raw))
	l.start(options("repair-missing-record"), l.exec())
	n := l.waitFor(node1+" repaired", phase(t, repair.PhaseSucceeded), node1)
	name := stateOf(t, n).Operation
	if name == gone || name == "" {
		t.Fatalf("want the state to name a new record, got %q", name)
	}
	op := getOperation(t, l.cfg, name)
	if op.Status.Phase != v1alpha1.PhaseSucceeded || !strings.Contains(op.Spec.Reason, "its record "+gone+" could not be continued") || !strings.Contains(op.Spec.Reason, "not found") {
		t.Errorf("new record %s: want Succeeded with a reason naming %s as not found, got %s: %q", name, gone, op.Status.Phase, op.Spec.Reason)
	}
}

// TestSkipAndPause: unhealthy nodes with a skip taint, the skip annotation
// or a foreign cordon are left alone; --paused and the Lease annotation
// stop everything.
func TestSkipAndPause(t *testing.T) {
	l := newLab(t)
	ctx := context.Background()
	o := options("repair-skip")
	o.MaxUnhealthy = intstr.FromString("100%")
	o.MaxInFlight = 4
	since := time.Now()
	stop := l.start(o, l.exec())
	addTaint(t, l.cs, node1, repair.TaintToBeDeleted)
	addTaint(t, l.cs, node2, repair.TaintShutdown)
	labtest.PatchNode(t, ctx, l.cs, node3, fmt.Sprintf(`{"metadata":{"annotations":{%q:"true"}}}`, repair.AnnotationSkip))
	labtest.PatchNode(t, ctx, l.cs, node4, `{"spec":{"unschedulable":true}}`)
	for _, n := range []string{node1, node2, node3, node4} {
		l.breakNode(n)
	}
	l.quiet(5*time.Second, "skipped nodes: no action", func() bool { return len(l.recorded()) == 0 })
	for _, n := range []string{node1, node2, node3, node4} {
		if !slices.Contains(l.reasons(n, since), repair.ReasonSkipped) {
			t.Errorf("node %s: no %s event, got %v", n, repair.ReasonSkipped, l.reasons(n, since))
		}
	}
	stop()
	for _, n := range []string{node1, node2, node3, node4} {
		l.reset(n)
	}

	t.Run("flag", func(t *testing.T) {
		o := options("repair-paused-flag")
		o.Paused = true
		stop := l.start(o, l.exec())
		defer stop()
		l.breakNode(node1)
		l.quiet(5*time.Second, "--paused: no action", func() bool { return len(l.recorded()) == 0 })
		if g := gauge(t, "kdiag_repair_paused"); g != 1 {
			t.Errorf("kdiag_repair_paused: want 1, got %v", g)
		}
	})
	stopAll := func() {}
	t.Run("lease annotation", func(t *testing.T) {
		o := options("repair-paused-lease")
		leases := l.cs.CoordinationV1().Leases("kube-system")
		// The Lease exists before the controller (as after a first run),
		// paused: node1 is still NotReady from the flag subtest.
		lease := &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: o.LeaseName, Annotations: map[string]string{repair.AnnotationPaused: "true"}}}
		if _, err := leases.Create(ctx, lease, metav1.CreateOptions{}); err != nil {
			t.Fatalf("create the Lease: %v", err)
		}
		stop := l.start(o, l.exec())
		stopAll = stop
		labtest.WaitFor(t, ctx, "the controller holding the Lease", func(ctx context.Context) (bool, error) {
			l, err := leases.Get(ctx, o.LeaseName, metav1.GetOptions{})
			return err == nil && l.Spec.HolderIdentity != nil && *l.Spec.HolderIdentity != "", nil
		})
		annotate := func(v string) {
			patch := fmt.Sprintf(`{"metadata":{"annotations":{%q:%s}}}`, repair.AnnotationPaused, v)
			if _, err := leases.Patch(ctx, o.LeaseName, types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
				t.Fatalf("annotate the Lease: %v", err)
			}
		}
		// node1 is still NotReady from the flag subtest.
		l.quiet(5*time.Second, "paused by the Lease: no action", func() bool { return len(l.recorded()) == 0 })
		annotate(`null`)
		l.waitActions("a reboot once the pause annotation is gone", func(a []string) bool { return slices.Equal(a, []string{node1 + " reboot"}) })
	})
	stopAll()
}

// TestLabProviderDeadKubelet is the tutorial's path: a node whose kubelet
// died (no heartbeat: the node lifecycle controller marks it Unknown) with
// a pod on it; the lab provider's reboot does not help, the reimage does.
// The drain before the reimage evicts the pod, which stays Terminating on
// the dead node; the drain does not wait for it past its grace period and
// DrainSkipWaitForDeleteTimeout (kubectl's --skip-wait-for-delete-timeout),
// so the reimage starts long before the drain timeout.
func TestLabProviderDeadKubelet(t *testing.T) {
	l := newLab(t)
	ctx := context.Background()
	if err := ops.EnsureCRD(ctx, l.cfg); err != nil {
		t.Fatalf("install the Operation CRD: %v", err)
	}
	labtest.CreateNamespace(t, ctx, l.cs, "repair-lab")
	spec := labtest.PauseSpec()
	spec.NodeSelector = map[string]string{corev1.LabelHostname: node4}
	grace := int64(3) // deleted only when its (dead) kubelet confirms
	spec.TerminationGracePeriodSeconds = &grace
	labtest.CreateDeployment(t, ctx, l.cs, "repair-lab", "web", 1, map[string]string{"app": "web"}, spec)
	orig := labtest.WaitForPods(t, ctx, l.cs, "repair-lab", metav1.ListOptions{LabelSelector: "app=web"}, 1, labtest.PodReady)[0].Name
	o := options("repair-lab-provider")
	o.StepTimeout = 6 * time.Second
	o.DrainTimeout = 2 * time.Minute // longer than labtest.WaitTimeout: waiting it out fails the test
	o.DrainSkipWaitForDeleteTimeout = 1
	since := time.Now()
	l.start(o, repair.LabProvider{Client: l.cs, HealsAt: repair.Reimage})
	labtest.PatchNode(t, ctx, l.cs, node4, fmt.Sprintf(`{"metadata":{"annotations":{%q:"false"}}}`, kubelet.AnnotationHeartbeat))
	l.waitFor(node4+" Ready Unknown (heartbeat stopped)", func(n *corev1.Node) bool {
		for _, c := range n.Status.Conditions {
			if c.Type == corev1.NodeReady {
				return c.Status == corev1.ConditionUnknown
			}
		}
		return false
	}, node4)
	n := l.waitFor(node4+" repaired", phase(t, repair.PhaseSucceeded), node4)
	st := stateOf(t, n)
	if st.Step != repair.Reimage || n.Spec.Unschedulable || !ready(n) {
		t.Errorf("want %s Ready and uncordoned after the reimage, got state %+v, unschedulable %v", node4, st, n.Spec.Unschedulable)
	}
	// The drain evicted the pod: its ReplicaSet made a replacement, and the
	// original is still Terminating on the dead node (nothing confirmed it).
	labtest.WaitFor(t, ctx, "a replacement of the evicted pod "+orig, func(ctx context.Context) (bool, error) {
		pods, err := l.cs.CoreV1().Pods("repair-lab").List(ctx, metav1.ListOptions{LabelSelector: "app=web"})
		return err == nil && slices.ContainsFunc(pods.Items, func(p corev1.Pod) bool { return p.Name != orig }), err
	})
	want := []string{"NodeRebootStart", "NodeRebootError", "NodeReimageStart", "NodeReimageEnd"}
	labtest.WaitFor(t, ctx, "the repair events on "+node4, func(context.Context) (bool, error) {
		return slices.Equal(l.reasons(node4, since), want), nil
	})
	// The Operation shows the drain ended Succeeded well before its
	// timeout, the evicted pod not waited for.
	op := getOperation(t, l.cfg, st.Operation)
	drainStep := findStep(op, "drain "+node4)
	evictStep := findStep(op, "evict pod repair-lab/"+orig)
	switch {
	case drainStep == nil || evictStep == nil:
		t.Fatalf("Operation %s: want steps %q and %q, got %+v", st.Operation, "drain "+node4, "evict pod repair-lab/"+orig, op.Status.Steps)
	case drainStep.Phase != v1alpha1.PhaseSucceeded || drainStep.EndTime == nil:
		t.Errorf("drain step: want Succeeded, got %+v", drainStep)
	default:
		if took := drainStep.EndTime.Sub(drainStep.StartTime.Time); took > 30*time.Second {
			t.Errorf("drain of the dead node took %s (timeout %s): it waited for the terminating pod", took, o.DrainTimeout)
		}
		if evictStep.Message != drain.SkippedMessage(1) {
			t.Errorf("evict step message: want %q, got %q", drain.SkippedMessage(1), evictStep.Message)
		}
	}
}

// getOperation reads one Operation record.
func getOperation(t *testing.T, cfg *rest.Config, name string) v1alpha1.Operation {
	t.Helper()
	if name == "" {
		t.Fatal("the repair state names no Operation")
	}
	u, err := dynamic.NewForConfigOrDie(cfg).Resource(v1alpha1.OperationGVR()).Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("get Operation %s: %v", name, err)
	}
	var op v1alpha1.Operation
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &op); err != nil {
		t.Fatalf("decode Operation %s: %v", name, err)
	}
	return op
}

// findStep returns the last step of op named name, nil if none.
func findStep(op v1alpha1.Operation, name string) *v1alpha1.OperationStep {
	for i := len(op.Status.Steps) - 1; i >= 0; i-- {
		if op.Status.Steps[i].Name == name {
			return &op.Status.Steps[i]
		}
	}
	return nil
}

func addTaint(t *testing.T, cs kubernetes.Interface, node, key string) {
	t.Helper()
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		n, err := cs.CoreV1().Nodes().Get(context.Background(), node, metav1.GetOptions{})
		if err != nil {
			return err
		}
		n.Spec.Taints = append(n.Spec.Taints, corev1.Taint{Key: key, Effect: corev1.TaintEffectNoSchedule})
		_, err = cs.CoreV1().Nodes().Update(context.Background(), n, metav1.UpdateOptions{})
		return err
	})
	if err != nil && !apierrors.IsNotFound(err) {
		t.Fatalf("taint node %s: %v", node, err)
	}
}
