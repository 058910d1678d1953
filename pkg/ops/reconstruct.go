package ops

import (
	"fmt"
	"regexp"
	"sort"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kdiag/kdiag/pkg/analyze/operations"
	"github.com/kdiag/kdiag/pkg/apis/kdiag/v1alpha1"
	"github.com/kdiag/kdiag/pkg/cluster"
	"github.com/kdiag/kdiag/pkg/ops/opevents"
)

// SourceEvents is the kdiag.io/source annotation value of reconstructed
// operations; recorded ones carry no annotation.
const SourceEvents = "events"

// PodNodeFunc returns the node a pod runs on, or "" when unknown.
type PodNodeFunc func(namespace, name string) string

// budgetInMessage finds a budget's name in an eviction refusal: the API's
// cause "The disruption budget nginx needs 1 healthy pods ..." and the
// wording of AKS and cluster-autoscaler ("... PDB nginx ...").
var budgetInMessage = regexp.MustCompile(`(?i)(?:disruption budget|poddisruptionbudget|pdb)\s+"?([a-z0-9][a-z0-9.-]*)`)

// Reconstruct rebuilds past operations from cluster events, marked with
// the annotation kdiag.io/source=events:
//   - node repairs (AKS's NodeReboot*, NodeReimage*, NodeRedeploy* events),
//     one Repair operation per escalation sequence;
//   - cordons (the kubelet's NodeNotSchedulable), one Drain operation each,
//     ended by the next NodeSchedulable, with the refused evictions of the
//     node's pods in between as failed steps;
//   - refused evictions outside any cordon, one Eviction operation per pod
//     (or node) the events are about.
//
// podNode places a refused pod on its node (pods are gone once drained, so
// this is best effort). The result is sorted by start time. It is pure.
func Reconstruct(events []corev1.Event, podNode PodNodeFunc) []v1alpha1.Operation {
	if podNode == nil {
		podNode = func(string, string) string { return "" }
	}
	var out []v1alpha1.Operation
	out = append(out, repairs(events)...)
	drains := cordons(events)
	out = append(out, evictions(events, podNode, drains)...)
	for _, d := range drains {
		out = append(out, *d)
	}
	sortOperations(out)
	return out
}

func mt(t time.Time) *metav1.Time {
	if t.IsZero() {
		return nil
	}
	v := metav1.NewTime(t.UTC().Truncate(time.Second))
	return &v
}

// reconstructed returns an operation skeleton with a stable name.
func reconstructed(typ v1alpha1.OperationType, target v1alpha1.OperationTarget, start time.Time) v1alpha1.Operation {
	spec := v1alpha1.OperationSpec{Type: typ, Target: target, Initiator: "unknown (reconstructed from events)"}
	op := v1alpha1.Operation{
		TypeMeta: metav1.TypeMeta{APIVersion: v1alpha1.GroupVersion().String(), Kind: "Operation"},
		ObjectMeta: metav1.ObjectMeta{
			Name:        fmt.Sprintf("events-%s%d", objectNamePrefix(spec), start.Unix()),
			Annotations: map[string]string{v1alpha1.AnnotationSource: SourceEvents},
		},
		Spec:   spec,
		Status: v1alpha1.OperationStatus{Phase: v1alpha1.PhaseRunning, StartTime: mt(start)},
	}
	if s := op.Status.StartTime; s != nil {
		op.CreationTimestamp = *s
	}
	return op
}

func nodeTarget(n string) v1alpha1.OperationTarget {
	return v1alpha1.OperationTarget{Name: n, Nodes: []string{n}}
}

func repairs(events []corev1.Event) []v1alpha1.Operation {
	seqs := opevents.RepairSequences(events)
	perNode := map[string]int32{}
	for _, s := range seqs {
		perNode[s.Node] += s.Repeats
	}
	var out []v1alpha1.Operation
	for _, s := range seqs {
		op := reconstructed(v1alpha1.TypeRepair, nodeTarget(s.Node), s.Start())
		if s.Repeats > 1 {
			op.Spec.Reason = fmt.Sprintf("the same repair events were seen %d times", s.Repeats)
		}
		for _, st := range s.Steps {
			phase := v1alpha1.PhaseRunning
			switch {
			case st.Failed:
				phase = v1alpha1.PhaseFailed
			case !st.End.IsZero():
				phase = v1alpha1.PhaseSucceeded
			}
			op.Status.Steps = append(op.Status.Steps, v1alpha1.OperationStep{Name: strings.ToLower(st.Action) + " " + s.Node,
				Phase: phase, StartTime: mt(st.Start), EndTime: mt(st.End), Message: st.Message})
		}
		last := s.Last()
		op.Status.CurrentStep = op.Status.Steps[len(op.Status.Steps)-1].Name
		switch {
		case s.Failed():
			op.Status.Phase, op.Status.EndTime = v1alpha1.PhaseFailed, mt(last.End)
			op.Status.Error = fmt.Sprintf("%s of node %s failed: %s", strings.ToLower(last.Action), s.Node, last.Message)
			op.Status.Hint = "the repair action itself failed: look at the repair provider's logs (kdiag repair, or the cloud's activity log)"
		case s.Done():
			op.Status.Phase, op.Status.EndTime = v1alpha1.PhaseSucceeded, mt(last.End)
		}
		if n := perNode[s.Node]; n >= 2 {
			h := fmt.Sprintf("node %s was repaired %d times in the events' window: a root cause is still to find (kdiag doctor, check node-repaired-repeatedly)", s.Node, n)
			op.Status.Hint = joinHints(op.Status.Hint, h)
		}
		out = append(out, op)
	}
	return out
}

func joinHints(a, b string) string {
	if a == "" {
		return b
	}
	return a + "; " + b
}

// cordons returns one Drain operation per NodeNotSchedulable event, ended
// by the node's next NodeSchedulable.
func cordons(events []corev1.Event) []*v1alpha1.Operation {
	type ev struct {
		node string
		on   bool
		t    time.Time
		msg  string
	}
	var evs []ev
	for i := range events {
		e := &events[i]
		if e.InvolvedObject.Kind != "Node" {
			continue
		}
		switch e.Reason {
		case opevents.ReasonNodeNotSchedulable:
			evs = append(evs, ev{e.InvolvedObject.Name, true, opevents.Time(e), e.Message})
		case opevents.ReasonNodeSchedulable:
			evs = append(evs, ev{e.InvolvedObject.Name, false, opevents.Time(e), e.Message})
		}
	}
	sort.SliceStable(evs, func(i, j int) bool {
		if evs[i].node != evs[j].node {
			return evs[i].node < evs[j].node
		}
		return evs[i].t.Before(evs[j].t)
	})
	var out []*v1alpha1.Operation
	open := map[string]*v1alpha1.Operation{}
	for _, e := range evs {
		if e.on {
			op := reconstructed(v1alpha1.TypeDrain, nodeTarget(e.node), e.t)
			op.Status.Steps = []v1alpha1.OperationStep{{Name: "cordon " + e.node, Phase: v1alpha1.PhaseSucceeded, StartTime: mt(e.t), EndTime: mt(e.t), Message: e.msg}}
			op.Status.CurrentStep = op.Status.Steps[0].Name
			out = append(out, &op)
			open[e.node] = &op
			continue
		}
		op := open[e.node]
		if op == nil {
			continue // an uncordon whose cordon is out of the window
		}
		delete(open, e.node)
		op.Status.Steps = append(op.Status.Steps, v1alpha1.OperationStep{Name: "uncordon " + e.node, Phase: v1alpha1.PhaseSucceeded, StartTime: mt(e.t), EndTime: mt(e.t), Message: e.msg})
		op.Status.CurrentStep = "uncordon " + e.node
		op.Status.EndTime = mt(e.t)
		op.Status.Phase = v1alpha1.PhaseSucceeded
	}
	return out
}

// evictions attaches refused evictions to the cordon of their node that
// was open at the time, or makes one Eviction operation per object.
func evictions(events []corev1.Event, podNode PodNodeFunc, drains []*v1alpha1.Operation) []v1alpha1.Operation {
	var idx []int
	for i := range events {
		if operations.IsDrainFailure(&events[i]) {
			idx = append(idx, i)
		}
	}
	sort.SliceStable(idx, func(a, b int) bool { return opevents.Time(&events[idx[a]]).Before(opevents.Time(&events[idx[b]])) })
	byNode := map[string][]*v1alpha1.Operation{}
	for _, d := range drains {
		byNode[d.Spec.Target.Name] = append(byNode[d.Spec.Target.Name], d)
	}
	standalone := map[string]*v1alpha1.Operation{}
	type hintOf struct{ msg, node string }
	last := map[*v1alpha1.Operation]hintOf{}
	var keys []string
	for _, i := range idx {
		e := &events[i]
		io := e.InvolvedObject
		node, what := io.Name, "node "+io.Name
		if io.Kind != "Node" {
			node = podNode(io.Namespace, io.Name)
			what = strings.ToLower(io.Kind) + " " + io.Namespace + "/" + io.Name
		}
		t := opevents.Time(e)
		msg := strings.Join(strings.Fields(e.Message), " ")
		if n := cluster.EventCount(e); n > 1 {
			msg = fmt.Sprintf("%s (seen %d times since %s)", msg, n, opevents.FirstTime(e).UTC().Format(time.RFC3339))
		}
		name := "evict " + what
		if io.Kind == "Node" {
			name = "drain " + io.Name // a drainer's event about the whole node
		}
		step := v1alpha1.OperationStep{Name: name, Phase: v1alpha1.PhaseFailed, StartTime: mt(opevents.FirstTime(e)), EndTime: mt(t), Message: e.Reason + ": " + msg}
		var op *v1alpha1.Operation
		if node != "" {
			for _, d := range byNode[node] {
				if !t.Before(d.Status.StartTime.Time.Add(-time.Minute)) && (d.Status.EndTime == nil || !t.After(d.Status.EndTime.Time)) {
					op = d
				}
			}
		}
		if op == nil {
			k := io.Kind + "/" + io.Namespace + "/" + io.Name
			if op = standalone[k]; op == nil {
				target := v1alpha1.OperationTarget{Name: what, Object: &v1alpha1.ObjectReference{APIVersion: io.APIVersion, Kind: io.Kind, Namespace: io.Namespace, Name: io.Name}}
				if node != "" {
					target.Nodes = []string{node}
				}
				o := reconstructed(v1alpha1.TypeEviction, target, opevents.FirstTime(e))
				op = &o
				standalone[k] = op
				keys = append(keys, k)
			}
		}
		op.Status.Steps = append(op.Status.Steps, step)
		op.Status.CurrentStep = step.Name
		op.Status.Phase = v1alpha1.PhaseFailed
		op.Status.Error = e.Reason + ": " + msg
		if op.Status.EndTime == nil || op.Status.EndTime.Before(mt(t)) {
			op.Status.EndTime = mt(t)
		}
		last[op] = hintOf{e.Message, node}
	}
	// The hint quotes the newest refusal; its regexp runs once per operation.
	for op, h := range last {
		op.Status.Hint = evictionHint(h.msg, h.node)
	}
	for _, d := range drains {
		sort.SliceStable(d.Status.Steps, func(i, j int) bool {
			return d.Status.Steps[i].StartTime.Before(d.Status.Steps[j].StartTime)
		})
		d.Status.CurrentStep = d.Status.Steps[len(d.Status.Steps)-1].Name
	}
	out := make([]v1alpha1.Operation, 0, len(keys))
	for _, k := range keys {
		out = append(out, *standalone[k])
	}
	return out
}

func evictionHint(msg, node string) string {
	check := "kdiag drain check " + node
	if node == "" {
		check = "kdiag drain check NODE"
	}
	if m := budgetInMessage.FindStringSubmatch(msg); m != nil {
		return fmt.Sprintf("PodDisruptionBudget %s refused the eviction: add replicas or relax the budget; `%s` proposes both fixes, checked by server-side dry run", m[1], check)
	}
	return fmt.Sprintf("the eviction was refused: `%s` names the blocking PodDisruptionBudget and proposes fixes, checked by server-side dry run", check)
}

// sortOperations orders operations by start time, then name.
func sortOperations(ops []v1alpha1.Operation) {
	sort.SliceStable(ops, func(i, j int) bool {
		a, b := startOf(&ops[i]), startOf(&ops[j])
		if !a.Equal(b) {
			return a.Before(b)
		}
		return ops[i].Name < ops[j].Name
	})
}

// startOf is an operation's start time, or its creation time.
func startOf(op *v1alpha1.Operation) time.Time {
	if op.Status.StartTime != nil {
		return op.Status.StartTime.Time
	}
	return op.CreationTimestamp.Time
}
