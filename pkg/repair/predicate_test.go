package repair

import (
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/event"
)

func TestRelevantChange(t *testing.T) {
	base := func() *corev1.Node { return node("n1", corev1.ConditionTrue, t0) }
	for _, tc := range []struct {
		name   string
		mutate func(*corev1.Node)
		want   bool
	}{
		{"heartbeat only", func(n *corev1.Node) {
			n.Status.Conditions[0].LastHeartbeatTime = metav1.NewTime(t0.Add(time.Minute))
		}, false},
		{"Ready turns Unknown", func(n *corev1.Node) { n.Status.Conditions[0].Status = corev1.ConditionUnknown }, true},
		{"repair state written", annotate(AnnotationState, `{"phase":"Waiting"}`), true},
		{"skip annotation", annotate(AnnotationSkip, "true"), true},
		{"tainted", taint(TaintShutdown), true},
		{"cordoned", func(n *corev1.Node) { n.Spec.Unschedulable = true }, true},
	} {
		n := base()
		tc.mutate(n)
		if got := relevantChange().Update(event.UpdateEvent{ObjectOld: base(), ObjectNew: n}); got != tc.want {
			t.Errorf("%s: relevant = %v, want %v", tc.name, got, tc.want)
		}
	}
}
