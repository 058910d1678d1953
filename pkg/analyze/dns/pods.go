package dns

import (
	"fmt"
	"net/netip"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"

	"github.com/kdiag/kdiag/pkg/analyze/internal/evidence"
	"github.com/kdiag/kdiag/pkg/analyze/internal/podready"
	"github.com/kdiag/kdiag/pkg/cluster"
	"github.com/kdiag/kdiag/pkg/findings"
)

// podDNSNone reports pods with dnsPolicy None that have no usable
// nameserver, one finding per owning workload so that 50 replicas make one
// finding. The API server rejects dnsPolicy None without nameservers, so on
// a live cluster the case is nameservers that all point nowhere (loopback
// with nothing listening, an in-cluster address nobody has, a Service
// without endpoints); an empty list only appears in dumps.
func (e *env) podDNSNone() []findings.Finding {
	type group struct {
		w    cluster.Workload
		ns   string
		pods []*corev1.Pod
		why  []string
	}
	groups := map[string]*group{}
	var keys []string
	for i := range e.s.Pods {
		p := &e.s.Pods[i]
		if p.Spec.DNSPolicy != corev1.DNSNone || podready.Terminal(p) {
			continue
		}
		why, broken := e.nameserversNowhere(p)
		if !broken {
			continue
		}
		w := e.ix.OwnerOf(p)
		k := p.Namespace + "/" + w.Kind + "/" + w.Name
		g := groups[k]
		if g == nil {
			g = &group{w: w, ns: p.Namespace, why: why}
			groups[k] = g
			keys = append(keys, k)
		}
		g.pods = append(g.pods, p)
	}
	sort.Strings(keys)
	dnsIP := e.clusterDNSIP()
	var out []findings.Finding
	for _, k := range keys {
		g := groups[k]
		sort.Slice(g.pods, func(i, j int) bool { return g.pods[i].Name < g.pods[j].Name })
		p := g.pods[0]
		var names []string
		for _, q := range g.pods {
			names = append(names, q.Name)
		}
		ev := []string{"spec.dnsPolicy=None"}
		empty := p.Spec.DNSConfig == nil || len(p.Spec.DNSConfig.Nameservers) == 0
		switch {
		case p.Spec.DNSConfig == nil:
			ev = append(ev, "spec.dnsConfig is not set")
		case empty:
			ev = append(ev, fmt.Sprintf("spec.dnsConfig.nameservers is empty (searches: [%s], options: %d)",
				strings.Join(p.Spec.DNSConfig.Searches, " "), len(p.Spec.DNSConfig.Options)))
		default:
			ev = append(ev, g.why...)
		}
		ev = append(ev, fmt.Sprintf("%s affected: %s", evidence.Plural(len(g.pods), "pod"), strings.Join(evidence.Capped(names), ", ")))
		if empty {
			ev = append(ev, "their /etc/resolv.conf has no nameserver line, so the resolver falls back to 127.0.0.1:53, where nothing listens")
		}

		obj := findings.ObjectRef{Kind: g.w.Kind, Namespace: g.ns, Name: g.w.Name}
		what := fmt.Sprintf("%s %s/%s runs %s", g.w.Kind, g.ns, g.w.Name, evidence.Plural(len(g.pods), "pod"))
		if g.w.Kind == "Pod" {
			what = fmt.Sprintf("Pod %s/%s has", g.ns, g.w.Name)
		}
		problem := "no nameservers"
		if !empty {
			problem = "only nameservers that point nowhere"
		}
		rem := e.dnsNoneFixes(g.w, g.ns, dnsIP)
		rem = append(rem, findings.Inspect("Show the pod's DNS settings", fmt.Sprintf("kubectl get pod %s -n %s -o jsonpath='{.spec.dnsPolicy} {.spec.dnsConfig}'", p.Name, g.ns)))
		out = append(out, findings.Finding{
			ID: idPodDNSNone, Severity: findings.Critical, Area: findings.AreaDNS, Object: obj,
			Title:    fmt.Sprintf("%s with dnsPolicy None and %s: they cannot resolve any name", what, problem),
			Evidence: ev,
			Explanation: "dnsPolicy None tells the kubelet to ignore cluster DNS and build resolv.conf only from spec.dnsConfig. " +
				"Without a nameserver that answers, every lookup fails, of Services and of external names alike. " +
				"Either list working nameservers (the cluster DNS ClusterIP keeps Service names working) or use dnsPolicy ClusterFirst, which still merges dnsConfig's searches and options.",
			Remediation: rem,
		})
	}
	return out
}

// nameserversNowhere reports whether none of the pod's nameservers can
// answer, with one evidence line per nameserver. Addresses kdiag cannot
// judge (outside the cluster) count as usable.
func (e *env) nameserversNowhere(p *corev1.Pod) ([]string, bool) {
	if p.Spec.DNSConfig == nil || len(p.Spec.DNSConfig.Nameservers) == 0 {
		return nil, true
	}
	ca := e.clusterAddrs()
	var why []string
	for _, ns := range p.Spec.DNSConfig.Nameservers {
		a, err := netip.ParseAddr(ns)
		if err != nil {
			return nil, false
		}
		a = a.Unmap()
		var reason string
		switch {
		case a.IsUnspecified():
			reason = "an unspecified address that no server answers on"
		case a.IsLoopback():
			if declaresPort(p, 53) {
				return nil, false
			}
			reason = "loopback, and no container of the pod declares port 53"
		case e.isClusterDNSIP(a):
			// The cluster DNS is judged by dns-no-ready-replicas and
			// dns-no-endpoints; an outage there is not this pod's fault.
			return nil, false
		default:
			reason = e.unusedInCluster(a, ca)
		}
		if reason == "" {
			return nil, false
		}
		why = append(why, fmt.Sprintf("spec.dnsConfig.nameservers: %s is %s", ns, reason))
	}
	return why, true
}

func declaresPort(p *corev1.Pod, port int32) bool {
	for _, c := range append(append([]corev1.Container(nil), p.Spec.Containers...), p.Spec.InitContainers...) {
		for _, cp := range c.Ports {
			if cp.ContainerPort == port {
				return true
			}
		}
	}
	return false
}

// isClusterDNSIP reports whether a is a ClusterIP of the kube-dns Service.
func (e *env) isClusterDNSIP(a netip.Addr) bool {
	for _, svc := range e.services {
		for _, ip := range append([]string{svc.Spec.ClusterIP}, svc.Spec.ClusterIPs...) {
			if ip == a.String() {
				return true
			}
		}
	}
	return false
}

// clusterDNSIP returns the ClusterIP of the kube-dns Service, or "".
func (e *env) clusterDNSIP() string {
	for _, svc := range e.services {
		if svc.Spec.ClusterIP != "" && svc.Spec.ClusterIP != corev1.ClusterIPNone {
			return svc.Spec.ClusterIP
		}
	}
	return ""
}

// dnsNoneFixes patches the owning workload's pod template, when its
// template still has the problem: add the cluster DNS as nameserver, or go
// back to ClusterFirst. A pod's own dnsPolicy is immutable, so bare pods
// get no fix.
func (e *env) dnsNoneFixes(w cluster.Workload, ns string, dnsIP string) []findings.Remediation {
	var spec *corev1.PodSpec
	var gvr schema.GroupVersionResource
	switch w.Kind {
	case "Deployment":
		if d := e.ix.Deployment(ns, w.Name); d != nil {
			spec, gvr = &d.Spec.Template.Spec, schema.GroupVersionResource{Group: "apps", Version: "v1", Resource: "deployments"}
		}
	case "StatefulSet":
		if s := e.ix.StatefulSet(ns, w.Name); s != nil {
			spec, gvr = &s.Spec.Template.Spec, schema.GroupVersionResource{Group: "apps", Version: "v1", Resource: "statefulsets"}
		}
	case "DaemonSet":
		if d := e.ix.DaemonSet(ns, w.Name); d != nil {
			spec, gvr = &d.Spec.Template.Spec, schema.GroupVersionResource{Group: "apps", Version: "v1", Resource: "daemonsets"}
		}
	}
	if spec == nil || spec.DNSPolicy != corev1.DNSNone {
		return nil // the template was fixed already, or kdiag cannot see it
	}
	kind := strings.ToLower(w.Kind)
	test := map[string]any{"op": "test", "path": "/spec/template/spec/dnsPolicy", "value": "None"}
	var out []findings.Remediation
	if dnsIP != "" {
		ops := []map[string]any{test}
		switch {
		case spec.DNSConfig == nil:
			ops = append(ops, map[string]any{"op": "add", "path": "/spec/template/spec/dnsConfig", "value": map[string]any{"nameservers": []string{dnsIP}}})
		case len(spec.DNSConfig.Nameservers) == 0:
			ops = append(ops, map[string]any{"op": "add", "path": "/spec/template/spec/dnsConfig/nameservers", "value": []string{dnsIP}})
		default:
			ops = append(ops,
				map[string]any{"op": "test", "path": "/spec/template/spec/dnsConfig/nameservers", "value": spec.DNSConfig.Nameservers},
				map[string]any{"op": "replace", "path": "/spec/template/spec/dnsConfig/nameservers", "value": []string{dnsIP}})
		}
		out = append(out, findings.MustPatch(
			fmt.Sprintf("Use the cluster DNS (%s) as nameserver, keeping dnsPolicy None and its searches and options (rolls the pods)", dnsIP),
			gvr, kind, ns, w.Name, types.JSONPatchType, ops))
	}
	policy := string(corev1.DNSClusterFirst)
	if spec.HostNetwork {
		policy = string(corev1.DNSClusterFirstWithHostNet)
	}
	out = append(out, findings.MustPatch(
		fmt.Sprintf("Or switch to dnsPolicy %s; dnsConfig searches and options are still merged (rolls the pods)", policy),
		gvr, kind, ns, w.Name, types.JSONPatchType, []map[string]any{test,
			{"op": "replace", "path": "/spec/template/spec/dnsPolicy", "value": policy}}))
	return out
}

// statefulSetServices reports StatefulSets whose serviceName does not name
// a headless Service selecting their pods: the per-pod DNS names
// (pod-0.svc.ns.svc.cluster.local) then do not exist.
func (e *env) statefulSetServices() []findings.Finding {
	svcs := map[string]*corev1.Service{}
	for i := range e.s.Services {
		svcs[e.s.Services[i].Namespace+"/"+e.s.Services[i].Name] = &e.s.Services[i]
	}
	var out []findings.Finding
	for i := range e.s.StatefulSets {
		st := &e.s.StatefulSets[i]
		name := st.Spec.ServiceName
		if name == "" || !evidence.ReadIn(e.s, cluster.ResServices, st.Namespace) {
			continue
		}
		svc := svcs[st.Namespace+"/"+name]
		var why string
		var ev []string
		ev = append(ev, "spec.serviceName="+name)
		switch {
		case svc == nil:
			why = fmt.Sprintf("names Service %s, which does not exist", name)
			ev = append(ev, fmt.Sprintf("no Service %s/%s exists", st.Namespace, name))
		case svc.Spec.ClusterIP != corev1.ClusterIPNone:
			why = fmt.Sprintf("names Service %s, which is not headless", name)
			ev = append(ev, fmt.Sprintf("Service %s/%s has spec.clusterIP=%s, not None: cluster DNS publishes no per-pod records for it", st.Namespace, name, svc.Spec.ClusterIP))
		case len(svc.Spec.Selector) == 0 || !labels.SelectorFromSet(svc.Spec.Selector).Matches(labels.Set(st.Spec.Template.Labels)):
			why = fmt.Sprintf("names Service %s, which does not select its pods", name)
			ev = append(ev, fmt.Sprintf("Service %s/%s selector [%s] does not match the pod template labels [%s]", st.Namespace, name,
				labels.SelectorFromSet(svc.Spec.Selector), labels.Set(st.Spec.Template.Labels)))
		default:
			continue
		}
		ev = append(ev, fmt.Sprintf("so names like %s-0.%s.%s.svc do not resolve", st.Name, name, st.Namespace))
		out = append(out, findings.Finding{
			ID: idStatefulSetNoHeadless, Severity: findings.Warning, Area: findings.AreaDNS,
			Object:   findings.ObjectRef{Kind: "StatefulSet", Namespace: st.Namespace, Name: st.Name},
			Title:    fmt.Sprintf("StatefulSet %s/%s %s: its per-pod DNS names do not exist", st.Namespace, st.Name, why),
			Evidence: ev,
			Explanation: "Each StatefulSet pod gets a stable DNS name <pod>.<serviceName>.<namespace>.svc only through a headless Service (clusterIP: None) that selects the pods. " +
				"Databases and brokers (PostgreSQL, Kafka, ZooKeeper, etcd) find their peers by these names, so without it they fail to form a cluster or to fail over.",
			Remediation: []findings.Remediation{
				findings.Inspect("Show the governing Service", fmt.Sprintf("kubectl get service %s -n %s -o wide", name, st.Namespace)),
				findings.Inspect("Show the StatefulSet's pod labels", fmt.Sprintf("kubectl get statefulset %s -n %s -o jsonpath='{.spec.template.metadata.labels}'", st.Name, st.Namespace)),
			},
		})
	}
	return out
}
