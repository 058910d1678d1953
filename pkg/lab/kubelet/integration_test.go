package kubelet_test

import (
	"context"
	"fmt"
	"net/netip"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"

	"github.com/kdiag/kdiag/pkg/lab/kubelet"
	"github.com/kdiag/kdiag/pkg/lab/labtest"
)

// The integration tests share one real control plane with three simulated
// nodes. They run one after the other: two of them break a node for a while.
func TestMain(m *testing.M) { labtest.Main(m, labtest.Options{Nodes: 3}) }

func client(t *testing.T) kubernetes.Interface {
	t.Helper()
	return kubernetes.NewForConfigOrDie(labtest.Cluster(t).RESTConfig())
}

func poll(t *testing.T, what string, timeout time.Duration, cond func(ctx context.Context) (bool, error)) {
	t.Helper()
	var last error
	err := wait.PollUntilContextTimeout(context.Background(), 250*time.Millisecond, timeout, true, func(ctx context.Context) (bool, error) {
		ok, err := cond(ctx)
		if err != nil {
			last = err
			return false, nil
		}
		return ok, nil
	})
	if err != nil {
		t.Fatalf("%s: not within %s (last error: %v)", what, timeout, last)
	}
}

func condition(n *corev1.Node, typ corev1.NodeConditionType) *corev1.NodeCondition {
	for i := range n.Status.Conditions {
		if n.Status.Conditions[i].Type == typ {
			return &n.Status.Conditions[i]
		}
	}
	return nil
}

func namespace(t *testing.T, cs kubernetes.Interface, name string) {
	t.Helper()
	ctx := context.Background()
	_, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	// The default ServiceAccount is created by kube-controller-manager.
	poll(t, "default ServiceAccount in "+name, 30*time.Second, func(ctx context.Context) (bool, error) {
		_, err := cs.CoreV1().ServiceAccounts(name).Get(ctx, "default", metav1.GetOptions{})
		return err == nil, nil
	})
}

func TestIntegrationNodesRegisteredReadyWithFreshLeases(t *testing.T) {
	cs := client(t)
	ctx := context.Background()
	// Longer than kube-controller-manager's 20 s grace period: a node whose
	// Lease were not renewed would turn Unknown meanwhile.
	time.Sleep(25 * time.Second)
	nodes, err := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{LabelSelector: kubelet.LabelSimulated + "=true"})
	if err != nil {
		t.Fatal(err)
	}
	if len(nodes.Items) != 3 {
		t.Fatalf("%d simulated nodes, want 3", len(nodes.Items))
	}
	cidrs := map[string]string{}
	for _, n := range nodes.Items {
		if c := condition(&n, corev1.NodeReady); c == nil || c.Status != corev1.ConditionTrue {
			t.Errorf("node %s Ready = %+v, want True", n.Name, c)
		}
		for _, typ := range []corev1.NodeConditionType{corev1.NodeMemoryPressure, corev1.NodeDiskPressure, corev1.NodePIDPressure, corev1.NodeNetworkUnavailable} {
			if c := condition(&n, typ); c == nil || c.Status != corev1.ConditionFalse {
				t.Errorf("node %s %s = %+v, want False", n.Name, typ, c)
			}
		}
		for _, taint := range n.Spec.Taints {
			t.Errorf("node %s has taint %s:%s, want none on a healthy node", n.Name, taint.Key, taint.Effect)
		}
		if n.Spec.PodCIDR == "" {
			t.Errorf("node %s has no podCIDR (node-ipam controller)", n.Name)
		} else if other, dup := cidrs[n.Spec.PodCIDR]; dup {
			t.Errorf("nodes %s and %s share podCIDR %s", other, n.Name, n.Spec.PodCIDR)
		}
		cidrs[n.Spec.PodCIDR] = n.Name
		lease, err := cs.CoordinationV1().Leases(corev1.NamespaceNodeLease).Get(ctx, n.Name, metav1.GetOptions{})
		if err != nil {
			t.Errorf("lease of %s: %v", n.Name, err)
			continue
		}
		if age := time.Since(lease.Spec.RenewTime.Time); age > 15*time.Second {
			t.Errorf("lease of %s renewed %s ago, want under 15s (renewed every 10s)", n.Name, age.Round(time.Second))
		}
		if *lease.Spec.HolderIdentity != n.Name || len(lease.OwnerReferences) != 1 || lease.OwnerReferences[0].UID != n.UID {
			t.Errorf("lease of %s: holder %s owners %v", n.Name, *lease.Spec.HolderIdentity, lease.OwnerReferences)
		}
	}
}

func TestIntegrationDeploymentPodsRunWithDistinctIPs(t *testing.T) {
	cs := client(t)
	ctx := context.Background()
	namespace(t, cs, "kubelet-it")
	replicas := int32(6)
	labels := map[string]string{"app": "web"}
	dep := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "kubelet-it"},
		Spec: appsv1.DeploymentSpec{
			Replicas: &replicas,
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{
					Name: "web", Image: "kdiag.io/lab/http-server:v1",
					Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}},
				}}},
			},
		},
	}
	if _, err := cs.AppsV1().Deployments("kubelet-it").Create(ctx, dep, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	poll(t, "deployment web available", 90*time.Second, func(ctx context.Context) (bool, error) {
		d, err := cs.AppsV1().Deployments("kubelet-it").Get(ctx, "web", metav1.GetOptions{})
		return err == nil && d.Status.AvailableReplicas == replicas, err
	})
	nodes, err := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	byName := map[string]corev1.Node{}
	for _, n := range nodes.Items {
		byName[n.Name] = n
	}
	pods, err := cs.CoreV1().Pods("kubelet-it").List(ctx, metav1.ListOptions{LabelSelector: "app=web"})
	if err != nil {
		t.Fatal(err)
	}
	if len(pods.Items) != int(replicas) {
		t.Fatalf("%d pods, want %d", len(pods.Items), replicas)
	}
	ips := map[string]string{}
	for _, p := range pods.Items {
		node := byName[p.Spec.NodeName]
		cidr, err := netip.ParsePrefix(node.Spec.PodCIDR)
		if err != nil {
			t.Fatalf("pod %s on node %q with podCIDR %q: %v", p.Name, p.Spec.NodeName, node.Spec.PodCIDR, err)
		}
		ip, err := netip.ParseAddr(p.Status.PodIP)
		if err != nil || !cidr.Contains(ip) {
			t.Errorf("pod %s IP %q not in its node's podCIDR %s", p.Name, p.Status.PodIP, cidr)
		}
		if other, dup := ips[p.Status.PodIP]; dup {
			t.Errorf("pods %s and %s share IP %s", other, p.Name, p.Status.PodIP)
		}
		ips[p.Status.PodIP] = p.Name
		if p.Status.Phase != corev1.PodRunning || p.Status.HostIP != node.Status.Addresses[0].Address || p.Status.StartTime == nil {
			t.Errorf("pod %s: phase %s hostIP %s startTime %v", p.Name, p.Status.Phase, p.Status.HostIP, p.Status.StartTime)
		}
		for _, typ := range []corev1.PodConditionType{corev1.PodReadyToStartContainers, corev1.PodInitialized, corev1.ContainersReady, corev1.PodReady, corev1.PodScheduled} {
			found := false
			for _, c := range p.Status.Conditions {
				found = found || (c.Type == typ && c.Status == corev1.ConditionTrue)
			}
			if !found {
				t.Errorf("pod %s has no %s=True condition", p.Name, typ)
			}
		}
		if len(p.Status.ContainerStatuses) != 1 || !p.Status.ContainerStatuses[0].Ready || p.Status.ContainerStatuses[0].State.Running == nil {
			t.Errorf("pod %s container statuses: %+v", p.Name, p.Status.ContainerStatuses)
		}
	}
	// The EndpointSlice controller sees ready endpoints with those IPs.
	poll(t, "EndpointSlice endpoints ready", 30*time.Second, func(ctx context.Context) (bool, error) {
		if _, err := cs.CoreV1().Services("kubelet-it").Get(ctx, "web", metav1.GetOptions{}); apierrors.IsNotFound(err) {
			svc := &corev1.Service{
				ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "kubelet-it"},
				Spec:       corev1.ServiceSpec{Selector: labels, Ports: []corev1.ServicePort{{Port: 80}}},
			}
			if _, err := cs.CoreV1().Services("kubelet-it").Create(ctx, svc, metav1.CreateOptions{}); err != nil {
				return false, err
			}
		}
		slices, err := cs.DiscoveryV1().EndpointSlices("kubelet-it").List(ctx, metav1.ListOptions{LabelSelector: "kubernetes.io/service-name=web"})
		if err != nil {
			return false, err
		}
		ready := 0
		for _, s := range slices.Items {
			for _, e := range s.Endpoints {
				if e.Conditions.Ready != nil && *e.Conditions.Ready && ips[e.Addresses[0]] != "" {
					ready++
				}
			}
		}
		return ready == int(replicas), nil
	})

	// Scaled to zero, the pods are deleted (grace 0 by the kubelet) and go.
	if _, err := cs.AppsV1().Deployments("kubelet-it").Patch(ctx, "web", types.MergePatchType, []byte(`{"spec":{"replicas":0}}`), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	poll(t, "pods of the scaled-down deployment deleted", 60*time.Second, func(ctx context.Context) (bool, error) {
		l, err := cs.CoreV1().Pods("kubelet-it").List(ctx, metav1.ListOptions{LabelSelector: "app=web"})
		return err == nil && len(l.Items) == 0, err
	})
}

func TestIntegrationManualStatusIsKept(t *testing.T) {
	cs := client(t)
	ctx := context.Background()
	namespace(t, cs, "kubelet-manual")

	// A pod that the simulator runs first, then hands over to the test.
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "oom", Namespace: "kubelet-manual"},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{
			Name: "app", Image: "kdiag.io/lab/http-server",
			Resources: corev1.ResourceRequirements{Limits: corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("64Mi")}},
		}}},
	}
	if _, err := cs.CoreV1().Pods("kubelet-manual").Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	poll(t, "pod oom Running", 60*time.Second, func(ctx context.Context) (bool, error) {
		p, err := cs.CoreV1().Pods("kubelet-manual").Get(ctx, "oom", metav1.GetOptions{})
		return err == nil && p.Status.Phase == corev1.PodRunning, err
	})
	ann := fmt.Sprintf(`{"metadata":{"annotations":{%q:"true"}}}`, kubelet.AnnotationManualStatus)
	if _, err := cs.CoreV1().Pods("kubelet-manual").Patch(ctx, "oom", types.MergePatchType, []byte(ann), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	p, err := cs.CoreV1().Pods("kubelet-manual").Get(ctx, "oom", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for i := range p.Status.Conditions {
		if c := &p.Status.Conditions[i]; c.Type == corev1.PodReady || c.Type == corev1.ContainersReady {
			c.Status, c.Reason = corev1.ConditionFalse, "ContainersNotReady"
		}
	}
	cst := &p.Status.ContainerStatuses[0]
	cst.Ready, cst.Started, cst.RestartCount = false, new(false), 5
	cst.State = corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "CrashLoopBackOff", Message: "back-off 2m40s restarting failed container"}}
	cst.LastTerminationState = corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{Reason: "OOMKilled", ExitCode: 137}}
	if _, err := cs.CoreV1().Pods("kubelet-manual").UpdateStatus(ctx, p, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}

	// A node under DiskPressure, by hand.
	const nodeName = "lab-node-2"
	if _, err := cs.CoreV1().Nodes().Patch(ctx, nodeName, types.MergePatchType, []byte(ann), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// Hand the node back: the simulator reports it healthy again.
		undo := fmt.Sprintf(`{"metadata":{"annotations":{%q:null}}}`, kubelet.AnnotationManualStatus)
		if _, err := cs.CoreV1().Nodes().Patch(context.Background(), nodeName, types.MergePatchType, []byte(undo), metav1.PatchOptions{}); err != nil {
			t.Errorf("restore node: %v", err)
		}
		poll(t, nodeName+" without DiskPressure again", 30*time.Second, func(ctx context.Context) (bool, error) {
			n, err := cs.CoreV1().Nodes().Get(ctx, nodeName, metav1.GetOptions{})
			return err == nil && condition(n, corev1.NodeDiskPressure).Status == corev1.ConditionFalse, err
		})
	})
	nodeStatus := fmt.Sprintf(`{"status":{"conditions":[{"type":"DiskPressure","status":"True","reason":"KubeletHasDiskPressure","message":"kubelet has disk pressure","lastHeartbeatTime":%q,"lastTransitionTime":%q}]}}`,
		time.Now().UTC().Format(time.RFC3339), time.Now().UTC().Format(time.RFC3339))
	if _, err := cs.CoreV1().Nodes().Patch(ctx, nodeName, types.StrategicMergePatchType, []byte(nodeStatus), metav1.PatchOptions{}, "status"); err != nil {
		t.Fatal(err)
	}

	// Longer than the grace period: the Lease keeps the node from turning
	// Unknown, and nothing rewrites the patched statuses.
	time.Sleep(25 * time.Second)
	p, err = cs.CoreV1().Pods("kubelet-manual").Get(ctx, "oom", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if cst := p.Status.ContainerStatuses; len(cst) != 1 || cst[0].RestartCount != 5 || cst[0].State.Waiting == nil ||
		cst[0].State.Waiting.Reason != "CrashLoopBackOff" || cst[0].LastTerminationState.Terminated == nil ||
		cst[0].LastTerminationState.Terminated.Reason != "OOMKilled" {
		t.Errorf("manual pod status not kept: %+v", p.Status.ContainerStatuses)
	}
	n, err := cs.CoreV1().Nodes().Get(ctx, nodeName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if c := condition(n, corev1.NodeDiskPressure); c == nil || c.Status != corev1.ConditionTrue {
		t.Errorf("manual node DiskPressure = %+v, want the patched True", c)
	}
	if c := condition(n, corev1.NodeReady); c == nil || c.Status != corev1.ConditionTrue {
		t.Errorf("manual node Ready = %+v, want True (lease still renewed)", c)
	}
	hasTaint := false
	for _, taint := range n.Spec.Taints {
		hasTaint = hasTaint || (taint.Key == corev1.TaintNodeDiskPressure && taint.Effect == corev1.TaintEffectNoSchedule)
	}
	if !hasTaint {
		t.Errorf("kube-controller-manager did not taint the DiskPressure node: taints %v", n.Spec.Taints)
	}
}

func TestIntegrationHeartbeatFalseNodeGoesUnknown(t *testing.T) {
	cs := client(t)
	ctx := context.Background()
	const nodeName = "lab-node-3"
	dead := fmt.Sprintf(`{"metadata":{"annotations":{%q:"false"}}}`, kubelet.AnnotationHeartbeat)
	if _, err := cs.CoreV1().Nodes().Patch(ctx, nodeName, types.MergePatchType, []byte(dead), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	revived := false
	t.Cleanup(func() {
		if revived {
			return
		}
		undo := fmt.Sprintf(`{"metadata":{"annotations":{%q:null}}}`, kubelet.AnnotationHeartbeat)
		_, _ = cs.CoreV1().Nodes().Patch(context.Background(), nodeName, types.MergePatchType, []byte(undo), metav1.PatchOptions{})
	})
	// Lease duration 40 s, grace period 20 s: Unknown within about a minute.
	poll(t, nodeName+" Ready=Unknown by the node lifecycle controller", 90*time.Second, func(ctx context.Context) (bool, error) {
		n, err := cs.CoreV1().Nodes().Get(ctx, nodeName, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		c := condition(n, corev1.NodeReady)
		return c != nil && c.Status == corev1.ConditionUnknown && c.Reason == "NodeStatusUnknown", nil
	})
	n, err := cs.CoreV1().Nodes().Get(ctx, nodeName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	unreachable := false
	for _, taint := range n.Spec.Taints {
		unreachable = unreachable || taint.Key == corev1.TaintNodeUnreachable
	}
	if !unreachable {
		t.Errorf("dead node has no %s taint: %v", corev1.TaintNodeUnreachable, n.Spec.Taints)
	}

	// Heartbeat back on: Ready again and the taint goes.
	undo := fmt.Sprintf(`{"metadata":{"annotations":{%q:null}}}`, kubelet.AnnotationHeartbeat)
	if _, err := cs.CoreV1().Nodes().Patch(ctx, nodeName, types.MergePatchType, []byte(undo), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	revived = true
	poll(t, nodeName+" Ready again without taints", 60*time.Second, func(ctx context.Context) (bool, error) {
		n, err := cs.CoreV1().Nodes().Get(ctx, nodeName, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		c := condition(n, corev1.NodeReady)
		return c != nil && c.Status == corev1.ConditionTrue && len(n.Spec.Taints) == 0, nil
	})
}
