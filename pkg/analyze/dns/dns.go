// Package dns finds why names do not resolve in a cluster: the cluster DNS
// (CoreDNS or kube-dns) without ready replicas or endpoints, a Corefile that
// CoreDNS refuses or that sends names nowhere (including AKS's
// coredns-custom overrides and server blocks), pods that opted out of
// cluster DNS without nameservers, and StatefulSets whose per-pod names
// cannot exist.
//
// The Corefile is parsed with the CoreDNS parser itself
// (github.com/coredns/caddy/caddyfile). Analyze is a pure function of the
// snapshot and concludes nothing from objects it could not read.
package dns

import (
	"sort"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"

	"github.com/kdiag/kdiag/pkg/analyze/internal/clusterdns"
	"github.com/kdiag/kdiag/pkg/analyze/internal/evidence"
	"github.com/kdiag/kdiag/pkg/cluster"
	"github.com/kdiag/kdiag/pkg/findings"
)

// Check IDs of the dns area; docs/checks/<ID>.md explains each.
const (
	idNoReadyReplicas       = "dns-no-ready-replicas"
	idNoEndpoints           = "dns-no-endpoints"
	idCorefileInvalid       = "dns-corefile-invalid"
	idUnknownPlugin         = "dns-corefile-unknown-plugin"
	idCustomKeyIgnored      = "dns-custom-key-ignored"
	idUpstreams             = "dns-upstreams"
	idUpstreamNotIP         = "dns-upstream-not-ip"
	idStubNoUpstream        = "dns-stub-domain-no-upstream"
	idForwardShadowed       = "dns-forward-shadowed"
	idPodDNSNone            = "pod-dns-none-no-nameservers"
	idStatefulSetNoHeadless = "dns-statefulset-service-missing"
)

// Checks returns every check this package can report.
func Checks() []findings.Check {
	c := func(id string, sev findings.Severity, summary string) findings.Check {
		return findings.Check{ID: id, Area: findings.AreaDNS, Severity: sev, Summary: summary}
	}
	return []findings.Check{
		c(idNoReadyReplicas, findings.Critical, "The cluster DNS Deployment (CoreDNS or kube-dns) has no ready replica"),
		c(idNoEndpoints, findings.Critical, "The kube-dns Service has no ready endpoint although DNS pods may run"),
		c(idCorefileInvalid, findings.Critical, "The CoreDNS configuration (Corefile or coredns-custom) does not parse or is refused by CoreDNS"),
		c(idUnknownPlugin, findings.Warning, "The CoreDNS configuration uses a plugin that stock CoreDNS does not have"),
		c(idCustomKeyIgnored, findings.Warning, "A coredns-custom key is never imported by the Corefile (AKS wants *.server or *.override)"),
		c(idUpstreams, findings.Info, "Where CoreDNS sends each zone: every forward target and local answer"),
		c(idUpstreamNotIP, findings.Warning, "A CoreDNS forward target is not an IP address"),
		c(idForwardShadowed, findings.Warning, "A CoreDNS forward is never used because an earlier forward in the same server block takes its names (e.g. forward . in an AKS *.override)"),
		c(idStubNoUpstream, findings.Warning, "A CoreDNS server block or forward points nowhere: no answering plugin, 0.0.0.0, itself, or an in-cluster address nobody has"),
		c(idPodDNSNone, findings.Critical, "Pods with dnsPolicy None have no nameserver that can answer (none listed, or all pointing nowhere)"),
		c(idStatefulSetNoHeadless, findings.Warning, "A StatefulSet's serviceName names no headless Service selecting its pods, so its per-pod DNS names do not exist"),
	}
}

// Analyze runs every dns check on the snapshot.
func Analyze(s *cluster.Snapshot) []findings.Finding {
	e := newEnv(s)
	var out []findings.Finding
	replicas := e.noReadyReplicas()
	out = append(out, replicas...)
	out = append(out, e.noEndpoints(len(replicas) > 0)...)
	out = append(out, e.corefileChecks()...)
	out = append(out, e.podDNSNone()...)
	out = append(out, e.statefulSetServices()...)
	return out
}

// env holds what the checks share: the snapshot and the cluster DNS
// objects found in it.
type env struct {
	s           *cluster.Snapshot
	ix          *cluster.Index
	deployments []*appsv1.Deployment
	services    []*corev1.Service
	// addrs indexes in-cluster addresses; built on first use.
	addrs *clusterAddrs
}

// kubeSystem is where the cluster DNS runs.
const kubeSystem = clusterdns.Namespace

func newEnv(s *cluster.Snapshot) *env {
	e := &env{s: s, ix: s.Index()}
	for i := range s.Deployments {
		if clusterdns.IsDeployment(&s.Deployments[i]) {
			e.deployments = append(e.deployments, &s.Deployments[i])
		}
	}
	sort.Slice(e.deployments, func(i, j int) bool { return e.deployments[i].Name < e.deployments[j].Name })
	for i := range s.Services {
		if clusterdns.IsService(&s.Services[i]) {
			e.services = append(e.services, &s.Services[i])
		}
	}
	sort.Slice(e.services, func(i, j int) bool { return e.services[i].Name < e.services[j].Name })
	return e
}

// dnsRead reports whether resource r was read for the cluster DNS objects
// in kube-system. A live read limited to another namespace still reads the
// objects labelled k8s-app=kube-dns there (see cluster.LiveOptions), so only
// a gap matters.
func (e *env) dnsRead(r cluster.Resource) bool {
	return !evidence.Gapped(e.s, r, kubeSystem)
}

// allRead reports whether resource r was read in every namespace, which a
// check needs before saying that no object of that kind has some property.
func (e *env) allRead(r cluster.Resource) bool {
	return e.s.Namespace == "" && e.s.Has(r)
}

func configMapRef(name string) findings.ObjectRef {
	return findings.ObjectRef{Kind: "ConfigMap", Namespace: kubeSystem, Name: name}
}
