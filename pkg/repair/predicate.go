package repair

import (
	"maps"

	corev1 "k8s.io/api/core/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
)

// relevantChange passes Node updates the controller acts on: the Ready
// condition's status, annotations (the repair state, skip, the lab's),
// taints and the cordon. Heartbeats (a kubelet rewrites its conditions'
// lastHeartbeatTime every few minutes on every node) are filtered out, so
// that a large cluster does not reconcile every node all the time; timing
// (unhealthy-after, step timeouts, polls) comes from requeues.
func relevantChange() predicate.Predicate {
	return predicate.Funcs{
		UpdateFunc: func(e event.UpdateEvent) bool {
			o, ok1 := e.ObjectOld.(*corev1.Node)
			n, ok2 := e.ObjectNew.(*corev1.Node)
			if !ok1 || !ok2 || o == nil || n == nil {
				return true
			}
			return readyStatus(o) != readyStatus(n) ||
				!maps.Equal(o.Annotations, n.Annotations) ||
				o.Spec.Unschedulable != n.Spec.Unschedulable ||
				!apiequality.Semantic.DeepEqual(o.Spec.Taints, n.Spec.Taints)
		},
	}
}
