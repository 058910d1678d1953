package repair

import (
	"encoding/json"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
)

// Action is one repair action of the escalation.
type Action string

// The escalation, in order.
const (
	Reboot   Action = "reboot"
	Reimage  Action = "reimage"
	Redeploy Action = "redeploy"
)

// Escalation returns the actions of one repair sequence, in order.
func Escalation() []Action { return []Action{Reboot, Reimage, Redeploy} }

// needsDrain reports whether the node is cordoned and drained before the
// action: a reboot keeps the node's disk and pods, a reimage or a redeploy
// loses them.
func (a Action) needsDrain() bool { return a == Reimage || a == Redeploy }

// next returns the action after a in the escalation, or "" after the last.
func (a Action) next() Action {
	e := Escalation()
	for i := range e[:len(e)-1] {
		if e[i] == a {
			return e[i+1]
		}
	}
	return ""
}

// reason returns the AKS event reason of the action's start, end or error:
// NodeRebootStart, NodeReimageEnd, NodeRedeployError, ...
func (a Action) reason(suffix string) string {
	switch a {
	case Reboot:
		return "NodeReboot" + suffix
	case Reimage:
		return "NodeReimage" + suffix
	case Redeploy:
		return "NodeRedeploy" + suffix
	}
	return "NodeRepair" + suffix
}

// Phase is where a node's repair sequence stands.
type Phase string

// Phases of a repair. Draining, Acting and Waiting are "in flight".
const (
	// PhaseDraining: the node is being cordoned and drained before the step.
	PhaseDraining Phase = "Draining"
	// PhaseActing: the provider was called for the step. It is written
	// before the call: a controller that finds it after a restart does
	// not know whether the action happened, and does not repeat it (it
	// waits for Ready as if it had).
	PhaseActing Phase = "Acting"
	// PhaseWaiting: the step's action is done; the node has StepTimeout to
	// become Ready.
	PhaseWaiting Phase = "Waiting"
	// PhaseBackoff: an attempt failed; the next one starts at NotBefore.
	PhaseBackoff Phase = "Backoff"
	// PhaseFailed: every attempt failed; nothing more is done until the
	// node becomes Ready or the annotation is removed.
	PhaseFailed Phase = "Failed"
	// PhaseSucceeded: the node became Ready; the record stays as history.
	PhaseSucceeded Phase = "Succeeded"
)

// AnnotationState holds a node's repair State as JSON.
const AnnotationState = "kdiag.io/repair-state"

// State is the repair sequence of one node, persisted on the Node as the
// kdiag.io/repair-state annotation so that a restarted controller resumes
// where the previous one stopped.
type State struct {
	// Attempt is the sequence attempt, from 1 to MaxAttempts.
	Attempt int `json:"attempt"`
	// Step is the current action.
	Step Action `json:"step,omitempty"`
	// Phase is where the step stands.
	Phase Phase `json:"phase"`
	// SequenceStart is when the current attempt started.
	SequenceStart time.Time `json:"sequenceStart,omitzero"`
	// StepStart is when the current phase began (for Waiting: when the
	// action was done).
	StepStart time.Time `json:"stepStart,omitzero"`
	// NotBefore is the end of the back-off (phase Backoff).
	NotBefore time.Time `json:"notBefore,omitzero"`
	// Done lists the actions performed in this sequence, as
	// "attempt/action" ("1/reboot", "1/reimage", "2/reboot").
	Done []string `json:"done,omitempty"`
	// Cordoned says the controller cordoned the node (before a reimage or
	// redeploy) and uncordons it when the node is Ready.
	Cordoned bool `json:"cordoned,omitempty"`
	// Repairs counts the sequences that ended with the node Ready.
	Repairs int `json:"repairs,omitempty"`
	// LastEnd is when the last sequence ended.
	LastEnd time.Time `json:"lastEnd,omitzero"`
	// Operation names the Operation record of the current attempt, if
	// any: a restarted controller continues it (ops.Recorder.Resume), and
	// the next attempt ends it if it was left Running.
	Operation string `json:"operation,omitempty"`
	// Message says why the last step ended as it did.
	Message string `json:"message,omitempty"`
}

// InFlight reports whether the sequence is running (not backing off, not
// ended).
func (s State) InFlight() bool {
	return s.Phase == PhaseDraining || s.Phase == PhaseActing || s.Phase == PhaseWaiting
}

// done reports whether action a was performed in the current attempt.
func (s State) done(a Action) bool {
	key := fmt.Sprintf("%d/%s", s.Attempt, a)
	for _, d := range s.Done {
		if d == key {
			return true
		}
	}
	return false
}

// StateOf returns the node's repair state; a node without the annotation
// has the zero State. A malformed annotation is an error.
func StateOf(n *corev1.Node) (State, error) {
	var s State
	raw, ok := n.Annotations[AnnotationState]
	if !ok || raw == "" {
		return s, nil
	}
	if err := json.Unmarshal([]byte(raw), &s); err != nil {
		return State{}, fmt.Errorf("node %s: annotation %s is not a repair state: %w", n.Name, AnnotationState, err)
	}
	return s, nil
}

// encode renders the state for the annotation.
func (s State) encode() string {
	b, err := json.Marshal(s)
	if err != nil {
		// A State has only strings, numbers and times: it always encodes.
		panic(fmt.Sprintf("encode repair state: %v", err))
	}
	return string(b)
}
