package dns

import (
	"fmt"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/kdiag/kdiag/pkg/analyze/internal/evidence"
	"github.com/kdiag/kdiag/pkg/analyze/internal/podready"
	"github.com/kdiag/kdiag/pkg/cluster"
	"github.com/kdiag/kdiag/pkg/findings"
)

// dnsReplicasFix is the replica count suggested for a DNS Deployment scaled
// to zero: two, the default of kubeadm and AKS, so that one can be drained.
const dnsReplicasFix = 2

// noReadyReplicas reports each cluster DNS Deployment without a ready
// replica, with why its pods are not ready.
func (e *env) noReadyReplicas() []findings.Finding {
	var out []findings.Finding
	for _, d := range e.deployments {
		if d.Status.ReadyReplicas > 0 {
			continue
		}
		want := int32(1)
		if d.Spec.Replicas != nil {
			want = *d.Spec.Replicas
		}
		ev := []string{fmt.Sprintf("spec.replicas=%d status.replicas=%d status.readyReplicas=%d status.availableReplicas=%d",
			want, d.Status.Replicas, d.Status.ReadyReplicas, d.Status.AvailableReplicas)}
		for _, c := range d.Status.Conditions {
			if c.Status != corev1.ConditionTrue {
				ev = append(ev, fmt.Sprintf("condition %s=%s (%s) for %s: %s", c.Type, c.Status, c.Reason,
					evidence.Since(e.s.TakenAt, c.LastTransitionTime), evidence.Short(c.Message)))
			}
		}
		pods := e.deploymentPods(d)
		ev = append(ev, podready.ExplainPods(e.s, pods, 3)...)
		if len(pods) == 0 && want > 0 && e.dnsRead(cluster.ResPods) {
			ev = append(ev, "no pod of the Deployment exists")
			ev = append(ev, e.replicaSetEvents(d)...)
		}
		for _, svc := range e.services {
			ev = append(ev, fmt.Sprintf("as a result Service %s/%s (ClusterIP %s) has no ready endpoint: every lookup from every pod fails", svc.Namespace, svc.Name, svc.Spec.ClusterIP))
		}
		title := fmt.Sprintf("Cluster DNS Deployment %s/%s has 0 of %d replicas ready: name resolution fails cluster-wide", d.Namespace, d.Name, want)
		var rem []findings.Remediation
		if want == 0 {
			title = fmt.Sprintf("Cluster DNS Deployment %s/%s is scaled to 0 replicas: name resolution fails cluster-wide", d.Namespace, d.Name)
			rem = append(rem, findings.Scale(fmt.Sprintf("Scale %s back to %d replicas", d.Name, dnsReplicasFix), "deployment", d.Namespace, d.Name, dnsReplicasFix))
		}
		sel := selectorOf(d)
		rem = append(rem,
			findings.Inspect("See why the DNS pods are not ready", fmt.Sprintf("kubectl describe pods -n %s -l %s", d.Namespace, sel)),
			findings.Inspect("Read the DNS server's own errors (a refused Corefile shows here)", fmt.Sprintf("kubectl logs -n %s -l %s --all-containers --tail=50 --previous", d.Namespace, sel)),
			findings.Inspect("See the Deployment's rollout and events", fmt.Sprintf("kubectl describe deployment %s -n %s", d.Name, d.Namespace)),
		)
		out = append(out, findings.Finding{
			ID: idNoReadyReplicas, Severity: findings.Critical, Area: findings.AreaDNS,
			Object: findings.ObjectRef{Kind: "Deployment", Namespace: d.Namespace, Name: d.Name},
			Title:  title, Evidence: ev,
			Explanation: "Every pod with the default dnsPolicy sends its lookups to the kube-dns Service, which is backed by these replicas. " +
				"With none ready, Service names and external names stop resolving everywhere, which looks like random timeouts in every app. " +
				"Common causes: a Corefile CoreDNS refuses (it crash-loops), a forwarding loop detected by the loop plugin, nodes that are NotReady, or a scale to zero.",
			Remediation: rem,
		})
	}
	return out
}

// selectorOf renders the Deployment's selector for kubectl -l.
func selectorOf(d *appsv1.Deployment) string {
	if d.Spec.Selector == nil {
		return "k8s-app=kube-dns"
	}
	sel, err := metav1.LabelSelectorAsSelector(d.Spec.Selector)
	if err != nil || sel.Empty() {
		return "k8s-app=kube-dns"
	}
	return sel.String()
}

// deploymentPods returns the pods the Deployment's selector matches.
func (e *env) deploymentPods(d *appsv1.Deployment) []*corev1.Pod {
	if d.Spec.Selector == nil || !e.dnsRead(cluster.ResPods) {
		return nil
	}
	sel, err := metav1.LabelSelectorAsSelector(d.Spec.Selector)
	if err != nil {
		return nil
	}
	return e.ix.PodsMatching(d.Namespace, sel)
}

// replicaSetEvents returns the warning events of the Deployment's
// ReplicaSets, which say why pods are not created (quota, admission).
func (e *env) replicaSetEvents(d *appsv1.Deployment) []string {
	var out []string
	for i := range e.s.ReplicaSets {
		rs := &e.s.ReplicaSets[i]
		ref := metav1.GetControllerOf(rs)
		if rs.Namespace != d.Namespace || ref == nil || ref.Kind != "Deployment" || ref.Name != d.Name {
			continue
		}
		for _, ev := range e.ix.EventsFor("ReplicaSet", rs.Namespace, rs.Name) {
			if ev.Type == corev1.EventTypeWarning {
				out = append(out, "ReplicaSet "+rs.Name+" "+evidence.EventLine(e.s.TakenAt, ev))
			}
		}
	}
	if len(out) > 3 {
		out = out[len(out)-3:]
	}
	return out
}

// noEndpoints reports a kube-dns Service with no ready endpoint. When a DNS
// Deployment was already reported without ready replicas, that is the
// cause and this check stays silent; it then catches what is left: a
// selector that misses the DNS pods, EndpointSlices that are not written,
// or no DNS Deployment at all.
func (e *env) noEndpoints(replicasReported bool) []findings.Finding {
	if replicasReported || !e.dnsRead(cluster.ResEndpointSlices) {
		return nil
	}
	var out []findings.Finding
	for _, svc := range e.services {
		slices := e.ix.EndpointSlices(svc.Namespace, svc.Name)
		total, ready := 0, 0
		for _, es := range slices {
			for _, ep := range es.Endpoints {
				total++
				r := ep.Conditions.Ready == nil || *ep.Conditions.Ready
				s := r
				if ep.Conditions.Serving != nil {
					s = *ep.Conditions.Serving
				}
				if r || s {
					ready++
				}
			}
		}
		if ready > 0 {
			continue
		}
		ev := []string{fmt.Sprintf("%d EndpointSlices, %d endpoints, 0 ready or serving", len(slices), total)}
		ev = append(ev, e.selectorEvidence(svc)...)
		title := fmt.Sprintf("Cluster DNS Service %s/%s (ClusterIP %s) has no ready endpoint: name resolution fails cluster-wide", svc.Namespace, svc.Name, svc.Spec.ClusterIP)
		out = append(out, findings.Finding{
			ID: idNoEndpoints, Severity: findings.Critical, Area: findings.AreaDNS,
			Object: findings.ObjectRef{Kind: "Service", Namespace: svc.Namespace, Name: svc.Name},
			Title:  title, Evidence: ev,
			Explanation: "Pods send DNS queries to this Service's ClusterIP (the kubelet writes it into every pod's resolv.conf). " +
				"kube-proxy forwards them only to ready endpoints; with none, every lookup times out. " +
				"When DNS pods are running, the Service selector no longer matches their labels, or the EndpointSlice controller is not writing slices.",
			Remediation: []findings.Remediation{
				findings.Inspect("Compare the Service selector with the DNS pods' labels", fmt.Sprintf("kubectl get service %s -n %s -o jsonpath='{.spec.selector}'; kubectl get pods -n %s --show-labels | grep -Ei 'coredns|kube-dns'", svc.Name, svc.Namespace, svc.Namespace)),
				findings.Inspect("See the endpoints", fmt.Sprintf("kubectl get endpointslices -n %s -l kubernetes.io/service-name=%s -o wide", svc.Namespace, svc.Name)),
			},
		})
	}
	return out
}

// selectorEvidence explains the Service selector against the DNS pods.
func (e *env) selectorEvidence(svc *corev1.Service) []string {
	var out []string
	if len(svc.Spec.Selector) == 0 {
		return []string{"the Service has no selector, so nothing maintains its endpoints"}
	}
	selStr := labels.SelectorFromSet(svc.Spec.Selector).String()
	out = append(out, "spec.selector: "+selStr)
	if !e.dnsRead(cluster.ResPods) {
		return out
	}
	matched := e.ix.PodsMatching(svc.Namespace, labels.SelectorFromSet(svc.Spec.Selector))
	readyMatched := 0
	for _, p := range matched {
		if podready.Ready(p) {
			readyMatched++
		}
	}
	switch {
	case readyMatched > 0:
		out = append(out, fmt.Sprintf("%d ready pods match the selector but no EndpointSlice lists them: the EndpointSlice controller (kube-controller-manager) is not updating slices", readyMatched))
	case len(matched) > 0:
		out = append(out, fmt.Sprintf("%d pods match the selector, none ready", len(matched)))
		out = append(out, podready.ExplainPods(e.s, matched, 2)...)
	default:
		out = append(out, "no pod in kube-system matches the selector")
		for _, d := range e.deployments {
			lbls := labels.Set(d.Spec.Template.Labels)
			out = append(out, fmt.Sprintf("Deployment %s/%s has %d ready replicas whose pods are labelled %s", d.Namespace, d.Name, d.Status.ReadyReplicas, lbls.String()))
		}
		if len(e.deployments) == 0 && (e.s.Namespace == "" || e.s.Namespace == kubeSystem) && e.s.Has(cluster.ResDeployments) {
			out = append(out, "no CoreDNS or kube-dns Deployment exists in kube-system")
		}
	}
	return out
}
