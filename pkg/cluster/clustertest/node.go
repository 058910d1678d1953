package clustertest

import (
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// SetNodeCondition sets a condition on the node, replacing one of the same
// type, that changed to status at Now minus since and was last heartbeated
// at Now.
func SetNodeCondition(n *corev1.Node, typ corev1.NodeConditionType, status corev1.ConditionStatus, reason, message string, since time.Duration) {
	c := corev1.NodeCondition{
		Type: typ, Status: status, Reason: reason, Message: message,
		LastHeartbeatTime:  metav1.NewTime(Now()),
		LastTransitionTime: metav1.NewTime(Now().Add(-since)),
	}
	for i := range n.Status.Conditions {
		if n.Status.Conditions[i].Type == typ {
			n.Status.Conditions[i] = c
			return
		}
	}
	n.Status.Conditions = append(n.Status.Conditions, c)
}

// SetNodeHeartbeat moves the lastHeartbeatTime of one condition of the node
// to Now minus ago.
func SetNodeHeartbeat(n *corev1.Node, typ corev1.NodeConditionType, ago time.Duration) {
	for i := range n.Status.Conditions {
		if n.Status.Conditions[i].Type == typ {
			n.Status.Conditions[i].LastHeartbeatTime = metav1.NewTime(Now().Add(-ago))
		}
	}
}

// NotReadyNode returns a node whose Ready condition has been status (False
// or Unknown) for since, with the node lifecycle controller's taint for it.
func NotReadyNode(name string, status corev1.ConditionStatus, reason, message string, since time.Duration) corev1.Node {
	n := ReadyNode(name)
	SetNodeCondition(&n, corev1.NodeReady, status, reason, message, since)
	SetNodeHeartbeat(&n, corev1.NodeReady, since)
	key := "node.kubernetes.io/not-ready"
	if status == corev1.ConditionUnknown {
		key = "node.kubernetes.io/unreachable"
	}
	Taint(&n, key, corev1.TaintEffectNoExecute, since)
	return n
}

// Taint adds a taint with the given key and effect, added at Now minus ago.
func Taint(n *corev1.Node, key string, effect corev1.TaintEffect, ago time.Duration) {
	t := metav1.NewTime(Now().Add(-ago))
	n.Spec.Taints = append(n.Spec.Taints, corev1.Taint{Key: key, Effect: effect, TimeAdded: &t})
}

// Cordon marks the node unschedulable since Now minus ago, with the taint
// the node lifecycle controller adds for it.
func Cordon(n *corev1.Node, ago time.Duration) {
	n.Spec.Unschedulable = true
	Taint(n, corev1.TaintNodeUnschedulable, corev1.TaintEffectNoSchedule, ago)
}

// SetAllocatable sets the node's capacity and allocatable CPU, memory and
// pod count (quantities such as "4" and "16Gi").
func SetAllocatable(n *corev1.Node, cpu, memory string, pods int64) {
	l := corev1.ResourceList{
		corev1.ResourceCPU:    resource.MustParse(cpu),
		corev1.ResourceMemory: resource.MustParse(memory),
		corev1.ResourcePods:   *resource.NewQuantity(pods, resource.DecimalSI),
	}
	n.Status.Capacity = l.DeepCopy()
	n.Status.Allocatable = l
}

// NodeLease returns the node's heartbeat Lease in kube-node-lease, renewed
// at Now minus ago.
func NodeLease(node string, ago time.Duration) coordinationv1.Lease {
	renew := metav1.NewMicroTime(Now().Add(-ago))
	dur := int32(40)
	holder := node
	return coordinationv1.Lease{
		ObjectMeta: metav1.ObjectMeta{Namespace: corev1.NamespaceNodeLease, Name: node, UID: types.UID("uid-lease-" + node)},
		Spec:       coordinationv1.LeaseSpec{HolderIdentity: &holder, LeaseDurationSeconds: &dur, RenewTime: &renew},
	}
}

// NodeEvent returns an event about a node, as the kubelet and the node
// lifecycle controller record them (in the default namespace, with an
// involvedObject that has no namespace).
func NodeEvent(node, typ, reason, message string, ago time.Duration, count int32) corev1.Event {
	e := Event("Node", "", node, typ, reason, message, ago, count)
	e.Namespace = metav1.NamespaceDefault
	return e
}

// SetMemory sets the memory request and limit of one container of the pod;
// an empty string leaves that one unset.
func SetMemory(p *corev1.Pod, container, request, limit string) {
	setResource(p, container, corev1.ResourceMemory, request, limit)
}

// SetCPU sets the CPU request and limit of one container of the pod; an
// empty string leaves that one unset.
func SetCPU(p *corev1.Pod, container, request, limit string) {
	setResource(p, container, corev1.ResourceCPU, request, limit)
}

func setResource(p *corev1.Pod, container string, name corev1.ResourceName, request, limit string) {
	for i := range p.Spec.Containers {
		c := &p.Spec.Containers[i]
		if c.Name != container {
			continue
		}
		if request != "" {
			if c.Resources.Requests == nil {
				c.Resources.Requests = corev1.ResourceList{}
			}
			c.Resources.Requests[name] = resource.MustParse(request)
		}
		if limit != "" {
			if c.Resources.Limits == nil {
				c.Resources.Limits = corev1.ResourceList{}
			}
			c.Resources.Limits[name] = resource.MustParse(limit)
		}
	}
}

// OOMKilled records that the container's last run ended OOMKilled (exit
// code 137) at Now minus ago and that it has restarted restarts times; it
// runs again now.
func OOMKilled(p *corev1.Pod, container string, restarts int32, ago time.Duration) {
	for i := range p.Status.ContainerStatuses {
		cs := &p.Status.ContainerStatuses[i]
		if cs.Name != container {
			continue
		}
		cs.RestartCount = restarts
		cs.LastTerminationState = corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{
			Reason: "OOMKilled", ExitCode: 137,
			StartedAt:  metav1.NewTime(Now().Add(-ago - 10*time.Minute)),
			FinishedAt: metav1.NewTime(Now().Add(-ago)),
		}}
	}
}

// EvictedPod returns a pod the kubelet evicted from node at Now minus ago,
// with the kubelet's message.
func EvictedPod(ns, name, node, message string, ago time.Duration) corev1.Pod {
	p := RunningPod(ns, name, node, nil)
	at := metav1.NewTime(Now().Add(-ago))
	p.Status = corev1.PodStatus{
		Phase: corev1.PodFailed, Reason: "Evicted", Message: message,
		Conditions: []corev1.PodCondition{{
			Type: corev1.DisruptionTarget, Status: corev1.ConditionTrue,
			Reason: "TerminationByKubelet", Message: message, LastTransitionTime: at,
		}},
		ContainerStatuses: []corev1.ContainerStatus{{Name: "app", State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{
			Reason: "ContainerStatusUnknown", ExitCode: 137, FinishedAt: at,
		}}}},
	}
	return p
}

// SetController makes the named object the controller of the pod, e.g.
// ("apps/v1", "StatefulSet", "db") or ("apps/v1", "DaemonSet", "agent").
func SetController(p *corev1.Pod, apiVersion, kind, name string) {
	isController := true
	p.OwnerReferences = []metav1.OwnerReference{{
		APIVersion: apiVersion, Kind: kind, Name: name,
		UID: types.UID("uid-" + kind + "-" + p.Namespace + "-" + name), Controller: &isController,
	}}
}
