package kubelet

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/cache"
)

// syncPod brings one pod's status to what its kubelet would report, or
// finishes its deletion.
func (s *simulator) syncPod(ctx context.Context, key string) error {
	ns, name, err := cache.SplitMetaNamespaceKey(key)
	if err != nil {
		return nil // malformed keys are never retried
	}
	pod, err := s.podLister.Pods(ns).Get(name)
	if apierrors.IsNotFound(err) {
		if s.rt != nil {
			if err := s.rt.RemoveKey(ctx, key); err != nil {
				return fmt.Errorf("stop deleted pod %s: %w", key, err)
			}
		}
		s.ipam.release(key)
		return nil
	}
	if err != nil {
		return fmt.Errorf("get pod %s from cache: %w", key, err)
	}
	if s.nodeIndex(pod.Spec.NodeName) == 0 {
		return nil
	}
	node, err := s.nodeLister.Get(pod.Spec.NodeName)
	if err != nil {
		// Bound to a node that is not registered (or was deleted): no
		// kubelet runs it.
		return nil
	}
	if !heartbeatOn(node) {
		return nil // the node's kubelet is dead
	}
	if pod.DeletionTimestamp != nil {
		// The containers "stopped" at once (real ones are stopped now);
		// the kubelet then deletes the pod with grace 0, guarded by its UID.
		if err := s.removeReal(ctx, pod); err != nil {
			return fmt.Errorf("stop pod %s: %w", key, err)
		}
		s.ipam.release(key)
		err := s.client.CoreV1().Pods(ns).Delete(ctx, name, metav1.DeleteOptions{
			GracePeriodSeconds: new(int64),
			Preconditions:      metav1.NewUIDPreconditions(string(pod.UID)),
		})
		if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
			return fmt.Errorf("delete terminating pod %s: %w", key, err)
		}
		return nil
	}
	if podTerminal(pod) {
		if err := s.removeReal(ctx, pod); err != nil {
			return fmt.Errorf("stop finished pod %s: %w", key, err)
		}
		s.ipam.release(key)
		return nil
	}
	if manualStatus(pod) {
		s.claimPodIPs(pod)
		return nil
	}
	net, ok, err := s.podNetwork(node, pod, key)
	if err != nil {
		return err
	}
	if !ok {
		s.log.Debug("pod waits for its node's podCIDR", "pod", key, "node", node.Name)
		if s.now().Sub(node.CreationTimestamp.Time) > podCIDRPatience {
			if _, warned := s.noPodCIDR.LoadOrStore(node.Name, true); !warned {
				s.log.Warn("node has no podCIDR: its pods stay Pending (is kube-controller-manager's --cluster-cidr large enough for every node?)",
					"node", node.Name, "age", s.now().Sub(node.CreationTimestamp.Time).Round(time.Second))
			}
		}
		return nil
	}
	desired, real, err := s.syncReal(ctx, node, pod, net)
	if err != nil {
		return err
	}
	if !real {
		desired = desiredPodStatus(pod, net, metav1.NewTime(s.now().Truncate(time.Second)))
	}
	if podStatusEqual(&pod.Status, &desired) {
		return nil
	}
	updated := pod.DeepCopy()
	updated.Status = desired
	if _, err := s.client.CoreV1().Pods(ns).UpdateStatus(ctx, updated, metav1.UpdateOptions{FieldManager: fieldManager}); err != nil {
		return fmt.Errorf("update status of pod %s: %w", key, err)
	}
	return nil
}

// podStatusEqual compares a pod's status with the desired one. An API
// server with PodObservedGenerationTracking disabled drops observedGeneration;
// a status without it is then compared without it, so that the simulator
// does not rewrite the same status forever.
func podStatusEqual(cur, desired *corev1.PodStatus) bool {
	if cur.ObservedGeneration == 0 {
		d := desired.DeepCopy()
		d.ObservedGeneration = 0
		for i := range d.Conditions {
			d.Conditions[i].ObservedGeneration = 0
		}
		desired = d
	}
	return apiequality.Semantic.DeepEqual(*cur, *desired)
}

// podCIDRPatience is how long a node may wait for its podCIDR before the
// simulator warns: the node-ipam controller assigns it within a second
// unless the cluster CIDR has no range left.
const podCIDRPatience = 30 * time.Second

func podTerminal(p *corev1.Pod) bool {
	return p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed
}

// podNet is where a pod runs: its node's IPs and its own.
type podNet struct {
	hostIPs []string
	podIPs  []string
}

// podNetwork returns the pod's addresses; ok is false while the node has
// no podCIDR yet (kube-controller-manager's node-ipam controller assigns it).
func (s *simulator) podNetwork(node *corev1.Node, pod *corev1.Pod, key string) (podNet, bool, error) {
	var n podNet
	for _, a := range node.Status.Addresses {
		if a.Type == corev1.NodeInternalIP {
			n.hostIPs = append(n.hostIPs, a.Address)
		}
	}
	if len(n.hostIPs) == 0 {
		n.hostIPs = []string{NodeInternalIP(s.nodeIndex(node.Name)).String()}
	}
	if pod.Spec.HostNetwork {
		n.podIPs = n.hostIPs
		return n, true, nil
	}
	cidrs := node.Spec.PodCIDRs
	if len(cidrs) == 0 && node.Spec.PodCIDR != "" {
		cidrs = []string{node.Spec.PodCIDR}
	}
	if len(cidrs) == 0 {
		return n, false, nil
	}
	ranges := make([]netip.Prefix, 0, len(cidrs))
	for _, c := range cidrs {
		p, err := netip.ParsePrefix(c)
		if err != nil {
			return n, false, fmt.Errorf("node %s has a malformed podCIDR %q: %w", node.Name, c, err)
		}
		ranges = append(ranges, p)
	}
	// An IP the pod already reports (from an earlier run) is kept.
	for _, pip := range pod.Status.PodIPs {
		if a, err := netip.ParseAddr(pip.IP); err == nil {
			s.ipam.claim(node.Name, key, a)
		}
	}
	addrs, err := s.ipam.allocate(node.Name, key, ranges)
	if err != nil {
		return n, false, fmt.Errorf("allocate IP for pod %s: %w", key, err)
	}
	for _, a := range addrs {
		n.podIPs = append(n.podIPs, a.String())
	}
	return n, true, nil
}

// desiredPodStatus is the status of a pod whose containers all run and are
// ready. Times, container IDs and restart counts already reported are kept,
// so that the result equals the current status once it has been reported.
func desiredPodStatus(pod *corev1.Pod, net podNet, now metav1.Time) corev1.PodStatus {
	cur := &pod.Status
	st := corev1.PodStatus{
		Phase:              corev1.PodRunning,
		ObservedGeneration: pod.Generation,
		HostIP:             net.hostIPs[0],
		PodIP:              net.podIPs[0],
		StartTime:          cur.StartTime,
		QOSClass:           cur.QOSClass,

		// Fields a kubelet reports that the simulator has nothing to say
		// about are kept.
		NominatedNodeName:                    cur.NominatedNodeName,
		Resize:                               cur.Resize,
		ResourceClaimStatuses:                cur.ResourceClaimStatuses,
		ExtendedResourceClaimStatus:          cur.ExtendedResourceClaimStatus,
		NodeAllocatableResourceClaimStatuses: cur.NodeAllocatableResourceClaimStatuses,
		EphemeralContainerStatuses:           cur.EphemeralContainerStatuses,
	}
	if st.StartTime == nil {
		st.StartTime = &now
	}
	for _, ip := range net.hostIPs {
		st.HostIPs = append(st.HostIPs, corev1.HostIP{IP: ip})
	}
	for _, ip := range net.podIPs {
		st.PodIPs = append(st.PodIPs, corev1.PodIP{IP: ip})
	}
	started := st.StartTime.Time
	for _, c := range pod.Spec.InitContainers {
		old := findStatus(cur.InitContainerStatuses, c.Name)
		if c.RestartPolicy != nil && *c.RestartPolicy == corev1.ContainerRestartPolicyAlways {
			st.InitContainerStatuses = append(st.InitContainerStatuses, runningStatus(pod, c, old, now))
			continue
		}
		st.InitContainerStatuses = append(st.InitContainerStatuses, completedStatus(pod, c, old, metav1.NewTime(started)))
	}
	for _, c := range pod.Spec.Containers {
		st.ContainerStatuses = append(st.ContainerStatuses, runningStatus(pod, c, findStatus(cur.ContainerStatuses, c.Name), now))
	}

	gen := pod.Generation
	cond := func(t corev1.PodConditionType, status corev1.ConditionStatus, reason, message string) corev1.PodCondition {
		c := corev1.PodCondition{Type: t, Status: status, Reason: reason, Message: message, ObservedGeneration: gen, LastTransitionTime: now}
		for _, old := range cur.Conditions {
			if old.Type == t && old.Status == status {
				c.LastTransitionTime = old.LastTransitionTime
				c.LastProbeTime = old.LastProbeTime
			}
		}
		return c
	}
	ready := cond(corev1.PodReady, corev1.ConditionTrue, "", "")
	var unready []string
	for _, g := range pod.Spec.ReadinessGates {
		c := findCondition(cur.Conditions, g.ConditionType)
		switch {
		case c == nil:
			unready = append(unready, fmt.Sprintf("corresponding condition of pod readiness gate %q does not exist.", g.ConditionType))
		case c.Status != corev1.ConditionTrue:
			unready = append(unready, fmt.Sprintf("the status of pod readiness gate %q is not \"True\", but %v", g.ConditionType, c.Status))
		}
	}
	if len(unready) > 0 {
		ready = cond(corev1.PodReady, corev1.ConditionFalse, "ReadinessGatesNotReady", strings.Join(unready, ", "))
	}
	st.Conditions = []corev1.PodCondition{
		cond(corev1.PodReadyToStartContainers, corev1.ConditionTrue, "", ""),
		cond(corev1.PodInitialized, corev1.ConditionTrue, "", ""),
		ready,
		cond(corev1.ContainersReady, corev1.ConditionTrue, "", ""),
	}
	if c := findCondition(cur.Conditions, corev1.PodScheduled); c != nil {
		st.Conditions = append(st.Conditions, *c)
	} else {
		st.Conditions = append(st.Conditions, corev1.PodCondition{Type: corev1.PodScheduled, Status: corev1.ConditionTrue, LastTransitionTime: now})
	}
	for _, c := range cur.Conditions {
		switch c.Type {
		case corev1.PodReadyToStartContainers, corev1.PodInitialized, corev1.PodReady, corev1.ContainersReady, corev1.PodScheduled:
		default:
			st.Conditions = append(st.Conditions, c) // e.g. readiness gates, DisruptionTarget
		}
	}
	return st
}

func findStatus(list []corev1.ContainerStatus, name string) *corev1.ContainerStatus {
	for i := range list {
		if list[i].Name == name {
			return &list[i]
		}
	}
	return nil
}

func findCondition(list []corev1.PodCondition, t corev1.PodConditionType) *corev1.PodCondition {
	for i := range list {
		if list[i].Type == t {
			return &list[i]
		}
	}
	return nil
}

// runningStatus is the status of a running, ready container. A container
// that already runs the same image keeps its status; one whose image
// changed has been restarted.
func runningStatus(pod *corev1.Pod, c corev1.Container, old *corev1.ContainerStatus, now metav1.Time) corev1.ContainerStatus {
	image := NormalizeImage(c.Image)
	if old != nil && old.Image == image && old.State.Running != nil && old.ContainerID != "" {
		keep := *old.DeepCopy()
		keep.Ready = true
		keep.Started = new(true)
		return keep
	}
	st := corev1.ContainerStatus{
		Name:    c.Name,
		Image:   image,
		ImageID: ImageID(c.Image),
		Ready:   true,
		Started: new(true),
		State:   corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: now}},
	}
	if old != nil {
		st.RestartCount = old.RestartCount
		st.LastTerminationState = old.LastTerminationState
		if old.ContainerID != "" {
			st.RestartCount++
			startedAt := now
			if old.State.Running != nil {
				startedAt = old.State.Running.StartedAt
			}
			st.LastTerminationState = corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{
				ExitCode: 0, Reason: "Completed", StartedAt: startedAt, FinishedAt: now, ContainerID: old.ContainerID,
			}}
		}
	}
	st.ContainerID = ContainerID(pod, c.Name, st.RestartCount)
	return st
}

// completedStatus is the status of an init container that ran to completion.
func completedStatus(pod *corev1.Pod, c corev1.Container, old *corev1.ContainerStatus, at metav1.Time) corev1.ContainerStatus {
	if old != nil && old.State.Terminated != nil && old.State.Terminated.ExitCode == 0 && old.Image == NormalizeImage(c.Image) {
		keep := *old.DeepCopy()
		keep.Ready = true
		keep.Started = new(false)
		return keep
	}
	id := ContainerID(pod, c.Name, 0)
	return corev1.ContainerStatus{
		Name:        c.Name,
		Image:       NormalizeImage(c.Image),
		ImageID:     ImageID(c.Image),
		Ready:       true,
		Started:     new(false),
		ContainerID: id,
		State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{
			ExitCode: 0, Reason: "Completed", StartedAt: at, FinishedAt: at, ContainerID: id,
		}},
	}
}

// ContainerID is the containerd ID of a container of a pod: 64 hex digits,
// stable for a pod UID, container name and restart count.
func ContainerID(pod *corev1.Pod, container string, restart int32) string {
	sum := sha256.Sum256([]byte(string(pod.UID) + "/" + container + "/" + strconv.Itoa(int(restart))))
	return "containerd://" + hex.EncodeToString(sum[:])
}

// ImageID is the image ID containerd reports for image: its normalized
// repository with a digest derived from the reference.
func ImageID(image string) string {
	ref := NormalizeImage(image)
	if i := strings.Index(ref, "@"); i >= 0 {
		return ref
	}
	repo := ref
	if i := strings.LastIndex(ref, ":"); i > strings.LastIndex(ref, "/") {
		repo = ref[:i]
	}
	sum := sha256.Sum256([]byte(ref))
	return repo + "@sha256:" + hex.EncodeToString(sum[:])
}

// NormalizeImage returns image as containerd reports it in a container
// status: with its registry (docker.io by default, library/ for official
// images) and the tag latest when it has neither tag nor digest. It is
// hand-written to avoid a dependency on a registry library for ten lines.
func NormalizeImage(image string) string {
	name := image
	first, rest, hasSlash := strings.Cut(name, "/")
	if !hasSlash || (!strings.ContainsAny(first, ".:") && first != "localhost") {
		if !hasSlash {
			name = "docker.io/library/" + name
		} else {
			name = "docker.io/" + first + "/" + rest
		}
	}
	last := name[strings.LastIndex(name, "/")+1:]
	if !strings.Contains(last, ":") && !strings.Contains(name, "@") {
		name += ":latest"
	}
	return name
}
