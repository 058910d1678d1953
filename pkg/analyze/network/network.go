// Package network finds why traffic to a Service fails: a targetPort that
// no container listens on, a protocol that does not match, a selector that
// selects nothing, endpoints that are all unready or missing, a load
// balancer that never got an address, and an ExternalName that is an IP.
//
// Analyze is a pure function of the snapshot. It concludes nothing from the
// absence of objects it could not read (see cluster.Snapshot.Gaps).
package network

import (
	"sort"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/kdiag/kdiag/pkg/analyze/internal/clusterdns"
	"github.com/kdiag/kdiag/pkg/analyze/internal/evidence"
	"github.com/kdiag/kdiag/pkg/cluster"
	"github.com/kdiag/kdiag/pkg/findings"
)

// Check IDs of the network area; docs/checks/<ID>.md explains each.
const (
	idTargetPortMismatch  = "service-target-port-mismatch"
	idProtocolMismatch    = "service-protocol-mismatch"
	idNoMatchingPods      = "service-no-matching-pods"
	idNoReadyEndpoints    = "service-no-ready-endpoints"
	idNoEndpointSlices    = "service-no-endpointslices"
	idLoadBalancerPending = "service-loadbalancer-pending"
	idExternalNameIsIP    = "service-externalname-ip"
)

// Checks returns every check this package can report.
func Checks() []findings.Check {
	return []findings.Check{
		{ID: idTargetPortMismatch, Area: findings.AreaNetwork, Severity: findings.Critical,
			Summary: "A Service targetPort (number or name) matches no containerPort of the pods it selects"},
		{ID: idProtocolMismatch, Area: findings.AreaNetwork, Severity: findings.Warning,
			Summary: "A Service port's protocol differs from the protocol of the container port it targets"},
		{ID: idNoMatchingPods, Area: findings.AreaNetwork, Severity: findings.Warning,
			Summary: "A Service selector matches no running pod"},
		{ID: idNoReadyEndpoints, Area: findings.AreaNetwork, Severity: findings.Critical,
			Summary: "A Service has endpoints but none of them is ready or serving"},
		{ID: idNoEndpointSlices, Area: findings.AreaNetwork, Severity: findings.Critical,
			Summary: "A Service selects running pods but has no EndpointSlice at all"},
		{ID: idLoadBalancerPending, Area: findings.AreaNetwork, Severity: findings.Warning,
			Summary: "A LoadBalancer Service has had no external address for more than 5 minutes"},
		{ID: idExternalNameIsIP, Area: findings.AreaNetwork, Severity: findings.Warning,
			Summary: "An ExternalName Service names an IP address, which DNS cannot resolve as a CNAME"},
	}
}

// Analyze runs every network check on the snapshot.
func Analyze(s *cluster.Snapshot) []findings.Finding {
	a := newAnalysis(s)
	svcs := make([]*corev1.Service, len(s.Services))
	for i := range s.Services {
		svcs[i] = &s.Services[i]
	}
	sort.Slice(svcs, func(i, j int) bool {
		if svcs[i].Namespace != svcs[j].Namespace {
			return svcs[i].Namespace < svcs[j].Namespace
		}
		return svcs[i].Name < svcs[j].Name
	})
	var out []findings.Finding
	for _, svc := range svcs {
		out = append(out, a.service(svc)...)
	}
	markWidespread(out)
	return out
}

// analysis carries what every per-Service check needs.
type analysis struct {
	s    *cluster.Snapshot
	ix   *cluster.Index
	pods *podIndex
}

func newAnalysis(s *cluster.Snapshot) *analysis {
	return &analysis{s: s, ix: s.Index(), pods: newPodIndex(s.Pods)}
}

// service runs the checks of one Service.
func (a *analysis) service(svc *corev1.Service) []findings.Finding {
	var out []findings.Finding
	if svc.Spec.Type == corev1.ServiceTypeExternalName {
		if f, ok := a.externalNameIP(svc); ok {
			out = append(out, f)
		}
		return out
	}
	if f, ok := a.loadBalancerPending(svc); ok {
		out = append(out, f)
	}
	podsRead := evidence.ReadIn(a.s, cluster.ResPods, svc.Namespace)
	slicesRead := evidence.ReadIn(a.s, cluster.ResEndpointSlices, svc.Namespace)
	clusterDNS := clusterdns.IsService(svc)

	if len(svc.Spec.Selector) == 0 {
		// Selector-less Services get their endpoints from someone else;
		// only what those endpoints say can be judged.
		if slicesRead {
			if f, ok := a.noReadyEndpoints(svc, a.ix.EndpointSlices(svc.Namespace, svc.Name), nil); ok {
				out = append(out, f)
			}
		}
		return out
	}
	if !podsRead {
		return out
	}
	matched, terminal := a.pods.match(svc.Namespace, svc.Spec.Selector)
	if len(matched) == 0 {
		if !clusterDNS { // the dns analyzer reports the cluster DNS Service
			out = append(out, a.noMatchingPods(svc, terminal))
		}
		return out
	}
	for i := range svc.Spec.Ports {
		out = append(out, a.ports(svc, i, matched)...)
	}
	if !slicesRead || clusterDNS {
		return out
	}
	slices := a.ix.EndpointSlices(svc.Namespace, svc.Name)
	if len(slices) == 0 {
		if f, ok := a.noEndpointSlices(svc, matched); ok {
			out = append(out, f)
		}
		return out
	}
	if f, ok := a.noReadyEndpoints(svc, slices, matched); ok {
		out = append(out, f)
	}
	return out
}

func serviceGVR() schema.GroupVersionResource {
	return schema.GroupVersionResource{Version: "v1", Resource: "services"}
}

// objectRef names a Service in findings.
func objectRef(svc *corev1.Service) findings.ObjectRef {
	return findings.ObjectRef{Kind: "Service", Namespace: svc.Namespace, Name: svc.Name}
}
