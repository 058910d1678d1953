package node

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/util/retry"

	"github.com/kdiag/kdiag/pkg/cluster"
	ct "github.com/kdiag/kdiag/pkg/cluster/clustertest"
	"github.com/kdiag/kdiag/pkg/findings"
	"github.com/kdiag/kdiag/pkg/lab/kubelet"
	"github.com/kdiag/kdiag/pkg/lab/labtest"
)

func TestMain(m *testing.M) {
	labtest.Main(m, labtest.Options{Nodes: 4})
}

const itNS = "node-it"

// The lab's four nodes play four parts.
const (
	notReadyNode = kubelet.DefaultNodePrefix + "1" // Ready=False, kubelet alive
	sickNode     = kubelet.DefaultNodePrefix + "2" // pressure, no network, KernelDeadlock, cordoned
	healthyNode  = kubelet.DefaultNodePrefix + "3" // healthy neighbour; an OOMKilled pod runs here
	deadNode     = kubelet.DefaultNodePrefix + "4" // its kubelet dies: no more Lease renewals
)

// TestIntegrationNode breaks two of the lab's nodes and some pods the way a
// kubelet and Node Problem Detector would report it (manual status, so the
// simulated kubelet leaves it alone), lets the real kube-controller-manager
// react (taints), reads a live snapshot and checks that every node check
// fires on the broken object, stays silent on the healthy neighbour, and
// that every mutating fix passes a server-side dry run.
func TestIntegrationNode(t *testing.T) {
	c := labtest.Cluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	cs := kubernetes.NewForConfigOrDie(c.RESTConfig())
	dyn := dynamic.NewForConfigOrDie(c.RESTConfig())

	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: itNS}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cs.CoreV1().Namespaces().Delete(context.Background(), itNS, metav1.DeleteOptions{}) })

	// An OOMKilled container in a Deployment with a 256Mi limit, on the
	// healthy node; and a BestEffort pod there, which is fine without pressure.
	one := int32(1)
	lbls := map[string]string{"app": "order"}
	order := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "order", Namespace: itNS},
		Spec: appsv1.DeploymentSpec{
			Replicas: &one, Selector: &metav1.LabelSelector{MatchLabels: lbls},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: lbls}, Spec: podSpec(healthyNode, "128Mi", "256Mi")},
		},
	}
	order.Spec.Template.Spec.NodeName = ""
	order.Spec.Template.Spec.NodeSelector = map[string]string{"kubernetes.io/hostname": healthyNode}
	if _, err := cs.AppsV1().Deployments(itNS).Create(ctx, order, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	createPod(t, ctx, cs, "be-healthy", podSpec(healthyNode, "", ""), false)
	// On the sick node: a BestEffort pod, a Burstable one, and one the
	// kubelet evicted for memory.
	createPod(t, ctx, cs, "be-sick", podSpec(sickNode, "", ""), false)
	createPod(t, ctx, cs, "burstable-sick", podSpec(sickNode, "64Mi", ""), false)
	createPod(t, ctx, cs, "evicted-sick", podSpec(sickNode, "", ""), true)
	const evictMsg = "The node was low on resource: memory. Threshold quantity: 100Mi, available: 72Mi. Container app was using 310Mi, request is 0, has larger consumption of request. "
	setPodStatus(t, ctx, cs, "evicted-sick", func(p *corev1.Pod) {
		now := metav1.Now()
		p.Status = corev1.PodStatus{Phase: corev1.PodFailed, Reason: "Evicted", Message: evictMsg,
			Conditions: []corev1.PodCondition{{Type: corev1.DisruptionTarget, Status: corev1.ConditionTrue, Reason: "TerminationByKubelet", Message: evictMsg, LastTransitionTime: now}}}
	})

	var orderPod string
	waitFor(t, ctx, "the order pod runs", func(ctx context.Context) (bool, error) {
		pods, err := cs.CoreV1().Pods(itNS).List(ctx, metav1.ListOptions{LabelSelector: "app=order"})
		if err != nil || len(pods.Items) != 1 || pods.Items[0].Status.Phase != corev1.PodRunning {
			return false, err
		}
		orderPod = pods.Items[0].Name
		return true, nil
	})
	annotate(t, ctx, cs.CoreV1().Pods(itNS).Patch, orderPod)
	killedAt := metav1.NewTime(time.Now().Add(-3 * time.Minute).Truncate(time.Second))
	setPodStatus(t, ctx, cs, orderPod, func(p *corev1.Pod) {
		for k := range p.Status.ContainerStatuses {
			cs := &p.Status.ContainerStatuses[k]
			cs.RestartCount = 3
			cs.LastTerminationState = corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{
				Reason: "OOMKilled", ExitCode: 137, StartedAt: killedAt, FinishedAt: killedAt}}
		}
	})

	// deadNode runs a pod, then its kubelet dies: the node lifecycle
	// controller marks it Unknown once its Lease is older than the grace period.
	createPod(t, ctx, cs, "on-dead", podSpec(deadNode, "", ""), false)
	waitFor(t, ctx, "the pod on the doomed node runs", func(ctx context.Context) (bool, error) {
		p, err := cs.CoreV1().Pods(itNS).Get(ctx, "on-dead", metav1.GetOptions{})
		return err == nil && p.Status.Phase == corev1.PodRunning, err
	})
	patchNode(t, ctx, cs, deadNode, fmt.Sprintf(`{"metadata":{"annotations":{%q:"false"}}}`, kubelet.AnnotationHeartbeat))

	// The nodes: notReadyNode's kubelet reports NotReady (its Lease is
	// still renewed); sickNode has memory pressure, no pod network, a Node
	// Problem Detector condition, and is cordoned.
	annotate(t, ctx, cs.CoreV1().Nodes().Patch, notReadyNode)
	annotate(t, ctx, cs.CoreV1().Nodes().Patch, sickNode)
	patchNode(t, ctx, cs, sickNode, `{"spec":{"unschedulable":true}}`)
	const runtimeMsg = "container runtime network not ready: NetworkReady=false reason:NetworkPluginNotReady message:Network plugin returns error: cni plugin not initialized"
	setConditions(t, ctx, cs, notReadyNode, corev1.NodeCondition{Type: corev1.NodeReady, Status: corev1.ConditionFalse, Reason: "KubeletNotReady", Message: runtimeMsg})
	setConditions(t, ctx, cs, sickNode,
		corev1.NodeCondition{Type: corev1.NodeMemoryPressure, Status: corev1.ConditionTrue, Reason: "KubeletHasInsufficientMemory", Message: "kubelet has insufficient memory available"},
		corev1.NodeCondition{Type: corev1.NodeNetworkUnavailable, Status: corev1.ConditionTrue, Reason: "NoRouteCreated", Message: "RouteController failed to create a route"},
		corev1.NodeCondition{Type: "KernelDeadlock", Status: corev1.ConditionTrue, Reason: "DockerHung", Message: "kernel: INFO: task docker:20744 blocked for more than 120 seconds."})

	// kube-controller-manager's node lifecycle controller answers with
	// taints: not-ready on the first node, memory-pressure, network-
	// unavailable and unschedulable on the second.
	var snap *cluster.Snapshot
	waitFor(t, ctx, "the node lifecycle controller's taints", func(ctx context.Context) (bool, error) {
		snap = readLive(t, ctx, cs)
		ix := snap.Index()
		nr, sick := ix.Node(notReadyNode), ix.Node(sickNode)
		return nr != nil && sick != nil && hasTaint(nr, corev1.TaintNodeNotReady, corev1.TaintEffectNoExecute) &&
			taint(sick, corev1.TaintNodeMemoryPressure) != nil && taint(sick, corev1.TaintNodeUnschedulable) != nil, nil
	})
	waitFor(t, ctx, "the dead node turns Unknown", func(ctx context.Context) (bool, error) {
		snap = readLive(t, ctx, cs)
		c := condition(snap.Index().Node(deadNode), corev1.NodeReady)
		return c != nil && c.Status == corev1.ConditionUnknown, nil
	})
	fs := Analyze(snap)
	for _, f := range fs {
		t.Logf("%s %s %s: %s", f.Severity, f.ID, f.Object, f.Title)
	}

	// node-not-ready: the kubelet is alive (fresh Lease) but reports NotReady.
	f := ct.MustFind(t, fs, idNotReady, notReadyNode)
	if f.Severity != findings.Critical {
		t.Errorf("node-not-ready severity %s", f.Severity)
	}
	ct.AssertMentions(t, f, "reason=KubeletNotReady", "cni plugin not initialized", "Lease kube-node-lease/"+notReadyNode+" spec.renewTime=",
		"node.kubernetes.io/not-ready:NoExecute", "lastHeartbeatTime=")
	if !strings.Contains(f.Explanation, "is alive") {
		t.Errorf("the lab renews a manual node's Lease, so kdiag should say the kubelet is alive: %s", f.Explanation)
	}
	f = ct.MustFind(t, fs, idNotReady, deadNode)
	ct.AssertMentions(t, f, "status is Unknown", "NodeStatusUnknown", "Lease last renewed", "bound to the node", "node.kubernetes.io/unreachable:NoExecute")
	if strings.Contains(f.Title, "; 0 pods on it") {
		t.Errorf("the pod on-dead runs on %s: %s", deadNode, f.Title)
	}
	if !strings.Contains(f.Explanation, "stopped heartbeating") {
		t.Errorf("a dead kubelet: the explanation should say it stopped heartbeating: %s", f.Explanation)
	}
	ct.None(t, fs, idNotReady, sickNode)
	ct.None(t, fs, idNotReady, healthyNode)

	// node-pressure: critical, since the kubelet evicted a pod for memory.
	f = ct.MustFind(t, fs, idPressure, sickNode)
	if f.Severity != findings.Critical {
		t.Errorf("node-pressure with an eviction: severity %s, want critical", f.Severity)
	}
	ct.AssertMentions(t, f, "MemoryPressure", "node.kubernetes.io/memory-pressure:NoSchedule", "evicted or rejected by the kubelet for memory on this node: "+itNS+"/evicted-sick")
	ct.None(t, fs, idPressure, healthyNode)
	ct.None(t, fs, idPressure, notReadyNode)

	f = ct.MustFind(t, fs, idNetworkUnavailable, sickNode)
	ct.AssertMentions(t, f, "NoRouteCreated", "RouteController failed to create a route")
	ct.None(t, fs, idNetworkUnavailable, healthyNode)

	f = ct.MustFind(t, fs, idProblemCondition, sickNode)
	ct.AssertMentions(t, f, "KernelDeadlock=True", "DockerHung", "blocked for more than 120 seconds")
	ct.None(t, fs, idProblemCondition, healthyNode)

	f = ct.MustFind(t, fs, idCordoned, sickNode)
	if f.Severity != findings.Info {
		t.Errorf("fresh cordon: severity %s, want info", f.Severity)
	}
	ct.AssertMentions(t, f, "spec.unschedulable=true", "node.kubernetes.io/unschedulable:NoSchedule added")
	ct.None(t, fs, idCordoned, healthyNode)

	// pod-no-resources-on-pressured-node: the BestEffort pod on the
	// pressured node only.
	f = ct.MustFind(t, fs, idBestEffort, sickNode)
	ct.AssertMentions(t, f, itNS+"/be-sick")
	if all := strings.Join(f.Evidence, "\n"); strings.Contains(all, "burstable-sick") || strings.Contains(all, "evicted-sick") {
		t.Errorf("only BestEffort pods that still run belong here:\n%s", all)
	}
	ct.None(t, fs, idBestEffort, healthyNode)

	// pod-evicted: the evicted bare pod; nothing about the running ones.
	f = ct.MustFind(t, fs, idEvicted, "evicted-sick")
	ct.AssertMentions(t, f, "low on resource: memory", "on node "+sickNode)
	ct.None(t, fs, idEvicted, "be-sick")

	// oom-killed: on the healthy node, with the limit patch for the Deployment.
	f = ct.MustFind(t, fs, idOOMKilled, healthyNode)
	ct.AssertMentions(t, f, itNS+"/"+orderPod+" container app (Deployment order)", "restartCount=3", "memory request 128Mi, limit 256Mi")
	ct.None(t, fs, idOOMKilled, sickNode)
	if m := ct.Mutating(f); len(m) != 1 || !strings.Contains(string(m[0].Action.Patch), `"memory":"384Mi"`) {
		t.Errorf("want one patch raising the limit to 384Mi, got %+v", m)
	}

	// Every mutating fix (uncordon, limit patch) passes a server-side dry
	// run, and the dry run changed nothing.
	if err := (&findings.Verifier{Client: dyn}).Verify(ctx, fs); err != nil {
		t.Fatal(err)
	}
	verified := 0
	for _, f := range fs {
		for _, r := range f.Remediation {
			if r.Action == nil {
				continue
			}
			verified++
			if r.DryRun == nil || r.DryRun.Status != findings.DryRunPassed {
				t.Errorf("%s %s: dry run of %q: %+v", f.ID, f.Object, r.Command, r.DryRun)
			}
		}
	}
	if verified != 2 {
		t.Errorf("want 2 mutating fixes (uncordon, raise limit), got %d", verified)
	}
	after := readLive(t, ctx, cs)
	if n := after.Index().Node(sickNode); n == nil || !n.Spec.Unschedulable {
		t.Errorf("the dry run must not uncordon the node")
	}
	d, err := cs.AppsV1().Deployments(itNS).Get(ctx, "order", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if lim := d.Spec.Template.Spec.Containers[0].Resources.Limits[corev1.ResourceMemory]; lim.String() != "256Mi" {
		t.Errorf("the dry run must not change the limit, it is now %s", lim.String())
	}
}

// TestIntegrationNodeGaps reads the lab as a user who may not list nodes or
// pods: the node checks stay silent instead of guessing.
func TestIntegrationNodeGaps(t *testing.T) {
	c := labtest.Cluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cfg, err := c.ClientCertConfig("kdiag-no-nodes", nil, time.Now().Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	cs := kubernetes.NewForConfigOrDie(cfg)
	s, err := cluster.ReadLive(ctx, cs, cluster.LiveOptions{Source: "lab"})
	if err != nil {
		t.Fatalf("read as an unprivileged user: %v", err)
	}
	if s.Has(cluster.ResNodes) || s.Has(cluster.ResPods) {
		t.Fatalf("an unprivileged user should get gaps for nodes and pods, got %v", s.Gaps)
	}
	if fs := Analyze(s); len(fs) != 0 {
		t.Fatalf("nothing read, nothing to say; got %s", ct.Dump(fs))
	}
}

func hasTaint(n *corev1.Node, key string, effect corev1.TaintEffect) bool {
	for _, t := range n.Spec.Taints {
		if t.Key == key && t.Effect == effect {
			return true
		}
	}
	return false
}

func readLive(t *testing.T, ctx context.Context, cs kubernetes.Interface) *cluster.Snapshot {
	t.Helper()
	s, err := cluster.ReadLive(ctx, cs, cluster.LiveOptions{Source: "lab"})
	if err != nil {
		t.Fatalf("read the lab: %v", err)
	}
	if len(s.Gaps) > 0 {
		t.Fatalf("gaps in a full read: %v", s.Gaps)
	}
	return s
}

func waitFor(t *testing.T, ctx context.Context, what string, cond func(context.Context) (bool, error)) {
	t.Helper()
	if err := wait.PollUntilContextTimeout(ctx, time.Second, 2*time.Minute, true, cond); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// podSpec is a one-container pod spec, bound to node when node is set,
// with the given memory request and limit ("" for none).
func podSpec(node, request, limit string) corev1.PodSpec {
	zero := int64(0)
	c := corev1.Container{Name: "app", Image: "registry.k8s.io/pause:3.10"}
	if request != "" {
		c.Resources.Requests = corev1.ResourceList{corev1.ResourceMemory: resource.MustParse(request)}
	}
	if limit != "" {
		c.Resources.Limits = corev1.ResourceList{corev1.ResourceMemory: resource.MustParse(limit)}
	}
	return corev1.PodSpec{NodeName: node, TerminationGracePeriodSeconds: &zero, Containers: []corev1.Container{c}}
}

// createPod creates a bare pod; manual hands its status to the test from
// the start.
func createPod(t *testing.T, ctx context.Context, cs kubernetes.Interface, name string, spec corev1.PodSpec, manual bool) {
	t.Helper()
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: itNS}, Spec: spec}
	if manual {
		p.Annotations = map[string]string{kubelet.AnnotationManualStatus: "true"}
	}
	if _, err := cs.CoreV1().Pods(itNS).Create(ctx, p, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create pod %s: %v", name, err)
	}
}

type patchFunc[T any] func(ctx context.Context, name string, pt types.PatchType, data []byte, opts metav1.PatchOptions, sub ...string) (T, error)

// annotate hands an object's status to the test: the simulated kubelet no
// longer writes it.
func annotate[T any](t *testing.T, ctx context.Context, patch patchFunc[T], name string) {
	t.Helper()
	body := fmt.Sprintf(`{"metadata":{"annotations":{%q:"true"}}}`, kubelet.AnnotationManualStatus)
	if _, err := patch(ctx, name, types.MergePatchType, []byte(body), metav1.PatchOptions{}); err != nil {
		t.Fatalf("annotate %s: %v", name, err)
	}
}

// setPodStatus rewrites a pod's status and waits until it holds (a
// simulator sync in flight when the pod was annotated may overwrite it once).
func setPodStatus(t *testing.T, ctx context.Context, cs kubernetes.Interface, name string, mutate func(*corev1.Pod)) {
	t.Helper()
	waitFor(t, ctx, "status of pod "+name, func(ctx context.Context) (bool, error) {
		err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
			p, err := cs.CoreV1().Pods(itNS).Get(ctx, name, metav1.GetOptions{})
			if err != nil {
				return err
			}
			mutate(p)
			_, err = cs.CoreV1().Pods(itNS).UpdateStatus(ctx, p, metav1.UpdateOptions{})
			return err
		})
		if err != nil {
			return false, err
		}
		time.Sleep(time.Second)
		p, err := cs.CoreV1().Pods(itNS).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		want := p.DeepCopy()
		mutate(want)
		return podStatusHolds(p, want), nil
	})
}

// podStatusHolds compares what the tests set: phase, reason and the
// containers' last terminations.
func podStatusHolds(got, want *corev1.Pod) bool {
	if got.Status.Phase != want.Status.Phase || got.Status.Reason != want.Status.Reason {
		return false
	}
	for k := range want.Status.ContainerStatuses {
		w := want.Status.ContainerStatuses[k].LastTerminationState.Terminated
		if k >= len(got.Status.ContainerStatuses) {
			return false
		}
		g := got.Status.ContainerStatuses[k].LastTerminationState.Terminated
		if (w == nil) != (g == nil) || (w != nil && w.Reason != g.Reason) {
			return false
		}
	}
	return true
}

// setConditions sets node conditions (heartbeat and transition now) and
// waits until they hold.
func setConditions(t *testing.T, ctx context.Context, cs kubernetes.Interface, node string, conds ...corev1.NodeCondition) {
	t.Helper()
	waitFor(t, ctx, "conditions of node "+node, func(ctx context.Context) (bool, error) {
		err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
			n, err := cs.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{})
			if err != nil {
				return err
			}
			now := metav1.Now()
			for _, c := range conds {
				c.LastHeartbeatTime, c.LastTransitionTime = now, now
				replaced := false
				for k := range n.Status.Conditions {
					if n.Status.Conditions[k].Type == c.Type {
						if n.Status.Conditions[k].Status == c.Status {
							c.LastTransitionTime = n.Status.Conditions[k].LastTransitionTime
						}
						n.Status.Conditions[k], replaced = c, true
					}
				}
				if !replaced {
					n.Status.Conditions = append(n.Status.Conditions, c)
				}
			}
			_, err = cs.CoreV1().Nodes().UpdateStatus(ctx, n, metav1.UpdateOptions{})
			return err
		})
		if err != nil {
			return false, err
		}
		time.Sleep(time.Second)
		n, err := cs.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		for _, c := range conds {
			got := condition(n, c.Type)
			if got == nil || got.Status != c.Status || got.Reason != c.Reason {
				return false, nil
			}
		}
		return true, nil
	})
}

func patchNode(t *testing.T, ctx context.Context, cs kubernetes.Interface, node, patch string) {
	t.Helper()
	if _, err := cs.CoreV1().Nodes().Patch(ctx, node, types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
		t.Fatalf("patch node %s: %v", node, err)
	}
}
