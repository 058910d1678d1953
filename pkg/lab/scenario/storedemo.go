package scenario

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/util/retry"

	"github.com/kdiag/kdiag/pkg/lab/kubelet"
	"github.com/kdiag/kdiag/pkg/lab/programs"
)

const storeDemoName = "store-demo"

// AnnotationRole names the part a node plays in a scenario, e.g.
// "store-demo/disk-pressure". A re-apply finds its nodes by it.
const AnnotationRole = "lab.kdiag.io/scenario-role"

// Roles of store-demo's broken nodes.
const (
	RoleDiskPressure = storeDemoName + "/disk-pressure"
	RoleNotReady     = storeDemoName + "/not-ready"
)

// Messages written by store-demo, as the real components word them.
const (
	// NotReadyMessage is the kubelet's Ready=False message when the CNI
	// plugin is not initialized.
	NotReadyMessage = "container runtime network not ready: NetworkReady=false reason:NetworkPluginNotReady message:Network plugin returns error: cni plugin not initialized"
	// EvictionMessage is the kubelet's eviction message of report-generator.
	EvictionMessage = "The node was low on resource: ephemeral-storage. Threshold quantity: 10%, available: 6%. " +
		"Container report-generator was using 9456Mi, request is 0, has larger consumption of ephemeral-storage. "
	// PDBEvictionMessage is the API server's refusal of an eviction.
	PDBEvictionMessage = "Cannot evict pod as it would violate the pod's disruption budget."
)

// Names of the seed's DNS story: order-service resolves both through
// kube-dns, which forwards the payments.example zone to the custom
// upstream; the upstream drops every query for CheckoutHost.
const (
	// CheckoutHost is the payment API, which the upstream never answers.
	CheckoutHost = "api.payments.example"
	// PaymentsStatusHost is answered by the same upstream.
	PaymentsStatusHost = "status.payments.example"
	// paymentsAddr is what the upstream answers for payments.example names
	// (TEST-NET-3: never contacted).
	paymentsAddr = "203.0.113.10"
)

// StoreDemoUpstream is the configuration store-demo gives the lab's
// upstream DNS server with real pods: payments.example names are
// answered, except CheckoutHost, whose queries are silently dropped. The
// fix is the same configuration without the drop.
func StoreDemoUpstream() programs.UpstreamConfig {
	return programs.UpstreamConfig{
		Answer: map[string]string{"payments.example": paymentsAddr},
		Drop:   []string{CheckoutHost},
	}
}

// storeDemoState is what one Apply of store-demo learns on the way.
type storeDemoState struct {
	diskNode, downNode string
}

// storeDemo reproduces the seed talk; see docs/scenarios.md.
func storeDemo() scenario {
	st := &storeDemoState{}
	return scenario{
		name:      storeDemoName,
		setup:     st.setup,
		objects:   st.objects,
		finish:    st.finish,
		converged: st.converged,
	}
}

// setup breaks two nodes before any workload is applied, so that nothing is
// scheduled onto them.
func (st *storeDemoState) setup(ctx context.Context, e *env) error {
	nodes, err := e.client.CoreV1().Nodes().List(ctx, metav1.ListOptions{LabelSelector: kubelet.LabelSimulated + "=true"})
	if err != nil {
		return fmt.Errorf("list simulated nodes: %w", err)
	}
	disk, down, err := pickBrokenNodes(nodes.Items)
	if err != nil {
		return err
	}
	st.diskNode, st.downNode = disk, down
	now := e.now().UTC()

	// Each node is marked manual first (so that the simulated kubelet keeps
	// off its status), then given its condition, then its taint: a taint
	// added before the condition would be removed again by the node
	// lifecycle controller, which owns condition taints, and the scheduler
	// could place a pod in the gap.
	if err := e.markNode(ctx, disk, RoleDiskPressure); err != nil {
		return err
	}
	if err := e.patchNodeCondition(ctx, disk, corev1.NodeCondition{
		Type: corev1.NodeDiskPressure, Status: corev1.ConditionTrue,
		Reason: "KubeletHasDiskPressure", Message: "kubelet has disk pressure",
		LastHeartbeatTime: metav1.NewTime(now), LastTransitionTime: metav1.NewTime(now.Add(-25 * time.Minute)),
	}); err != nil {
		return err
	}
	if err := e.addTaint(ctx, disk, corev1.Taint{Key: corev1.TaintNodeDiskPressure, Effect: corev1.TaintEffectNoSchedule}); err != nil {
		return err
	}
	if err := e.markNode(ctx, down, RoleNotReady); err != nil {
		return err
	}
	// The kubelet stopped posting status 12 minutes ago, with the CNI
	// down; its Lease is still renewed, so the node lifecycle controller
	// keeps the kubelet's word instead of turning it Unknown.
	old := metav1.NewTime(now.Add(-12 * time.Minute))
	if err := e.patchNodeCondition(ctx, down, corev1.NodeCondition{
		Type: corev1.NodeReady, Status: corev1.ConditionFalse,
		Reason: "KubeletNotReady", Message: NotReadyMessage,
		LastHeartbeatTime: old, LastTransitionTime: old,
	}); err != nil {
		return err
	}
	return e.addTaint(ctx, down, corev1.Taint{Key: corev1.TaintNodeNotReady, Effect: corev1.TaintEffectNoSchedule})
}

// pickBrokenNodes chooses the nodes to break: those that already play the
// roles (re-apply), else the last two simulated nodes by index. One healthy
// node at least must remain.
func pickBrokenNodes(nodes []corev1.Node) (disk, down string, err error) {
	if len(nodes) < 3 {
		return "", "", fmt.Errorf("store-demo needs at least 3 simulated nodes (found %d): start the lab's simulated kubelet with 3 or more nodes", len(nodes))
	}
	slices.SortFunc(nodes, func(a, b corev1.Node) int {
		ia, ib := trailingNumber(a.Name), trailingNumber(b.Name)
		if ia != ib {
			return ia - ib
		}
		return strings.Compare(a.Name, b.Name)
	})
	for _, n := range nodes {
		switch n.Annotations[AnnotationRole] {
		case RoleDiskPressure:
			disk = n.Name
		case RoleNotReady:
			down = n.Name
		}
	}
	for i := len(nodes) - 1; i >= 0 && (disk == "" || down == ""); i-- {
		name := nodes[i].Name
		if name == disk || name == down || nodes[i].Annotations[AnnotationRole] != "" {
			continue
		}
		if disk == "" {
			disk = name
		} else {
			down = name
		}
	}
	if disk == "" || down == "" {
		return "", "", fmt.Errorf("store-demo found no free node for its broken nodes among %d nodes", len(nodes))
	}
	return disk, down, nil
}

func trailingNumber(s string) int {
	i := len(s)
	for i > 0 && s[i-1] >= '0' && s[i-1] <= '9' {
		i--
	}
	n, err := strconv.Atoi(s[i:])
	if err != nil {
		return 0
	}
	return n
}

// markNode hands a node's status to the scenario: manual status, and the
// role it plays.
func (e *env) markNode(ctx context.Context, name, role string) error {
	patch, err := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": map[string]string{
		kubelet.AnnotationManualStatus: "true",
		AnnotationRole:                 role,
	}}})
	if err != nil {
		return fmt.Errorf("encode node patch: %w", err)
	}
	if _, err := e.client.CoreV1().Nodes().Patch(ctx, name, types.MergePatchType, patch, metav1.PatchOptions{FieldManager: FieldManager}); err != nil {
		return fmt.Errorf("mark node %s as %s: %w", name, role, err)
	}
	return nil
}

// addTaint adds a taint to a node unless it has one with that key and
// effect, as the node lifecycle controller does for a node condition.
func (e *env) addTaint(ctx context.Context, name string, taint corev1.Taint) error {
	// Taints are an atomic list shared with kube-controller-manager, so a
	// read-modify-write with conflict retries adds ours without dropping its.
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		n, err := e.client.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		for _, t := range n.Spec.Taints {
			if t.Key == taint.Key && t.Effect == taint.Effect {
				return nil
			}
		}
		n.Spec.Taints = append(n.Spec.Taints, taint)
		_, err = e.client.CoreV1().Nodes().Update(ctx, n, metav1.UpdateOptions{FieldManager: FieldManager})
		return err
	})
	if err != nil {
		return fmt.Errorf("taint node %s with %s:%s: %w", name, taint.Key, taint.Effect, err)
	}
	return nil
}

// patchNodeCondition sets one condition of a node's status, unless it
// already has that status and reason (so that re-applying keeps its times).
func (e *env) patchNodeCondition(ctx context.Context, name string, c corev1.NodeCondition) error {
	n, err := e.client.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return fmt.Errorf("get node %s: %w", name, err)
	}
	for _, old := range n.Status.Conditions {
		if old.Type == c.Type && old.Status == c.Status && old.Reason == c.Reason {
			return nil
		}
	}
	patch, err := json.Marshal(map[string]any{"status": map[string]any{"conditions": []corev1.NodeCondition{c}}})
	if err != nil {
		return fmt.Errorf("encode condition patch: %w", err)
	}
	if _, err := e.client.CoreV1().Nodes().Patch(ctx, name, types.StrategicMergePatchType, patch, metav1.PatchOptions{FieldManager: FieldManager}, "status"); err != nil {
		return fmt.Errorf("set %s=%s on node %s: %w", c.Type, c.Status, name, err)
	}
	return nil
}

// objects gives kube-dns the tenth address of this cluster's service range
// (kubeadm's convention), when it is not the manifest's 10.96.0.10. With
// real pods it first configures the lab's upstream DNS server.
func (st *storeDemoState) objects(ctx context.Context, e *env, objs []*unstructured.Unstructured) error {
	if e.opts.RealPods {
		// Before CoreDNS runs: its health checks and loop detection
		// query the upstream at once.
		if err := programs.WriteUpstreamConfig(programs.UpstreamConfigFile(e.opts.Dir), StoreDemoUpstream()); err != nil {
			return fmt.Errorf("configure the lab's upstream DNS server: %w", err)
		}
	}
	svc, err := e.client.CoreV1().Services(metav1.NamespaceDefault).Get(ctx, "kubernetes", metav1.GetOptions{})
	if err != nil {
		return fmt.Errorf("read the kubernetes Service to find the service range: %w", err)
	}
	ip, err := dnsServiceIP(svc.Spec.ClusterIP)
	if err != nil {
		return err
	}
	for _, o := range objs {
		if o.GetKind() == "Service" && o.GetNamespace() == metav1.NamespaceSystem && o.GetName() == "kube-dns" {
			if err := unstructured.SetNestedField(o.Object, ip, "spec", "clusterIP"); err != nil {
				return fmt.Errorf("set kube-dns clusterIP: %w", err)
			}
		}
	}
	return nil
}

// dnsServiceIP returns the address nine after the kubernetes Service's
// (the first of the range), i.e. the tenth of the range.
func dnsServiceIP(kubernetesIP string) (string, error) {
	a, err := netip.ParseAddr(kubernetesIP)
	if err != nil {
		return "", fmt.Errorf("kubernetes Service has no usable clusterIP %q: %w", kubernetesIP, err)
	}
	for range 9 {
		a = a.Next()
	}
	return a.String(), nil
}

// finish writes what the manifests cannot: the OOMKilled and the Evicted
// pod, and the Events that tell each story.
func (st *storeDemoState) finish(ctx context.Context, e *env) error {
	if err := st.placeWorkloads(ctx, e); err != nil {
		return fmt.Errorf("wait for the workloads to be scheduled on healthy nodes: %w", err)
	}
	var oom *corev1.Pod
	var err error
	if e.opts.RealPods {
		// memory-hog runs for real and the kernel kills it at its limit.
		if oom, err = waitPod(ctx, e, "shop", "app=recommendation", isOOMKilled); err != nil {
			return fmt.Errorf("wait for shop/recommendation to be OOM-killed at its memory limit: %w", err)
		}
	} else if oom, err = st.breakRecommendation(ctx, e); err != nil {
		return err
	}
	evicted, err := st.evictReportGenerator(ctx, e)
	if err != nil {
		return err
	}
	nginx, err := waitPod(ctx, e, "web", "app=nginx", func(p *corev1.Pod) bool { return p.Spec.NodeName != "" })
	if err != nil {
		return fmt.Errorf("wait for the nginx pod to be scheduled: %w", err)
	}
	now := e.now().UTC()
	ago := func(d time.Duration) time.Time { return now.Add(-d) }
	events := []*corev1.Event{
		nodeEvent(st.diskNode, corev1.EventTypeNormal, "NodeHasDiskPressure",
			fmt.Sprintf("Node %s status is now: NodeHasDiskPressure", st.diskNode), "kubelet", ago(25*time.Minute), ago(25*time.Minute), 1),
		nodeEvent(st.diskNode, corev1.EventTypeWarning, "FreeDiskSpaceFailed",
			"Insufficient free disk space on the node's image filesystem (91% of 123.9 GiB used). Failed to free sufficient space by deleting unused images (freed 0 bytes). Investigate disk usage, as it could be used by active images, logs, volumes, or other data.",
			"kubelet", ago(40*time.Minute), ago(5*time.Minute), 8),
		nodeEvent(st.diskNode, corev1.EventTypeWarning, "EvictionThresholdMet",
			"Attempting to reclaim ephemeral-storage", "kubelet", ago(25*time.Minute), ago(2*time.Minute), 6),
		nodeEvent(st.downNode, corev1.EventTypeNormal, "NodeNotReady",
			fmt.Sprintf("Node %s status is now: NodeNotReady", st.downNode), "kubelet", ago(12*time.Minute), ago(12*time.Minute), 1),
		nodeEvent(oom.Spec.NodeName, corev1.EventTypeWarning, "OOMKilling",
			"Memory cgroup out of memory: Killed process 48213 (memory-hog) total-vm:1245704kB, anon-rss:131072kB, file-rss:0kB, shmem-rss:0kB, UID:0 pgtables:480kB oom_score_adj:999",
			"kernel-monitor", ago(20*time.Minute), ago(3*time.Minute), 6),
		podEvent(oom, "recommendation", corev1.EventTypeWarning, "BackOff",
			"Back-off restarting failed container recommendation in pod "+oom.Name+"_shop("+string(oom.UID)+")", "kubelet", ago(18*time.Minute), ago(1*time.Minute), 42),
		podEvent(evicted, "", corev1.EventTypeWarning, "Evicted", EvictionMessage, "kubelet", ago(24*time.Minute), ago(24*time.Minute), 1),
		podEvent(evicted, "report-generator", corev1.EventTypeNormal, "Killing", "Stopping container report-generator", "kubelet", ago(24*time.Minute), ago(24*time.Minute), 1),
		// No Kubernetes component records a refused eviction as an Event
		// (kubectl drain only prints it); the lab records the node pool
		// upgrade's drain failure the way the seed's operation status shows it.
		podEvent(nginx, "", corev1.EventTypeWarning, "FailedEviction",
			PDBEvictionMessage+" The disruption budget nginx needs 1 healthy pods and has 1 currently", "kdiag-lab", ago(15*time.Minute), ago(14*time.Minute), 12),
		nodeEvent(nginx.Spec.NodeName, corev1.EventTypeWarning, "FailedDraining",
			fmt.Sprintf("Failed to drain node, 1 pods are waiting to be evicted: web/%s: %s", nginx.Name, PDBEvictionMessage), "kdiag-lab", ago(15*time.Minute), ago(14*time.Minute), 1),
	}
	for _, ev := range events {
		if err := e.applyTyped(ctx, ev, "v1", "Event"); err != nil {
			return err
		}
	}
	return nil
}

// eventName is stable per object and reason, so that re-applying updates
// the same Event.
func eventName(object, reason string) string {
	sum := sha256.Sum256([]byte(reason))
	return object + "." + hex.EncodeToString(sum[:8])
}

// nodeEvent is an Event about a node as its kubelet records it: in the
// default namespace, with the node name as UID.
func nodeEvent(node, typ, reason, msg, component string, first, last time.Time, count int32) *corev1.Event {
	return &corev1.Event{
		ObjectMeta: metav1.ObjectMeta{
			Name: eventName(node, reason), Namespace: metav1.NamespaceDefault,
			Labels: map[string]string{LabelScenario: storeDemoName},
		},
		InvolvedObject:      corev1.ObjectReference{Kind: "Node", Name: node, UID: types.UID(node)},
		Reason:              reason,
		Message:             msg,
		Type:                typ,
		Source:              corev1.EventSource{Component: component, Host: node},
		ReportingController: component,
		ReportingInstance:   node,
		FirstTimestamp:      metav1.NewTime(first),
		LastTimestamp:       metav1.NewTime(last),
		Count:               count,
	}
}

// podEvent is an Event about a pod, or one of its containers.
func podEvent(p *corev1.Pod, container, typ, reason, msg, component string, first, last time.Time, count int32) *corev1.Event {
	ref := corev1.ObjectReference{Kind: "Pod", APIVersion: "v1", Namespace: p.Namespace, Name: p.Name, UID: p.UID, ResourceVersion: ""}
	if container != "" {
		ref.FieldPath = "spec.containers{" + container + "}"
	}
	return &corev1.Event{
		ObjectMeta: metav1.ObjectMeta{
			Name: eventName(p.Name, reason), Namespace: p.Namespace,
			Labels: map[string]string{LabelScenario: storeDemoName},
		},
		InvolvedObject:      ref,
		Reason:              reason,
		Message:             msg,
		Type:                typ,
		Source:              corev1.EventSource{Component: component, Host: p.Spec.NodeName},
		ReportingController: component,
		ReportingInstance:   p.Spec.NodeName,
		FirstTimestamp:      metav1.NewTime(first),
		LastTimestamp:       metav1.NewTime(last),
		Count:               count,
	}
}

// waitPod waits for a live pod matching selector in ns that satisfies ok.
func waitPod(ctx context.Context, e *env, ns, selector string, ok func(*corev1.Pod) bool) (*corev1.Pod, error) {
	var found *corev1.Pod
	err := wait.PollUntilContextCancel(ctx, 250*time.Millisecond, true, func(ctx context.Context) (bool, error) {
		pods, err := e.client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: selector})
		if err != nil {
			return false, permanent(err) // others are retried until ctx ends
		}
		for i := range pods.Items {
			if p := &pods.Items[i]; p.DeletionTimestamp == nil && ok(p) {
				found = p
				return true, nil
			}
		}
		return false, nil
	})
	return found, err
}

// isOOMLooping reports whether pod shows the scenario's OOM crash loop.
func isOOMLooping(p *corev1.Pod) bool {
	if p.Annotations[kubelet.AnnotationManualStatus] != "true" {
		return false
	}
	for _, c := range p.Status.ContainerStatuses {
		if t := c.LastTerminationState.Terminated; t != nil && t.Reason == "OOMKilled" && c.State.Waiting != nil {
			return true
		}
	}
	return false
}

// isOOMKilled reports whether a container of pod was OOM-killed: its last
// run, or the current one, ended OOMKilled.
func isOOMKilled(p *corev1.Pod) bool {
	for _, c := range p.Status.ContainerStatuses {
		for _, t := range []*corev1.ContainerStateTerminated{c.LastTerminationState.Terminated, c.State.Terminated} {
			if t != nil && t.Reason == "OOMKilled" {
				return true
			}
		}
	}
	return false
}

// breakRecommendation waits until the simulated kubelet runs the
// recommendation pod (so that it has an IP and container IDs), then takes
// its status over and writes an OOM crash loop.
func (st *storeDemoState) breakRecommendation(ctx context.Context, e *env) (*corev1.Pod, error) {
	pod, err := waitPod(ctx, e, "shop", "app=recommendation", func(p *corev1.Pod) bool {
		return isOOMLooping(p) || (p.Status.Phase == corev1.PodRunning && len(p.Status.ContainerStatuses) > 0)
	})
	if err != nil {
		return nil, fmt.Errorf("wait for the simulated kubelet to run shop/recommendation: %w", err)
	}
	if isOOMLooping(pod) {
		return pod, nil
	}
	patch := fmt.Sprintf(`{"metadata":{"annotations":{%q:"true"}}}`, kubelet.AnnotationManualStatus)
	if _, err := e.client.CoreV1().Pods("shop").Patch(ctx, pod.Name, types.MergePatchType, []byte(patch), metav1.PatchOptions{FieldManager: FieldManager}); err != nil {
		return nil, fmt.Errorf("hand shop/%s to a manual status: %w", pod.Name, err)
	}
	var out *corev1.Pod
	err = retry.RetryOnConflict(retry.DefaultRetry, func() error {
		p, err := e.client.CoreV1().Pods("shop").Get(ctx, pod.Name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		oomStatus(p, e.now().UTC())
		out, err = e.client.CoreV1().Pods("shop").UpdateStatus(ctx, p, metav1.UpdateOptions{FieldManager: FieldManager})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("write the OOMKilled status of shop/%s: %w", pod.Name, err)
	}
	return out, nil
}

// oomStatus turns a running pod's status into a crash loop after OOM kills:
// the last run ended OOMKilled (exit code 137), the container waits in
// CrashLoopBackOff, and the pod is not ready.
func oomStatus(p *corev1.Pod, now time.Time) {
	const restarts = 6
	for i := range p.Status.ContainerStatuses {
		c := &p.Status.ContainerStatuses[i]
		c.Ready, c.Started, c.RestartCount = false, new(false), restarts
		c.State = corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{
			Reason:  "CrashLoopBackOff",
			Message: fmt.Sprintf("back-off 5m0s restarting failed container=%s pod=%s_%s(%s)", c.Name, p.Name, p.Namespace, p.UID),
		}}
		c.LastTerminationState = corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{
			ExitCode: 137, Reason: "OOMKilled", ContainerID: c.ContainerID,
			StartedAt: metav1.NewTime(now.Add(-3*time.Minute - 40*time.Second)), FinishedAt: metav1.NewTime(now.Add(-3 * time.Minute)),
		}}
	}
	names := make([]string, 0, len(p.Status.ContainerStatuses))
	for _, c := range p.Status.ContainerStatuses {
		names = append(names, c.Name)
	}
	for i := range p.Status.Conditions {
		c := &p.Status.Conditions[i]
		if c.Type == corev1.PodReady || c.Type == corev1.ContainersReady {
			c.Status, c.Reason = corev1.ConditionFalse, "ContainersNotReady"
			c.Message = "containers with unready status: [" + strings.Join(names, " ") + "]"
			c.LastTransitionTime = metav1.NewTime(now.Add(-3 * time.Minute))
		}
	}
}

// evictReportGenerator creates the bare pod report-generator on the
// DiskPressure node, as evicted by its kubelet: phase Failed, reason Evicted.
func (st *storeDemoState) evictReportGenerator(ctx context.Context, e *env) (*corev1.Pod, error) {
	const name = "report-generator"
	pods := e.client.CoreV1().Pods("shop")
	existing, err := pods.Get(ctx, name, metav1.GetOptions{})
	switch {
	case err == nil && existing.Spec.NodeName != st.diskNode:
		// spec.nodeName is immutable: recreate on the current node.
		if err := pods.Delete(ctx, name, metav1.DeleteOptions{GracePeriodSeconds: new(int64)}); err != nil && !apierrors.IsNotFound(err) {
			return nil, fmt.Errorf("delete shop/%s from node %s: %w", name, existing.Spec.NodeName, err)
		}
		if err := wait.PollUntilContextCancel(ctx, 200*time.Millisecond, true, func(ctx context.Context) (bool, error) {
			_, err := pods.Get(ctx, name, metav1.GetOptions{})
			return apierrors.IsNotFound(err), nil
		}); err != nil {
			return nil, fmt.Errorf("wait for shop/%s to be deleted: %w", name, err)
		}
	case err != nil && !apierrors.IsNotFound(err):
		return nil, fmt.Errorf("get shop/%s: %w", name, err)
	}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Name: name, Namespace: "shop",
			Labels:      map[string]string{"app": name, LabelScenario: storeDemoName},
			Annotations: map[string]string{kubelet.AnnotationManualStatus: "true"},
		},
		Spec: corev1.PodSpec{
			NodeName:      st.diskNode,
			RestartPolicy: corev1.RestartPolicyNever,
			Containers: []corev1.Container{{
				Name: name, Image: "kdiag.io/lab/http-client:v1",
				Args: []string{"--export", "/tmp/reports"},
				Resources: corev1.ResourceRequirements{Requests: corev1.ResourceList{
					corev1.ResourceCPU: resource.MustParse("50m"), corev1.ResourceMemory: resource.MustParse("64Mi"),
				}},
			}},
		},
	}
	if err := e.applyTyped(ctx, pod, "v1", "Pod"); err != nil {
		return nil, err
	}
	var out *corev1.Pod
	err = retry.RetryOnConflict(retry.DefaultRetry, func() error {
		p, err := pods.Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if p.Status.Phase == corev1.PodFailed && p.Status.Reason == "Evicted" {
			out = p
			return nil
		}
		evictedStatus(p, e.now().UTC())
		out, err = pods.UpdateStatus(ctx, p, metav1.UpdateOptions{FieldManager: FieldManager})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("write the Evicted status of shop/%s: %w", name, err)
	}
	return out, nil
}

// evictedStatus is the status the kubelet's eviction manager leaves on a
// pod it evicted for ephemeral-storage: Failed, Evicted, DisruptionTarget.
func evictedStatus(p *corev1.Pod, now time.Time) {
	started := metav1.NewTime(now.Add(-50 * time.Minute))
	evicted := metav1.NewTime(now.Add(-24 * time.Minute))
	p.Status.Phase = corev1.PodFailed
	p.Status.Reason = "Evicted"
	p.Status.Message = EvictionMessage
	p.Status.StartTime = &started
	p.Status.HostIP = ""
	p.Status.Conditions = []corev1.PodCondition{
		{Type: corev1.DisruptionTarget, Status: corev1.ConditionTrue, Reason: "TerminationByKubelet", Message: EvictionMessage, LastTransitionTime: evicted},
		{Type: corev1.PodReadyToStartContainers, Status: corev1.ConditionFalse, LastTransitionTime: evicted},
		{Type: corev1.PodInitialized, Status: corev1.ConditionTrue, LastTransitionTime: started},
		{Type: corev1.PodReady, Status: corev1.ConditionFalse, Reason: "PodFailed", LastTransitionTime: evicted},
		{Type: corev1.ContainersReady, Status: corev1.ConditionFalse, Reason: "PodFailed", LastTransitionTime: evicted},
		{Type: corev1.PodScheduled, Status: corev1.ConditionTrue, LastTransitionTime: started},
	}
	c := p.Spec.Containers[0]
	id := kubelet.ContainerID(p, c.Name, 0)
	p.Status.ContainerStatuses = []corev1.ContainerStatus{{
		Name: c.Name, Image: kubelet.NormalizeImage(c.Image), ImageID: kubelet.ImageID(c.Image),
		ContainerID: id, Ready: false, Started: new(false),
		State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{
			ExitCode: 137, Reason: "Error", StartedAt: started, FinishedAt: evicted, ContainerID: id,
		}},
	}}
}

// placeWorkloads waits until every Deployment of the scenario has all its
// pods scheduled, none of them on a broken node.
func (st *storeDemoState) placeWorkloads(ctx context.Context, e *env) error {
	deployments := append(storeDemoDeployments(), [2]string{"shop", "recommendation"})
	return wait.PollUntilContextCancel(ctx, 250*time.Millisecond, true, func(ctx context.Context) (bool, error) {
		moved, err := st.evacuate(ctx, e)
		if err != nil || len(moved) > 0 {
			return false, permanent(err)
		}
		for _, d := range deployments {
			dep, err := e.client.AppsV1().Deployments(d[0]).Get(ctx, d[1], metav1.GetOptions{})
			if err != nil {
				return false, permanent(err)
			}
			sel, err := metav1.LabelSelectorAsSelector(dep.Spec.Selector)
			if err != nil {
				return false, fmt.Errorf("deployment %s/%s: bad selector: %w", d[0], d[1], err)
			}
			pods, err := e.client.CoreV1().Pods(d[0]).List(ctx, metav1.ListOptions{LabelSelector: sel.String()})
			if err != nil {
				return false, permanent(err)
			}
			scheduled := 0
			for _, p := range pods.Items {
				if p.DeletionTimestamp == nil && p.Spec.NodeName != "" {
					scheduled++
				}
			}
			if dep.Spec.Replicas != nil && scheduled < int(*dep.Spec.Replicas) {
				return false, nil
			}
		}
		return true, nil
	})
}

// evacuate deletes the ReplicaSet pods bound to a broken node and names them.
func (st *storeDemoState) evacuate(ctx context.Context, e *env) ([]string, error) {
	var moved []string
	for _, node := range []string{st.diskNode, st.downNode} {
		pods, err := e.client.CoreV1().Pods("").List(ctx, metav1.ListOptions{FieldSelector: "spec.nodeName=" + node})
		if err != nil {
			return nil, fmt.Errorf("list pods on node %s: %w", node, err)
		}
		for _, p := range pods.Items {
			owner := metav1.GetControllerOf(&p)
			if p.Spec.NodeName != node || p.DeletionTimestamp != nil || owner == nil || owner.Kind != "ReplicaSet" {
				continue
			}
			err := e.client.CoreV1().Pods(p.Namespace).Delete(ctx, p.Name, metav1.DeleteOptions{Preconditions: metav1.NewUIDPreconditions(string(p.UID))})
			if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
				return nil, fmt.Errorf("move pod %s/%s off broken node %s: %w", p.Namespace, p.Name, node, err)
			}
			moved = append(moved, fmt.Sprintf("pod %s/%s: scheduled onto broken node %s before the scheduler saw its taint; deleted to be recreated elsewhere", p.Namespace, p.Name, node))
		}
	}
	return moved, nil
}

// storeDemoDeployments must end with all replicas ready.
func storeDemoDeployments() [][2]string {
	return [][2]string{
		{"shop", "store-front"}, {"shop", "order-service"}, {"shop", "product-service"},
		{"web", "nginx"}, {metav1.NamespaceSystem, "coredns"},
	}
}

// converged lists what store-demo still waits for. On the way it moves
// workload pods off the broken nodes: a pod the scheduler placed there before
// it saw the taint is deleted, and its ReplicaSet recreates it elsewhere.
func (st *storeDemoState) converged(ctx context.Context, e *env) ([]string, error) {
	pending, err := st.evacuate(ctx, e)
	if err != nil {
		return nil, err
	}
	for _, d := range storeDemoDeployments() {
		dep, err := e.client.AppsV1().Deployments(d[0]).Get(ctx, d[1], metav1.GetOptions{})
		if err != nil {
			msg, err := notFoundOr(err, fmt.Sprintf("deployment %s/%s: not found", d[0], d[1]))
			if err != nil {
				return nil, fmt.Errorf("get deployment %s/%s: %w", d[0], d[1], err)
			}
			pending = append(pending, msg)
			continue
		}
		want := int32(1)
		if dep.Spec.Replicas != nil {
			want = *dep.Spec.Replicas
		}
		s := dep.Status
		if s.ObservedGeneration < dep.Generation || s.ReadyReplicas != want || s.UpdatedReplicas != want || s.Replicas != want {
			pending = append(pending, fmt.Sprintf("deployment %s/%s: %d of %d replicas ready", d[0], d[1], s.ReadyReplicas, want))
		}
	}

	pdb, err := e.client.PolicyV1().PodDisruptionBudgets("web").Get(ctx, "nginx", metav1.GetOptions{})
	switch {
	case err != nil:
		msg, err := notFoundOr(err, "poddisruptionbudget web/nginx: not found")
		if err != nil {
			return nil, fmt.Errorf("get poddisruptionbudget web/nginx: %w", err)
		}
		pending = append(pending, msg)
	case pdb.Status.ObservedGeneration < pdb.Generation || pdb.Status.ExpectedPods != 1 || pdb.Status.CurrentHealthy != 1 || pdb.Status.DisruptionsAllowed != 0:
		pending = append(pending, fmt.Sprintf("poddisruptionbudget web/nginx: not yet observed by kube-controller-manager as blocking (expected pods %d, healthy %d, disruptions allowed %d)",
			pdb.Status.ExpectedPods, pdb.Status.CurrentHealthy, pdb.Status.DisruptionsAllowed))
	}

	pods, err := e.client.CoreV1().Pods("shop").List(ctx, metav1.ListOptions{LabelSelector: "app in (recommendation, report-generator)"})
	if err != nil {
		return nil, fmt.Errorf("list shop pods: %w", err)
	}
	var oom, evicted bool
	for i := range pods.Items {
		p := &pods.Items[i]
		looping := isOOMLooping(p)
		if e.opts.RealPods {
			looping = isOOMKilled(p)
		}
		oom = oom || (p.Labels["app"] == "recommendation" && p.DeletionTimestamp == nil && looping)
		evicted = evicted || (p.Name == "report-generator" && p.Status.Phase == corev1.PodFailed && p.Status.Reason == "Evicted")
	}
	if !oom {
		pending = append(pending, "pod shop/recommendation-*: no pod in an OOMKilled crash loop")
	}
	if !evicted {
		pending = append(pending, "pod shop/report-generator: not Evicted")
	}

	for _, svc := range []string{"store-front", "order-service", "product-service"} {
		eps, err := e.client.DiscoveryV1().EndpointSlices("shop").List(ctx, metav1.ListOptions{LabelSelector: "kubernetes.io/service-name=" + svc})
		if err != nil {
			return nil, fmt.Errorf("list endpointslices of shop/%s: %w", svc, err)
		}
		ready := 0
		for _, s := range eps.Items {
			for _, ep := range s.Endpoints {
				if ep.Conditions.Ready != nil && *ep.Conditions.Ready {
					ready++
				}
			}
		}
		if ready == 0 {
			pending = append(pending, fmt.Sprintf("service shop/%s: no ready endpoint yet", svc))
		}
	}

	for _, check := range []struct {
		node string
		typ  corev1.NodeConditionType
		want corev1.ConditionStatus
	}{
		{st.diskNode, corev1.NodeDiskPressure, corev1.ConditionTrue},
		{st.downNode, corev1.NodeReady, corev1.ConditionFalse},
	} {
		n, err := e.client.CoreV1().Nodes().Get(ctx, check.node, metav1.GetOptions{})
		if err != nil {
			return nil, fmt.Errorf("get node %s: %w", check.node, err)
		}
		var got corev1.ConditionStatus
		for _, c := range n.Status.Conditions {
			if c.Type == check.typ {
				got = c.Status
			}
		}
		if got != check.want {
			pending = append(pending, fmt.Sprintf("node %s: %s is %q, want %s", check.node, check.typ, got, check.want))
		}
	}
	return pending, nil
}
