// Package drain predicts and performs node drains the way kubectl drain and
// the eviction API do them: which pods a drain evicts, skips or refuses to
// touch (kubectl's pod filters), whether the eviction API lets each pod go
// (pkg/pdb), and, for several nodes, how the disruption budgets are spent pod
// after pod (Check). Run performs a real drain: cordon, evict with retries,
// wait for the pods to go, and give up after a timeout naming the blocker.
package drain

import (
	"fmt"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Options are kubectl drain's filter flags, with kubectl's defaults (all
// false).
type Options struct {
	// IgnoreDaemonSets skips DaemonSet pods instead of refusing the drain.
	IgnoreDaemonSets bool
	// DeleteEmptyDirData allows evicting pods with emptyDir volumes, whose
	// data is lost.
	DeleteEmptyDirData bool
	// Force allows evicting pods that declare no controller (they are not
	// recreated), and DaemonSet pods whose DaemonSet is gone.
	Force bool
}

// Action is what a drain does with one pod.
type Action string

// What a drain does with a pod.
const (
	// Evict: the pod goes through the eviction API.
	Evict Action = "evict"
	// Skip: the drain leaves the pod where it is (DaemonSet pods with
	// --ignore-daemonsets, mirror pods).
	Skip Action = "skip"
	// Refuse: kubectl refuses to start the drain of the node because of
	// this pod, before evicting anything.
	Refuse Action = "refuse"
)

// Reasons a drain skips or refuses a pod, or why it stalls on one. They are
// stable: scripts may match them in `drain check -o json`.
const (
	ReasonDaemonSet        = "DaemonSetPod"
	ReasonDaemonSetMissing = "DaemonSetNotFound"
	ReasonMirrorPod        = "MirrorPod"
	ReasonLocalStorage     = "LocalStorage"
	ReasonUnmanaged        = "Unmanaged"
	ReasonDisruptionBudget = "DisruptionBudget"
	ReasonMultiplePDBs     = "MultiplePDBs"
	ReasonStaleStatus      = "PDBStatusStale"
	ReasonInvalidPDB       = "PDBStatusInvalid"
)

// Decision is what a drain does with one pod and why.
type Decision struct {
	Action Action
	// Reason is one of the Reason constants, "" for a plain eviction.
	Reason string
	// Message is kubectl's wording, e.g. "DaemonSet-managed Pods (use
	// --ignore-daemonsets to ignore)", or a warning for an evicted pod
	// ("deleting Pods with local storage").
	Message string
}

// DaemonSetLookup reports whether a DaemonSet exists; known is false when
// that could not be read (the pod is then taken to have its DaemonSet).
type DaemonSetLookup func(namespace, name string) (exists, known bool)

// Classify applies kubectl drain's pod filters (k8s.io/kubectl/pkg/drain
// filters.go), in kubectl's order, stopping at the first filter that does not
// evict: a pod being deleted is still waited for (kdiag does not implement
// --skip-wait-for-delete-timeout); a DaemonSet pod is skipped with
// --ignore-daemonsets and refused without it, unless finished; a pod whose
// DaemonSet is gone is evicted with --force, refused without; a mirror
// (static) pod is skipped; a running pod with an emptyDir needs
// --delete-emptydir-data; a running pod without a controller needs --force.
// Finished pods (Succeeded or Failed) pass every filter.
func Classify(pod *corev1.Pod, daemonSets DaemonSetLookup, o Options) Decision {
	finished := pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed
	ref := metav1.GetControllerOf(pod)
	var warning string

	// daemonSetFilter
	if ref != nil && ref.Kind == "DaemonSet" && ref.APIVersion == "apps/v1" && !finished {
		exists, known := true, false
		if daemonSets != nil {
			exists, known = daemonSets(pod.Namespace, ref.Name)
		}
		switch {
		case known && !exists && o.Force:
			warning = fmt.Sprintf("daemonsets.apps %q not found", ref.Name)
		case known && !exists:
			return Decision{Action: Refuse, Reason: ReasonDaemonSetMissing, Message: fmt.Sprintf("daemonsets.apps %q not found (use --force to delete the orphaned pod)", ref.Name)}
		case !o.IgnoreDaemonSets:
			return Decision{Action: Refuse, Reason: ReasonDaemonSet, Message: "DaemonSet-managed Pods (use --ignore-daemonsets to ignore)"}
		default:
			return Decision{Action: Skip, Reason: ReasonDaemonSet, Message: "ignoring DaemonSet-managed Pods"}
		}
	}
	// mirrorPodFilter
	if _, ok := pod.Annotations[corev1.MirrorPodAnnotationKey]; ok {
		return Decision{Action: Skip, Reason: ReasonMirrorPod, Message: "mirror (static) pod: the kubelet owns it, drains leave it"}
	}
	// localStorageFilter
	if hasEmptyDir(pod) && !finished {
		if !o.DeleteEmptyDirData {
			return Decision{Action: Refuse, Reason: ReasonLocalStorage, Message: "Pods with local storage (use --delete-emptydir-data to override)"}
		}
		warning = "deleting Pods with local storage"
	}
	// unreplicatedFilter
	if ref == nil && !finished {
		if !o.Force {
			return Decision{Action: Refuse, Reason: ReasonUnmanaged, Message: "Pods that declare no controller (use --force to override)"}
		}
		warning = "deleting Pods that declare no controller"
	}
	return Decision{Action: Evict, Message: warning}
}

func hasEmptyDir(pod *corev1.Pod) bool {
	for _, v := range pod.Spec.Volumes {
		if v.EmptyDir != nil {
			return true
		}
	}
	return false
}
