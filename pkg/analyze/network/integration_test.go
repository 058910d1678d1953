package network

import (
	"context"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"

	"github.com/kdiag/kdiag/pkg/cluster"
	ct "github.com/kdiag/kdiag/pkg/cluster/clustertest"
	"github.com/kdiag/kdiag/pkg/findings"
	"github.com/kdiag/kdiag/pkg/lab/binaries"
	"github.com/kdiag/kdiag/pkg/lab/labtest"
	"github.com/kdiag/kdiag/pkg/lab/process"
)

func TestMain(m *testing.M) {
	labtest.Main(m, labtest.Options{Nodes: 2})
}

const itNS = "net-it"

// TestIntegrationNetwork creates every broken Service next to healthy
// neighbours on the lab's real control plane, where kube-controller-manager
// writes the EndpointSlices, reads a live snapshot and checks that:
//   - each check fires on its broken Service and nowhere else;
//   - the real EndpointSlice controller publishes what the findings claim
//     (no port for a named targetPort no container defines);
//   - every mutating fix passes a server-side dry run, and applying the
//     targetPort fix for real clears the finding;
//   - with kube-controller-manager stopped, a new Service gets no
//     EndpointSlice and is reported (this stops the package's shared lab's
//     controller manager, so it runs last).
func TestIntegrationNetwork(t *testing.T) {
	c := labtest.Cluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cs := kubernetes.NewForConfigOrDie(c.RESTConfig())
	dyn := dynamic.NewForConfigOrDie(c.RESTConfig())

	labtest.CreateNamespace(t, ctx, cs, itNS)

	http3000 := corev1.ContainerPort{Name: "http", ContainerPort: 3000, Protocol: corev1.ProtocolTCP}
	server := corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "kdiag.io/lab/http-server:v1", Ports: []corev1.ContainerPort{http3000}}}}
	labtest.CreateDeployment(t, ctx, cs, itNS, "order", 2, nil, server)
	labtest.CreateDeployment(t, ctx, cs, itNS, "product", 2, nil, server)
	sel := func(app string) map[string]string { return map[string]string{"app": app} }
	tcp := func(name string, port int32, target intstr.IntOrString) corev1.ServicePort {
		return corev1.ServicePort{Name: name, Port: port, TargetPort: target, Protocol: corev1.ProtocolTCP}
	}
	service(t, ctx, cs, "order-service", sel("order"), tcp("http", 80, intstr.FromInt32(8080)))        // the seed
	service(t, ctx, cs, "product-service", sel("product"), tcp("http", 80, intstr.FromString("http"))) // healthy
	service(t, ctx, cs, "product-web", sel("product"), tcp("http", 80, intstr.FromString("web")))
	service(t, ctx, cs, "product-udp", sel("product"), corev1.ServicePort{Name: "http", Port: 80, TargetPort: intstr.FromString("http"), Protocol: corev1.ProtocolUDP})
	service(t, ctx, cs, "typo", sel("prodcut"), tcp("http", 80, intstr.FromString("http")))
	service(t, ctx, cs, "cart", sel("cart"), tcp("http", 80, intstr.FromInt32(3000)))
	lb := service(t, ctx, cs, "store-front", sel("product"), tcp("http", 80, intstr.FromString("http")))
	lb.Spec.Type = corev1.ServiceTypeLoadBalancer
	lbOK := service(t, ctx, cs, "store-admin", sel("product"), tcp("http", 80, intstr.FromString("http")))
	for _, s := range []*corev1.Service{lb, lbOK} {
		s.Spec.Type = corev1.ServiceTypeLoadBalancer
		if _, err := cs.CoreV1().Services(itNS).Update(ctx, s, metav1.UpdateOptions{}); err != nil {
			t.Fatalf("make %s a LoadBalancer: %v", s.Name, err)
		}
	}
	// No cloud controller runs in the lab: give store-admin an address by hand.
	labtest.WaitFor(t, ctx, "store-admin gets an address", func(ctx context.Context) (bool, error) {
		s, err := cs.CoreV1().Services(itNS).Get(ctx, "store-admin", metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		s.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{IP: "203.0.113.10"}}
		_, err = cs.CoreV1().Services(itNS).UpdateStatus(ctx, s, metav1.UpdateOptions{})
		return err == nil, nil
	})
	for name, ext := range map[string]string{"payments": "10.1.2.3", "mail": "smtp.example.com"} {
		s := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: itNS},
			Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeExternalName, ExternalName: ext}}
		if _, err := cs.CoreV1().Services(itNS).Create(ctx, s, metav1.CreateOptions{}); err != nil {
			t.Fatalf("create ExternalName %s: %v", name, err)
		}
	}
	// Two cart pods that crash-loop: their status is set by hand.
	for _, name := range []string{"cart-a", "cart-b"} {
		crashLoopingPod(t, ctx, cs, name, sel("cart"))
	}

	labtest.WaitFor(t, ctx, "pods ready and EndpointSlices written", func(ctx context.Context) (bool, error) {
		pods, err := cs.CoreV1().Pods(itNS).List(ctx, metav1.ListOptions{LabelSelector: "app in (order,product)"})
		if err != nil {
			return false, err
		}
		ready := 0
		for i := range pods.Items {
			if labtest.PodReady(&pods.Items[i]) {
				ready++
			}
		}
		if ready != 4 {
			return false, nil
		}
		slices, err := cs.DiscoveryV1().EndpointSlices(itNS).List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, err
		}
		endpoints := map[string]int{}
		for _, es := range slices.Items {
			endpoints[es.Labels["kubernetes.io/service-name"]] += len(es.Endpoints)
		}
		// Every Service that selects pods, or the snapshot may catch one
		// whose slice the controller has not filled yet (a loaded machine).
		return endpoints["order-service"] == 2 && endpoints["product-service"] == 2 && endpoints["product-web"] == 2 &&
			endpoints["product-udp"] == 2 && endpoints["cart"] == 2 && endpoints["store-front"] == 2 && endpoints["store-admin"] == 2, nil
	})

	snap := labtest.ReadLive(t, ctx, cs, cluster.LiveOptions{})
	// The real controller gives product-web's endpoints no port at all.
	for _, es := range snap.EndpointSlices {
		if es.Namespace == itNS && es.Labels["kubernetes.io/service-name"] == "product-web" && len(es.Ports) != 0 {
			t.Errorf("EndpointSlice %s of product-web has ports %v; kdiag's finding says a named targetPort nobody defines yields none", es.Name, es.Ports)
		}
	}
	wantNow := []ct.Want{
		{ID: idTargetPortMismatch, Severity: findings.Critical, Object: itNS + "/service/order-service",
			Title: []string{"targetPort 8080", "its 2 pods", "3000/TCP named http"}, Evidence: []string{`port "http" -> 8080 on 2 endpoints`},
			Patches: []string{`{"op":"replace","path":"/spec/ports/0/targetPort","value":3000}`}},
		{ID: idTargetPortMismatch, Severity: findings.Critical, Object: itNS + "/service/product-web",
			Evidence: []string{`carry no port "http"`}, Patches: []string{`"value":"http"`}},
		{ID: idProtocolMismatch, Severity: findings.Critical, Object: itNS + "/service/product-udp",
			Patches: []string{`{"op":"replace","path":"/spec/ports/0/protocol","value":"TCP"}`}},
		{ID: idNoMatchingPods, Severity: findings.Warning, Object: itNS + "/service/typo",
			Title:    []string{"closest: app=product on 2 pods of Deployment " + itNS + "/product"},
			Evidence: []string{"2 pods of Deployment " + itNS + "/product have app=product where the selector wants app=prodcut"}},
		{ID: idNoReadyEndpoints, Severity: findings.Critical, Object: itNS + "/service/cart",
			Evidence: []string{"-> pod cart-a", "ready=false serving=false", "container app waiting: CrashLoopBackOff", "event Warning BackOff x12"}},
		{ID: idExternalNameIsIP, Severity: findings.Warning, Object: itNS + "/service/payments"},
	}
	assertFindings(t, Analyze(snap), wantNow)

	// Ten minutes later (same objects), the LoadBalancer without an
	// address is overdue; the one with an address stays silent.
	later := labtest.ReadLive(t, ctx, cs, cluster.LiveOptions{})
	later.TakenAt = later.TakenAt.Add(10 * time.Minute)
	fs := Analyze(later)
	for _, f := range fs {
		t.Logf("%s %s %s: %s", f.Severity, f.ID, f.Object, f.Title)
	}
	assertFindings(t, fs, append(wantNow, ct.Want{ID: idLoadBalancerPending, Severity: findings.Warning, Object: itNS + "/service/store-front",
		Evidence: []string{"status.loadBalancer.ingress is empty", "no event mentions the Service"}}))

	// Every mutating fix passes a server-side dry run.
	if fixes := labtest.VerifyFixes(t, ctx, dyn, fs); fixes < 3 {
		t.Errorf("want at least 3 mutating fixes (two targetPort, one protocol), got %d", fixes)
	}

	// Applying the seed's fix for real clears its finding.
	for _, f := range fs {
		if f.ID == idTargetPortMismatch && f.Object.Name == "order-service" {
			a := f.Remediation[0].Action
			if _, err := dyn.Resource(a.GVR()).Namespace(a.Namespace).Patch(ctx, a.Name, a.PatchType, a.Patch, metav1.PatchOptions{}); err != nil {
				t.Fatalf("apply %s: %v", f.Remediation[0].Command, err)
			}
		}
	}
	labtest.WaitFor(t, ctx, "order-service fixed", func(ctx context.Context) (bool, error) {
		for _, f := range Analyze(labtest.ReadLive(t, ctx, cs, cluster.LiveOptions{})) {
			if f.Object.Name == "order-service" {
				return false, nil
			}
		}
		return true, nil
	})

	// Last: without kube-controller-manager, a new Service never gets an
	// EndpointSlice.
	stopControllerManager(t, ctx, c.Processes())
	service(t, ctx, cs, "orphan", sel("product"), tcp("http", 80, intstr.FromString("http")))
	snap = labtest.ReadLive(t, ctx, cs, cluster.LiveOptions{})
	snap.TakenAt = snap.TakenAt.Add(3 * time.Minute)
	var got []findings.Finding
	for _, f := range Analyze(snap) {
		if f.ID == idNoEndpointSlices {
			got = append(got, f)
		}
	}
	assertFindings(t, got, []ct.Want{{ID: idNoEndpointSlices, Severity: findings.Critical, Object: itNS + "/service/orphan",
		Title: []string{"selects 2 pods with an IP but has no EndpointSlice"}}})
}

func service(t *testing.T, ctx context.Context, cs kubernetes.Interface, name string, selector map[string]string, ports ...corev1.ServicePort) *corev1.Service {
	t.Helper()
	s := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: itNS}, Spec: corev1.ServiceSpec{Selector: selector, Ports: ports}}
	out, err := cs.CoreV1().Services(itNS).Create(ctx, s, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create service %s: %v", name, err)
	}
	return out
}

// crashLoopingPod creates a pod the simulated kubelet leaves alone and gives
// it the status of a container in CrashLoopBackOff, plus the kubelet's
// BackOff event.
func crashLoopingPod(t *testing.T, ctx context.Context, cs kubernetes.Interface, name string, lbls map[string]string) {
	t.Helper()
	nodes, err := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil || len(nodes.Items) == 0 {
		t.Fatalf("list nodes: %v", err)
	}
	p := labtest.CreatePod(t, ctx, cs, itNS, name, lbls, corev1.PodSpec{NodeName: nodes.Items[0].Name, Containers: []corev1.Container{{
		Name: "app", Image: "kdiag.io/lab/http-server:v1", Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 3000}}}}}, true)
	now := metav1.Now()
	ip := "10.99.0.1"
	if strings.HasSuffix(name, "b") {
		ip = "10.99.0.2"
	}
	p.Status = corev1.PodStatus{
		Phase: corev1.PodRunning, PodIP: ip, PodIPs: []corev1.PodIP{{IP: ip}}, StartTime: &now,
		Conditions: []corev1.PodCondition{
			{Type: corev1.PodScheduled, Status: corev1.ConditionTrue, LastTransitionTime: now},
			{Type: corev1.PodInitialized, Status: corev1.ConditionTrue, LastTransitionTime: now},
			{Type: corev1.ContainersReady, Status: corev1.ConditionFalse, Reason: "ContainersNotReady", Message: "containers with unready status: [app]", LastTransitionTime: now},
			{Type: corev1.PodReady, Status: corev1.ConditionFalse, Reason: "ContainersNotReady", Message: "containers with unready status: [app]", LastTransitionTime: now},
		},
		ContainerStatuses: []corev1.ContainerStatus{{Name: "app", Image: "kdiag.io/lab/http-server:v1", RestartCount: 6,
			State:                corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "CrashLoopBackOff", Message: "back-off 2m40s restarting failed container=app"}},
			LastTerminationState: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{Reason: "Error", ExitCode: 1, FinishedAt: now}}}},
	}
	if _, err := cs.CoreV1().Pods(itNS).UpdateStatus(ctx, p, metav1.UpdateOptions{}); err != nil {
		t.Fatalf("set status of %s: %v", name, err)
	}
	ev := &corev1.Event{
		ObjectMeta:     metav1.ObjectMeta{Name: name + ".backoff", Namespace: itNS},
		InvolvedObject: corev1.ObjectReference{Kind: "Pod", Namespace: itNS, Name: name, UID: p.UID},
		Type:           corev1.EventTypeWarning, Reason: "BackOff", Message: "Back-off restarting failed container app in pod " + name,
		FirstTimestamp: now, LastTimestamp: now, Count: 12, Source: corev1.EventSource{Component: "kubelet"},
	}
	if _, err := cs.CoreV1().Events(itNS).Create(ctx, ev, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create event: %v", err)
	}
}

// stopControllerManager stops the lab's kube-controller-manager, a process
// this test binary started, by its recorded pid and start time.
func stopControllerManager(t *testing.T, ctx context.Context, recs []process.Record) {
	t.Helper()
	for _, r := range recs {
		if r.Name == binaries.ControllerManager {
			if err := process.Stop(ctx, []process.Record{r}, 10*time.Second); err != nil {
				t.Fatalf("stop kube-controller-manager: %v", err)
			}
			return
		}
	}
	t.Fatal("the lab has no kube-controller-manager process")
}
