package dns

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kdiag/kdiag/pkg/cluster"
	ct "github.com/kdiag/kdiag/pkg/cluster/clustertest"
	"github.com/kdiag/kdiag/pkg/findings"
)

const contosoServer = `contoso.com:53 {
    errors
    cache 30
    forward . 10.1.0.4 tls://10.1.0.5:853 {
        except internal.contoso.com
    }
}
`

// healthyAKS is an AKS-like cluster whose DNS works: two ready CoreDNS
// pods behind kube-dns, the AKS Corefile and one custom stub domain.
func healthyAKS() *cluster.Snapshot {
	s := ct.Snapshot()
	for i, cidr := range []string{"10.244.0.0/24", "10.244.1.0/24"} {
		n := ct.ReadyNode(fmt.Sprintf("node-%d", i+1))
		n.Spec.PodCIDR, n.Spec.PodCIDRs = cidr, []string{cidr}
		s.Nodes = append(s.Nodes, n)
	}
	d, rs := ct.CoreDNS(2, 2)
	s.Deployments = append(s.Deployments, d)
	s.ReplicaSets = append(s.ReplicaSets, rs)
	var pods []corev1.Pod
	for i := 0; i < 2; i++ {
		p := ct.RunningPod("kube-system", fmt.Sprintf("coredns-5d8f7c-%c", 'a'+i), fmt.Sprintf("node-%d", i+1), map[string]string{"k8s-app": "kube-dns"})
		p.Spec = *d.Spec.Template.Spec.DeepCopy()
		p.Spec.NodeName = fmt.Sprintf("node-%d", i+1)
		p.Status.ContainerStatuses[0].Name = "coredns"
		ct.OwnPod(&p, rs)
		ct.SetPodIP(&p, fmt.Sprintf("10.244.%d.2", i))
		pods = append(pods, p)
	}
	s.Pods = append(s.Pods, pods...)
	dnsSvc := ct.KubeDNSService("10.0.0.10")
	apiSvc := ct.ServiceSelecting("default", "kubernetes", nil)
	apiSvc.Spec.ClusterIP, apiSvc.Spec.ClusterIPs = "10.0.0.1", []string{"10.0.0.1"}
	s.Services = append(s.Services, dnsSvc, apiSvc)
	s.EndpointSlices = append(s.EndpointSlices, ct.EndpointSliceFor(dnsSvc, pods...))
	s.ConfigMaps = append(s.ConfigMaps,
		ct.ConfigMapOf("kube-system", "coredns", map[string]string{"Corefile": ct.AKSCorefile}),
		ct.ConfigMapOf("kube-system", "coredns-custom", map[string]string{"contoso.server": contosoServer}))
	return s
}

// upstreamsInfo is the dns-upstreams finding the healthy cluster reports.
var upstreamsInfo = ct.Want{
	ID: idUpstreams, Severity: findings.Info, Object: "kube-system/configmap/coredns",
	Title: []string{"forwards 2 zones to 3 upstreams", ". -> /etc/resolv.conf", "contoso.com. -> 10.1.0.4,tls://10.1.0.5:853"},
	Evidence: []string{
		"cluster.local. in-addr.arpa. ip6.arpa. -> answered by kubernetes (cluster Services and pods) [coredns/Corefile:7]",
		". -> forward /etc/resolv.conf (the node's nameservers) [coredns/Corefile:13]",
		"contoso.com. -> forward 10.1.0.4:53, tls://10.1.0.5:853 [coredns-custom/contoso.server:4]; except internal.contoso.com",
	},
}

// withCustom replaces the coredns-custom data.
func withCustom(s *cluster.Snapshot, data map[string]string) *cluster.Snapshot {
	for i := range s.ConfigMaps {
		if s.ConfigMaps[i].Name == "coredns-custom" {
			s.ConfigMaps[i].Data = data
		}
	}
	return s
}

// withCorefile replaces the Corefile.
func withCorefile(s *cluster.Snapshot, corefile string) *cluster.Snapshot {
	for i := range s.ConfigMaps {
		if s.ConfigMaps[i].Name == "coredns" {
			s.ConfigMaps[i].Data = map[string]string{"Corefile": corefile}
		}
	}
	return s
}

func TestAnalyze(t *testing.T) {
	cases := []struct {
		name string
		snap func() *cluster.Snapshot
		want []ct.Want
	}{
		{
			name: "healthy AKS DNS reports only where names go",
			snap: healthyAKS,
			want: []ct.Want{upstreamsInfo},
		},
		{
			name: "CoreDNS crash-looping: no ready replicas, endpoints not reported twice",
			snap: func() *cluster.Snapshot {
				s := healthyAKS()
				s.Deployments[0].Status.ReadyReplicas, s.Deployments[0].Status.AvailableReplicas = 0, 0
				s.Deployments[0].Status.Conditions[0] = metav1ToCond()
				for i := range s.Pods {
					ct.SetContainerWaiting(&s.Pods[i], "CrashLoopBackOff", "back-off 5m0s restarting failed container=coredns", 9)
				}
				s.EndpointSlices = nil
				s.EndpointSlices = append(s.EndpointSlices, ct.EndpointSliceFor(s.Services[0], s.Pods...))
				// a pod pinned to the cluster DNS IP: the outage is reported once, above
				p := ct.RunningPod("shop", "pinned", "node-1", nil)
				p.Spec.DNSPolicy, p.Spec.DNSConfig = corev1.DNSNone, &corev1.PodDNSConfig{Nameservers: []string{"10.0.0.10"}}
				s.Pods = append(s.Pods, p)
				return s
			},
			want: []ct.Want{upstreamsInfo, {
				ID: idNoReadyReplicas, Severity: findings.Critical, Object: "kube-system/deployment/coredns",
				Title: []string{"0 of 2 replicas ready"},
				Evidence: []string{"spec.replicas=2 status.replicas=2 status.readyReplicas=0", "condition Available=False (MinimumReplicasUnavailable)",
					"pod coredns-5d8f7c-a: container coredns waiting: CrashLoopBackOff", "9 restarts", "Service kube-system/kube-dns (ClusterIP 10.0.0.10) has no ready endpoint"},
				NoPatch: true,
			}},
		},
		{
			name: "CoreDNS scaled to zero gets a scale fix",
			snap: func() *cluster.Snapshot {
				s := healthyAKS()
				zero := int32(0)
				s.Deployments[0].Spec.Replicas = &zero
				s.Deployments[0].Status = appsStatusZero()
				s.Pods = nil
				s.EndpointSlices = []discoveryv1.EndpointSlice{ct.EndpointSliceFor(s.Services[0])}
				return s
			},
			want: []ct.Want{upstreamsInfo, {
				ID: idNoReadyReplicas, Severity: findings.Critical, Object: "kube-system/deployment/coredns",
				Title:   []string{"scaled to 0 replicas"},
				Patches: []string{`{"spec":{"replicas":2}}`}, Commands: []string{"kubectl scale deployment/coredns -n kube-system --replicas=2"},
			}},
		},
		{
			name: "kube-dns Service selector misses the running CoreDNS pods",
			snap: func() *cluster.Snapshot {
				s := healthyAKS()
				s.Services[0].Spec.Selector = map[string]string{"k8s-app": "coredns"}
				s.EndpointSlices = []discoveryv1.EndpointSlice{ct.EndpointSliceFor(s.Services[0])}
				return s
			},
			want: []ct.Want{upstreamsInfo, {
				ID: idNoEndpoints, Severity: findings.Critical, Object: "kube-system/service/kube-dns",
				Title: []string{"ClusterIP 10.0.0.10", "no ready endpoint"},
				Evidence: []string{"1 EndpointSlices, 0 endpoints", "spec.selector: k8s-app=coredns", "no pod in kube-system matches the selector",
					"Deployment kube-system/coredns has 2 ready replicas whose pods are labelled k8s-app=kube-dns"},
			}},
		},
		{
			name: "Corefile with a syntax error, with its line number",
			snap: func() *cluster.Snapshot {
				return withCorefile(healthyAKS(), ".:53 {\n    errors\n    forward . 8.8.8.8 }\n    cache 30\n}\nimport custom/*.server\n")
			},
			want: []ct.Want{{
				ID: idCorefileInvalid, Severity: findings.Critical, Object: "kube-system/configmap/coredns",
				Title: []string{"coredns/Corefile:3"},
				Evidence: []string{`ConfigMap kube-system/coredns key Corefile line 3: Error during parsing: Unexpected '}' because no matching opening brace (the line reads "forward . 8.8.8.8 }")`,
					"still ready: they run an older, valid configuration"},
			}},
		},
		{
			name: "Corefile left open at the end",
			snap: func() *cluster.Snapshot {
				return withCorefile(healthyAKS(), ".:53 {\n    errors\n    forward . 8.8.8.8 {\n        max_fails 3\n")
			},
			want: []ct.Want{{
				ID: idCorefileInvalid, Severity: findings.Critical, Object: "kube-system/configmap/coredns",
				Evidence: []string{"Unexpected EOF"},
			}},
		},
		{
			name: "coredns-custom: broken server block, unbalanced override, duplicate zone, forward without target",
			snap: func() *cluster.Snapshot {
				return withCustom(healthyAKS(), map[string]string{
					"a-broken.server":  "broken.example:53 {\n  errors\n  forward . 10.9.0.1 {\n}\n}\n}\n",
					"b-dup.server":     ".:53 {\n  forward . 8.8.8.8\n}\n",
					"c-extra.override": "log\n}\n",
					"d-empty.server":   "empty.example {\n  forward .\n}\n",
				})
			},
			want: []ct.Want{upstreamsInfo2(), {
				ID: idCorefileInvalid, Severity: findings.Critical, Object: "kube-system/configmap/coredns-custom",
				Title: []string{"coredns-custom/"},
				Evidence: []string{
					"key c-extra.override: unbalanced braces",
					`key a-broken.server line 6: unbalanced braces: a stray "}"`,
					"key b-dup.server line 1: cannot serve .:53 - it is already defined at coredns/Corefile:1",
					`key d-empty.server line 2: forward needs a zone and at least one target: "forward ."`,
				},
			}},
		},
		{
			name: "a '}' that closes the default server block too early drops the plugins after it",
			snap: func() *cluster.Snapshot {
				return withCustom(healthyAKS(), map[string]string{"early.server": "early.example {\n  errors\n}\n  forward . 10.1.1.1\n}\n"})
			},
			want: []ct.Want{{
				ID: idUpstreams, Severity: findings.Info, Object: "kube-system/configmap/coredns",
			}, {
				ID: idCorefileInvalid, Severity: findings.Critical, Object: "kube-system/configmap/coredns-custom",
				Evidence: []string{`key early.server line 4: plugin line "forward . 10.1.1.1" stands outside any server block`},
			}, {
				ID: idStubNoUpstream, Severity: findings.Warning, Object: "kube-system/configmap/coredns-custom",
				Title: []string{"zone early.example. has no upstream"},
			}},
		},
		{
			name: "forward in an AKS override is shadowed by the default forward; order and except are honoured",
			snap: func() *cluster.Snapshot {
				s := withCustom(healthyAKS(), map[string]string{
					"upstream.override": "forward . 10.10.10.1\n",
					"order.server":      "order.example {\n  forward sub.order.example 10.2.0.1\n  forward . 10.2.0.2\n  forward sub.order.example 10.2.0.3\n}\n",
					"except.server":     "except.example {\n  forward . 10.3.0.1 {\n    except a.except.example\n  }\n  forward a.except.example 10.3.0.2\n}\n",
				})
				return s
			},
			want: []ct.Want{{
				ID: idUpstreams, Severity: findings.Info, Object: "kube-system/configmap/coredns",
				Evidence: []string{". -> forward 10.10.10.1:53 [coredns-custom/upstream.override:1] (never used: the forward at coredns/Corefile:13 comes first)"},
			}, {
				ID: idForwardShadowed, Severity: findings.Warning, Object: "kube-system/configmap/coredns-custom",
				Title:    []string{`never uses "forward . 10.10.10.1" (coredns-custom/upstream.override:1): "forward . /etc/resolv.conf" at coredns/Corefile:13 comes first`},
				Evidence: []string{"server block .:53 (coredns/Corefile:1)"},
			}, {
				ID: idForwardShadowed, Severity: findings.Warning, Object: "kube-system/configmap/coredns-custom",
				Title: []string{`never uses "forward sub.order.example 10.2.0.3" (coredns-custom/order.server:4)`},
			}},
		},
		{
			name: "forward targets CoreDNS refuses: a gRPC transport, more than 15",
			snap: func() *cluster.Snapshot {
				many := strings.Repeat(" 192.0.2.1", 16)
				return withCustom(healthyAKS(), map[string]string{
					"bad.server": "grpc.example {\n  forward . grpc://192.0.2.9\n}\nmany.example {\n  forward ." + many + "\n}\n",
				})
			},
			want: []ct.Want{{ID: idUpstreams, Severity: findings.Info, Object: "kube-system/configmap/coredns"}, {
				ID: idCorefileInvalid, Severity: findings.Critical, Object: "kube-system/configmap/coredns-custom",
				Evidence: []string{"key bad.server line 2: 'grpc' is not supported as a destination protocol in forward: grpc://192.0.2.9",
					"key bad.server line 5: more than 15 TOs configured: 16"},
			}},
		},
		{
			name: "misspelled plugin in an override and a key AKS ignores",
			snap: func() *cluster.Snapshot {
				s := healthyAKS()
				s.ConfigMaps[1].Data["typo.override"] = "log\nfoward . 1.1.1.1\n"
				s.ConfigMaps[1].Data["hosts.conf"] = "hosts {\n 10.1.2.3 db.contoso.com\n}\n"
				return s
			},
			want: []ct.Want{upstreamsInfo, {
				ID: idUnknownPlugin, Severity: findings.Warning, Object: "kube-system/configmap/coredns-custom",
				Title:    []string{`"foward"`},
				Evidence: []string{`coredns-custom/typo.override:2: unknown plugin "foward" (did you mean "forward"?)`},
			}, {
				ID: idCustomKeyIgnored, Severity: findings.Warning, Object: "kube-system/configmap/coredns-custom",
				Title:    []string{"1 key", "hosts.conf"},
				Evidence: []string{"keys never imported: hosts.conf", "import custom/*.override (coredns/Corefile:18)", "import custom/*.server (coredns/Corefile:20)"},
			}},
		},
		{
			name: "upstreams that are not IP addresses: a host name is critical, a file a warning",
			snap: func() *cluster.Snapshot {
				return withCustom(healthyAKS(), map[string]string{
					"corp.server": "corp.example:53 {\n  forward . dns.corp.example:53\n}\nfiles.example {\n  forward . /etc/coredns/custom/resolv.conf\n}\n",
					"ok.server":   "ok.example {\n  forward . /etc/resolv.conf tls://[2001:db8::53]:853 dns://192.0.2.53:5353 192.0.2.54%eth0 {$UPSTREAM}\n}\n",
				})
			},
			want: []ct.Want{{
				ID: idUpstreams, Severity: findings.Info, Object: "kube-system/configmap/coredns",
				Evidence: []string{"ok.example. -> forward /etc/resolv.conf (the node's nameservers), tls://[2001:db8::53]:853, 192.0.2.53:5353",
					"{$UPSTREAM} (environment variable"},
			}, {
				ID: idUpstreamNotIP, Severity: findings.Critical, Object: "kube-system/configmap/coredns-custom",
				Title: []string{"2 targets that are not IP addresses", `corp.example. -> "dns.corp.example:53"`},
				Evidence: []string{`coredns-custom/corp.server:2: forward corp.example. -> "dns.corp.example:53" is a host name`,
					`"/etc/coredns/custom/resolv.conf" is a file path`},
			}},
		},
		{
			name: "stub domains that point nowhere, next to ones that work",
			snap: func() *cluster.Snapshot {
				s := healthyAKS()
				// a working in-cluster DNS: Service with a ready endpoint
				consul := ct.ServiceSelecting("consul", "consul-dns", map[string]string{"app": "consul"})
				consul.Spec.ClusterIP, consul.Spec.ClusterIPs = "10.0.0.60", []string{"10.0.0.60"}
				cp := ct.RunningPod("consul", "consul-0", "node-1", map[string]string{"app": "consul"})
				ct.SetPodIP(&cp, "10.244.0.30")
				dead := ct.ServiceSelecting("legacy", "bind", map[string]string{"app": "bind"})
				dead.Spec.ClusterIP, dead.Spec.ClusterIPs = "10.0.0.70", []string{"10.0.0.70"}
				s.Services = append(s.Services, consul, dead)
				s.Pods = append(s.Pods, cp)
				s.EndpointSlices = append(s.EndpointSlices, ct.EndpointSliceFor(consul, cp), ct.EndpointSliceFor(dead))
				// a sidecar on 5353 declared in the DNS pod template
				s.Deployments[0].Spec.Template.Spec.Containers = append(s.Deployments[0].Spec.Template.Spec.Containers,
					corev1.Container{Name: "dnsmasq", Ports: []corev1.ContainerPort{ct.CPort("dnsmasq", 5353, corev1.ProtocolUDP)}})
				return withCustom(s, map[string]string{
					"good.server": "consul:53 {\n  forward . 10.0.0.60\n}\nside.example {\n  forward . 127.0.0.1:5353\n}\n",
					"bad.server": "loop.example {\n  forward . 127.0.0.1\n}\n" +
						"self.example {\n  forward . 10.0.0.10\n}\n" +
						"gone.example {\n  forward . 10.0.0.53 0.0.0.0\n}\n" +
						"dead.example {\n  forward . 10.0.0.70\n}\n" +
						"pod.example {\n  forward . 10.244.1.99\n}\n" +
						"quiet.example {\n  errors\n  cache 30\n}\n",
				})
			},
			want: []ct.Want{
				{ID: idUpstreams, Severity: findings.Info, Object: "kube-system/configmap/coredns",
					Evidence: []string{"quiet.example. -> nothing answers [coredns-custom/bad.server:16]", "consul. -> forward 10.0.0.60:53"}},
				{ID: idStubNoUpstream, Severity: findings.Warning, Object: "kube-system/configmap/coredns-custom",
					Title: []string{"loop.example. to 127.0.0.1:53"}, Evidence: []string{"is CoreDNS itself: a forwarding loop"}},
				{ID: idStubNoUpstream, Severity: findings.Warning, Object: "kube-system/configmap/coredns-custom",
					Title: []string{"self.example."}, Evidence: []string{"the ClusterIP of the cluster DNS Service, CoreDNS itself: a forwarding loop"}},
				{ID: idStubNoUpstream, Severity: findings.Warning, Object: "kube-system/configmap/coredns-custom",
					Title: []string{"gone.example. to 10.0.0.53:53"},
					Evidence: []string{"inside the cluster's Service range (10.0.0.0/24, inferred from the ClusterIPs), but no Service has this ClusterIP",
						"0.0.0.0:53: an unspecified address"}},
				{ID: idStubNoUpstream, Severity: findings.Warning, Object: "kube-system/configmap/coredns-custom",
					Title: []string{"dead.example."}, Evidence: []string{"the ClusterIP of Service legacy/bind, which has no ready endpoint"}},
				{ID: idStubNoUpstream, Severity: findings.Warning, Object: "kube-system/configmap/coredns-custom",
					Title: []string{"pod.example."}, Evidence: []string{"inside the pod CIDR 10.244.1.0/24 of a node, but no pod has this IP"}},
				{ID: idStubNoUpstream, Severity: findings.Warning, Object: "kube-system/configmap/coredns-custom",
					Title: []string{"zone quiet.example. has no upstream or answering plugin"}},
			},
		},
		{
			name: "pods with dnsPolicy None and no nameservers, grouped by workload",
			snap: func() *cluster.Snapshot {
				s := healthyAKS()
				lbls := map[string]string{"app": "checkout"}
				d, rs := ct.Deployment("shop", "checkout", 2, lbls)
				d.Spec.Template.Spec.DNSPolicy = corev1.DNSNone
				d.Spec.Template.Spec.DNSConfig = &corev1.PodDNSConfig{Searches: []string{"shop.svc.cluster.local"}}
				s.Deployments = append(s.Deployments, d)
				s.ReplicaSets = append(s.ReplicaSets, rs)
				for i := 0; i < 2; i++ {
					p := ct.RunningPod("shop", fmt.Sprintf("checkout-5d8f7c-%c", 'a'+i), "node-1", lbls)
					p.Spec.DNSPolicy, p.Spec.DNSConfig = corev1.DNSNone, d.Spec.Template.Spec.DNSConfig.DeepCopy()
					ct.OwnPod(&p, rs)
					s.Pods = append(s.Pods, p)
				}
				bare := ct.RunningPod("shop", "debug", "node-1", nil)
				bare.Spec.DNSPolicy = corev1.DNSNone
				ok := ct.RunningPod("shop", "custom-dns", "node-1", nil)
				ok.Spec.DNSPolicy, ok.Spec.DNSConfig = corev1.DNSNone, &corev1.PodDNSConfig{Nameservers: []string{"1.1.1.1"}}
				s.Pods = append(s.Pods, bare, ok)
				return s
			},
			want: []ct.Want{upstreamsInfo, {
				ID: idPodDNSNone, Severity: findings.Critical, Object: "shop/deployment/checkout",
				Title:    []string{"runs 2 pods with dnsPolicy None and no nameservers"},
				Evidence: []string{"spec.dnsPolicy=None", "nameservers is empty (searches: [shop.svc.cluster.local]", "checkout-5d8f7c-a, checkout-5d8f7c-b"},
				Patches: []string{
					`{"op":"test","path":"/spec/template/spec/dnsPolicy","value":"None"},{"op":"add","path":"/spec/template/spec/dnsConfig/nameservers","value":["10.0.0.10"]}`,
					`{"op":"replace","path":"/spec/template/spec/dnsPolicy","value":"ClusterFirst"}`},
				Commands: []string{"kubectl patch deployment checkout -n shop --type=json"},
			}, {
				ID: idPodDNSNone, Severity: findings.Critical, Object: "shop/pod/debug",
				Evidence: []string{"spec.dnsConfig is not set"}, NoPatch: true,
			}},
		},
		{
			name: "dnsPolicy None with nameservers that point nowhere (what the API lets through)",
			snap: func() *cluster.Snapshot {
				s := healthyAKS()
				add := func(name string, nameservers []string, ports ...corev1.ContainerPort) {
					lbls := map[string]string{"app": name}
					d, rs := ct.Deployment("shop", name, 1, lbls)
					d.Spec.Template.Spec.DNSPolicy = corev1.DNSNone
					d.Spec.Template.Spec.DNSConfig = &corev1.PodDNSConfig{Nameservers: nameservers}
					p := ct.RunningPod("shop", name+"-5d8f7c-a", "node-1", lbls, ports...)
					p.Spec.DNSPolicy, p.Spec.DNSConfig = corev1.DNSNone, d.Spec.Template.Spec.DNSConfig.DeepCopy()
					ct.OwnPod(&p, rs)
					s.Deployments = append(s.Deployments, d)
					s.ReplicaSets = append(s.ReplicaSets, rs)
					s.Pods = append(s.Pods, p)
				}
				add("migrated", []string{"10.0.0.53", "127.0.0.1"})               // old DNS IP, loopback
				add("good", []string{"10.0.0.10"})                                // the cluster DNS
				add("sidecar", []string{"127.0.0.1"}, ct.CPort("dns", 53, "UDP")) // dnsmasq in the pod
				add("external", []string{"8.8.8.8", "10.0.0.53"})                 // one usable is enough
				return s
			},
			want: []ct.Want{upstreamsInfo, {
				ID: idPodDNSNone, Severity: findings.Critical, Object: "shop/deployment/migrated",
				Title: []string{"only nameservers that point nowhere"},
				Evidence: []string{"spec.dnsConfig.nameservers: 10.0.0.53 is inside the cluster's Service range (10.0.0.0/24, inferred from the ClusterIPs), but no Service has this ClusterIP",
					"spec.dnsConfig.nameservers: 127.0.0.1 is loopback, and no container of the pod declares port 53"},
				Patches: []string{`{"op":"test","path":"/spec/template/spec/dnsConfig/nameservers","value":["10.0.0.53","127.0.0.1"]},{"op":"replace","path":"/spec/template/spec/dnsConfig/nameservers","value":["10.0.0.10"]}`},
			}},
		},
		{
			name: "StatefulSets whose governing Service is missing, not headless or selects other pods",
			snap: func() *cluster.Snapshot {
				s := healthyAKS()
				for _, c := range []struct{ name, svc string }{{"pg", "pg-headless"}, {"kafka", "kafka"}, {"zk", "zk-hs"}, {"etcd", "etcd"}} {
					s.StatefulSets = append(s.StatefulSets, statefulSet("data", c.name, c.svc))
				}
				kafka := ct.ServiceSelecting("data", "kafka", map[string]string{"app": "kafka"})
				kafka.Spec.ClusterIP = "10.0.0.90"
				zk := ct.ServiceSelecting("data", "zk-hs", map[string]string{"app": "zookeeper"})
				zk.Spec.ClusterIP = corev1.ClusterIPNone
				etcd := ct.ServiceSelecting("data", "etcd", map[string]string{"app": "etcd"})
				etcd.Spec.ClusterIP = corev1.ClusterIPNone
				s.Services = append(s.Services, kafka, zk, etcd)
				return s
			},
			want: []ct.Want{upstreamsInfo,
				{ID: idStatefulSetNoHeadless, Severity: findings.Warning, Object: "data/statefulset/pg",
					Title: []string{"names Service pg-headless, which does not exist"}, Evidence: []string{"pg-0.pg-headless.data.svc"}},
				{ID: idStatefulSetNoHeadless, Severity: findings.Warning, Object: "data/statefulset/kafka",
					Title: []string{"not headless"}, Evidence: []string{"spec.clusterIP=10.0.0.90, not None"}},
				{ID: idStatefulSetNoHeadless, Severity: findings.Warning, Object: "data/statefulset/zk",
					Title: []string{"does not select its pods"}, Evidence: []string{"selector [app=zookeeper] does not match the pod template labels [app=zk]"}},
			},
		},
		{
			name: "kube-dns (GKE) ConfigMap: stub domain with a host name, broken upstream list",
			snap: func() *cluster.Snapshot {
				s := healthyAKS()
				s.ConfigMaps = []corev1.ConfigMap{ct.ConfigMapOf("kube-system", "kube-dns", map[string]string{
					"stubDomains":         `{"acme.local": ["10.150.0.1"], "corp.example": ["ns1.corp.example"]}`,
					"upstreamNameservers": `["8.8.8.8",`,
				})}
				return s
			},
			want: []ct.Want{{
				ID: idCorefileInvalid, Severity: findings.Warning, Object: "kube-system/configmap/kube-dns",
				Title: []string{"kube-dns ignores", "upstreamNameservers"},
			}, {
				ID: idUpstreams, Severity: findings.Info, Object: "kube-system/configmap/kube-dns",
				Title:    []string{"kube-dns forwards 3 zones"},
				Evidence: []string{"acme.local. -> forward 10.150.0.1:53 [kube-dns/stubDomains]", ". -> forward /etc/resolv.conf"},
			}, {
				ID: idUpstreamNotIP, Severity: findings.Critical, Object: "kube-system/configmap/kube-dns",
				Title: []string{`kube-dns forwards corp.example. to "ns1.corp.example"`},
			}},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ct.AssertFindings(t, findings.AreaDNS, Analyze(tc.snap()), tc.want)
		})
	}
}

// upstreamsInfo2 is the upstream map of the coredns-custom error case: the
// broken keys add nothing, the duplicate . block adds 8.8.8.8.
func upstreamsInfo2() ct.Want {
	return ct.Want{ID: idUpstreams, Severity: findings.Info, Object: "kube-system/configmap/coredns",
		Evidence: []string{". -> forward 8.8.8.8:53 [coredns-custom/b-dup.server:2]"}}
}

// TestGaps checks that nothing is concluded from what was not read.
func TestGaps(t *testing.T) {
	broken := func() *cluster.Snapshot {
		s := healthyAKS()
		s.Services[0].Spec.Selector = map[string]string{"k8s-app": "coredns"}
		s.EndpointSlices = []discoveryv1.EndpointSlice{ct.EndpointSliceFor(s.Services[0])}
		s.StatefulSets = append(s.StatefulSets, statefulSet("data", "pg", "pg-headless"))
		p := ct.RunningPod("shop", "debug", "node-1", nil)
		p.Spec.DNSPolicy = corev1.DNSNone
		s.Pods = append(s.Pods, p)
		return withCustom(s, map[string]string{"gone.server": "gone.example {\n  forward . 10.0.0.53\n}\n"})
	}
	gap := func(r cluster.Resource, ns string) cluster.Gap {
		return cluster.Gap{Resource: r, Namespace: ns, Reason: cluster.GapForbidden, Message: string(r) + " is forbidden"}
	}
	cases := []struct {
		name string
		snap func() *cluster.Snapshot
		want []ct.Want
	}{
		{
			name: "ConfigMaps, EndpointSlices, pods and Services in data not read",
			snap: func() *cluster.Snapshot {
				s := broken()
				s.ConfigMaps, s.EndpointSlices = nil, nil
				s.Pods = s.Pods[:2] // the CoreDNS pods were read with the DNS scope
				s.Gaps = []cluster.Gap{gap(cluster.ResConfigMaps, "kube-system"), gap(cluster.ResEndpointSlices, ""),
					gap(cluster.ResPods, "shop"), gap(cluster.ResServices, "data")}
				return s
			},
		},
		{
			name: "read limited to namespace shop: no in-cluster address verdicts, no StatefulSet verdicts",
			snap: func() *cluster.Snapshot {
				s := broken()
				s.Namespace = "shop"
				return s
			},
			want: []ct.Want{
				{ID: idNoEndpoints, Severity: findings.Critical, Object: "kube-system/service/kube-dns"},
				{ID: idUpstreams, Severity: findings.Info, Object: "kube-system/configmap/coredns"},
				{ID: idPodDNSNone, Severity: findings.Critical, Object: "shop/pod/debug"},
			},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ct.AssertFindings(t, findings.AreaDNS, Analyze(tc.snap()), tc.want)
		})
	}
}

// TestCorefileNeverReadsTheFilesystem imports a real file by absolute path:
// CoreDNS would read it inside its container, kdiag must not read it here.
func TestCorefileNeverReadsTheFilesystem(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "extra.server")
	if err := os.WriteFile(file, []byte("leak.example {\n  forward . 192.0.2.66\n}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("KDIAG_TEST_UPSTREAM", "192.0.2.77")
	s := withCorefile(healthyAKS(), ".:53 {\n  forward . {$KDIAG_TEST_UPSTREAM}\n}\nimport "+file+"\n")
	out, _ := json.Marshal(Analyze(s))
	if strings.Contains(string(out), "192.0.2.66") || strings.Contains(string(out), "leak.example") {
		t.Errorf("the analyzer read %s from the local filesystem: %s", file, out)
	}
	if strings.Contains(string(out), "192.0.2.77") {
		t.Errorf("the analyzer expanded an environment variable of the kdiag process: %s", out)
	}
	if !strings.Contains(string(out), "{$KDIAG_TEST_UPSTREAM}") || !strings.Contains(string(out), "reads files that come from no ConfigMap") {
		t.Errorf("want the env reference kept as written and the import shown as unresolved: %s", out)
	}
}

func TestParseUpstream(t *testing.T) {
	cases := []struct {
		raw      string
		kind     upstreamKind
		describe string
	}{
		{"8.8.8.8", kindIP, "8.8.8.8:53"},
		{"10.0.0.1:5353", kindIP, "10.0.0.1:5353"},
		{"tls://1.1.1.1", kindIP, "tls://1.1.1.1:853"},
		{"dns://9.9.9.9", kindIP, "9.9.9.9:53"},
		{"grpc://8.8.4.4", kindIP, "grpc://8.8.4.4:443"},
		{"[2001:db8::1]:53", kindIP, "[2001:db8::1]:53"},
		{"2001:db8::1", kindIP, "[2001:db8::1]:53"},
		{"fe80::1%eth0", kindIP, "[fe80::1]:53"},
		{"/etc/resolv.conf", kindResolvConf, "/etc/resolv.conf (the node's nameservers)"},
		{"/etc/other.conf", kindFile, "/etc/other.conf"},
		{"unix:///run/dns.sock", kindFile, "unix:///run/dns.sock"},
		{"dns.google", kindHostname, "dns.google"},
		{"tls://dns.google:853", kindHostname, "tls://dns.google:853"},
		{"{$UP}", kindEnv, "{$UP} (environment variable, expanded when CoreDNS starts)"},
	}
	for _, c := range cases {
		u := parseUpstream(c.raw)
		if u.kind != c.kind || u.describe() != c.describe {
			t.Errorf("parseUpstream(%q) = kind %d %q, want kind %d %q", c.raw, u.kind, u.describe(), c.kind, c.describe)
		}
	}
}

func TestParseServerKey(t *testing.T) {
	cases := map[string]serverAddr{
		".:53":               {"dns", ".", "53"},
		"example.COM":        {"dns", "example.com.", "53"},
		"tls://example.com":  {"tls", "example.com.", "853"},
		"dns://.:5353":       {"dns", ".", "5353"},
		"10.0.0.0/24:53":     {"dns", "10.0.0.0/24", "53"},
		"grpc://corp.local.": {"grpc", "corp.local.", "443"},
	}
	for in, want := range cases {
		if got := parseServerKey(in); got != want {
			t.Errorf("parseServerKey(%q) = %+v, want %+v", in, got, want)
		}
	}
}

func TestParseWithSnippetAndOverrideLines(t *testing.T) {
	corefile := "(common) {\n  errors\n  cache 30\n}\n.:53 {\n  import common\n  forward . 1.1.1.1\n  import custom/*.override\n}\n"
	cms := map[string]*corev1.ConfigMap{"coredns-custom": ptr(ct.ConfigMapOf("kube-system", "coredns-custom", map[string]string{
		"x.override": "\n\nhosts {\n  10.0.0.5 db.local\n}\n"}))}
	cfg := loadConfig(source{"coredns", "Corefile"}, corefile, mountsOf(nil), func(n string) *corev1.ConfigMap { return cms[n] })
	if len(cfg.invalid) > 0 {
		t.Fatalf("unexpected problems: %+v", cfg.invalid)
	}
	if len(cfg.blocks) != 1 {
		t.Fatalf("want 1 server block, got %d", len(cfg.blocks))
	}
	var got []string
	for _, d := range cfg.blocks[0].directives {
		got = append(got, fmt.Sprintf("%s@%s", d.name, d.src.at(d.line)))
	}
	wantDirs := "errors@coredns/Corefile:2 cache@coredns/Corefile:3 forward@coredns/Corefile:7 hosts@coredns-custom/x.override:3"
	if strings.Join(got, " ") != wantDirs {
		t.Errorf("directives = %s\nwant        %s", strings.Join(got, " "), wantDirs)
	}
	if cfg.blocks[0].line != 5 {
		t.Errorf("block line = %d, want 5", cfg.blocks[0].line)
	}
}

func TestCoveringPrefix(t *testing.T) {
	addrs := func(ss ...string) []netip.Addr {
		var out []netip.Addr
		for _, s := range ss {
			out = append(out, mustAddr(s))
		}
		return out
	}
	cases := []struct {
		in   []netip.Addr
		max  int
		want string
	}{
		{addrs("10.0.0.1", "10.0.0.10"), 24, "10.0.0.0/24"},
		{addrs("10.96.0.1", "10.100.3.7", "10.109.1.1"), 24, "10.96.0.0/12"},
		{addrs("fd00::1", "fd00::a"), 112, "fd00::/112"},
	}
	for _, c := range cases {
		p, ok := coveringPrefix(c.in, c.max)
		if !ok || p.String() != c.want {
			t.Errorf("coveringPrefix(%v) = %v, want %s", c.in, p, c.want)
		}
	}
}

func TestChecksCoverEveryID(t *testing.T) {
	ct.AssertChecks(t, Checks(), findings.AreaDNS, idNoReadyReplicas, idNoEndpoints, idCorefileInvalid, idUnknownPlugin,
		idCustomKeyIgnored, idUpstreams, idUpstreamNotIP, idForwardShadowed, idStubNoUpstream, idPodDNSNone, idStatefulSetNoHeadless)
}

func statefulSet(ns, name, svc string) appsv1.StatefulSet {
	st := ct.StatefulSetOf(ns, name, 3, map[string]string{"app": name})
	st.Spec.ServiceName = svc
	return st
}

func ptr[T any](v T) *T { return &v }

func mustAddr(s string) netip.Addr { return netip.MustParseAddr(s) }

// metav1ToCond is the Available=False condition of a Deployment without
// ready replicas.
func metav1ToCond() appsv1.DeploymentCondition {
	return appsv1.DeploymentCondition{Type: appsv1.DeploymentAvailable, Status: corev1.ConditionFalse,
		Reason: "MinimumReplicasUnavailable", Message: "Deployment does not have minimum availability.",
		LastTransitionTime: metav1.NewTime(ct.Now().Add(-15 * time.Minute))}
}

// appsStatusZero is the status of a Deployment scaled to zero.
func appsStatusZero() appsv1.DeploymentStatus {
	return appsv1.DeploymentStatus{Conditions: []appsv1.DeploymentCondition{{Type: appsv1.DeploymentAvailable,
		Status: corev1.ConditionTrue, Reason: "MinimumReplicasAvailable", LastTransitionTime: metav1.NewTime(ct.Now().Add(-time.Hour))}}}
}
