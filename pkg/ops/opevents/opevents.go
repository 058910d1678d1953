// Package opevents reads operations out of cluster events: the node repair
// events AKS emits (and `kdiag repair` emits with the same reasons), and
// the kubelet's cordon and uncordon events. It is pure, so that both
// `kdiag ops` (which
// reconstructs past operations) and the doctor's operations analyzer
// (which flags nodes repaired repeatedly) share one reading.
package opevents

import (
	"sort"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/kdiag/kdiag/pkg/cluster"
)

// Repair actions, in escalation order.
const (
	ActionReboot   = "Reboot"
	ActionReimage  = "Reimage"
	ActionRedeploy = "Redeploy"
)

// Stages of a repair action, the suffix of the event reason.
const (
	StageStart = "Start"
	StageEnd   = "End"
	StageError = "Error"
)

// Kubelet event reasons of a cordon and an uncordon.
const (
	ReasonNodeNotSchedulable = "NodeNotSchedulable"
	ReasonNodeSchedulable    = "NodeSchedulable"
)

// SequenceGap is the quiet time after which a repair action starts a new
// sequence even when it is not a reboot: AKS's escalation runs its steps
// minutes apart, not hours.
const SequenceGap = time.Hour

// RepairEvent is one node repair event: NodeRebootStart, NodeReimageError...
type RepairEvent struct {
	Node    string
	Action  string // Reboot, Reimage or Redeploy
	Stage   string // Start, End or Error
	Time    time.Time
	First   time.Time
	Count   int32
	Message string
}

// ParseRepair reads a node repair event; ok is false for any other event.
// The reasons are AKS's: Node{Reboot,Reimage,Redeploy}{Start,End,Error}.
func ParseRepair(e *corev1.Event) (RepairEvent, bool) {
	if e.InvolvedObject.Kind != "Node" || !strings.HasPrefix(e.Reason, "Node") {
		return RepairEvent{}, false
	}
	rest := strings.TrimPrefix(e.Reason, "Node")
	for _, a := range []string{ActionReboot, ActionReimage, ActionRedeploy} {
		stage, ok := strings.CutPrefix(rest, a)
		if !ok {
			continue
		}
		switch stage {
		case StageStart, StageEnd, StageError:
			return RepairEvent{Node: e.InvolvedObject.Name, Action: a, Stage: stage, Time: Time(e), First: FirstTime(e), Count: cluster.EventCount(e), Message: e.Message}, true
		}
	}
	return RepairEvent{}, false
}

// RepairStep is one action of a repair sequence.
type RepairStep struct {
	Action string
	Start  time.Time
	// End is zero while no End or Error event closed the action.
	End time.Time
	// Failed is true when an Error event closed it.
	Failed  bool
	Message string
}

// RepairSequence is one escalation on one node: reboot, then reimage, then
// redeploy, as far as it went.
type RepairSequence struct {
	Node  string
	Steps []RepairStep
	// Repeats is how many times the opening Start event was seen: an
	// event recorder folds identical events into one with a count, so a
	// sequence opened by an event seen 3 times stands for 3 sequences.
	Repeats int32
}

// Start is when the sequence began.
func (s RepairSequence) Start() time.Time { return s.Steps[0].Start }

// Last is the newest step.
func (s RepairSequence) Last() RepairStep { return s.Steps[len(s.Steps)-1] }

// Failed reports whether the newest step ended with an Error event.
func (s RepairSequence) Failed() bool { return s.Last().Failed }

// Done reports whether the newest step ended (End or Error).
func (s RepairSequence) Done() bool { return !s.Last().End.IsZero() }

// RepairSequences groups the repair events of every node into sequences,
// sorted by node and start. A sequence opens at a reboot's Start (every
// escalation begins with a reboot), or at any Start when the node has no
// open sequence or has been quiet for SequenceGap. End and Error events
// close the newest open step of the same action.
func RepairSequences(events []corev1.Event) []RepairSequence {
	byNode := map[string][]RepairEvent{}
	for i := range events {
		if r, ok := ParseRepair(&events[i]); ok {
			byNode[r.Node] = append(byNode[r.Node], r)
		}
	}
	nodes := make([]string, 0, len(byNode))
	for n := range byNode {
		nodes = append(nodes, n)
	}
	sort.Strings(nodes)
	var out []RepairSequence
	for _, n := range nodes {
		evs := byNode[n]
		sort.SliceStable(evs, func(i, j int) bool {
			if !evs[i].Time.Equal(evs[j].Time) {
				return evs[i].Time.Before(evs[j].Time)
			}
			return stageOrder(evs[i]) < stageOrder(evs[j])
		})
		var cur *RepairSequence
		var last time.Time
		for _, e := range evs {
			switch e.Stage {
			case StageStart:
				if cur == nil || e.Action == ActionReboot || e.Time.Sub(last) > SequenceGap {
					out = append(out, RepairSequence{Node: n, Repeats: max(e.Count, 1)})
					cur = &out[len(out)-1]
				}
				cur.Steps = append(cur.Steps, RepairStep{Action: e.Action, Start: e.Time, Message: e.Message})
			default:
				if cur == nil {
					// An End or Error whose Start is out of the events'
					// window: a sequence of one step that started before.
					out = append(out, RepairSequence{Node: n, Repeats: 1, Steps: []RepairStep{{Action: e.Action, Start: e.First}}})
					cur = &out[len(out)-1]
				}
				closeStep(cur, e)
			}
			last = e.Time
		}
	}
	return out
}

// stageOrder orders events of the same second: an action's Start before
// its End or Error, and the escalation order across actions.
func stageOrder(e RepairEvent) int {
	a := map[string]int{ActionReboot: 0, ActionReimage: 1, ActionRedeploy: 2}[e.Action]
	s := map[string]int{StageStart: 0, StageEnd: 1, StageError: 1}[e.Stage]
	return a*2 + s
}

func closeStep(s *RepairSequence, e RepairEvent) {
	for i := len(s.Steps) - 1; i >= 0; i-- {
		st := &s.Steps[i]
		if st.Action == e.Action && st.End.IsZero() {
			st.End, st.Failed = e.Time, e.Stage == StageError
			if e.Message != "" {
				st.Message = e.Message
			}
			return
		}
	}
	s.Steps = append(s.Steps, RepairStep{Action: e.Action, Start: e.First, End: e.Time, Failed: e.Stage == StageError, Message: e.Message})
}

// Time is when an event was last observed (cluster.EventTime).
func Time(e *corev1.Event) time.Time { return cluster.EventTime(e).Time }

// FirstTime is when an event was first observed (cluster.EventFirstSeen).
func FirstTime(e *corev1.Event) time.Time { return cluster.EventFirstSeen(e).Time }
