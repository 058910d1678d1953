package opevents

import (
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

var t0 = time.Date(2026, 11, 28, 10, 0, 0, 0, time.UTC)

func ev(kind, name, reason string, at time.Duration) corev1.Event {
	ts := metav1.NewTime(t0.Add(at))
	return corev1.Event{InvolvedObject: corev1.ObjectReference{Kind: kind, Name: name}, Reason: reason, FirstTimestamp: ts, LastTimestamp: ts}
}

func TestParseRepair(t *testing.T) {
	tests := []struct {
		kind, reason  string
		ok            bool
		action, stage string
	}{
		{"Node", "NodeRebootStart", true, ActionReboot, StageStart},
		{"Node", "NodeReimageError", true, ActionReimage, StageError},
		{"Node", "NodeRedeployEnd", true, ActionRedeploy, StageEnd},
		{"Node", "NodeRebootFinished", false, "", ""},
		{"Node", "NodeReady", false, "", ""},
		{"Node", "NodeNotSchedulable", false, "", ""},
		{"Pod", "NodeRebootStart", false, "", ""},
	}
	for _, tc := range tests {
		e := ev(tc.kind, "n1", tc.reason, 0)
		r, ok := ParseRepair(&e)
		if ok != tc.ok || r.Action != tc.action || r.Stage != tc.stage {
			t.Errorf("ParseRepair(%s %s) = %+v %v, want %s %s %v", tc.kind, tc.reason, r, ok, tc.action, tc.stage, tc.ok)
		}
	}
}

func TestRepairSequences(t *testing.T) {
	events := []corev1.Event{
		// n1: a full escalation, then a new reboot two hours later.
		ev("Node", "n1", "NodeRebootStart", 0), ev("Node", "n1", "NodeRebootEnd", time.Minute),
		ev("Node", "n1", "NodeReimageStart", 6*time.Minute), ev("Node", "n1", "NodeReimageError", 9*time.Minute),
		ev("Node", "n1", "NodeRedeployStart", 10*time.Minute),
		ev("Node", "n1", "NodeRebootStart", 2*time.Hour),
		// n2: an End whose Start is out of the window; then a reimage
		// Start after more than SequenceGap opens a new sequence.
		ev("Node", "n2", "NodeRebootEnd", 0),
		ev("Node", "n2", "NodeReimageStart", 3*time.Hour),
	}
	seqs := RepairSequences(events)
	if len(seqs) != 4 {
		t.Fatalf("got %d sequences, want 4: %+v", len(seqs), seqs)
	}
	s := seqs[0]
	if s.Node != "n1" || len(s.Steps) != 3 || s.Steps[1].Action != ActionReimage || !s.Steps[1].Failed || s.Done() || s.Failed() {
		t.Errorf("n1 first sequence = %+v, want reboot, failed reimage, running redeploy", s)
	}
	if s := seqs[1]; s.Node != "n1" || len(s.Steps) != 1 || !s.Start().Equal(t0.Add(2*time.Hour)) {
		t.Errorf("n1 second sequence = %+v", s)
	}
	if s := seqs[2]; s.Node != "n2" || len(s.Steps) != 1 || !s.Done() || s.Failed() {
		t.Errorf("n2 first sequence = %+v, want one ended reboot", s)
	}
	if s := seqs[3]; s.Node != "n2" || s.Steps[0].Action != ActionReimage {
		t.Errorf("n2 second sequence = %+v, want a reimage after the gap", s)
	}
}
