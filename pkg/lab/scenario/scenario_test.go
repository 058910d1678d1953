package scenario

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/rest"

	"github.com/kdiag/kdiag/pkg/lab/kubelet"
)

func TestNames(t *testing.T) {
	names := Names()
	if !slices.Contains(names, "store-demo") || !slices.IsSorted(names) {
		t.Fatalf("Names() = %v, want a sorted list with store-demo", names)
	}
	for _, n := range names {
		objs, err := loadManifests(n)
		if err != nil || len(objs) == 0 {
			t.Errorf("scenario %s: %d manifests, err %v", n, len(objs), err)
		}
	}
}

func TestApplyBadInput(t *testing.T) {
	ctx := context.Background()
	err := Apply(ctx, &rest.Config{Host: "https://127.0.0.1:1"}, "no-such")
	if err == nil || !strings.Contains(err.Error(), `unknown scenario "no-such"`) || !strings.Contains(err.Error(), "store-demo") {
		t.Errorf("unknown scenario: err = %v, want one naming it and the known ones", err)
	}
	if err := Apply(ctx, nil, "store-demo"); err == nil {
		t.Error("nil config: want an error")
	}
	err = ApplyWith(ctx, &rest.Config{Host: "https://127.0.0.1:1"}, "store-demo", Options{RealPods: true})
	if err == nil || !strings.Contains(err.Error(), "real pods need the lab directory") {
		t.Errorf("real pods without a directory: err = %v", err)
	}
	// Port 1 on loopback: nothing listens, so the first request is refused.
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	err = Apply(ctx, &rest.Config{Host: "https://127.0.0.1:1", Timeout: 5 * time.Second}, "store-demo")
	if err == nil || !strings.Contains(err.Error(), "scenario store-demo: list simulated nodes") || strings.Contains(err.Error(), "\n") {
		t.Errorf("unreachable API server: err = %v, want one line naming the failed step", err)
	}
}

func TestDecodeYAML(t *testing.T) {
	objs, err := decodeYAML([]byte("# only a comment\n---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n---\n\n"))
	if err != nil || len(objs) != 1 || objs[0].GetName() != "a" {
		t.Fatalf("decode = %v, %v; want the one ConfigMap", objs, err)
	}
	bad := map[string]string{
		"no kind":   "apiVersion: v1\nmetadata:\n  name: a\n",
		"no name":   "apiVersion: v1\nkind: ConfigMap\n",
		"malformed": "apiVersion: v1\nkind: [ConfigMap\n",
	}
	for name, doc := range bad {
		if _, err := decodeYAML([]byte(doc)); err == nil || !strings.Contains(err.Error(), "document 1") {
			t.Errorf("%s: err = %v, want one naming document 1", name, err)
		}
	}
}

// find returns the manifest object of a kind, namespace and name.
func find(t *testing.T, objs []*unstructured.Unstructured, kind, ns, name string) *unstructured.Unstructured {
	t.Helper()
	for _, o := range objs {
		if o.GetKind() == kind && o.GetNamespace() == ns && o.GetName() == name {
			return o
		}
	}
	t.Fatalf("no %s %s/%s in the manifests", kind, ns, name)
	return nil
}

func nested(t *testing.T, o *unstructured.Unstructured, path ...string) any {
	t.Helper()
	v, ok, err := unstructured.NestedFieldNoCopy(o.Object, path...)
	if !ok || err != nil {
		t.Fatalf("%s %s: no field %s (%v)", o.GetKind(), o.GetName(), strings.Join(path, "."), err)
	}
	return v
}

func firstContainer(t *testing.T, dep *unstructured.Unstructured) map[string]any {
	t.Helper()
	cs := nested(t, dep, "spec", "template", "spec", "containers").([]any)
	return cs[0].(map[string]any)
}

func TestStoreDemoManifestsAreBrokenOnPurpose(t *testing.T) {
	objs, err := loadManifests("store-demo")
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range objs {
		if o.GetLabels()[LabelScenario] != "store-demo" {
			t.Errorf("%s lacks label %s=store-demo", describe(o), LabelScenario)
		}
	}

	// order-service: Service targetPort 8080, container listens on 3000.
	order := find(t, objs, "Service", "shop", "order-service")
	port := nested(t, order, "spec", "ports").([]any)[0].(map[string]any)
	if port["targetPort"] != int64(8080) {
		t.Errorf("order-service targetPort = %v, want 8080", port["targetPort"])
	}
	cport := firstContainer(t, find(t, objs, "Deployment", "shop", "order-service"))["ports"].([]any)[0].(map[string]any)
	if cport["containerPort"] != int64(3000) || cport["name"] != "http" {
		t.Errorf("order-service container port = %v, want 3000 named http", cport)
	}
	// product-service: healthy, named targetPort matching the container.
	pport := nested(t, find(t, objs, "Service", "shop", "product-service"), "spec", "ports").([]any)[0].(map[string]any)
	if pport["targetPort"] != "http" {
		t.Errorf("product-service targetPort = %v, want the named port http", pport["targetPort"])
	}
	// store-front calls both by Service name.
	env := map[string]string{}
	for _, e := range firstContainer(t, find(t, objs, "Deployment", "shop", "store-front"))["env"].([]any) {
		m := e.(map[string]any)
		env[m["name"].(string)] = m["value"].(string)
	}
	if !strings.HasPrefix(env["ORDER_SERVICE_URL"], "http://order-service") || !strings.HasPrefix(env["PRODUCT_SERVICE_URL"], "http://product-service") {
		t.Errorf("store-front env = %v", env)
	}
	// recommendation has a memory limit to be OOMKilled against.
	limits := firstContainer(t, find(t, objs, "Deployment", "shop", "recommendation"))["resources"].(map[string]any)["limits"].(map[string]any)
	if limits["memory"] == nil {
		t.Error("recommendation has no memory limit")
	}

	// nginx: one replica and a PDB that needs one.
	if r := nested(t, find(t, objs, "Deployment", "web", "nginx"), "spec", "replicas"); r != int64(1) {
		t.Errorf("nginx replicas = %v, want 1", r)
	}
	pdb := find(t, objs, "PodDisruptionBudget", "web", "nginx")
	if m := nested(t, pdb, "spec", "minAvailable"); m != int64(1) {
		t.Errorf("PDB minAvailable = %v, want 1", m)
	}
	if sel := nested(t, pdb, "spec", "selector", "matchLabels").(map[string]any); sel["app"] != "nginx" {
		t.Errorf("PDB selector = %v, want app=nginx", sel)
	}

	// CoreDNS as AKS ships it, with a custom forward zone and an override.
	if r := nested(t, find(t, objs, "Deployment", "kube-system", "coredns"), "spec", "replicas"); r != int64(2) {
		t.Errorf("coredns replicas = %v, want 2", r)
	}
	dns := find(t, objs, "Service", "kube-system", "kube-dns")
	if ip := nested(t, dns, "spec", "clusterIP"); ip != "10.96.0.10" {
		t.Errorf("kube-dns clusterIP = %v", ip)
	}
	var ports []string
	for _, p := range nested(t, dns, "spec", "ports").([]any) {
		m := p.(map[string]any)
		ports = append(ports, m["name"].(string)+"/"+m["protocol"].(string))
	}
	if want := []string{"dns/UDP", "dns-tcp/TCP", "metrics/TCP"}; !slices.Equal(ports, want) {
		t.Errorf("kube-dns ports = %v, want %v", ports, want)
	}
	corefile := nested(t, find(t, objs, "ConfigMap", "kube-system", "coredns"), "data", "Corefile").(string)
	for _, want := range []string{"forward . /etc/resolv.conf", "import custom/*.override", "import custom/*.server", "kubernetes cluster.local"} {
		if !strings.Contains(corefile, want) {
			t.Errorf("Corefile lacks %q", want)
		}
	}
	custom := nested(t, find(t, objs, "ConfigMap", "kube-system", "coredns-custom"), "data").(map[string]any)
	var server, override bool
	for k, v := range custom {
		switch {
		case strings.HasSuffix(k, ".server"):
			server = strings.Contains(v.(string), "forward . 192.0.2.")
		case strings.HasSuffix(k, ".override"):
			override = true
		}
	}
	if !server || !override {
		t.Errorf("coredns-custom = %v, want a *.server forwarding to 192.0.2.0/24 and a *.override", custom)
	}
}

func TestPickBrokenNodes(t *testing.T) {
	node := func(name, role string) corev1.Node {
		n := corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}}
		if role != "" {
			n.Annotations = map[string]string{AnnotationRole: role}
		}
		return n
	}
	tests := []struct {
		name      string
		nodes     []corev1.Node
		disk, dwn string
		err       string
	}{
		{name: "too few", nodes: []corev1.Node{node("lab-node-1", ""), node("lab-node-2", "")}, err: "at least 3 simulated nodes (found 2)"},
		{name: "last two", nodes: []corev1.Node{node("lab-node-2", ""), node("lab-node-1", ""), node("lab-node-3", "")}, disk: "lab-node-3", dwn: "lab-node-2"},
		{name: "numeric order", nodes: []corev1.Node{node("lab-node-10", ""), node("lab-node-9", ""), node("lab-node-1", "")}, disk: "lab-node-10", dwn: "lab-node-9"},
		{name: "roles kept on re-apply", nodes: []corev1.Node{
			node("lab-node-1", RoleNotReady), node("lab-node-2", ""), node("lab-node-3", RoleDiskPressure), node("lab-node-4", ""),
		}, disk: "lab-node-3", dwn: "lab-node-1"},
		{name: "one role missing", nodes: []corev1.Node{
			node("lab-node-1", ""), node("lab-node-2", ""), node("lab-node-3", RoleNotReady),
		}, disk: "lab-node-2", dwn: "lab-node-3"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			disk, down, err := pickBrokenNodes(tt.nodes)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("err = %v, want %q", err, tt.err)
				}
				return
			}
			if err != nil || disk != tt.disk || down != tt.dwn {
				t.Fatalf("got disk %s notready %s err %v, want %s and %s", disk, down, err, tt.disk, tt.dwn)
			}
		})
	}
}

func TestDNSServiceIP(t *testing.T) {
	for in, want := range map[string]string{"10.96.0.1": "10.96.0.10", "10.0.0.1": "10.0.0.10", "fd00::1": "fd00::a"} {
		if got, err := dnsServiceIP(in); err != nil || got != want {
			t.Errorf("dnsServiceIP(%s) = %s, %v; want %s", in, got, err, want)
		}
	}
	if _, err := dnsServiceIP(""); err == nil {
		t.Error("dnsServiceIP(\"\"): want an error")
	}
}

func TestOOMAndEvictedStatus(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "recommendation-abc", Namespace: "shop", UID: "u"},
		Status: corev1.PodStatus{
			Phase:      corev1.PodRunning,
			Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}, {Type: corev1.ContainersReady, Status: corev1.ConditionTrue}},
			ContainerStatuses: []corev1.ContainerStatus{{
				Name: "recommendation", Ready: true, ContainerID: "containerd://abc",
				State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{}},
			}},
		},
	}
	p.Annotations = map[string]string{kubelet.AnnotationManualStatus: "true"}
	if isOOMLooping(p) {
		t.Fatal("a running pod counts as OOM looping")
	}
	oomStatus(p, now)
	c := p.Status.ContainerStatuses[0]
	if c.Ready || c.RestartCount == 0 || c.State.Waiting == nil || c.State.Waiting.Reason != "CrashLoopBackOff" ||
		c.LastTerminationState.Terminated == nil || c.LastTerminationState.Terminated.Reason != "OOMKilled" || c.LastTerminationState.Terminated.ExitCode != 137 {
		t.Errorf("after oomStatus: %+v", c)
	}
	for _, cond := range p.Status.Conditions {
		if cond.Status != corev1.ConditionFalse || cond.Reason != "ContainersNotReady" {
			t.Errorf("condition %s = %s (%s), want False ContainersNotReady", cond.Type, cond.Status, cond.Reason)
		}
	}
	if !isOOMLooping(p) {
		t.Error("isOOMLooping false after oomStatus")
	}
	delete(p.Annotations, kubelet.AnnotationManualStatus)
	if isOOMLooping(p) {
		t.Error("a pod the kubelet may overwrite counts as OOM looping")
	}

	ev := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "report-generator", Namespace: "shop", UID: "v"},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "report-generator", Image: "kdiag.io/lab/http-client:v1"}}},
	}
	evictedStatus(ev, now)
	if ev.Status.Phase != corev1.PodFailed || ev.Status.Reason != "Evicted" || !strings.Contains(ev.Status.Message, "low on resource: ephemeral-storage") {
		t.Errorf("evicted status = %s %s %q", ev.Status.Phase, ev.Status.Reason, ev.Status.Message)
	}
	var disruption bool
	for _, cond := range ev.Status.Conditions {
		disruption = disruption || (cond.Type == corev1.DisruptionTarget && cond.Status == corev1.ConditionTrue && cond.Reason == "TerminationByKubelet")
	}
	if !disruption {
		t.Error("evicted pod has no DisruptionTarget=True (TerminationByKubelet) condition")
	}
	if term := ev.Status.ContainerStatuses[0].State.Terminated; term == nil || term.ExitCode != 137 {
		t.Errorf("evicted container state = %+v", ev.Status.ContainerStatuses[0].State)
	}
}

func TestEventsAreStableAndLikeTheKubelets(t *testing.T) {
	first, last := time.Unix(1000, 0), time.Unix(2000, 0)
	a := nodeEvent("lab-node-3", corev1.EventTypeWarning, "EvictionThresholdMet", "Attempting to reclaim ephemeral-storage", "kubelet", first, last, 3)
	b := nodeEvent("lab-node-3", corev1.EventTypeWarning, "EvictionThresholdMet", "other text", "kubelet", first, last, 4)
	if a.Name != b.Name {
		t.Errorf("event names differ between applies: %s, %s", a.Name, b.Name)
	}
	if c := nodeEvent("lab-node-3", corev1.EventTypeNormal, "NodeHasDiskPressure", "", "kubelet", first, last, 1); c.Name == a.Name {
		t.Error("two reasons share an event name")
	}
	if a.Namespace != "default" || a.InvolvedObject.Kind != "Node" || string(a.InvolvedObject.UID) != "lab-node-3" || a.Source.Component != "kubelet" || a.Source.Host != "lab-node-3" {
		t.Errorf("node event = %+v", a)
	}
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "web-1", Namespace: "web", UID: "u"}, Spec: corev1.PodSpec{NodeName: "lab-node-1"}}
	pe := podEvent(p, "nginx", corev1.EventTypeWarning, "BackOff", "m", "kubelet", first, last, 2)
	if pe.Namespace != "web" || pe.InvolvedObject.UID != "u" || pe.InvolvedObject.FieldPath != "spec.containers{nginx}" || pe.Count != 2 {
		t.Errorf("pod event = %+v", pe)
	}
}

func TestEvacuateMovesOnlyReplicaSetPodsOffBrokenNodes(t *testing.T) {
	rsPod := func(ns, name, node string) *corev1.Pod {
		return &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, UID: types.UID(name), OwnerReferences: []metav1.OwnerReference{{
				APIVersion: "apps/v1", Kind: "ReplicaSet", Name: "rs", UID: "rs", Controller: new(true),
			}}},
			Spec: corev1.PodSpec{NodeName: node},
		}
	}
	bare := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "report-generator"}, Spec: corev1.PodSpec{NodeName: "lab-node-3"}}
	cs := fake.NewClientset(rsPod("shop", "stray", "lab-node-3"), rsPod("web", "fine", "lab-node-1"), rsPod("kube-system", "stray2", "lab-node-2"), bare)
	e := &env{client: cs}
	st := &storeDemoState{diskNode: "lab-node-3", downNode: "lab-node-2"}
	moved, err := st.evacuate(context.Background(), e)
	if err != nil {
		t.Fatal(err)
	}
	if len(moved) != 2 || !strings.Contains(strings.Join(moved, ";"), "shop/stray") || !strings.Contains(strings.Join(moved, ";"), "kube-system/stray2") {
		t.Errorf("moved = %v, want shop/stray and kube-system/stray2", moved)
	}
	left, err := cs.CoreV1().Pods("").List(context.Background(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, p := range left.Items {
		names = append(names, p.Name)
	}
	slices.Sort(names)
	if want := []string{"fine", "report-generator"}; !slices.Equal(names, want) {
		t.Errorf("pods left = %v, want %v", names, want)
	}
}

func TestStoreDemoUpstreamDropsOnlyTheCheckoutName(t *testing.T) {
	c := StoreDemoUpstream()
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]string{
		CheckoutHost:                "drop",
		PaymentsStatusHost:          "answer",
		"payments.example":          "answer",
		"www.example.org":           "nxdomain",
		"v2." + CheckoutHost + ".":  "drop",
		"order-service.shop.svc.cl": "nxdomain",
	} {
		if got, _ := c.Action(name); got != want {
			t.Errorf("upstream action for %s = %s, want %s", name, got, want)
		}
	}
	// order-service resolves both names of the story.
	objs, err := loadManifests("store-demo")
	if err != nil {
		t.Fatal(err)
	}
	var resolve string
	for _, e := range firstContainer(t, find(t, objs, "Deployment", "shop", "order-service"))["env"].([]any) {
		if m := e.(map[string]any); m["name"] == "RESOLVE_HOSTS" {
			resolve = m["value"].(string)
		}
	}
	if !strings.Contains(resolve, CheckoutHost) || !strings.Contains(resolve, PaymentsStatusHost) {
		t.Errorf("order-service RESOLVE_HOSTS = %q, want both %s and %s", resolve, CheckoutHost, PaymentsStatusHost)
	}
}
