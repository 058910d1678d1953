package pdb

import (
	"fmt"
	"strings"

	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"

	"github.com/kdiag/kdiag/pkg/findings"
)

// GVR returns the resource that budget remediations patch.
func GVR() schema.GroupVersionResource {
	return schema.GroupVersionResource{Group: "policy", Version: "v1", Resource: "poddisruptionbudgets"}
}

// ScaleRemediation proposes scaling the budget's only workload to the
// smallest replica count that lets the budget allow one disruption, when
// the spec (minAvailable at least the expected pods), not unhealthy pods,
// is the cause. `kdiag doctor` (pdb-blocks-disruption) and `kdiag drain
// check` both use it. The remediation is mutating; verify it with
// findings.Verifier.
func ScaleRemediation(p *policyv1.PodDisruptionBudget, b Budget, reasons []Reason) (findings.Remediation, bool) {
	if !Has(reasons, ReasonMinAvailableAtLeastExpected) || len(b.Controllers) != 1 {
		return findings.Remediation{}, false
	}
	c := b.Controllers[0]
	n, ok := ReplicasForOneDisruption(p, b, c)
	if !ok || n <= c.Replicas {
		return findings.Remediation{}, false
	}
	return ScaleTo(p, c, n)
}

// ScaleTo builds the remediation that scales controller c of the budget's
// pods to n replicas, with the caveats the description must carry. It
// returns false for kinds `kubectl scale` cannot scale.
func ScaleTo(p *policyv1.PodDisruptionBudget, c Controller, n int32) (findings.Remediation, bool) {
	var kind string
	switch c.Kind {
	case "Deployment":
		kind = "deployment"
	case "StatefulSet":
		kind = "statefulset"
	case "ReplicaSet":
		kind = "replicaset"
	default:
		return findings.Remediation{}, false
	}
	desc := fmt.Sprintf("Add replicas: scale %s %s/%s from %d to %d so that %s leaves one pod free to evict, once the new pods are Ready. "+
		"Spread them over nodes (topologySpreadConstraints or pod anti-affinity) or a drain may still find them together. "+
		"If a HorizontalPodAutoscaler manages it, raise its minReplicas instead; if Helm or GitOps manages it, change replicas there",
		c.Kind, p.Namespace, c.Name, c.Replicas, n, SpecString(p))
	if c.Kind == "StatefulSet" {
		desc += ". Each new StatefulSet replica gets its own identity and PersistentVolumeClaim"
	}
	return findings.Scale(desc, kind, p.Namespace, c.Name, n), true
}

// RelaxRemediation turns Relax's proposal into a `kubectl patch` of the
// budget, with its trade-off in the description.
func RelaxRemediation(p *policyv1.PodDisruptionBudget, b Budget) (findings.Remediation, bool) {
	r, ok := Relax(p, b)
	if !ok {
		return findings.Remediation{}, false
	}
	desc := fmt.Sprintf("Relax the budget (%s): %s", strings.Join(r.Changes, ", "), r.TradeOff)
	switch {
	case r.After.DisruptionsAllowed >= 1:
		desc += fmt.Sprintf(". With the current pods it then allows %s", plural(int(r.After.DisruptionsAllowed), "disruption"))
	case r.UnreadyEvictable:
		desc += ". Drains can then evict the unready pods; Ready ones stay protected until the others recover"
	}
	desc += ". If Helm or GitOps manages the budget, change it there too or it will be reverted"
	return findings.MustPatch(desc, GVR(), "pdb", p.Namespace, p.Name, types.MergePatchType, r.Patch), true
}

// AllowDisruptions proposes the change to a budget that lets k pods go at
// once while keeping at least one selected pod up where it can, for a
// rolling drain that spends the budget pod after pod: an integer
// minAvailable becomes currentHealthy-k, anything else maxUnavailable k.
// It returns the merge patch, the change in words and whether the service
// stays up (at least one healthy pod left).
func AllowDisruptions(p *policyv1.PodDisruptionBudget, b Budget, k int32) (patch map[string]any, change string, keepsUp bool) {
	if k < 1 {
		k = 1
	}
	spec := map[string]any{}
	if ModeOf(p) == ModeMinAvailableInt {
		n := max(b.CurrentHealthy-k, 0)
		spec["minAvailable"] = n
		change = fmt.Sprintf("minAvailable %s -> %d", p.Spec.MinAvailable.String(), n)
		keepsUp = n >= 1
	} else {
		spec["maxUnavailable"] = k
		if p.Spec.MinAvailable != nil {
			spec["minAvailable"] = nil
			change = fmt.Sprintf("minAvailable %s -> maxUnavailable %d", p.Spec.MinAvailable.String(), k)
		} else {
			change = fmt.Sprintf("maxUnavailable %s -> %d", orUnset(p.Spec.MaxUnavailable), k)
		}
		keepsUp = b.ExpectedPods-k >= 1
	}
	return map[string]any{"spec": spec}, change, keepsUp
}

// AlwaysAllowRemediation sets unhealthyPodEvictionPolicy: AlwaysAllow, so
// that pods that are not Ready can be evicted whatever the budget says; false
// when the budget already has it.
func AlwaysAllowRemediation(p *policyv1.PodDisruptionBudget) (findings.Remediation, bool) {
	if alwaysAllow(p) {
		return findings.Remediation{}, false
	}
	return findings.MustPatch("Let drains evict pods that are not Ready (unhealthyPodEvictionPolicy: AlwaysAllow): they serve nothing, and Ready pods stay protected by the budget",
		GVR(), "pdb", p.Namespace, p.Name, types.MergePatchType,
		map[string]any{"spec": map[string]any{"unhealthyPodEvictionPolicy": string(policyv1.AlwaysAllow)}}), true
}

func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}
