package network

import (
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/kdiag/kdiag/pkg/cluster"
	ct "github.com/kdiag/kdiag/pkg/cluster/clustertest"
	"github.com/kdiag/kdiag/pkg/findings"
)

// shop is the seed's namespace: order-service and product-service, each a
// Deployment with two running pods that listen on 3000 (named http), and
// a healthy Service for each. Tests break one thing in a copy.
type shop struct {
	s *cluster.Snapshot
}

func newShop() *shop {
	s := ct.Snapshot()
	s.Nodes = append(s.Nodes, ct.ReadyNode("node-1"), ct.ReadyNode("node-2"))
	ip := 10
	for _, app := range []string{"order", "product"} {
		lbls := func() map[string]string { return map[string]string{"app": app} } // no shared maps
		d, rs := ct.Deployment("shop", app+"-service", 2, lbls())
		s.Deployments = append(s.Deployments, d)
		s.ReplicaSets = append(s.ReplicaSets, rs)
		for i := 0; i < 2; i++ {
			p := ct.RunningPod("shop", fmt.Sprintf("%s-service-5d8f7c-%c", app, 'a'+i), fmt.Sprintf("node-%d", i+1), lbls(), ct.CPort("http", 3000, ""))
			ct.OwnPod(&p, rs)
			ct.SetPodIP(&p, fmt.Sprintf("10.244.0.%d", ip))
			ip++
			s.Pods = append(s.Pods, p)
		}
		svc := ct.ServiceSelecting("shop", app+"-service", lbls(), ct.SvcPort("http", 80, intstr.FromInt32(3000), ""))
		s.Services = append(s.Services, svc)
	}
	return &shop{s: s}
}

// service returns the Service by name, to modify it.
func (sh *shop) service(name string) *corev1.Service {
	for i := range sh.s.Services {
		if sh.s.Services[i].Name == name {
			return &sh.s.Services[i]
		}
	}
	panic("no service " + name)
}

// pods returns the pods whose name starts with prefix, to modify them.
func (sh *shop) pods(prefix string) []*corev1.Pod {
	var out []*corev1.Pod
	for i := range sh.s.Pods {
		if strings.HasPrefix(sh.s.Pods[i].Name, prefix) {
			out = append(out, &sh.s.Pods[i])
		}
	}
	return out
}

// withSlices adds the EndpointSlices the controller would write for every
// Service with a selector, from the pods as they are now.
func (sh *shop) withSlices() *cluster.Snapshot {
	for _, svc := range sh.s.Services {
		if len(svc.Spec.Selector) == 0 || svc.Spec.Type == corev1.ServiceTypeExternalName {
			continue
		}
		var pods []corev1.Pod
		for _, p := range sh.s.Pods {
			if p.Namespace == svc.Namespace && hasAll(p.Labels, svc.Spec.Selector) {
				pods = append(pods, p)
			}
		}
		sh.s.EndpointSlices = append(sh.s.EndpointSlices, ct.EndpointSliceFor(svc, pods...))
	}
	return sh.s
}

func TestAnalyze(t *testing.T) {
	cases := []struct {
		name string
		snap func() *cluster.Snapshot
		want []ct.Want
	}{
		{
			name: "healthy shop reports nothing",
			snap: func() *cluster.Snapshot { return newShop().withSlices() },
		},
		{
			name: "seed: numeric targetPort 8080 while containers listen on 3000",
			snap: func() *cluster.Snapshot {
				sh := newShop()
				sh.service("order-service").Spec.Ports[0].TargetPort = intstr.FromInt32(8080)
				return sh.withSlices()
			},
			want: []ct.Want{{
				ID: idTargetPortMismatch, Severity: findings.Critical, Object: "shop/service/order-service",
				Title: []string{"targetPort 8080", "its 2 pods", "3000/TCP"},
				Evidence: []string{"targetPort=8080", "declares containerPort 8080", "order-service-5d8f7c-a", "order-service-5d8f7c-b",
					"3000/TCP named http", "Deployment shop/order-service", `port "http" -> 8080`},
				Patches: []string{`{"op":"replace","path":"/spec/ports/0/targetPort","value":3000}`},
			}},
		},
		{
			name: "named targetPort that no container defines",
			snap: func() *cluster.Snapshot {
				sh := newShop()
				sh.service("order-service").Spec.Ports[0].TargetPort = intstr.FromString("web")
				return sh.withSlices()
			},
			want: []ct.Want{{
				ID: idTargetPortMismatch, Severity: findings.Critical, Object: "shop/service/order-service",
				Title:    []string{"targetPort web"},
				Evidence: []string{`port named "web" with protocol TCP`, `carry no port "http"`},
				Patches:  []string{`{"op":"replace","path":"/spec/ports/0/targetPort","value":"http"}`},
			}},
		},
		{
			name: "numeric targetPort and containers that declare no ports: cannot tell, silent",
			snap: func() *cluster.Snapshot {
				sh := newShop()
				sh.service("order-service").Spec.Ports[0].TargetPort = intstr.FromInt32(8080)
				for _, p := range sh.pods("order-") {
					p.Spec.Containers[0].Ports = nil
				}
				return sh.withSlices()
			},
		},
		{
			name: "a second container without ports may be the listener: silent",
			snap: func() *cluster.Snapshot {
				sh := newShop()
				sh.service("order-service").Spec.Ports[0].TargetPort = intstr.FromInt32(8080)
				for _, p := range sh.pods("order-") {
					p.Spec.Containers = append(p.Spec.Containers, corev1.Container{Name: "app2"})
				}
				return sh.withSlices()
			},
		},
		{
			name: "target declared by a sidecar (restartable init container): silent",
			snap: func() *cluster.Snapshot {
				sh := newShop()
				sh.service("order-service").Spec.Ports[0].TargetPort = intstr.FromString("proxy")
				always := corev1.ContainerRestartPolicyAlways
				for _, p := range sh.pods("order-") {
					p.Spec.InitContainers = []corev1.Container{{Name: "envoy", RestartPolicy: &always, Ports: []corev1.ContainerPort{ct.CPort("proxy", 15001, "")}}}
				}
				return sh.withSlices()
			},
		},
		{
			name: "mid-rollout: one of three pods lacks the port is a warning without a patch",
			snap: func() *cluster.Snapshot {
				sh := newShop()
				p := ct.RunningPod("shop", "order-service-new-c", "node-1", map[string]string{"app": "order"}, ct.CPort("http", 4000, ""))
				ct.SetPodIP(&p, "10.244.0.99")
				sh.s.Pods = append(sh.s.Pods, p)
				return sh.withSlices()
			},
			want: []ct.Want{{
				ID: idTargetPortMismatch, Severity: findings.Warning, Object: "shop/service/order-service",
				Title:    []string{"1 of its 3 pods", "4000/TCP"},
				Evidence: []string{"order-service-new-c", "2 pods do declare 3000"},
				NoPatch:  true,
			}},
		},
		{
			name: "numeric port with another protocol: UDP Service in front of a TCP container",
			snap: func() *cluster.Snapshot {
				sh := newShop()
				sh.service("order-service").Spec.Ports[0].Protocol = corev1.ProtocolUDP
				return sh.withSlices()
			},
			want: []ct.Want{{
				ID: idProtocolMismatch, Severity: findings.Warning, Object: "shop/service/order-service",
				Title:    []string{"uses UDP", "as TCP"},
				Evidence: []string{"port=80/UDP", "declares 3000/TCP named http, not UDP"},
				NoPatch:  true,
			}},
		},
		{
			name: "named port resolving to another protocol loses the endpoint port: critical with a patch",
			snap: func() *cluster.Snapshot {
				sh := newShop()
				svc := sh.service("order-service")
				svc.Spec.Ports[0].Protocol = corev1.ProtocolUDP
				svc.Spec.Ports[0].TargetPort = intstr.FromString("http")
				return sh.withSlices()
			},
			want: []ct.Want{{
				ID: idProtocolMismatch, Severity: findings.Critical, Object: "shop/service/order-service",
				Title:    []string{"uses UDP", "targetPort http as TCP"},
				Evidence: []string{"declares 3000/TCP named http, not UDP"},
				Patches:  []string{`{"op":"replace","path":"/spec/ports/0/protocol","value":"TCP"}`},
			}},
		},
		{
			name: "selector typo: near miss, other namespace and idle workload in the evidence",
			snap: func() *cluster.Snapshot {
				sh := newShop()
				sh.service("order-service").Spec.Selector = map[string]string{"app": "orders"}
				p := ct.RunningPod("staging", "orders-1", "node-1", map[string]string{"app": "orders"})
				sh.s.Pods = append(sh.s.Pods, p)
				d, _ := ct.Deployment("shop", "orders-v2", 0, map[string]string{"app": "orders"})
				sh.s.Deployments = append(sh.s.Deployments, d)
				// a pod without the key is no near miss of a one-key selector
				sh.s.Pods = append(sh.s.Pods, ct.RunningPod("shop", "debug", "node-1", nil))
				return sh.withSlices()
			},
			want: []ct.Want{{
				ID: idNoMatchingPods, Severity: findings.Warning, Object: "shop/service/order-service",
				Title:       []string{"selects no pods", "app=orders"},
				NotEvidence: []string{"lack", "debug"},
				Evidence: []string{"none of the 5 pods in namespace shop matches",
					"2 pods of Deployment shop/order-service have app=order where the selector wants app=orders",
					"1 pod in namespace staging matches this selector", "Deployment shop/orders-v2 has matching pod template labels but spec.replicas=0"},
				NoPatch: true,
			}},
		},
		{
			name: "selector matching only finished pods",
			snap: func() *cluster.Snapshot {
				sh := newShop()
				sh.service("order-service").Spec.Selector = map[string]string{"job": "migrate"}
				p := ct.RunningPod("shop", "migrate-x", "node-1", map[string]string{"job": "migrate"})
				p.Status.Phase = corev1.PodSucceeded
				sh.s.Pods = append(sh.s.Pods, p)
				return sh.withSlices()
			},
			want: []ct.Want{{
				ID: idNoMatchingPods, Severity: findings.Warning, Object: "shop/service/order-service",
				Evidence: []string{"1 pod matches but has finished", "migrate-x"},
			}},
		},
		{
			name: "selector-less and ExternalName Services are not judged by selector",
			snap: func() *cluster.Snapshot {
				sh := newShop()
				sh.s.Services = append(sh.s.Services,
					ct.ServiceSelecting("shop", "legacy-db", nil, ct.SvcPort("pg", 5432, intstr.FromInt32(5432), "")),
					corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "payments"},
						Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeExternalName, ExternalName: "payments.example.com"}})
				return sh.withSlices()
			},
		},
		{
			name: "all endpoints unready: crash-looping pods with events",
			snap: func() *cluster.Snapshot {
				sh := newShop()
				for _, p := range sh.pods("order-") {
					ct.SetContainerWaiting(p, "CrashLoopBackOff", "back-off 5m0s restarting failed container=app", 7)
				}
				sh.s.Events = append(sh.s.Events, ct.Event("Pod", "shop", "order-service-5d8f7c-a", "Warning", "BackOff",
					"Back-off restarting failed container app", 2*time.Minute, 31))
				return sh.withSlices()
			},
			want: []ct.Want{{
				ID: idNoReadyEndpoints, Severity: findings.Critical, Object: "shop/service/order-service",
				Title: []string{"2 endpoints and none is ready"},
				Evidence: []string{"endpoint 10.244.0.10 -> pod order-service-5d8f7c-a on node-1: ready=false serving=false terminating=false",
					"pod order-service-5d8f7c-a: Ready=False (ContainersNotReady", "container app waiting: CrashLoopBackOff", "7 restarts",
					"event Warning BackOff x31, last 2m ago"},
				NoPatch: true,
			}},
		},
		{
			name: "terminating but serving endpoints still carry traffic: silent",
			snap: func() *cluster.Snapshot {
				sh := newShop()
				s := sh.withSlices()
				for i := range s.EndpointSlices {
					if s.EndpointSlices[i].Name == "order-service-x7k2p" {
						for j := range s.EndpointSlices[i].Endpoints {
							f, tr := false, true
							s.EndpointSlices[i].Endpoints[j].Conditions = discoveryv1.EndpointConditions{Ready: &f, Serving: &tr, Terminating: &tr}
						}
					}
				}
				return s
			},
		},
		{
			name: "pending pods without IPs leave the Service without endpoints",
			snap: func() *cluster.Snapshot {
				sh := newShop()
				for _, p := range sh.pods("order-") {
					p.Status = corev1.PodStatus{Phase: corev1.PodPending, Conditions: []corev1.PodCondition{{
						Type: corev1.PodScheduled, Status: corev1.ConditionFalse, Reason: "Unschedulable",
						Message: "0/2 nodes are available: 2 Insufficient memory."}}}
				}
				return sh.withSlices()
			},
			want: []ct.Want{{
				ID: idNoReadyEndpoints, Severity: findings.Critical, Object: "shop/service/order-service",
				Title:    []string{"no endpoints", "2 selected pods has a pod IP"},
				Evidence: []string{"PodScheduled=False (Unschedulable: 0/2 nodes are available: 2 Insufficient memory.)", "phase=Pending"},
			}},
		},
		{
			name: "no EndpointSlice for two Services with running pods",
			snap: func() *cluster.Snapshot {
				sh := newShop()
				young := ct.ServiceSelecting("shop", "order-new", map[string]string{"app": "order"}, ct.SvcPort("http", 80, intstr.FromInt32(3000), ""))
				young.CreationTimestamp = metav1.NewTime(ct.Now().Add(-30 * time.Second))
				sh.s.Services = append(sh.s.Services, young)
				return sh.s // no slices at all
			},
			want: []ct.Want{
				{ID: idNoEndpointSlices, Severity: findings.Critical, Object: "shop/service/order-service",
					Title:    []string{"selects 2 pods with an IP but has no EndpointSlice"},
					Evidence: []string{"order-service-5d8f7c-a (10.244.0.10)", "created 60m ago", "2 Services lack EndpointSlices"}},
				{ID: idNoEndpointSlices, Severity: findings.Critical, Object: "shop/service/product-service"},
			},
		},
		{
			name: "LoadBalancer pending for an hour with the cloud's error event",
			snap: func() *cluster.Snapshot {
				sh := newShop()
				lb := ct.ServiceSelecting("shop", "store-front", map[string]string{"app": "product"}, ct.SvcPort("http", 80, intstr.FromInt32(3000), ""))
				lb.Spec.Type = corev1.ServiceTypeLoadBalancer
				ok := ct.ServiceSelecting("shop", "store-admin", map[string]string{"app": "product"}, ct.SvcPort("http", 80, intstr.FromInt32(3000), ""))
				ok.Spec.Type = corev1.ServiceTypeLoadBalancer
				ok.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{IP: "20.1.2.3"}}
				fresh := lb
				fresh.Name, fresh.CreationTimestamp = "store-new", metav1.NewTime(ct.Now().Add(-time.Minute))
				sh.s.Services = append(sh.s.Services, lb, ok, fresh)
				sh.s.Events = append(sh.s.Events, ct.Event("Service", "shop", "store-front", "Warning", "SyncLoadBalancerFailed",
					"Error syncing load balancer: failed to ensure load balancer: PublicIPCountLimitReached", 3*time.Minute, 12))
				return sh.withSlices()
			},
			want: []ct.Want{{
				ID: idLoadBalancerPending, Severity: findings.Warning, Object: "shop/service/store-front",
				Title:    []string{"no external address after 60m"},
				Evidence: []string{"status.loadBalancer.ingress is empty", "SyncLoadBalancerFailed x12", "PublicIPCountLimitReached"},
			}},
		},
		{
			name: "ExternalName holding an IP address",
			snap: func() *cluster.Snapshot {
				sh := newShop()
				for _, n := range []struct{ name, ext string }{{"payments", "10.1.2.3"}, {"mail", "smtp.example.com"}} {
					sh.s.Services = append(sh.s.Services, corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: n.name},
						Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeExternalName, ExternalName: n.ext}})
				}
				return sh.withSlices()
			},
			want: []ct.Want{{
				ID: idExternalNameIsIP, Severity: findings.Warning, Object: "shop/service/payments",
				Evidence: []string{"spec.externalName=10.1.2.3"},
			}},
		},
		{
			name: "the cluster DNS Service is left to the dns analyzer",
			snap: func() *cluster.Snapshot {
				sh := newShop()
				sh.s.Services = append(sh.s.Services, ct.KubeDNSService("10.0.0.10"))
				return sh.withSlices()
			},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := Analyze(tc.snap())
			assertFindings(t, got, tc.want)
		})
	}
}

// TestGaps checks that nothing is concluded from resources that were not
// read: each snapshot is broken in a way that would fire, but the resource
// the check needs is missing.
func TestGaps(t *testing.T) {
	brokenPort := func() *shop {
		sh := newShop()
		sh.service("order-service").Spec.Ports[0].TargetPort = intstr.FromInt32(8080)
		return sh
	}
	cases := []struct {
		name string
		snap func() *cluster.Snapshot
		want []ct.Want
	}{
		{
			name: "pods not read: no pod-based check fires",
			snap: func() *cluster.Snapshot {
				sh := brokenPort()
				sh.service("product-service").Spec.Selector = map[string]string{"app": "nope"}
				s := sh.withSlices()
				s.Pods = nil
				s.Gaps = []cluster.Gap{{Resource: cluster.ResPods, Reason: cluster.GapForbidden, Message: "pods is forbidden"}}
				return s
			},
		},
		{
			name: "pods not read in shop only",
			snap: func() *cluster.Snapshot {
				sh := brokenPort()
				s := sh.withSlices()
				s.Pods = nil
				s.Gaps = []cluster.Gap{{Resource: cluster.ResPods, Namespace: "shop", Reason: cluster.GapForbidden, Message: "pods is forbidden"}}
				return s
			},
		},
		{
			name: "EndpointSlices not read: no slice verdicts, targetPort still judged from pods",
			snap: func() *cluster.Snapshot {
				sh := brokenPort()
				for _, p := range sh.pods("product-") {
					ct.SetContainerWaiting(p, "CrashLoopBackOff", "", 3)
				}
				s := sh.withSlices()
				s.EndpointSlices = nil
				s.Gaps = []cluster.Gap{{Resource: cluster.ResEndpointSlices, Reason: cluster.GapTimeout, Message: "timeout"}}
				return s
			},
			want: []ct.Want{{ID: idTargetPortMismatch, Severity: findings.Critical, Object: "shop/service/order-service"}},
		},
		{
			name: "snapshot limited to another namespace",
			snap: func() *cluster.Snapshot {
				sh := brokenPort()
				s := sh.withSlices()
				s.Namespace = "staging"
				return s
			},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			assertFindings(t, Analyze(tc.snap()), tc.want)
		})
	}
}

// assertFindings is ct.AssertFindings for the network area, plus a rule of
// this area: every mutating fix patches the Service the finding is about.
func assertFindings(t *testing.T, got []findings.Finding, wants []ct.Want) {
	t.Helper()
	for _, f := range ct.AssertFindings(t, findings.AreaNetwork, got, wants) {
		if f == nil {
			continue
		}
		for _, r := range ct.Mutating(f) {
			if !strings.Contains(r.Command, "kubectl patch service "+f.Object.Name) {
				t.Errorf("%s: patch command %q does not patch the Service", f.ID, r.Command)
			}
		}
	}
}

func TestChecksCoverEveryID(t *testing.T) {
	ct.AssertChecks(t, Checks(), findings.AreaNetwork, idTargetPortMismatch, idProtocolMismatch, idNoMatchingPods,
		idNoReadyEndpoints, idNoEndpointSlices, idLoadBalancerPending, idExternalNameIsIP)
}
