package scenario_test

import (
	"context"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"

	"github.com/kdiag/kdiag/pkg/lab/kubelet"
	"github.com/kdiag/kdiag/pkg/lab/labtest"
	"github.com/kdiag/kdiag/pkg/lab/scenario"
)

// Three nodes, the lab's default: store-demo breaks two and keeps one healthy.
func TestMain(m *testing.M) { labtest.Main(m, labtest.Options{Nodes: 3}) }

func TestIntegrationStoreDemoConverges(t *testing.T) {
	c := labtest.Cluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	start := time.Now()
	if err := scenario.Apply(ctx, c.RESTConfig(), "store-demo"); err != nil {
		t.Fatalf("first apply: %v", err)
	}
	t.Logf("store-demo converged in %s", time.Since(start).Round(time.Millisecond))
	cs := kubernetes.NewForConfigOrDie(c.RESTConfig())
	checkStoreDemo(t, cs)

	// Idempotent: a second apply changes nothing that matters and converges.
	oomBefore := oomPod(t, cs)
	if err := scenario.Apply(ctx, c.RESTConfig(), "store-demo"); err != nil {
		t.Fatalf("second apply: %v", err)
	}
	checkStoreDemo(t, cs)
	if after := oomPod(t, cs); after.UID != oomBefore.UID || after.Status.ContainerStatuses[0].RestartCount != oomBefore.Status.ContainerStatuses[0].RestartCount {
		t.Errorf("second apply replaced or rewrote the OOMKilled pod: %s -> %s", oomBefore.Name, after.Name)
	}
}

func oomPod(t *testing.T, cs kubernetes.Interface) *corev1.Pod {
	t.Helper()
	pods, err := cs.CoreV1().Pods("shop").List(context.Background(), metav1.ListOptions{LabelSelector: "app=recommendation"})
	if err != nil {
		t.Fatal(err)
	}
	for i := range pods.Items {
		p := &pods.Items[i]
		if p.DeletionTimestamp != nil || len(p.Status.ContainerStatuses) == 0 {
			continue
		}
		if term := p.Status.ContainerStatuses[0].LastTerminationState.Terminated; term != nil && term.Reason == "OOMKilled" {
			return p
		}
	}
	t.Fatalf("no OOMKilled recommendation pod among %d", len(pods.Items))
	return nil
}

func checkStoreDemo(t *testing.T, cs kubernetes.Interface) {
	t.Helper()
	ctx := context.Background()

	// The PDB blocks every eviction, as kube-controller-manager computes it.
	pdb, err := cs.PolicyV1().PodDisruptionBudgets("web").Get(ctx, "nginx", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if pdb.Status.DisruptionsAllowed != 0 || pdb.Status.CurrentHealthy != 1 || pdb.Status.ExpectedPods != 1 {
		t.Errorf("PDB web/nginx status = %+v, want disruptionsAllowed 0 with 1 healthy of 1", pdb.Status)
	}

	// order-service: Service targetPort 8080, container port 3000.
	svc, err := cs.CoreV1().Services("shop").Get(ctx, "order-service", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if tp := svc.Spec.Ports[0].TargetPort; tp != intstr.FromInt32(8080) {
		t.Errorf("order-service targetPort = %s, want 8080", tp.String())
	}
	dep, err := cs.AppsV1().Deployments("shop").Get(ctx, "order-service", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if p := dep.Spec.Template.Spec.Containers[0].Ports[0]; p.ContainerPort != 3000 || p.Name != "http" {
		t.Errorf("order-service container port = %+v, want 3000 named http", p)
	}
	if dep.Status.ReadyReplicas != 1 {
		t.Errorf("order-service ready replicas = %d, want 1 (pods healthy, Service wrong)", dep.Status.ReadyReplicas)
	}
	// The EndpointSlice controller publishes the wrong port for real.
	eps, err := cs.DiscoveryV1().EndpointSlices("shop").List(ctx, metav1.ListOptions{LabelSelector: "kubernetes.io/service-name=order-service"})
	if err != nil {
		t.Fatal(err)
	}
	if len(eps.Items) == 0 || len(eps.Items[0].Ports) == 0 || *eps.Items[0].Ports[0].Port != 8080 || len(eps.Items[0].Endpoints) != 1 {
		t.Errorf("order-service EndpointSlices = %+v, want one ready endpoint on port 8080", eps.Items)
	}

	// The DiskPressure and NotReady nodes.
	nodes, err := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var disk, down *corev1.Node
	for i := range nodes.Items {
		switch nodes.Items[i].Annotations[scenario.AnnotationRole] {
		case scenario.RoleDiskPressure:
			disk = &nodes.Items[i]
		case scenario.RoleNotReady:
			down = &nodes.Items[i]
		}
	}
	if disk == nil || down == nil {
		t.Fatalf("broken nodes not found: disk %v, notready %v", disk != nil, down != nil)
	}
	if c := cond(disk, corev1.NodeDiskPressure); c == nil || c.Status != corev1.ConditionTrue {
		t.Errorf("node %s DiskPressure = %+v, want True", disk.Name, c)
	}
	if c := cond(disk, corev1.NodeReady); c == nil || c.Status != corev1.ConditionTrue {
		t.Errorf("node %s Ready = %+v, want True (disk pressure only)", disk.Name, c)
	}
	if !hasTaint(disk, corev1.TaintNodeDiskPressure, corev1.TaintEffectNoSchedule) {
		t.Errorf("node %s taints = %v, want disk-pressure:NoSchedule", disk.Name, disk.Spec.Taints)
	}
	if c := cond(down, corev1.NodeReady); c == nil || c.Status != corev1.ConditionFalse || c.Reason != "KubeletNotReady" ||
		time.Since(c.LastHeartbeatTime.Time) < 10*time.Minute {
		t.Errorf("node %s Ready = %+v, want False (KubeletNotReady) with an old heartbeat", down.Name, c)
	}
	// No NoExecute taint is expected: the node is alone in its zone, so
	// kube-controller-manager sees the zone in FullDisruption and stops
	// taint-based eviction there, as it would in a real cluster.
	if !hasTaint(down, corev1.TaintNodeNotReady, corev1.TaintEffectNoSchedule) {
		t.Errorf("node %s taints = %v, want not-ready:NoSchedule", down.Name, down.Spec.Taints)
	}
	if down.Annotations[kubelet.AnnotationManualStatus] != "true" || disk.Annotations[kubelet.AnnotationManualStatus] != "true" {
		t.Error("broken nodes are not marked manual-status")
	}
	// No workload pod runs on a broken node (they were tainted first).
	pods, err := cs.CoreV1().Pods("").List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range pods.Items {
		if p.Name == "report-generator" {
			continue
		}
		if p.Spec.NodeName == disk.Name || p.Spec.NodeName == down.Name {
			t.Errorf("pod %s/%s runs on broken node %s", p.Namespace, p.Name, p.Spec.NodeName)
		}
	}

	// The OOMKilled pod.
	oom := oomPod(t, cs)
	cst := oom.Status.ContainerStatuses[0]
	if term := cst.LastTerminationState.Terminated; term.ExitCode != 137 || cst.RestartCount == 0 ||
		cst.State.Waiting == nil || cst.State.Waiting.Reason != "CrashLoopBackOff" || cst.Ready {
		t.Errorf("recommendation container status = %+v", cst)
	}
	if lim := oom.Spec.Containers[0].Resources.Limits.Memory(); lim.IsZero() {
		t.Error("recommendation has no memory limit")
	}
	if oom.Status.PodIP == "" {
		t.Error("OOMKilled pod lost the pod IP the kubelet gave it")
	}

	// The Evicted pod.
	ev, err := cs.CoreV1().Pods("shop").Get(ctx, "report-generator", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if ev.Status.Phase != corev1.PodFailed || ev.Status.Reason != "Evicted" || !strings.HasPrefix(ev.Status.Message, "The node was low on resource: ephemeral-storage") || ev.Spec.NodeName != disk.Name {
		t.Errorf("report-generator = phase %s reason %s message %q on %s", ev.Status.Phase, ev.Status.Reason, ev.Status.Message, ev.Spec.NodeName)
	}

	// CoreDNS.
	dns, err := cs.CoreV1().Services("kube-system").Get(ctx, "kube-dns", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if dns.Spec.ClusterIP != "10.96.0.10" || len(dns.Spec.Ports) != 3 {
		t.Errorf("kube-dns = %s with %d ports, want 10.96.0.10 with dns, dns-tcp, metrics", dns.Spec.ClusterIP, len(dns.Spec.Ports))
	}
	coredns, err := cs.AppsV1().Deployments("kube-system").Get(ctx, "coredns", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if coredns.Status.ReadyReplicas != 2 {
		t.Errorf("coredns ready replicas = %d, want 2", coredns.Status.ReadyReplicas)
	}
	custom, err := cs.CoreV1().ConfigMaps("kube-system").Get(ctx, "coredns-custom", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(custom.Data["payments.server"], "forward . 192.0.2.53") {
		t.Errorf("coredns-custom payments.server = %q", custom.Data["payments.server"])
	}

	// The Events that tell the story.
	want := map[string]bool{"EvictionThresholdMet": false, "NodeNotReady": false, "FreeDiskSpaceFailed": false,
		"OOMKilling": false, "BackOff": false, "Evicted": false, "FailedEviction": false}
	for _, ns := range []string{"default", "shop", "web"} {
		evs, err := cs.CoreV1().Events(ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range evs.Items {
			if _, ok := want[e.Reason]; ok {
				want[e.Reason] = true
			}
			if e.Reason == "FailedEviction" && (e.Type != corev1.EventTypeWarning || !strings.Contains(e.Message, "disruption budget")) {
				t.Errorf("FailedEviction event = %s %q", e.Type, e.Message)
			}
		}
	}
	for reason, found := range want {
		if !found {
			t.Errorf("no %s Event", reason)
		}
	}
}

func cond(n *corev1.Node, typ corev1.NodeConditionType) *corev1.NodeCondition {
	for i := range n.Status.Conditions {
		if n.Status.Conditions[i].Type == typ {
			return &n.Status.Conditions[i]
		}
	}
	return nil
}

func hasTaint(n *corev1.Node, key string, effect corev1.TaintEffect) bool {
	for _, t := range n.Spec.Taints {
		if t.Key == key && t.Effect == effect {
			return true
		}
	}
	return false
}

func TestIntegrationApplyForbidden(t *testing.T) {
	c := labtest.Cluster(t)
	cfg, err := c.ClientCertConfig("alice", nil, time.Now().Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	start := time.Now()
	err = scenario.Apply(ctx, cfg, "store-demo")
	if err == nil || !apierrors.IsForbidden(err) || !strings.Contains(err.Error(), "scenario store-demo: list simulated nodes") || strings.Contains(err.Error(), "\n") {
		t.Fatalf("apply without RBAC: err = %v; want one line naming the step, wrapping Forbidden", err)
	}
	if waited := time.Since(start); waited > 10*time.Second {
		t.Errorf("a Forbidden error took %s: it must not be retried until the timeout", waited)
	}
}
