package network

import (
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"

	"github.com/kdiag/kdiag/pkg/analyze/internal/evidence"
	"github.com/kdiag/kdiag/pkg/analyze/internal/podready"
	"github.com/kdiag/kdiag/pkg/findings"
)

// sliceGrace is how long after its creation a Service may still lack an
// EndpointSlice: the controller normally writes one within seconds.
const sliceGrace = 2 * time.Minute

// endpoint is one backend as the EndpointSlices publish it, deduplicated
// across address families (a dual-stack pod appears in two slices).
type endpoint struct {
	address                     string
	pod                         string // targetRef name when it is a Pod
	node                        string
	ready, serving, terminating bool
}

// endpointsOf collects the distinct endpoints of a Service's slices, in
// slice order. Per the EndpointSlice API, a nil ready or serving condition
// means true (serving defaults to ready) and a nil terminating means false.
func endpointsOf(slices []*discoveryv1.EndpointSlice) []endpoint {
	seen := map[string]bool{}
	var out []endpoint
	for _, es := range slices {
		for _, e := range es.Endpoints {
			ep := endpoint{ready: true}
			if len(e.Addresses) > 0 {
				ep.address = e.Addresses[0]
			}
			if e.TargetRef != nil && e.TargetRef.Kind == "Pod" {
				ep.pod = e.TargetRef.Name
			}
			if e.NodeName != nil {
				ep.node = *e.NodeName
			}
			if e.Conditions.Ready != nil {
				ep.ready = *e.Conditions.Ready
			}
			ep.serving = ep.ready
			if e.Conditions.Serving != nil {
				ep.serving = *e.Conditions.Serving
			}
			if e.Conditions.Terminating != nil {
				ep.terminating = *e.Conditions.Terminating
			}
			key := "pod/" + ep.pod
			if ep.pod == "" {
				key = "addr/" + ep.address
			}
			if seen[key] {
				continue
			}
			seen[key] = true
			out = append(out, ep)
		}
	}
	return out
}

// noReadyEndpoints reports a Service none of whose endpoints can take
// traffic. It stays silent while any endpoint is ready, or serving while
// terminating (kube-proxy then falls back to those). With no endpoints at
// all it speaks only when the selector matched pods, which then lack an IP.
func (a *analysis) noReadyEndpoints(svc *corev1.Service, slices []*discoveryv1.EndpointSlice, matched []*corev1.Pod) (findings.Finding, bool) {
	eps := endpointsOf(slices)
	for _, e := range eps {
		if e.ready || e.serving {
			return findings.Finding{}, false
		}
	}
	if len(eps) == 0 && len(matched) == 0 {
		return findings.Finding{}, false
	}

	var title string
	var ev []string
	var pods []*corev1.Pod
	if len(eps) > 0 {
		title = fmt.Sprintf("Service %s/%s has %s and none is ready", svc.Namespace, svc.Name, evidence.Plural(len(eps), "endpoint"))
		ev = append(ev, fmt.Sprintf("%s in %s, 0 ready, 0 serving", evidence.Plural(len(eps), "endpoint"), evidence.Plural(len(slices), "EndpointSlice")))
		for i, e := range eps {
			if i == evidence.MaxListed {
				ev = append(ev, fmt.Sprintf("... and %d more endpoints, none ready", len(eps)-evidence.MaxListed))
				break
			}
			line := "endpoint " + e.address
			if e.pod != "" {
				line += " -> pod " + e.pod
			}
			if e.node != "" {
				line += " on " + e.node
			}
			ev = append(ev, fmt.Sprintf("%s: ready=%t serving=%t terminating=%t", line, e.ready, e.serving, e.terminating))
			if p := a.pods.pod(svc.Namespace, e.pod); p != nil && e.pod != "" {
				pods = append(pods, p)
			}
		}
	} else {
		title = fmt.Sprintf("Service %s/%s has no endpoints: none of its %s has a pod IP yet", svc.Namespace, svc.Name, evidence.Plural(len(matched), "selected pod"))
		ev = append(ev, fmt.Sprintf("0 endpoints in %s although the selector %s matches %s",
			evidence.Plural(len(slices), "EndpointSlice"), selectorString(svc.Spec.Selector), evidence.Plural(len(matched), "pod")))
		pods = matched
	}
	ev = append(ev, podready.ExplainPods(a.s, pods, 3)...)

	rem := []findings.Remediation{
		findings.Inspect("See the endpoints and their conditions", fmt.Sprintf("kubectl get endpointslices -n %s -l kubernetes.io/service-name=%s -o yaml", svc.Namespace, svc.Name)),
	}
	if len(svc.Spec.Selector) > 0 {
		rem = append(rem, findings.Inspect("See why the selected pods are not ready (conditions, probes, events)",
			fmt.Sprintf("kubectl describe pods -n %s -l %s", svc.Namespace, selectorString(svc.Spec.Selector))))
	}
	if len(pods) > 0 {
		rem = append(rem, findings.Inspect("Read the logs of one of the pods", fmt.Sprintf("kubectl logs -n %s %s --all-containers --tail=100", svc.Namespace, pods[0].Name)))
	}
	return findings.Finding{
		ID: idNoReadyEndpoints, Severity: findings.Critical, Area: findings.AreaNetwork, Object: objectRef(svc),
		Title: title, Evidence: ev,
		Explanation: "kube-proxy and cluster DNS route a Service only to ready endpoints (or, as a last resort, to serving ones that are terminating). " +
			"None is ready, so clients get connection refused, timeouts or empty DNS answers. " +
			"The cause is on the pods: failing readiness probes, crash loops, pods not yet scheduled or started, or a NotReady node.",
		Remediation: rem,
	}, true
}

// noEndpointSlices reports a Service that selects pods with IPs but has no
// EndpointSlice at all, past a short grace period after its creation.
func (a *analysis) noEndpointSlices(svc *corev1.Service, matched []*corev1.Pod) (findings.Finding, bool) {
	var withIP []string
	for _, p := range matched {
		if p.Status.PodIP != "" && p.DeletionTimestamp == nil {
			withIP = append(withIP, fmt.Sprintf("%s (%s)", p.Name, p.Status.PodIP))
		}
	}
	if len(withIP) == 0 {
		return findings.Finding{}, false
	}
	created := svc.CreationTimestamp
	if !created.IsZero() && a.s.TakenAt.Sub(created.Time) < sliceGrace {
		return findings.Finding{}, false
	}
	ev := []string{
		fmt.Sprintf("no EndpointSlice labelled kubernetes.io/service-name=%s exists in namespace %s", svc.Name, svc.Namespace),
		fmt.Sprintf("selector %s matches %s with a pod IP: %s", selectorString(svc.Spec.Selector), evidence.Plural(len(withIP), "pod"), evidence.Join(withIP)),
	}
	if !created.IsZero() {
		ev = append(ev, "the Service was created "+evidence.Ago(a.s.TakenAt, created.Time))
	}
	return findings.Finding{
		ID: idNoEndpointSlices, Severity: findings.Critical, Area: findings.AreaNetwork, Object: objectRef(svc),
		Title:    fmt.Sprintf("Service %s/%s selects %s with an IP but has no EndpointSlice", svc.Namespace, svc.Name, evidence.Plural(len(withIP), "pod")),
		Evidence: ev,
		Explanation: "kube-proxy and cluster DNS learn a Service's backends only from EndpointSlices, which the EndpointSlice controller in kube-controller-manager writes within seconds. " +
			"None exists, so the Service has no backends although pods match. When many Services show this, kube-controller-manager is down, not leader, or lacks permissions.",
		Remediation: []findings.Remediation{
			findings.Inspect("Confirm there is no EndpointSlice", fmt.Sprintf("kubectl get endpointslices -n %s -l kubernetes.io/service-name=%s", svc.Namespace, svc.Name)),
			findings.Inspect("Check that kube-controller-manager holds and renews its leader lease", "kubectl get lease -n kube-system kube-controller-manager -o yaml"),
			findings.Inspect("Look for EndpointSlice controller errors in the events", fmt.Sprintf("kubectl get events -n %s --field-selector involvedObject.name=%s", svc.Namespace, svc.Name)),
		},
	}, true
}

// markWidespread adds to each no-EndpointSlice finding how many Services
// share the problem, which points at the controller rather than the Service.
func markWidespread(fs []findings.Finding) {
	var idx []int
	for i := range fs {
		if fs[i].ID == idNoEndpointSlices {
			idx = append(idx, i)
		}
	}
	if len(idx) < 2 {
		return
	}
	var names []string
	for _, i := range idx {
		names = append(names, fs[i].Object.Namespace+"/"+fs[i].Object.Name)
	}
	line := fmt.Sprintf("%d Services lack EndpointSlices (%s): the EndpointSlice controller itself is likely not running",
		len(idx), evidence.Join(names))
	for _, i := range idx {
		fs[i].Evidence = append(fs[i].Evidence, line)
	}
}
