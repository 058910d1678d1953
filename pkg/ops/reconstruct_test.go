package ops

import (
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kdiag/kdiag/pkg/apis/kdiag/v1alpha1"
)

var t0 = time.Date(2026, 11, 28, 10, 0, 0, 0, time.UTC)

func nodeEvent(node, reason, typ string, at time.Duration, msg string) corev1.Event {
	ts := metav1.NewTime(t0.Add(at))
	return corev1.Event{ObjectMeta: metav1.ObjectMeta{Name: node + "." + reason, Namespace: "default"},
		InvolvedObject: corev1.ObjectReference{Kind: "Node", Name: node}, Reason: reason, Type: typ, Message: msg,
		FirstTimestamp: ts, LastTimestamp: ts, Count: 1}
}

func podEvent(ns, pod, reason string, at time.Duration, msg string) corev1.Event {
	ts := metav1.NewTime(t0.Add(at))
	return corev1.Event{ObjectMeta: metav1.ObjectMeta{Name: pod + "." + reason, Namespace: ns},
		InvolvedObject: corev1.ObjectReference{Kind: "Pod", Namespace: ns, Name: pod}, Reason: reason, Type: corev1.EventTypeWarning,
		Message: msg, FirstTimestamp: ts, LastTimestamp: ts, Count: 1}
}

func stepNames(op v1alpha1.Operation) string {
	var s []string
	for _, st := range op.Status.Steps {
		s = append(s, st.Name+"="+string(st.Phase))
	}
	return strings.Join(s, ",")
}

func TestReconstruct(t *testing.T) {
	const refusal = "Cannot evict pod as it would violate the pod's disruption budget. The disruption budget nginx needs 1 healthy pods and has 1 currently"
	podNode := func(ns, name string) string {
		if ns == "shop" && name == "nginx-1" {
			return "n1"
		}
		return ""
	}
	type want struct {
		typ    v1alpha1.OperationType
		target string
		phase  v1alpha1.OperationPhase
		steps  string
		error  string
		hint   string
	}
	tests := []struct {
		name   string
		events []corev1.Event
		want   []want
	}{
		{name: "no events", want: nil},
		{name: "unrelated events are ignored",
			events: []corev1.Event{nodeEvent("n1", "NodeReady", "Normal", 0, ""), podEvent("shop", "a", "BackOff", 0, "back-off restarting")}},
		{name: "reboot that worked",
			events: []corev1.Event{nodeEvent("n1", "NodeRebootStart", "Normal", 0, "rebooting"), nodeEvent("n1", "NodeRebootEnd", "Normal", time.Minute, "rebooted")},
			want:   []want{{typ: v1alpha1.TypeRepair, target: "n1", phase: v1alpha1.PhaseSucceeded, steps: "reboot n1=Succeeded"}}},
		{name: "escalation to a failed reimage",
			events: []corev1.Event{
				nodeEvent("n1", "NodeReimageError", "Warning", 12*time.Minute, "reimage failed: quota"),
				nodeEvent("n1", "NodeRebootStart", "Normal", 0, ""), nodeEvent("n1", "NodeRebootEnd", "Normal", time.Minute, ""),
				nodeEvent("n1", "NodeReimageStart", "Normal", 7*time.Minute, "")},
			want: []want{{typ: v1alpha1.TypeRepair, target: "n1", phase: v1alpha1.PhaseFailed, steps: "reboot n1=Succeeded,reimage n1=Failed",
				error: "reimage of node n1 failed: reimage failed: quota", hint: "repair provider"}}},
		{name: "two sequences on one node: repaired repeatedly",
			events: []corev1.Event{
				nodeEvent("n2", "NodeRebootStart", "Normal", 0, ""), nodeEvent("n2", "NodeRebootEnd", "Normal", time.Minute, ""),
				nodeEvent("n2", "NodeRebootStart", "Normal", 2*time.Hour, "")},
			want: []want{
				{typ: v1alpha1.TypeRepair, target: "n2", phase: v1alpha1.PhaseSucceeded, steps: "reboot n2=Succeeded", hint: "repaired 2 times"},
				{typ: v1alpha1.TypeRepair, target: "n2", phase: v1alpha1.PhaseRunning, steps: "reboot n2=Running", hint: "repaired 2 times"}}},
		{name: "cordon, refused eviction, uncordon",
			events: []corev1.Event{
				nodeEvent("n1", "NodeNotSchedulable", "Normal", 0, "Node n1 status is now: NodeNotSchedulable"),
				podEvent("shop", "nginx-1", "EvictionFailed", 30*time.Second, refusal),
				nodeEvent("n1", "NodeSchedulable", "Normal", 5*time.Minute, "")},
			want: []want{{typ: v1alpha1.TypeDrain, target: "n1", phase: v1alpha1.PhaseFailed, steps: "cordon n1=Succeeded,evict pod shop/nginx-1=Failed,uncordon n1=Succeeded",
				error: "EvictionFailed: Cannot evict", hint: "PodDisruptionBudget nginx refused the eviction"}}},
		{name: "cordon then uncordon",
			events: []corev1.Event{nodeEvent("n1", "NodeNotSchedulable", "Normal", 0, ""), nodeEvent("n1", "NodeSchedulable", "Normal", 5*time.Minute, "")},
			want:   []want{{typ: v1alpha1.TypeDrain, target: "n1", phase: v1alpha1.PhaseSucceeded, steps: "cordon n1=Succeeded,uncordon n1=Succeeded"}}},
		{name: "refused eviction without a cordon: one Eviction operation per pod",
			events: []corev1.Event{podEvent("shop", "web-1", "FailedDraining", 0, "Failed to drain node: "+refusal), podEvent("shop", "web-1", "EvictionFailed", time.Minute, "cannot evict")},
			want: []want{{typ: v1alpha1.TypeEviction, target: "pod shop/web-1", phase: v1alpha1.PhaseFailed, steps: "evict pod shop/web-1=Failed,evict pod shop/web-1=Failed",
				error: "EvictionFailed: cannot evict", hint: "kdiag drain check NODE"}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := Reconstruct(tc.events, podNode)
			if len(got) != len(tc.want) {
				t.Fatalf("got %d operations, want %d: %+v", len(got), len(tc.want), got)
			}
			for i, w := range tc.want {
				g := got[i]
				if g.Spec.Type != w.typ || g.Spec.Target.Name != w.target || g.Status.Phase != w.phase || stepNames(g) != w.steps {
					t.Errorf("op %d = %s %s %s [%s], want %s %s %s [%s]", i, g.Spec.Type, g.Spec.Target.Name, g.Status.Phase, stepNames(g), w.typ, w.target, w.phase, w.steps)
				}
				if !strings.HasPrefix(g.Status.Error, w.error) || (w.error == "" && g.Status.Error != "") {
					t.Errorf("op %d error %q, want prefix %q", i, g.Status.Error, w.error)
				}
				if !strings.Contains(g.Status.Hint, w.hint) || (w.hint == "" && g.Status.Hint != "") {
					t.Errorf("op %d hint %q, want it to contain %q", i, g.Status.Hint, w.hint)
				}
				if Source(&g) != SourceEvents || !strings.HasPrefix(g.Name, "events-") {
					t.Errorf("op %d (%s) not marked as reconstructed", i, g.Name)
				}
			}
		})
	}
}

func TestReconstructAggregatedRepairs(t *testing.T) {
	e := nodeEvent("n1", "NodeRebootStart", "Normal", 0, "")
	e.Count = 3
	got := Reconstruct([]corev1.Event{e}, nil)
	if len(got) != 1 || !strings.Contains(got[0].Status.Hint, "repaired 3 times") || !strings.Contains(got[0].Spec.Reason, "3 times") {
		t.Fatalf("an event seen 3 times: %+v, want one operation saying the node was repaired 3 times", got)
	}
}

func TestMerge(t *testing.T) {
	rec := func(typ v1alpha1.OperationType, node string, start, end time.Duration) v1alpha1.Operation {
		op := v1alpha1.Operation{ObjectMeta: metav1.ObjectMeta{Name: "rec-" + node}, Spec: v1alpha1.OperationSpec{Type: typ, Target: nodeTarget(node)}}
		op.Status.StartTime = mt(t0.Add(start))
		if end > 0 {
			op.Status.EndTime = mt(t0.Add(end))
		}
		return op
	}
	recorded := []v1alpha1.Operation{rec(v1alpha1.TypeDrain, "n1", 0, 2*time.Minute), rec(v1alpha1.TypeRepair, "n2", time.Hour, 0)}
	events := []corev1.Event{
		nodeEvent("n1", "NodeNotSchedulable", "Normal", 10*time.Second, ""), // the recorded drain's own trace
		nodeEvent("n1", "NodeNotSchedulable", "Normal", time.Hour, ""),      // a later cordon: kept
		nodeEvent("n2", "NodeRebootStart", "Normal", time.Hour+time.Minute, ""),
		nodeEvent("n3", "NodeRebootStart", "Normal", 0, ""),
		nodeEvent("n2", "NodeNotSchedulable", "Normal", time.Hour+5*time.Minute, ""), // the repair's own drain
	}
	got := Merge(recorded, Reconstruct(events, nil))
	var names []string
	for _, op := range got {
		names = append(names, string(op.Spec.Type)+"/"+op.Spec.Target.Name+"/"+Source(&op))
	}
	want := "Repair/n3/events,Drain/n1/record,Drain/n1/events,Repair/n2/record" // ties by name
	if strings.Join(names, ",") != want {
		t.Errorf("Merge = %v, want %s", names, want)
	}
}

func TestFilter(t *testing.T) {
	op := v1alpha1.Operation{Spec: v1alpha1.OperationSpec{Type: v1alpha1.TypeDrain, Target: v1alpha1.OperationTarget{Name: "agentpool=np1", Nodes: []string{"n1", "n2"}}}}
	for _, tc := range []struct {
		f    Filter
		want bool
	}{
		{Filter{}, true}, {Filter{Node: "n2"}, true}, {Filter{Node: "n3"}, false},
		{Filter{Type: v1alpha1.TypeDrain, Node: "n1"}, true}, {Filter{Type: v1alpha1.TypeRepair}, false},
	} {
		if got := tc.f.Match(&op); got != tc.want {
			t.Errorf("%+v.Match = %v, want %v", tc.f, got, tc.want)
		}
	}
}

func TestObjectNamePrefix(t *testing.T) {
	for _, tc := range []struct {
		spec v1alpha1.OperationSpec
		want string
	}{
		{v1alpha1.OperationSpec{Type: "Drain", Target: v1alpha1.OperationTarget{Name: "x", Nodes: []string{"aks-np1-1_VMSS"}}}, "drain-aks-np1-1-vmss-"},
		{v1alpha1.OperationSpec{Type: "Drain", Target: v1alpha1.OperationTarget{Name: "agentpool=np1"}}, "drain-agentpool-np1-"},
		{v1alpha1.OperationSpec{Type: "Fix", Target: v1alpha1.OperationTarget{Name: strings.Repeat("a", 80)}}, "fix-" + strings.Repeat("a", 48) + "-"},
	} {
		if got := objectNamePrefix(tc.spec); got != tc.want {
			t.Errorf("objectNamePrefix(%+v) = %q, want %q", tc.spec.Target, got, tc.want)
		}
	}
}

// A nil Record (recording switched off) is safe to use.
func TestNilRecord(t *testing.T) {
	var r *Recorder
	rec, err := r.Start(t.Context(), v1alpha1.Operation{})
	if rec != nil || err != nil {
		t.Fatalf("nil Recorder's Start = %v, %v; want nil, nil", rec, err)
	}
	rec.Step(t.Context(), "x", "").Done(t.Context(), nil, "")
	if err := rec.Finish(t.Context(), errBoom, "h"); err != errBoom {
		t.Errorf("Finish on nil returned %v, want the error passed in", err)
	}
	if rec.Persisted() || rec.Operation().Name != "" {
		t.Error("nil record claims content")
	}
}

var errBoom = errorString("boom")

type errorString string

func (e errorString) Error() string { return string(e) }

// A Recorder without a client keeps the record in memory and counts
// metrics; Start rejects an operation without a type or target.
func TestRecorderInMemory(t *testing.T) {
	now := t0
	r, err := NewRecorder(nil, RecorderOptions{Now: func() time.Time { return now }, Initiator: "unit"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Start(t.Context(), v1alpha1.Operation{}); err == nil {
		t.Error("Start accepted an operation without a type")
	}
	if _, err := r.Start(t.Context(), v1alpha1.Operation{Spec: v1alpha1.OperationSpec{Type: "Drain"}}); err == nil {
		t.Error("Start accepted an operation without a target")
	}
	rec, err := r.Start(t.Context(), v1alpha1.Operation{Spec: v1alpha1.OperationSpec{Type: "Drain", Target: v1alpha1.OperationTarget{Nodes: []string{"n1"}}}})
	if err != nil {
		t.Fatal(err)
	}
	now = now.Add(time.Second)
	s := rec.Step(t.Context(), "cordon n1", "")
	now = now.Add(time.Second)
	s.Done(t.Context(), nil, "")
	rec.Step(t.Context(), "evict pod a/b", "")
	now = now.Add(time.Minute)
	_ = rec.Finish(t.Context(), errBoom, "hint")
	op := rec.Operation()
	if op.Spec.Target.Name != "n1" || op.Spec.Initiator != "unit" || op.Labels[v1alpha1.LabelNode] != "n1" || op.GenerateName != "drain-n1-" {
		t.Errorf("spec/meta = %+v %+v", op.Spec, op.ObjectMeta)
	}
	if op.Status.Phase != v1alpha1.PhaseFailed || op.Status.Error != "boom" || op.Status.EndTime.Sub(op.Status.StartTime.Time) != 62*time.Second ||
		stepNames(op) != "cordon n1=Succeeded,evict pod a/b=Failed" {
		t.Errorf("status = %+v", op.Status)
	}
}
