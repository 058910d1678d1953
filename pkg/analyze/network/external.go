package network

import (
	"fmt"
	"net/netip"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/kdiag/kdiag/pkg/analyze/internal/evidence"
	"github.com/kdiag/kdiag/pkg/cluster"
	"github.com/kdiag/kdiag/pkg/findings"
)

// lbGrace is how long a LoadBalancer Service may wait for its address
// before kdiag reports it; clouds usually take one or two minutes.
const lbGrace = 5 * time.Minute

// loadBalancerPending reports a LoadBalancer Service that still has no
// ingress address lbGrace after its creation, with the events that say why.
func (a *analysis) loadBalancerPending(svc *corev1.Service) (findings.Finding, bool) {
	if svc.Spec.Type != corev1.ServiceTypeLoadBalancer || len(svc.Status.LoadBalancer.Ingress) > 0 {
		return findings.Finding{}, false
	}
	created := svc.CreationTimestamp
	if !created.IsZero() && a.s.TakenAt.Sub(created.Time) < lbGrace {
		return findings.Finding{}, false
	}
	ev := []string{"spec.type=LoadBalancer and status.loadBalancer.ingress is empty"}
	age := ""
	if !created.IsZero() {
		age = evidence.Since(a.s.TakenAt, created)
		ev[0] += fmt.Sprintf(" %s after the Service was created", age)
	}
	if svc.Spec.LoadBalancerClass != nil {
		ev = append(ev, "spec.loadBalancerClass="+*svc.Spec.LoadBalancerClass+": only the implementation of that class assigns the address")
	}
	// The latest event of each reason, newest first.
	evs := a.ix.EventsFor("Service", svc.Namespace, svc.Name)
	ev = append(ev, evidence.LatestLines(a.s.TakenAt, evs, 3, evidence.OnePerReason(nil))...)
	if len(evs) == 0 && evidence.ReadIn(a.s, cluster.ResEvents, svc.Namespace) {
		ev = append(ev, "no event mentions the Service: no cloud controller manager or load-balancer implementation seems to handle it")
	}
	title := fmt.Sprintf("LoadBalancer Service %s/%s has no external address", svc.Namespace, svc.Name)
	if age != "" {
		title += " after " + age
	}
	return findings.Finding{
		ID: idLoadBalancerPending, Severity: findings.Warning, Area: findings.AreaNetwork, Object: objectRef(svc),
		Title: title, Evidence: ev,
		Explanation: "A LoadBalancer Service gets its external address from the cloud controller manager (or MetalLB or another implementation). " +
			"Until it does, EXTERNAL-IP shows <pending> and clients outside the cluster cannot reach it; the ClusterIP and NodePorts still work. " +
			"SyncLoadBalancerFailed events usually name the cause: missing permissions of the cluster identity, a public IP or subnet that is exhausted or in use, or an unsupported annotation.",
		Remediation: []findings.Remediation{
			findings.Inspect("Read the load balancer events", fmt.Sprintf("kubectl describe service %s -n %s", svc.Name, svc.Namespace)),
			findings.Inspect("List all events about the Service", fmt.Sprintf("kubectl get events -n %s --field-selector involvedObject.kind=Service,involvedObject.name=%s", svc.Namespace, svc.Name)),
		},
	}, true
}

// externalNameIP reports an ExternalName Service whose externalName is an
// IP address. The API accepts it (it is a valid DNS name made of digits)
// but cluster DNS answers with a CNAME to that "name", which resolves to
// nothing.
func (a *analysis) externalNameIP(svc *corev1.Service) (findings.Finding, bool) {
	name := strings.TrimSuffix(svc.Spec.ExternalName, ".")
	if _, err := netip.ParseAddr(name); err != nil {
		return findings.Finding{}, false
	}
	return findings.Finding{
		ID: idExternalNameIsIP, Severity: findings.Warning, Area: findings.AreaNetwork, Object: objectRef(svc),
		Title: fmt.Sprintf("ExternalName Service %s/%s points at IP address %s, which DNS treats as a host name", svc.Namespace, svc.Name, name),
		Evidence: []string{
			"spec.type=ExternalName spec.externalName=" + svc.Spec.ExternalName,
			fmt.Sprintf("cluster DNS answers %s.%s.svc with a CNAME to %q, a name no DNS server resolves", svc.Name, svc.Namespace, name+"."),
		},
		Explanation: "An ExternalName Service is only a DNS CNAME. Kubernetes accepts an IP address there because it is also a valid DNS name made of digits, " +
			"but resolvers then look up a host literally named like the address and fail. To give an external IP a Service name, " +
			"use a Service without selector plus an EndpointSlice that lists the IP.",
		Remediation: []findings.Remediation{
			findings.Inspect("Show the Service", fmt.Sprintf("kubectl get service %s -n %s -o yaml", svc.Name, svc.Namespace)),
		},
	}, true
}
