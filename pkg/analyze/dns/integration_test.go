package dns

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"

	"github.com/kdiag/kdiag/pkg/cluster"
	ct "github.com/kdiag/kdiag/pkg/cluster/clustertest"
	"github.com/kdiag/kdiag/pkg/findings"
	"github.com/kdiag/kdiag/pkg/lab/labtest"
)

func TestMain(m *testing.M) {
	labtest.Main(m, labtest.Options{Nodes: 2})
}

const itNS = "dns-it"

// TestIntegrationDNS installs CoreDNS the way AKS does (coredns Deployment
// and ConfigMap, coredns-custom, the kube-dns Service) on the lab's real
// control plane, breaks it in turn, and checks after each live read that
// each dns check fires on its broken object and stays silent on the
// healthy neighbours, and that every mutating fix passes a server-side dry
// run. The scale fix is applied for real and clears its finding.
func TestIntegrationDNS(t *testing.T) {
	c := labtest.Cluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	cs := kubernetes.NewForConfigOrDie(c.RESTConfig())
	dyn := dynamic.NewForConfigOrDie(c.RESTConfig())
	ks := "kube-system"

	// CoreDNS as AKS installs it; its pods are "run" by the simulated kubelet.
	d, _ := ct.CoreDNS(2, 0)
	d.ObjectMeta = metav1.ObjectMeta{Name: "coredns", Namespace: ks, Labels: map[string]string{"k8s-app": "kube-dns"}}
	d.Status = appsv1.DeploymentStatus{}
	if _, err := cs.AppsV1().Deployments(ks).Create(ctx, &d, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	dnsSvc := ct.KubeDNSService("10.96.0.10")
	dnsSvc.ObjectMeta = metav1.ObjectMeta{Name: "kube-dns", Namespace: ks, Labels: dnsSvc.Labels}
	if _, err := cs.CoreV1().Services(ks).Create(ctx, &dnsSvc, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	corefile := corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "coredns", Namespace: ks}, Data: map[string]string{"Corefile": ct.AKSCorefile}}
	if _, err := cs.CoreV1().ConfigMaps(ks).Create(ctx, &corefile, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	custom := corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "coredns-custom", Namespace: ks}, Data: map[string]string{
		"contoso.server":    contosoServer,                                          // healthy neighbour
		"corp.server":       "corp.example:53 {\n  forward . dns.corp.example\n}\n", // not an IP
		"gone.server":       "gone.example:53 {\n  forward . 10.96.0.53\n}\n",       // unused ClusterIP
		"typo.override":     "foward . 1.1.1.1\n",                                   // unknown plugin
		"hosts.conf":        "hosts {\n  10.1.2.3 db.contoso.com\n}\n",              // ignored by AKS
		"dup.server":        ".:53 {\n  forward . 8.8.8.8\n}\n",                     // refused: . twice
		"upstream.override": "forward . 10.10.10.1\n",                               // never used: the default forward comes first
	}}
	if _, err := cs.CoreV1().ConfigMaps(ks).Create(ctx, &custom, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		bg := context.Background()
		_ = cs.AppsV1().Deployments(ks).Delete(bg, "coredns", metav1.DeleteOptions{})
		_ = cs.CoreV1().Services(ks).Delete(bg, "kube-dns", metav1.DeleteOptions{})
		_ = cs.CoreV1().ConfigMaps(ks).Delete(bg, "coredns", metav1.DeleteOptions{})
		_ = cs.CoreV1().ConfigMaps(ks).Delete(bg, "coredns-custom", metav1.DeleteOptions{})
	})

	// Workloads: dnsPolicy None with a dead and a working nameserver, and
	// StatefulSets with and without their headless Service.
	labtest.CreateNamespace(t, ctx, cs, itNS)
	dnsNone(t, ctx, cs, "migrated", "10.96.0.53")
	dnsNone(t, ctx, cs, "resolver", "10.96.0.10")
	for _, st := range []struct{ name, svc string }{{"pg", "pg-headless"}, {"zk", "zk-hs"}} {
		s := statefulSet(itNS, st.name, st.svc)
		s.ObjectMeta = metav1.ObjectMeta{Name: st.name, Namespace: itNS}
		s.Status = appsv1.StatefulSetStatus{}
		s.Spec.Template.Spec.Containers = []corev1.Container{{Name: "db", Image: "kdiag.io/lab/http-server:v1"}}
		if _, err := cs.AppsV1().StatefulSets(itNS).Create(ctx, &s, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	hs := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "zk-hs", Namespace: itNS},
		Spec: corev1.ServiceSpec{ClusterIP: corev1.ClusterIPNone, Selector: map[string]string{"app": "zk"},
			Ports: []corev1.ServicePort{{Name: "client", Port: 2181, TargetPort: intstr.FromInt32(2181)}}}}
	if _, err := cs.CoreV1().Services(itNS).Create(ctx, hs, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	labtest.WaitFor(t, ctx, "CoreDNS ready behind kube-dns", func(ctx context.Context) (bool, error) {
		return readyDNSEndpoints(ctx, cs) == 2, nil
	})

	always := []ct.Want{
		{ID: idPodDNSNone, Severity: findings.Critical, Object: itNS + "/deployment/migrated",
			Evidence: []string{"spec.dnsConfig.nameservers: 10.96.0.53 is inside the cluster's Service range"},
			Patches:  []string{`"value":["10.96.0.10"]`}},
		{ID: idStatefulSetNoHeadless, Severity: findings.Warning, Object: itNS + "/statefulset/pg", Title: []string{"pg-headless, which does not exist"}},
	}
	upstreams := ct.Want{ID: idUpstreams, Severity: findings.Info, Object: "kube-system/configmap/coredns",
		Evidence: []string{"contoso.com. -> forward 10.1.0.4:53, tls://10.1.0.5:853 [coredns-custom/contoso.server:4]; except internal.contoso.com"}}

	// Phase 1: the broken coredns-custom.
	fs := analyzeAndVerify(t, ctx, cs, dyn)
	ct.AssertFindings(t, findings.AreaDNS, fs, append([]ct.Want{upstreams,
		{ID: idCorefileInvalid, Severity: findings.Critical, Object: "kube-system/configmap/coredns-custom",
			Evidence: []string{"key dup.server line 1: cannot serve .:53 - it is already defined at coredns/Corefile:1", "still ready"}},
		{ID: idUnknownPlugin, Severity: findings.Warning, Object: "kube-system/configmap/coredns-custom", Evidence: []string{`did you mean "forward"?`}},
		{ID: idCustomKeyIgnored, Severity: findings.Warning, Object: "kube-system/configmap/coredns-custom", Title: []string{"hosts.conf"}},
		{ID: idUpstreamNotIP, Severity: findings.Critical, Object: "kube-system/configmap/coredns-custom", Title: []string{`"dns.corp.example"`}},
		{ID: idStubNoUpstream, Severity: findings.Warning, Object: "kube-system/configmap/coredns-custom", Title: []string{"gone.example. to 10.96.0.53:53"}},
		{ID: idForwardShadowed, Severity: findings.Warning, Object: "kube-system/configmap/coredns-custom", Title: []string{`"forward . 10.10.10.1"`}},
	}, always...))

	// Phase 2: coredns-custom fixed: the Corefile checks fall silent.
	patchJSON(t, ctx, dyn, "configmaps", ks, "coredns-custom", `{"data":null}`)
	patchJSON(t, ctx, dyn, "configmaps", ks, "coredns-custom", `{"data":{"contoso.server":`+string(mustJSON(contosoServer))+`}}`)
	ct.AssertFindings(t, findings.AreaDNS, analyzeAndVerify(t, ctx, cs, dyn), append([]ct.Want{upstreams}, always...))

	// Phase 3: the kube-dns selector misses the CoreDNS pods.
	patchJSON(t, ctx, dyn, "services", ks, "kube-dns", `{"spec":{"selector":{"k8s-app":"coredns"}}}`)
	labtest.WaitFor(t, ctx, "kube-dns loses its endpoints", func(ctx context.Context) (bool, error) { return readyDNSEndpoints(ctx, cs) == 0, nil })
	ct.AssertFindings(t, findings.AreaDNS, analyzeAndVerify(t, ctx, cs, dyn), append([]ct.Want{upstreams,
		{ID: idNoEndpoints, Severity: findings.Critical, Object: "kube-system/service/kube-dns",
			Evidence: []string{"spec.selector: k8s-app=coredns", "no pod in kube-system matches the selector", "whose pods are labelled k8s-app=kube-dns"}},
	}, always...))
	patchJSON(t, ctx, dyn, "services", ks, "kube-dns", `{"spec":{"selector":{"k8s-app":"kube-dns"}}}`)
	labtest.WaitFor(t, ctx, "kube-dns endpoints back", func(ctx context.Context) (bool, error) { return readyDNSEndpoints(ctx, cs) == 2, nil })

	// Phase 4: CoreDNS scaled to zero; the scale fix is applied for real.
	patchJSON(t, ctx, dyn, "deployments", ks, "coredns", `{"spec":{"replicas":0}}`)
	labtest.WaitFor(t, ctx, "CoreDNS scaled to zero", func(ctx context.Context) (bool, error) {
		dep, err := cs.AppsV1().Deployments(ks).Get(ctx, "coredns", metav1.GetOptions{})
		return err == nil && dep.Status.ReadyReplicas == 0 && dep.Status.Replicas == 0, err
	})
	fs = analyzeAndVerify(t, ctx, cs, dyn)
	ct.AssertFindings(t, findings.AreaDNS, fs, append([]ct.Want{upstreams,
		{ID: idNoReadyReplicas, Severity: findings.Critical, Object: "kube-system/deployment/coredns", Title: []string{"scaled to 0 replicas"},
			Commands: []string{"kubectl scale deployment/coredns -n kube-system --replicas=2"}},
	}, always...))
	for _, f := range fs {
		if f.ID != idNoReadyReplicas {
			continue
		}
		a := f.Remediation[0].Action
		if _, err := dyn.Resource(a.GVR()).Namespace(a.Namespace).Patch(ctx, a.Name, a.PatchType, a.Patch, metav1.PatchOptions{}, a.Subresource); err != nil {
			t.Fatalf("apply %q: %v", f.Remediation[0].Command, err)
		}
	}
	labtest.WaitFor(t, ctx, "CoreDNS back after the scale fix", func(ctx context.Context) (bool, error) { return readyDNSEndpoints(ctx, cs) == 2, nil })
	ct.AssertFindings(t, findings.AreaDNS, analyzeAndVerify(t, ctx, cs, dyn), append([]ct.Want{upstreams}, always...))
}

// analyzeAndVerify reads the lab, runs Analyze, and checks that every
// mutating remediation passes a server-side dry run.
func analyzeAndVerify(t *testing.T, ctx context.Context, cs kubernetes.Interface, dyn dynamic.Interface) []findings.Finding {
	t.Helper()
	fs := Analyze(labtest.ReadLive(t, ctx, cs, cluster.LiveOptions{}))
	ct.LogFindings(t, fs)
	labtest.VerifyFixes(t, ctx, dyn, fs)
	return fs
}

// dnsNone creates a Deployment whose pods use only the given nameserver.
func dnsNone(t *testing.T, ctx context.Context, cs kubernetes.Interface, name, nameserver string) {
	t.Helper()
	labtest.CreateDeployment(t, ctx, cs, itNS, name, 1, nil, corev1.PodSpec{
		Containers: []corev1.Container{{Name: "app", Image: "kdiag.io/lab/http-client:v1"}},
		DNSPolicy:  corev1.DNSNone,
		DNSConfig:  &corev1.PodDNSConfig{Nameservers: []string{nameserver}, Searches: []string{itNS + ".svc.cluster.local"}},
	})
	labtest.WaitForPods(t, ctx, cs, itNS, metav1.ListOptions{LabelSelector: "app=" + name}, 1, nil)
}

// readyDNSEndpoints counts the ready endpoints of kube-dns.
func readyDNSEndpoints(ctx context.Context, cs kubernetes.Interface) int {
	slices, err := cs.DiscoveryV1().EndpointSlices("kube-system").List(ctx, metav1.ListOptions{LabelSelector: "kubernetes.io/service-name=kube-dns"})
	if err != nil {
		return -1
	}
	n := 0
	for _, es := range slices.Items {
		for _, ep := range es.Endpoints {
			if ep.Conditions.Ready != nil && *ep.Conditions.Ready {
				n++
			}
		}
	}
	return n
}

func patchJSON(t *testing.T, ctx context.Context, dyn dynamic.Interface, resource, ns, name, patch string) {
	t.Helper()
	gvr := map[string]struct{ group, version string }{
		"configmaps": {"", "v1"}, "services": {"", "v1"}, "deployments": {"apps", "v1"},
	}[resource]
	_, err := dyn.Resource(schema.GroupVersionResource{Group: gvr.group, Version: gvr.version, Resource: resource}).Namespace(ns).Patch(ctx, name, types.MergePatchType, []byte(patch), metav1.PatchOptions{})
	if err != nil {
		t.Fatalf("patch %s %s/%s: %v", resource, ns, name, err)
	}
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}
