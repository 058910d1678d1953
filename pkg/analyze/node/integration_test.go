package node

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
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

	labtest.CreateNamespace(t, ctx, cs, itNS)

	// An OOMKilled container in a Deployment with a 256Mi limit, on the
	// healthy node; and a BestEffort pod there, which is fine without pressure.
	order := podSpec("", "128Mi", "256Mi")
	order.NodeSelector = map[string]string{"kubernetes.io/hostname": healthyNode}
	labtest.CreateDeployment(t, ctx, cs, itNS, "order", 1, nil, order)
	labtest.CreatePod(t, ctx, cs, itNS, "be-healthy", nil, podSpec(healthyNode, "", ""), false)
	// On the sick node: a BestEffort pod, a Burstable one, and one the
	// kubelet evicted for memory.
	labtest.CreatePod(t, ctx, cs, itNS, "be-sick", nil, podSpec(sickNode, "", ""), false)
	labtest.CreatePod(t, ctx, cs, itNS, "burstable-sick", nil, podSpec(sickNode, "64Mi", ""), false)
	labtest.CreatePod(t, ctx, cs, itNS, "evicted-sick", nil, podSpec(sickNode, "", ""), true)
	const evictMsg = "The node was low on resource: memory. Threshold quantity: 100Mi, available: 72Mi. Container app was using 310Mi, request is 0, has larger consumption of request. "
	setPodStatus(t, ctx, cs, "evicted-sick", func(p *corev1.Pod) {
		now := metav1.Now()
		p.Status = corev1.PodStatus{Phase: corev1.PodFailed, Reason: "Evicted", Message: evictMsg,
			Conditions: []corev1.PodCondition{{Type: corev1.DisruptionTarget, Status: corev1.ConditionTrue, Reason: "TerminationByKubelet", Message: evictMsg, LastTransitionTime: now}}}
	})

	orderPod := labtest.WaitForPods(t, ctx, cs, itNS, metav1.ListOptions{LabelSelector: "app=order"}, 1, labtest.PodRunning)[0].Name
	labtest.TakeStatus(t, ctx, cs.CoreV1().Pods(itNS).Patch, orderPod)
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
	labtest.CreatePod(t, ctx, cs, itNS, "on-dead", nil, podSpec(deadNode, "", ""), false)
	labtest.WaitForPods(t, ctx, cs, itNS, metav1.ListOptions{FieldSelector: "metadata.name=on-dead"}, 1, labtest.PodRunning)
	labtest.PatchNode(t, ctx, cs, deadNode, fmt.Sprintf(`{"metadata":{"annotations":{%q:"false"}}}`, kubelet.AnnotationHeartbeat))

	// The nodes: notReadyNode's kubelet reports NotReady (its Lease is
	// still renewed); sickNode has memory pressure, no pod network, a Node
	// Problem Detector condition, and is cordoned.
	labtest.TakeStatus(t, ctx, cs.CoreV1().Nodes().Patch, notReadyNode)
	labtest.TakeStatus(t, ctx, cs.CoreV1().Nodes().Patch, sickNode)
	labtest.PatchNode(t, ctx, cs, sickNode, `{"spec":{"unschedulable":true}}`)
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
	labtest.WaitFor(t, ctx, "the node lifecycle controller's taints", func(ctx context.Context) (bool, error) {
		snap = labtest.ReadLive(t, ctx, cs, cluster.LiveOptions{})
		ix := snap.Index()
		nr, sick := ix.Node(notReadyNode), ix.Node(sickNode)
		return nr != nil && sick != nil && hasTaint(nr, corev1.TaintNodeNotReady, corev1.TaintEffectNoExecute) &&
			taint(sick, corev1.TaintNodeMemoryPressure) != nil && taint(sick, corev1.TaintNodeUnschedulable) != nil, nil
	})
	labtest.WaitFor(t, ctx, "the dead node turns Unknown", func(ctx context.Context) (bool, error) {
		snap = labtest.ReadLive(t, ctx, cs, cluster.LiveOptions{})
		c := condition(snap.Index().Node(deadNode), corev1.NodeReady)
		return c != nil && c.Status == corev1.ConditionUnknown, nil
	})
	fs := Analyze(snap)
	ct.LogFindings(t, fs)

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
	if verified := labtest.VerifyFixes(t, ctx, dyn, fs); verified != 2 {
		t.Errorf("want 2 mutating fixes (uncordon, raise limit), got %d", verified)
	}
	after := labtest.ReadLive(t, ctx, cs, cluster.LiveOptions{})
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

// podSpec is a one-container pod spec, bound to node when node is set,
// with the given memory request and limit ("" for none).
func podSpec(node, request, limit string) corev1.PodSpec {
	spec := labtest.PauseSpec()
	spec.NodeName = node
	c := &spec.Containers[0]
	if request != "" {
		c.Resources.Requests = corev1.ResourceList{corev1.ResourceMemory: resource.MustParse(request)}
	}
	if limit != "" {
		c.Resources.Limits = corev1.ResourceList{corev1.ResourceMemory: resource.MustParse(limit)}
	}
	return spec
}

// setPodStatus rewrites a pod's status and waits until what the tests set
// holds (a simulator sync in flight when the pod was annotated may
// overwrite it once).
func setPodStatus(t *testing.T, ctx context.Context, cs kubernetes.Interface, name string, mutate func(*corev1.Pod)) {
	t.Helper()
	labtest.SetPodStatus(t, ctx, cs, itNS, name, mutate, func(p *corev1.Pod) bool {
		want := p.DeepCopy()
		mutate(want)
		return podStatusHolds(p, want)
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
	labtest.WaitFor(t, ctx, "conditions of node "+node, func(ctx context.Context) (bool, error) {
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
