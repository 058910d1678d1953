package clustertest

import (
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Created sets the pod's creationTimestamp to Now minus ago.
func Created(p *corev1.Pod, ago time.Duration) {
	p.CreationTimestamp = metav1.NewTime(Now().Add(-ago))
}

// WaitingContainer puts one container of the pod in the waiting state with
// the kubelet's reason and message, and marks the pod not Ready.
func WaitingContainer(p *corev1.Pod, container, reason, message string) {
	for i := range p.Status.ContainerStatuses {
		cs := &p.Status.ContainerStatuses[i]
		if cs.Name == container {
			cs.Ready = false
			cs.Started = nil
			cs.State = corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: reason, Message: message}}
		}
	}
	setPodCondition(p, corev1.PodReady, corev1.ConditionFalse, "ContainersNotReady", "containers with unready status: ["+container+"]", 0)
	setPodCondition(p, corev1.ContainersReady, corev1.ConditionFalse, "ContainersNotReady", "containers with unready status: ["+container+"]", 0)
}

// CrashLooping puts one container of the pod in CrashLoopBackOff after
// restarts restarts, the last of which ended with exitCode and reason
// (e.g. 1, "Error") at Now minus ago.
func CrashLooping(p *corev1.Pod, container string, restarts, exitCode int32, reason, message string, ago time.Duration) {
	WaitingContainer(p, container, "CrashLoopBackOff",
		"back-off 5m0s restarting failed container="+container+" pod="+p.Name+"_"+p.Namespace+"("+string(p.UID)+")")
	for i := range p.Status.ContainerStatuses {
		cs := &p.Status.ContainerStatuses[i]
		if cs.Name == container {
			cs.RestartCount = restarts
			cs.LastTerminationState = corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{
				ExitCode: exitCode, Reason: reason, Message: message,
				StartedAt:  metav1.NewTime(Now().Add(-ago - 5*time.Second)),
				FinishedAt: metav1.NewTime(Now().Add(-ago)),
			}}
		}
	}
}

// PendingPod returns a pod created at Now minus age that no scheduler has
// bound: phase Pending, no node, no conditions.
func PendingPod(ns, name string, lbls map[string]string, age time.Duration) corev1.Pod {
	p := RunningPod(ns, name, "", lbls)
	Created(&p, age)
	p.Status = corev1.PodStatus{Phase: corev1.PodPending}
	return p
}

// Unschedulable records the scheduler's verdict on a pending pod: the
// PodScheduled condition False with reason Unschedulable and its message,
// since Now minus since.
func Unschedulable(p *corev1.Pod, message string, since time.Duration) {
	setPodCondition(p, corev1.PodScheduled, corev1.ConditionFalse, corev1.PodReasonUnschedulable, message, since)
}

// ContainerCreating returns a pod bound to node at Now minus age whose
// containers have not started (waiting ContainerCreating).
func ContainerCreating(ns, name, node string, age time.Duration) corev1.Pod {
	p := RunningPod(ns, name, node, nil)
	Created(&p, age)
	p.Status.Phase = corev1.PodPending
	p.Status.Conditions = nil
	setPodCondition(&p, corev1.PodScheduled, corev1.ConditionTrue, "", "", age)
	WaitingContainer(&p, "app", "ContainerCreating", "")
	return p
}

// setPodCondition sets a pod condition, replacing one of the same type.
func setPodCondition(p *corev1.Pod, typ corev1.PodConditionType, status corev1.ConditionStatus, reason, message string, since time.Duration) {
	c := corev1.PodCondition{Type: typ, Status: status, Reason: reason, Message: message,
		LastTransitionTime: metav1.NewTime(Now().Add(-since))}
	for i := range p.Status.Conditions {
		if p.Status.Conditions[i].Type == typ {
			p.Status.Conditions[i] = c
			return
		}
	}
	p.Status.Conditions = append(p.Status.Conditions, c)
}

// PodEvent returns an event about one container of a pod, as the kubelet
// records it (involvedObject.fieldPath "spec.containers{name}").
func PodEvent(ns, pod, container, typ, reason, message string, ago time.Duration, count int32) corev1.Event {
	e := Event("Pod", ns, pod, typ, reason, message, ago, count)
	e.Name = pod + "." + reason + "." + container
	if container != "" {
		e.InvolvedObject.FieldPath = "spec.containers{" + container + "}"
	}
	return e
}

// SetDeploymentCondition sets a condition on the Deployment, replacing one
// of the same type, that changed at Now minus since.
func SetDeploymentCondition(d *appsv1.Deployment, typ appsv1.DeploymentConditionType, status corev1.ConditionStatus, reason, message string, since time.Duration) {
	t := metav1.NewTime(Now().Add(-since))
	c := appsv1.DeploymentCondition{Type: typ, Status: status, Reason: reason, Message: message, LastUpdateTime: t, LastTransitionTime: t}
	for i := range d.Status.Conditions {
		if d.Status.Conditions[i].Type == typ {
			d.Status.Conditions[i] = c
			return
		}
	}
	d.Status.Conditions = append(d.Status.Conditions, c)
}

// SetReplicaSetCondition sets a condition on the ReplicaSet, replacing one
// of the same type, that changed at Now minus since.
func SetReplicaSetCondition(rs *appsv1.ReplicaSet, typ appsv1.ReplicaSetConditionType, status corev1.ConditionStatus, reason, message string, since time.Duration) {
	c := appsv1.ReplicaSetCondition{Type: typ, Status: status, Reason: reason, Message: message, LastTransitionTime: metav1.NewTime(Now().Add(-since))}
	for i := range rs.Status.Conditions {
		if rs.Status.Conditions[i].Type == typ {
			rs.Status.Conditions[i] = c
			return
		}
	}
	rs.Status.Conditions = append(rs.Status.Conditions, c)
}
