package pdb

import (
	"errors"
	"fmt"
	"strings"

	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/validation"
)

// maxScaleSearch bounds the search for a replica count above the current
// one; a budget that needs more is better relaxed than scaled.
const maxScaleSearch = 10000

// ReplicasForOneDisruption returns the smallest replica count of controller
// c at which the budget would allow at least one disruption, assuming every
// pod of c is then healthy and the budget's other pods stay as they are.
// For minAvailable: 1 over one replica it is 2. The result may be at or
// below c's current replicas: then scaling is not the fix, the unhealthy
// pods are. It returns false when no count works (maxUnavailable 0,
// minAvailable 100%, no budget) or the budget cannot be computed (sync
// error, unknown scale, c not a known-scale controller).
func ReplicasForOneDisruption(p *policyv1.PodDisruptionBudget, b Budget, c Controller) (int32, bool) {
	if c.Scale != ScaleKnown || b.SyncError != "" || b.Indeterminate || b.Mode == ModeNone {
		return 0, false
	}
	var otherPods, otherHealthy, otherScale int32
	for _, m := range b.Members {
		if m.Managed && m.Controller.same(c) {
			continue
		}
		otherPods++
		if m.Healthy {
			otherHealthy++
		}
	}
	for _, o := range b.Controllers {
		if !o.same(c) && o.Scale == ScaleKnown {
			otherScale += o.Replicas
		}
	}
	works := func(n int32) bool {
		var expected, desired int32
		switch b.Mode {
		case ModeMinAvailableInt:
			expected, desired = otherPods+n, p.Spec.MinAvailable.IntVal
		case ModeMinAvailablePercent:
			expected = otherScale + n
			v, err := intstr.GetScaledValueFromIntOrPercent(p.Spec.MinAvailable, int(expected), true)
			if err != nil {
				return false
			}
			desired = int32(v)
		case ModeMaxUnavailable:
			expected = otherScale + n
			v, err := intstr.GetScaledValueFromIntOrPercent(p.Spec.MaxUnavailable, int(expected), true)
			if err != nil {
				return false
			}
			desired = max(expected-int32(v), 0)
		}
		return allowed(otherHealthy+n, desired, expected) >= 1
	}
	start := int32(1)
	if b.Mode == ModeMinAvailableInt {
		// Closed form: otherHealthy + n - minAvailable >= 1.
		start = max(1, p.Spec.MinAvailable.IntVal+1-otherHealthy)
	}
	for n := start; n <= c.Replicas+maxScaleSearch; n++ {
		if works(n) {
			return n, true
		}
	}
	return 0, false
}

// Relaxation is a JSON merge patch to a budget's spec that allows one
// disruption while keeping as much protection as it can.
type Relaxation struct {
	// Patch is the merge patch body, {"spec": {...}}. A field set to nil
	// is removed (JSON null), which is how a patch switches a budget from
	// minAvailable to maxUnavailable: the two may not both be set.
	Patch map[string]any
	// Spec is the budget's spec after the patch; it passes ValidateSpec.
	Spec policyv1.PodDisruptionBudgetSpec
	// Changes lists the changes in words, e.g. "minAvailable 3 -> 2".
	Changes []string
	// TradeOff says what the change gives up, for the remediation's
	// description.
	TradeOff string
	// After is the budget recomputed with the new spec and the same pods.
	After Budget
	// UnreadyEvictable is true when the patch sets
	// unhealthyPodEvictionPolicy: AlwaysAllow, so pods that are not Ready
	// can be evicted whatever the budget says.
	UnreadyEvictable bool
}

// Relax proposes the smallest change to the budget's spec that lets a drain
// proceed, given why it allows nothing (b.Reasons()):
//   - minAvailable at least the expected pods: minAvailable expected-1 when
//     there are 2 or more (a percentage stays a percentage), else
//     maxUnavailable 1 in place of minAvailable;
//   - maxUnavailable 0: maxUnavailable 1;
//   - no minAvailable nor maxUnavailable: maxUnavailable 1;
//   - a percentage or maxUnavailable budget that the controller cannot
//     compute (pods of a DaemonSet, Job or no controller): an integer
//     minAvailable of the selected pods minus one, which the controller
//     counts directly;
//   - unhealthy pods: unhealthyPodEvictionPolicy AlwaysAllow in addition.
//
// It returns false when no change to the budget helps (the pods are
// unhealthy and the policy is already AlwaysAllow, or the selector matches
// nothing).
func Relax(p *policyv1.PodDisruptionBudget, b Budget) (Relaxation, bool) {
	reasons := b.Reasons()
	if len(reasons) == 0 || Has(reasons, ReasonNoPods) {
		return Relaxation{}, false
	}
	r := Relaxation{Spec: *p.Spec.DeepCopy()}
	spec := map[string]any{}
	setMaxUnavailableOne := func() {
		one := intstr.FromInt32(1)
		r.Spec.MaxUnavailable = &one
		spec["maxUnavailable"] = 1
		if p.Spec.MinAvailable != nil {
			r.Spec.MinAvailable = nil
			spec["minAvailable"] = nil
			r.Changes = append(r.Changes, fmt.Sprintf("minAvailable %s -> maxUnavailable 1", p.Spec.MinAvailable.String()))
		} else {
			r.Changes = append(r.Changes, fmt.Sprintf("maxUnavailable %s -> 1", orUnset(p.Spec.MaxUnavailable)))
		}
	}
	setMinAvailableInt := func(n int32) {
		v := intstr.FromInt32(n)
		r.Spec.MinAvailable = &v
		spec["minAvailable"] = n
		if p.Spec.MaxUnavailable != nil {
			r.Spec.MaxUnavailable = nil
			spec["maxUnavailable"] = nil
			r.Changes = append(r.Changes, fmt.Sprintf("maxUnavailable %s -> minAvailable %d", p.Spec.MaxUnavailable.String(), n))
		} else {
			r.Changes = append(r.Changes, fmt.Sprintf("minAvailable %s -> %d", orUnset(p.Spec.MinAvailable), n))
		}
	}
	var tradeOffs []string
	pods := int32(len(b.Members))
	switch {
	case Has(reasons, ReasonSyncFailed) || Has(reasons, ReasonNoExpectedPods):
		if !b.scaleProblem() {
			return Relaxation{}, false
		}
		setMinAvailableInt(max(pods-1, 0))
		tradeOffs = append(tradeOffs, "an integer minAvailable is counted against the selected pods directly, so it works for pods whose controller has no scale (DaemonSet, Job) or that have none; it no longer follows the workload's replica count")
		if pods <= 1 {
			tradeOffs = append(tradeOffs, "with a single pod, minAvailable 0 protects nothing: any drain takes it down")
		}
	case Has(reasons, ReasonNoBudget):
		setMaxUnavailableOne()
		tradeOffs = append(tradeOffs, "maxUnavailable 1 lets drains evict one selected pod at a time")
	case Has(reasons, ReasonMaxUnavailableZero):
		setMaxUnavailableOne()
		tradeOffs = append(tradeOffs, "maxUnavailable 0 is usually a deliberate \"never evict\" (a singleton database, a quorum member); with 1, drains may take one pod at a time, so make sure the workload tolerates it")
	case Has(reasons, ReasonMinAvailableAtLeastExpected):
		e := b.ExpectedPods
		switch {
		case e >= 2 && b.Mode == ModeMinAvailablePercent:
			pct := (e - 1) * 100 / e
			v := intstr.FromString(fmt.Sprintf("%d%%", pct))
			r.Spec.MinAvailable = &v
			spec["minAvailable"] = v.StrVal
			r.Changes = append(r.Changes, fmt.Sprintf("minAvailable %s -> %s", p.Spec.MinAvailable.String(), v.StrVal))
			tradeOffs = append(tradeOffs, fmt.Sprintf("%s of %d expected pods keeps %d up during a drain", v.StrVal, e, e-1))
		case e >= 2:
			setMinAvailableInt(e - 1)
			tradeOffs = append(tradeOffs, fmt.Sprintf("keeps %d of %d pods up during a drain; unlike maxUnavailable 1 it does not follow later scaling", e-1, e))
		default:
			setMaxUnavailableOne()
			tradeOffs = append(tradeOffs, "with a single replica any eviction is an outage while the pod is rescheduled; prefer adding a replica first and keep the budget")
		}
	}
	if Has(reasons, ReasonUnhealthyPods) && !alwaysAllow(p) {
		pol := policyv1.AlwaysAllow
		r.Spec.UnhealthyPodEvictionPolicy = &pol
		spec["unhealthyPodEvictionPolicy"] = string(pol)
		r.UnreadyEvictable = true
		r.Changes = append(r.Changes, "unhealthyPodEvictionPolicy -> AlwaysAllow")
		tradeOffs = append(tradeOffs, "AlwaysAllow lets drains evict pods that are not Ready (they serve nothing) while Ready pods stay protected")
	}
	if len(spec) == 0 {
		return Relaxation{}, false
	}
	if err := ValidateSpec(r.Spec); err != nil {
		// Never propose a budget the API server would reject.
		return Relaxation{}, false
	}
	r.Patch = map[string]any{"spec": spec}
	r.TradeOff = strings.Join(tradeOffs, "; ")
	np := p.DeepCopy()
	np.Spec = r.Spec
	r.After = computeMembers(np, b.Members)
	return r, true
}

// scaleProblem reports whether the budget fails because its pods' expected
// count cannot come from a scale: unsupported or missing controllers, or
// only unmanaged pods.
func (b Budget) scaleProblem() bool {
	if !b.Mode.usesScale() {
		return false
	}
	if b.ExpectedPods <= 0 && b.SyncError == "" && len(b.Unmanaged) > 0 {
		return true
	}
	for _, m := range b.Members {
		if m.Managed && (m.Controller.Scale == ScaleUnsupported || m.Controller.Scale == ScaleNotFound) {
			return true
		}
	}
	return false
}

func alwaysAllow(p *policyv1.PodDisruptionBudget) bool {
	return p.Spec.UnhealthyPodEvictionPolicy != nil && *p.Spec.UnhealthyPodEvictionPolicy == policyv1.AlwaysAllow
}

func orUnset(v *intstr.IntOrString) string {
	if v == nil {
		return "unset"
	}
	return v.String()
}

// ValidateSpec checks the rules the API server applies to a budget's size
// fields (ValidatePodDisruptionBudgetSpec in k8s.io/kubernetes
// pkg/apis/policy/validation): minAvailable and maxUnavailable not both
// set, each a non-negative integer or a percentage of at most 100%, and a
// known unhealthyPodEvictionPolicy. The selector is not checked.
// Re-implemented because that package lives in k8s.io/kubernetes, which kdiag
// does not import; the rules are short and stable.
func ValidateSpec(spec policyv1.PodDisruptionBudgetSpec) error {
	var errs []error
	if spec.MinAvailable != nil && spec.MaxUnavailable != nil {
		errs = append(errs, errors.New("minAvailable and maxUnavailable cannot be both set"))
	}
	for name, v := range map[string]*intstr.IntOrString{"minAvailable": spec.MinAvailable, "maxUnavailable": spec.MaxUnavailable} {
		if v == nil {
			continue
		}
		if err := validIntOrPercent(v); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", name, err))
		}
	}
	if pol := spec.UnhealthyPodEvictionPolicy; pol != nil && *pol != policyv1.IfHealthyBudget && *pol != policyv1.AlwaysAllow {
		errs = append(errs, fmt.Errorf("unhealthyPodEvictionPolicy: unsupported value %q", *pol))
	}
	return errors.Join(errs...)
}

func validIntOrPercent(v *intstr.IntOrString) error {
	switch v.Type {
	case intstr.Int:
		if v.IntVal < 0 {
			return fmt.Errorf("must be greater than or equal to 0, got %d", v.IntVal)
		}
	case intstr.String:
		if msgs := validation.IsValidPercent(v.StrVal); len(msgs) > 0 {
			return fmt.Errorf("%q: %s", v.StrVal, strings.Join(msgs, "; "))
		}
		n, err := intstr.GetScaledValueFromIntOrPercent(v, 100, false)
		if err != nil {
			return fmt.Errorf("%q: %w", v.StrVal, err)
		}
		if n > 100 {
			return fmt.Errorf("%q must not be greater than 100%%", v.StrVal)
		}
	default:
		return errors.New("must be an integer or percentage")
	}
	return nil
}
