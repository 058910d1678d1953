package operations

import (
	"fmt"
	"maps"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"

	"github.com/kdiag/kdiag/pkg/analyze/internal/evidence"
	"github.com/kdiag/kdiag/pkg/cluster"
	"github.com/kdiag/kdiag/pkg/findings"
	"github.com/kdiag/kdiag/pkg/pdb"
)

// blockedPod is a pod the eviction API would refuse because of one budget.
type blockedPod struct {
	pod     *corev1.Pod
	verdict pdb.Verdict
}

// pdbBlocks reports budgets whose status lets no pod go: any drain of a
// node running one of their pods stalls until it times out.
func (a *analysis) pdbBlocks() []findings.Finding {
	var out []findings.Finding
	for _, p := range a.pdbs {
		var f findings.Finding
		var ok bool
		if a.podsKnown(p.Namespace) {
			f, ok = a.pdbBlocksOne(p)
		} else {
			f, ok = a.pdbBlocksFromStatus(p)
		}
		if ok {
			out = append(out, f)
		}
	}
	return out
}

// blocksEvictions reports whether the eviction API currently refuses to
// evict healthy pods under this budget: no disruption allowed, or a status
// older than the spec.
func blocksEvictions(p *policyv1.PodDisruptionBudget) bool {
	return p.Status.DisruptionsAllowed <= 0 || p.Status.ObservedGeneration < p.Generation
}

func (a *analysis) pdbBlocksOne(p *policyv1.PodDisruptionBudget) (findings.Finding, bool) {
	pods := a.cov.PodsOf(p)
	if len(pods) == 0 || !blocksEvictions(p) {
		return findings.Finding{}, false // no pods: pdb-no-matching-pods says so
	}
	b := a.budget(p)
	reasons := b.Reasons()
	st := p.Status
	stale := st.ObservedGeneration < p.Generation

	// Which pods would the eviction API refuse because of this budget, and
	// on which nodes would a drain therefore stall?
	var blocked []blockedPod
	stallNodes := map[string][]string{}
	daemonOnly := 0
	for _, pod := range pods {
		v := pdb.Evict(pod, a.cov.PDBsOf(pod))
		if v.Allowed || v.PDB != p {
			continue
		}
		blocked = append(blocked, blockedPod{pod, v})
		switch {
		case pod.Spec.NodeName == "":
		case isDaemonOrMirror(pod):
			daemonOnly++
		default:
			stallNodes[pod.Spec.NodeName] = append(stallNodes[pod.Spec.NodeName], pod.Name)
		}
	}
	nodes := slices.Sorted(maps.Keys(stallNodes))

	sev := findings.Warning
	var where string
	switch {
	case len(nodes) == 1:
		sev, where = findings.Critical, "draining node "+nodes[0]+" will stall"
	case len(nodes) > 1:
		sev, where = findings.Critical, "draining nodes "+evidence.Join(nodes)+" will stall"
	case daemonOnly > 0:
		where = "its pods belong to DaemonSets or are mirror pods, which drains skip, so drains do not stall yet"
	case len(blocked) == 0:
		where = "no selected pod is evictable-but-refused right now (they are Pending, finished or unready with AlwaysAllow)"
	default:
		where = "its pods are not scheduled yet; drains will stall once they run"
	}

	title := fmt.Sprintf("PodDisruptionBudget %s allows 0 disruptions: %s%s; %s",
		ref(p.Namespace, p.Name), cause(p, b, reasons), ownersPhrase(b), where)

	ev := []string{specLine(p, len(pods)), statusLine(p)}
	if c := conditionLine(a.now, p); c != "" {
		ev = append(ev, c)
	}
	ev = append(ev, computedLine(p, b))
	if stale {
		ev = append(ev, fmt.Sprintf("status is stale: status.observedGeneration=%d < metadata.generation=%d; the eviction API answers 429 \"still being processed\" for every pod until the disruption controller in kube-controller-manager catches up",
			st.ObservedGeneration, p.Generation))
	}
	ev = append(ev, ownerLines(p.Namespace, b)...)
	ev = append(ev, whyLines(p, b, reasons)...)
	if len(blocked) > 0 {
		names := make([]string, len(blocked))
		for i, bp := range blocked {
			names[i] = podOnNode(bp.pod)
		}
		ev = append(ev, fmt.Sprintf("the eviction API would refuse %s: %s (HTTP %d: %s)",
			evidence.Plural(len(blocked), "pod"), evidence.Join(names), blocked[0].verdict.Code, evidence.Short(blocked[0].verdict.Message)))
	}
	if len(nodes) > 0 {
		parts := make([]string, len(nodes))
		for i, n := range nodes {
			parts[i] = fmt.Sprintf("%s (%s)", n, strings.Join(stallNodes[n], ", "))
		}
		ev = append(ev, "drains, upgrades and scale-downs that will stall: node "+evidence.Join(parts))
	}
	ev = append(ev, a.pdbEventLines(p)...)

	return findings.Finding{
		ID: idPDBBlocks, Severity: sev, Area: findings.AreaOperations,
		Object:      findings.ObjectRef{Kind: "PodDisruptionBudget", Namespace: p.Namespace, Name: p.Name},
		Title:       title,
		Evidence:    ev,
		Explanation: explain(reasons, stale, b),
		Remediation: a.pdbRemediation(p, b, reasons, nodes),
	}, true
}

// pdbBlocksFromStatus reports a blocking budget from its status alone when
// the pods of its namespace could not be read: the status is the API
// server's own account, but kdiag cannot name the workload or the nodes.
func (a *analysis) pdbBlocksFromStatus(p *policyv1.PodDisruptionBudget) (findings.Finding, bool) {
	st := p.Status
	if st.ExpectedPods <= 0 || !blocksEvictions(p) {
		return findings.Finding{}, false
	}
	ev := []string{specLine(p, -1), statusLine(p)}
	if c := conditionLine(a.now, p); c != "" {
		ev = append(ev, c)
	}
	ev = append(ev, fmt.Sprintf("pods in namespace %s were not read, so kdiag cannot check the status, name the workload or say which nodes' drains stall", p.Namespace))
	return findings.Finding{
		ID: idPDBBlocks, Severity: findings.Warning, Area: findings.AreaOperations,
		Object: findings.ObjectRef{Kind: "PodDisruptionBudget", Namespace: p.Namespace, Name: p.Name},
		Title: fmt.Sprintf("PodDisruptionBudget %s allows 0 disruptions (status: %d of %d expected pods healthy, %d needed); drains of its pods' nodes will stall",
			ref(p.Namespace, p.Name), st.CurrentHealthy, st.ExpectedPods, st.DesiredHealthy),
		Evidence: ev,
		Explanation: "The eviction API refuses to evict a pod whose PodDisruptionBudget allows no disruption, and kubectl drain, " +
			"cluster-autoscaler and managed node-pool upgrades all evict through it, so they retry until they time out.",
		Remediation: []findings.Remediation{
			findings.Inspect("Show the budget and its status", fmt.Sprintf("kubectl get pdb %s -n %s -o yaml", p.Name, p.Namespace)),
			findings.Inspect("List the pods it selects, with their nodes", fmt.Sprintf("kubectl get pods -n %s%s -o wide", p.Namespace, selectorFlag(p))),
		},
	}, true
}

// cause is the short reason for the title.
func cause(p *policyv1.PodDisruptionBudget, b pdb.Budget, reasons []pdb.Reason) string {
	st := p.Status
	switch {
	case len(reasons) == 0 && st.ObservedGeneration < p.Generation:
		return fmt.Sprintf("its status is stale (status.observedGeneration=%d < metadata.generation=%d)", st.ObservedGeneration, p.Generation)
	case len(reasons) == 0:
		return fmt.Sprintf("status.disruptionsAllowed=%d although its %d healthy pods would allow %d (status not updated)",
			st.DisruptionsAllowed, b.CurrentHealthy, b.DisruptionsAllowed)
	}
	switch reasons[0] {
	case pdb.ReasonSyncFailed:
		return pdb.SpecString(p) + " cannot be computed by the disruption controller (SyncFailed)"
	case pdb.ReasonNoBudget:
		return "neither minAvailable nor maxUnavailable is set"
	case pdb.ReasonNoExpectedPods:
		return fmt.Sprintf("%s counts 0 expected pods for its %s", pdb.SpecString(p), evidence.Plural(len(b.Members), "pod"))
	case pdb.ReasonMaxUnavailableZero:
		return pdb.SpecString(p) + " forbids every eviction"
	case pdb.ReasonMinAvailableAtLeastExpected:
		return fmt.Sprintf("%s needs %d healthy of %d expected %s", pdb.SpecString(p), b.DesiredHealthy, b.ExpectedPods, evidence.Word(int(b.ExpectedPods), "pod", "pods"))
	default: // ReasonUnhealthyPods alone
		return fmt.Sprintf("only %d of %d expected pods are healthy and %s needs %d", b.CurrentHealthy, b.ExpectedPods, pdb.SpecString(p), b.DesiredHealthy)
	}
}

// ownersPhrase renders " (Deployment nginx, 1 replica)" for the title.
func ownersPhrase(b pdb.Budget) string {
	var parts []string
	for _, c := range b.Controllers {
		if c.Scale == pdb.ScaleKnown {
			parts = append(parts, fmt.Sprintf("%s %s, %s", c.Kind, c.Name, evidence.Plural(int(c.Replicas), "replica")))
		} else {
			parts = append(parts, c.Kind+" "+c.Name)
		}
	}
	if n := len(b.Unmanaged); n > 0 {
		parts = append(parts, evidence.Plural(n, "bare pod"))
	}
	if len(parts) == 0 {
		return ""
	}
	return " (" + evidence.Join(parts) + ")"
}

func specLine(p *policyv1.PodDisruptionBudget, pods int) string {
	sel := pdb.SelectorString(p)
	switch sel {
	case "":
		sel = "{} (every pod of the namespace)"
	case "<none>":
		sel = "null (no pod)"
	}
	line := fmt.Sprintf("spec: %s; selector %s", pdb.SpecString(p), sel)
	if pods >= 0 {
		line += " selects " + evidence.Plural(pods, "pod")
	}
	if pol := p.Spec.UnhealthyPodEvictionPolicy; pol != nil {
		line += "; unhealthyPodEvictionPolicy=" + string(*pol)
	} else {
		line += "; unhealthyPodEvictionPolicy unset (IfHealthyBudget)"
	}
	return line
}

func statusLine(p *policyv1.PodDisruptionBudget) string {
	st := p.Status
	return fmt.Sprintf("status: disruptionsAllowed=%d currentHealthy=%d desiredHealthy=%d expectedPods=%d observedGeneration=%d (metadata.generation=%d)",
		st.DisruptionsAllowed, st.CurrentHealthy, st.DesiredHealthy, st.ExpectedPods, st.ObservedGeneration, p.Generation)
}

// computedLine cross-checks the status with kdiag's own computation.
func computedLine(p *policyv1.PodDisruptionBudget, b pdb.Budget) string {
	if b.SyncError != "" {
		return "computed by kdiag: the disruption controller cannot compute this budget (" + evidence.Short(b.SyncError) +
			") and fails safe to disruptionsAllowed=0"
	}
	line := fmt.Sprintf("computed by kdiag from the spec and %s: expectedPods=%d desiredHealthy=%d currentHealthy=%d disruptionsAllowed=%d",
		evidence.Plural(len(b.Members), "selected pod"), b.ExpectedPods, b.DesiredHealthy, b.CurrentHealthy, b.DisruptionsAllowed)
	st := p.Status
	switch {
	case b.Indeterminate:
		line += " (approximate: a controller's scale is not in the snapshot)"
	case st.ExpectedPods == b.ExpectedPods && st.DesiredHealthy == b.DesiredHealthy &&
		st.CurrentHealthy == b.CurrentHealthy && st.DisruptionsAllowed == b.DisruptionsAllowed:
		line += " (matches the status)"
	default:
		line += " (differs from the status, which lags behind the pods or the spec)"
	}
	return line
}

func ownerLines(ns string, b pdb.Budget) []string {
	var out []string
	for _, c := range b.Controllers {
		n := 0
		for _, m := range b.Members {
			if m.Managed && m.Controller.Kind == c.Kind && m.Controller.Name == c.Name {
				n++
			}
		}
		line := fmt.Sprintf("owner: %s %s", c.Kind, ref(ns, c.Name))
		switch c.Scale {
		case pdb.ScaleKnown:
			line += fmt.Sprintf(" spec.replicas=%d", c.Replicas)
		case pdb.ScaleUnsupported:
			line += " (no scale subresource)"
		case pdb.ScaleNotFound:
			line += " (not found: deleted or replaced)"
		case pdb.ScaleUnknown:
			line += " (replicas not read)"
		}
		out = append(out, fmt.Sprintf("%s, %s selected", line, evidence.Plural(n, "pod")))
	}
	if len(b.Unmanaged) > 0 {
		names := make([]string, len(b.Unmanaged))
		for i, p := range b.Unmanaged {
			names[i] = p.Name
		}
		out = append(out, fmt.Sprintf("%s without a controller: %s", evidence.Plural(len(names), "selected pod"), evidence.Join(names)))
	}
	return out
}

func whyLines(p *policyv1.PodDisruptionBudget, b pdb.Budget, reasons []pdb.Reason) []string {
	var out []string
	for _, r := range reasons {
		switch r {
		case pdb.ReasonMinAvailableAtLeastExpected:
			out = append(out, fmt.Sprintf("why: %s means desiredHealthy=%d >= expectedPods=%d, so evicting any pod would break the budget", pdb.SpecString(p), b.DesiredHealthy, b.ExpectedPods))
		case pdb.ReasonMaxUnavailableZero:
			out = append(out, fmt.Sprintf("why: %s allows no pod to be unavailable; this is usually a deliberate \"never evict\"", pdb.SpecString(p)))
		case pdb.ReasonNoBudget:
			out = append(out, "why: neither spec.minAvailable nor spec.maxUnavailable is set, so the disruption controller expects 0 pods and allows nothing")
		case pdb.ReasonSyncFailed:
			out = append(out, "why: "+b.SyncError+"; percentages and maxUnavailable need every selected pod's controller to have a scale subresource")
		case pdb.ReasonNoExpectedPods:
			out = append(out, fmt.Sprintf("why: with %s the expected pods are the replicas of the pods' controllers, which sum to 0 here (bare pods count for nothing; the disruption controller emits UnmanagedPods)", pdb.SpecString(p)))
		case pdb.ReasonUnhealthyPods:
			var names []string
			for _, m := range b.UnhealthyMembers() {
				names = append(names, fmt.Sprintf("%s (%s)", podOnNode(m.Pod), podState(m)))
			}
			line := fmt.Sprintf("why: currentHealthy=%d <= desiredHealthy=%d", b.CurrentHealthy, b.DesiredHealthy)
			if len(names) > 0 {
				line += "; not healthy: " + evidence.Join(names)
			}
			if m := b.Missing(); m > 0 {
				line += fmt.Sprintf("; %s expected but missing", evidence.Plural(int(m), "pod"))
			}
			out = append(out, line)
		}
	}
	return out
}

// pdbEventLines quotes the budget's own Warning events (for example the
// disruption controller's CalculateExpectedPodCountFailed or UnmanagedPods).
func (a *analysis) pdbEventLines(p *policyv1.PodDisruptionBudget) []string {
	if evidence.Gapped(a.s, cluster.ResEvents, p.Namespace) {
		return nil
	}
	return evidence.LatestLines(a.now, a.ix.EventsFor("PodDisruptionBudget", p.Namespace, p.Name), 3, evidence.IsWarning)
}

func explain(reasons []pdb.Reason, stale bool, b pdb.Budget) string {
	parts := []string{"The eviction API refuses to evict a pod whose PodDisruptionBudget allows no disruption, and kubectl drain, " +
		"cluster-autoscaler, Karpenter and managed node-pool upgrades (AKS, GKE, EKS) all evict through it: they retry until they " +
		"time out and the node operation fails, while the cluster itself looks healthy."}
	for _, r := range reasons {
		switch r {
		case pdb.ReasonMinAvailableAtLeastExpected:
			parts = append(parts, "Here minAvailable asks for every expected pod to stay up, which no drain can honour; the usual cause is a single-replica Deployment that a chart gave a minAvailable: 1 budget.")
		case pdb.ReasonMaxUnavailableZero:
			parts = append(parts, "maxUnavailable: 0 is usually intentional (a singleton database or a quorum member that must be moved by hand); if so, move these pods yourself before every node operation, or accept one disruption at a time.")
		case pdb.ReasonUnhealthyPods:
			parts = append(parts, "Some expected pods are not healthy, so the budget is already spent; under the default IfHealthyBudget policy even the unready pods cannot be evicted.")
		case pdb.ReasonSyncFailed:
			parts = append(parts, "The disruption controller cannot compute this budget, so it fails safe to zero: percentages and maxUnavailable need controllers with a scale subresource, which DaemonSets, Jobs and bare pods lack.")
		case pdb.ReasonNoBudget:
			parts = append(parts, "A budget with neither minAvailable nor maxUnavailable expects zero pods and therefore never allows a disruption.")
		case pdb.ReasonNoExpectedPods:
			parts = append(parts, "Its expected pods come from the pods' controllers, and here they sum to zero (bare pods, or controllers scaled to 0), so nothing may be disrupted.")
		}
	}
	if stale {
		parts = append(parts, "Its status is also older than its spec: until the disruption controller in kube-controller-manager processes it, every eviction is refused.")
	} else if len(reasons) == 0 && b.SyncError == "" {
		parts = append(parts, "kdiag computes that the pods would allow a disruption, so the status is lagging: check that kube-controller-manager (its disruption controller) is running.")
	}
	return strings.Join(parts, " ")
}

// pdbRemediation builds the commands: look, scale the workload, relax the
// budget, then re-check the drain.
func (a *analysis) pdbRemediation(p *policyv1.PodDisruptionBudget, b pdb.Budget, reasons []pdb.Reason, nodes []string) []findings.Remediation {
	rem := []findings.Remediation{
		findings.Inspect("Show the budget and its status", fmt.Sprintf("kubectl get pdb %s -n %s -o yaml", p.Name, p.Namespace)),
		findings.Inspect("List the pods it selects, with their nodes", fmt.Sprintf("kubectl get pods -n %s%s -o wide", p.Namespace, selectorFlag(p))),
	}
	if r, ok := pdb.ScaleRemediation(p, b, reasons); ok {
		rem = append(rem, r)
	}
	if r, ok := pdb.RelaxRemediation(p, b); ok {
		rem = append(rem, r)
	}
	if pdb.Has(reasons, pdb.ReasonUnhealthyPods) {
		var names []string
		for _, m := range b.UnhealthyMembers() {
			names = append(names, m.Pod.Name)
		}
		if len(names) > 0 {
			if len(names) > evidence.MaxListed {
				names = names[:evidence.MaxListed]
			}
			rem = append(rem, findings.Inspect("See why the pods are not healthy", fmt.Sprintf("kubectl describe pods -n %s %s", p.Namespace, strings.Join(names, " "))))
		}
	}
	if p.Status.ObservedGeneration < p.Generation || len(reasons) == 0 {
		rem = append(rem, findings.Inspect("See the disruption controller's events for the budget",
			fmt.Sprintf("kubectl get events -n %s --field-selector involvedObject.kind=PodDisruptionBudget,involvedObject.name=%s", p.Namespace, p.Name)))
	}
	if len(nodes) > 0 {
		rem = append(rem, findings.Inspect("After the fix, check that a drain would pass (server-side dry run: nothing is cordoned or evicted)",
			fmt.Sprintf("kubectl drain %s --ignore-daemonsets --delete-emptydir-data --dry-run=server", nodes[0])))
	}
	return rem
}
