package pdb

import (
	"fmt"
	"sort"
	"time"

	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// DeletionTimeout is how long the disruption controller keeps counting a
// pod named in status.disruptedPods as about to go (and so not healthy)
// after the eviction API admitted its eviction. Same value as
// k8s.io/kubernetes/pkg/controller/disruption.DeletionTimeout.
const DeletionTimeout = 2 * time.Minute

// ScaleState says what is known about a controller's scale.
type ScaleState string

// What a ControllerFunc can say about a pod's controller.
const (
	// ScaleKnown means Replicas is the controller's desired replica count.
	ScaleKnown ScaleState = "Known"
	// ScaleUnsupported means the controller's kind has no scale
	// subresource (DaemonSet, Job, a mirror pod's Node): the disruption
	// controller fails to sync a percentage or maxUnavailable budget over
	// its pods and fails safe to 0 disruptions allowed.
	ScaleUnsupported ScaleState = "Unsupported"
	// ScaleNotFound means the controller was read but is not there (deleted,
	// or a different object with the same name): the disruption controller
	// fails to sync as above.
	ScaleNotFound ScaleState = "NotFound"
	// ScaleUnknown means kdiag did not read that kind (a custom resource, a
	// ReplicationController, or a resource missing from the snapshot), so
	// the expected pods cannot be computed here.
	ScaleUnknown ScaleState = "Unknown"
)

// Controller is the workload that controls a pod, as the disruption
// controller resolves it: a ReplicaSet owned by a Deployment resolves to the
// Deployment.
type Controller struct {
	Kind     string
	Name     string
	UID      types.UID
	Replicas int32
	Scale    ScaleState
}

// String renders "Kind/name".
func (c Controller) String() string { return c.Kind + "/" + c.Name }

// same reports whether two references name the same controller.
func (c Controller) same(o Controller) bool {
	if c.UID != "" || o.UID != "" {
		return c.UID == o.UID
	}
	return c.Kind == o.Kind && c.Name == o.Name
}

// ControllerFunc resolves a pod to its controller. It returns false for a
// pod with no controller reference (an unmanaged pod).
type ControllerFunc func(pod *corev1.Pod) (Controller, bool)

// Member is one pod a budget selects, with what the controller sees of it.
type Member struct {
	Pod *corev1.Pod
	// Controller is the pod's controller; meaningful only when Managed.
	Controller Controller
	Managed    bool
	// Healthy is true when the controller counts the pod toward
	// currentHealthy: Ready, not being deleted, and not an eviction in
	// flight (status.disruptedPods younger than DeletionTimeout).
	Healthy bool
}

// Budget is a budget's status as kdiag computes it from the spec, the pods
// it selects and their controllers, following the disruption controller.
type Budget struct {
	Mode    Mode
	Members []Member
	// Controllers lists the distinct controllers of the selected pods,
	// sorted by kind and name.
	Controllers []Controller
	// Unmanaged lists the selected pods that have no controller. For
	// percentage and maxUnavailable budgets the controller leaves them out
	// of the expected pods (and emits an UnmanagedPods event).
	Unmanaged []*corev1.Pod

	ExpectedPods       int32
	DesiredHealthy     int32
	CurrentHealthy     int32
	DisruptionsAllowed int32

	// SyncError is why the disruption controller cannot compute this budget,
	// or "" when it can. The controller then sets disruptionsAllowed to 0
	// with condition DisruptionAllowed=False reason SyncFailed.
	SyncError string
	// Indeterminate is true when a controller's scale is unknown to kdiag,
	// so ExpectedPods, DesiredHealthy and DisruptionsAllowed are not exact.
	Indeterminate bool
}

// Compute derives a budget's status the way the disruption controller does
// (getExpectedPodCount, countHealthyPods and updatePdbStatus in
// k8s.io/kubernetes/pkg/controller/disruption). pods are the pods the
// budget selects (see Coverage); resolve finds their controllers; now is the
// time to judge status.disruptedPods against (the snapshot time).
func Compute(p *policyv1.PodDisruptionBudget, pods []*corev1.Pod, resolve ControllerFunc, now time.Time) Budget {
	members := make([]Member, 0, len(pods))
	for _, pod := range pods {
		m := Member{Pod: pod, Healthy: countsHealthy(p, pod, now)}
		if resolve != nil {
			m.Controller, m.Managed = resolve(pod)
		}
		members = append(members, m)
	}
	return computeMembers(p, members)
}

// computeMembers is Compute once each pod's controller and health are known.
func computeMembers(p *policyv1.PodDisruptionBudget, members []Member) Budget {
	b := Budget{Mode: ModeOf(p)}
	byUID := map[string]int{}
	for _, m := range members {
		pod := m.Pod
		if m.Healthy {
			b.CurrentHealthy++
		}
		if !m.Managed {
			b.Unmanaged = append(b.Unmanaged, pod)
		} else {
			k := controllerKey(m.Controller)
			if _, ok := byUID[k]; !ok {
				byUID[k] = len(b.Controllers)
				b.Controllers = append(b.Controllers, m.Controller)
			}
		}
		b.Members = append(b.Members, m)
	}
	sort.SliceStable(b.Controllers, func(i, j int) bool {
		if b.Controllers[i].Kind != b.Controllers[j].Kind {
			return b.Controllers[i].Kind < b.Controllers[j].Kind
		}
		return b.Controllers[i].Name < b.Controllers[j].Name
	})

	var err error
	switch b.Mode {
	case ModeMaxUnavailable:
		if b.ExpectedPods, err = b.expectedScale(); err != nil {
			break
		}
		var maxUnavailable int
		if maxUnavailable, err = intstr.GetScaledValueFromIntOrPercent(p.Spec.MaxUnavailable, int(b.ExpectedPods), true); err != nil {
			break
		}
		b.DesiredHealthy = max(b.ExpectedPods-int32(maxUnavailable), 0)
	case ModeMinAvailableInt:
		b.DesiredHealthy = p.Spec.MinAvailable.IntVal
		b.ExpectedPods = int32(len(members))
	case ModeMinAvailablePercent:
		if b.ExpectedPods, err = b.expectedScale(); err != nil {
			break
		}
		var minAvailable int
		if minAvailable, err = intstr.GetScaledValueFromIntOrPercent(p.Spec.MinAvailable, int(b.ExpectedPods), true); err != nil {
			break
		}
		b.DesiredHealthy = int32(minAvailable)
	case ModeNone:
		// Neither field: the controller leaves expected and desired at 0.
	}
	if err != nil {
		b.SyncError = err.Error()
		b.ExpectedPods, b.DesiredHealthy, b.DisruptionsAllowed = 0, 0, 0
		return b
	}
	b.DisruptionsAllowed = allowed(b.CurrentHealthy, b.DesiredHealthy, b.ExpectedPods)
	return b
}

// allowed is updatePdbStatus's rule: healthy minus desired, but 0 whenever
// the budget expects no pods.
func allowed(current, desired, expected int32) int32 {
	d := current - desired
	if expected <= 0 || d <= 0 {
		return 0
	}
	return d
}

// countsHealthy is countHealthyPods for one pod.
func countsHealthy(p *policyv1.PodDisruptionBudget, pod *corev1.Pod, now time.Time) bool {
	if pod.DeletionTimestamp != nil {
		return false
	}
	if t, ok := p.Status.DisruptedPods[pod.Name]; ok && t.Add(DeletionTimeout).After(now) {
		return false
	}
	return IsHealthy(pod)
}

func controllerKey(c Controller) string {
	if c.UID != "" {
		return string(c.UID)
	}
	return c.Kind + "/" + c.Name
}

// expectedScale is getExpectedScale: the summed scale of the distinct
// controllers of the selected pods, skipping unmanaged pods. A controller
// without a scale, or one that cannot be found, is an error, as in the
// controller; a controller whose scale kdiag does not know makes the result
// indeterminate (counted as 0).
func (b *Budget) expectedScale() (int32, error) {
	var sum int32
	for _, m := range b.Members {
		if !m.Managed {
			continue
		}
		switch m.Controller.Scale {
		case ScaleUnsupported:
			return 0, fmt.Errorf("%s does not implement the scale subresource (pod %q)", m.Controller, m.Pod.Name)
		case ScaleNotFound:
			return 0, fmt.Errorf("found no controllers for pod %q (%s is not there)", m.Pod.Name, m.Controller)
		case ScaleUnknown:
			b.Indeterminate = true
		}
	}
	for _, c := range b.Controllers {
		if c.Scale == ScaleKnown {
			sum += c.Replicas
		}
	}
	return sum, nil
}

// Reason names one cause of a budget allowing no disruption.
type Reason string

// Why a budget allows no disruption.
const (
	// ReasonNoPods: the selector matches no pod; harmless for drains.
	ReasonNoPods Reason = "NoPods"
	// ReasonSyncFailed: the disruption controller cannot compute the budget
	// (see Budget.SyncError) and fails safe to 0 disruptions allowed.
	ReasonSyncFailed Reason = "SyncFailed"
	// ReasonNoBudget: neither minAvailable nor maxUnavailable is set, so the
	// controller expects 0 pods and allows nothing.
	ReasonNoBudget Reason = "NoBudget"
	// ReasonNoExpectedPods: pods are selected but the expected count is 0:
	// they are all unmanaged, or their controllers are scaled to 0, under a
	// percentage or maxUnavailable budget.
	ReasonNoExpectedPods Reason = "NoExpectedPods"
	// ReasonMaxUnavailableZero: maxUnavailable is 0 or 0%, a deliberate
	// "never evict" in most cases.
	ReasonMaxUnavailableZero Reason = "MaxUnavailableZero"
	// ReasonMinAvailableAtLeastExpected: minAvailable (integer or computed
	// from a percentage) is at least the expected pods, e.g. minAvailable: 1
	// over a single replica.
	ReasonMinAvailableAtLeastExpected Reason = "MinAvailableAtLeastExpected"
	// ReasonUnhealthyPods: some expected pods are not healthy (not Ready,
	// missing, being deleted), so currentHealthy does not exceed
	// desiredHealthy.
	ReasonUnhealthyPods Reason = "UnhealthyPods"
)

// Reasons explains why the computed budget allows no disruption; nil when
// it allows at least one. Structural reasons (of the spec) come first, then
// ReasonUnhealthyPods when pods are short as well.
func (b Budget) Reasons() []Reason {
	if b.DisruptionsAllowed > 0 {
		return nil
	}
	switch {
	case len(b.Members) == 0:
		return []Reason{ReasonNoPods}
	case b.SyncError != "":
		return []Reason{ReasonSyncFailed}
	case b.Mode == ModeNone:
		return []Reason{ReasonNoBudget}
	case b.ExpectedPods <= 0:
		return []Reason{ReasonNoExpectedPods}
	}
	var out []Reason
	switch {
	case b.Mode == ModeMaxUnavailable && b.DesiredHealthy >= b.ExpectedPods:
		out = append(out, ReasonMaxUnavailableZero)
	case b.Mode != ModeMaxUnavailable && b.DesiredHealthy >= b.ExpectedPods:
		out = append(out, ReasonMinAvailableAtLeastExpected)
	}
	if b.CurrentHealthy < b.ExpectedPods {
		out = append(out, ReasonUnhealthyPods)
	}
	if len(out) == 0 {
		// Cannot happen with the rules above (desired < expected and
		// current <= desired imply current < expected); kept so that a
		// budget allowing nothing always has a reason.
		out = append(out, ReasonUnhealthyPods)
	}
	return out
}

// Has reports whether rs contains r.
func Has(rs []Reason, r Reason) bool {
	for _, x := range rs {
		if x == r {
			return true
		}
	}
	return false
}

// UnhealthyMembers returns the selected pods the controller does not count
// as healthy.
func (b Budget) UnhealthyMembers() []Member {
	var out []Member
	for _, m := range b.Members {
		if !m.Healthy {
			out = append(out, m)
		}
	}
	return out
}

// Missing returns how many expected pods do not exist at all (for example
// because a quota or a failing admission webhook blocks their creation).
// Pods being deleted still exist and are counted by UnhealthyMembers.
func (b Budget) Missing() int32 {
	return max(b.ExpectedPods-int32(len(b.Members)), 0)
}
