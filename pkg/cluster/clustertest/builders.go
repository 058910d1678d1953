// Package clustertest builds cluster objects and snapshots for unit tests of
// analyzers. It keeps each test short: a builder sets sensible defaults and
// the test states only what matters to it.
package clustertest

import (
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/kdiag/kdiag/pkg/cluster"
)

// Now is the fixed time at which snapshots built here are taken.
func Now() time.Time { return time.Date(2026, 5, 20, 12, 0, 0, 0, time.UTC) }

// Snapshot returns a live-looking snapshot taken at Now, with every resource
// read, to which a test appends the objects it needs.
func Snapshot() *cluster.Snapshot {
	return &cluster.Snapshot{Source: "test", Live: true, TakenAt: Now()}
}

// ReadyNode returns a Ready node with the given name.
func ReadyNode(name string) corev1.Node {
	t := metav1.NewTime(Now().Add(-time.Hour))
	return corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: name, UID: types.UID("uid-node-" + name), Labels: map[string]string{"kubernetes.io/hostname": name}},
		Status: corev1.NodeStatus{Conditions: []corev1.NodeCondition{
			{Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "KubeletReady", LastHeartbeatTime: metav1.NewTime(Now()), LastTransitionTime: t},
			{Type: corev1.NodeMemoryPressure, Status: corev1.ConditionFalse, Reason: "KubeletHasSufficientMemory", LastTransitionTime: t},
			{Type: corev1.NodeDiskPressure, Status: corev1.ConditionFalse, Reason: "KubeletHasNoDiskPressure", LastTransitionTime: t},
			{Type: corev1.NodePIDPressure, Status: corev1.ConditionFalse, Reason: "KubeletHasSufficientPID", LastTransitionTime: t},
		}},
	}
}

// RunningPod returns a Running, Ready pod on node with one container that
// listens on the given container ports.
func RunningPod(ns, name, node string, lbls map[string]string, ports ...corev1.ContainerPort) corev1.Pod {
	return corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, UID: types.UID("uid-pod-" + ns + "-" + name), Labels: lbls},
		Spec: corev1.PodSpec{
			NodeName:   node,
			Containers: []corev1.Container{{Name: "app", Image: "example/app:1", Ports: ports}},
		},
		Status: corev1.PodStatus{
			Phase: corev1.PodRunning,
			Conditions: []corev1.PodCondition{
				{Type: corev1.PodReady, Status: corev1.ConditionTrue},
				{Type: corev1.ContainersReady, Status: corev1.ConditionTrue},
			},
			ContainerStatuses: []corev1.ContainerStatus{{Name: "app", Ready: true, State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{}}}},
		},
	}
}

// Deployment returns a Deployment with the given replicas and pod labels
// (used as its selector), and the ReplicaSet it owns. OwnPod makes pods
// belong to that ReplicaSet.
func Deployment(ns, name string, replicas int32, lbls map[string]string) (appsv1.Deployment, appsv1.ReplicaSet) {
	d := appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, UID: types.UID("uid-deploy-" + ns + "-" + name)},
		Spec: appsv1.DeploymentSpec{
			Replicas: &replicas,
			Selector: &metav1.LabelSelector{MatchLabels: lbls},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: lbls}},
		},
		Status: appsv1.DeploymentStatus{Replicas: replicas, ReadyReplicas: replicas, AvailableReplicas: replicas},
	}
	isController := true
	rs := appsv1.ReplicaSet{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: ns, Name: name + "-5d8f7c", UID: types.UID("uid-rs-" + ns + "-" + name),
			OwnerReferences: []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "Deployment", Name: name, UID: d.UID, Controller: &isController}},
		},
		Spec: appsv1.ReplicaSetSpec{Replicas: &replicas, Selector: d.Spec.Selector},
	}
	return d, rs
}

// OwnPod makes the ReplicaSet the controller of the pod.
func OwnPod(p *corev1.Pod, rs appsv1.ReplicaSet) {
	isController := true
	p.OwnerReferences = []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "ReplicaSet", Name: rs.Name, UID: rs.UID, Controller: &isController}}
}

// Event returns a core/v1 event about an object, last seen at Now minus ago.
func Event(kind, ns, name, typ, reason, message string, ago time.Duration, count int32) corev1.Event {
	t := metav1.NewTime(Now().Add(-ago))
	return corev1.Event{
		ObjectMeta:     metav1.ObjectMeta{Namespace: ns, Name: name + "." + reason},
		InvolvedObject: corev1.ObjectReference{Kind: kind, Namespace: ns, Name: name},
		Type:           typ, Reason: reason, Message: message,
		FirstTimestamp: t, LastTimestamp: t, Count: count,
	}
}
