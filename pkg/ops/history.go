package ops

import (
	"context"
	"fmt"
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/pager"

	"github.com/kdiag/kdiag/pkg/analyze/operations"
	"github.com/kdiag/kdiag/pkg/apis/kdiag/v1alpha1"
	"github.com/kdiag/kdiag/pkg/ops/opevents"
)

// Filter selects operations; zero fields select everything.
type Filter struct {
	// Node keeps operations whose target includes this node.
	Node string
	// Type keeps operations of this type (Drain, Repair, Fix, Eviction).
	Type v1alpha1.OperationType
}

// Match reports whether op passes the filter.
func (f Filter) Match(op *v1alpha1.Operation) bool {
	if f.Type != "" && op.Spec.Type != f.Type {
		return false
	}
	if f.Node != "" && !slices.Contains(op.Spec.Target.Nodes, f.Node) && op.Spec.Target.Name != f.Node {
		return false
	}
	return true
}

// History is what `kdiag ops` shows: recorded and reconstructed
// operations, oldest first, and what could not be read.
type History struct {
	Operations []v1alpha1.Operation
	// Warnings say what could not be read (the CRD missing, RBAC), one
	// line each; the history is then partial.
	Warnings []string
}

// Last returns the newest operation, or nil.
func (h *History) Last() *v1alpha1.Operation {
	if len(h.Operations) == 0 {
		return nil
	}
	return &h.Operations[len(h.Operations)-1]
}

// Find returns the operation with that name, or nil.
func (h *History) Find(name string) *v1alpha1.Operation {
	for i := range h.Operations {
		if h.Operations[i].Name == name {
			return &h.Operations[i]
		}
	}
	return nil
}

// pageSize bounds each list call of Read.
const pageSize = 500

// Read lists the Operation records and the cluster's events (paginated),
// reconstructs operations from the events, merges both (a reconstructed
// operation that a record already covers is dropped) and keeps those
// passing f. A resource it may not read becomes a warning; only when
// neither records nor events could be read is it an error.
func Read(ctx context.Context, dyn dynamic.Interface, cs kubernetes.Interface, f Filter) (*History, error) {
	h := &History{}
	recorded, rerr := listRecords(ctx, dyn)
	if rerr != nil {
		h.Warnings = append(h.Warnings, "operation records not read: "+describeReadError(rerr))
	}
	events, eerr := listEvents(ctx, cs)
	if eerr != nil {
		h.Warnings = append(h.Warnings, "events not read, so no operation is reconstructed: "+describeReadError(eerr))
	}
	if rerr != nil && eerr != nil {
		return nil, fmt.Errorf("read operation history: records: %s; events: %s", describeReadError(rerr), describeReadError(eerr))
	}
	podNode, perr := podNodes(ctx, cs, events)
	if perr != nil {
		h.Warnings = append(h.Warnings, "pods not read, so refused evictions are not placed on their nodes: "+describeReadError(perr))
	}
	for _, op := range Merge(recorded, Reconstruct(events, podNode)) {
		if f.Match(&op) {
			h.Operations = append(h.Operations, op)
		}
	}
	return h, nil
}

func describeReadError(err error) string {
	switch {
	case isCRDMissing(err):
		return "the Operation CRD (operations.kdiag.io) is not installed"
	case apierrors.IsForbidden(err):
		return "forbidden (RBAC): " + oneLine(err)
	default:
		return oneLine(err)
	}
}

func listRecords(ctx context.Context, dyn dynamic.Interface) ([]v1alpha1.Operation, error) {
	res := dyn.Resource(v1alpha1.OperationGVR())
	p := pager.New(func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) { return res.List(ctx, o) })
	p.PageSize = pageSize
	var out []v1alpha1.Operation
	err := p.EachListItem(ctx, metav1.ListOptions{}, func(o runtime.Object) error {
		var op v1alpha1.Operation
		if err := fromUnstructured(o.(*unstructured.Unstructured), &op); err != nil {
			return err
		}
		op.ManagedFields = nil // noise in -o json/yaml, as kubectl hides it
		out = append(out, op)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list operations.kdiag.io: %w", err)
	}
	return out, nil
}

// listEvents keeps only the events Reconstruct reads.
func listEvents(ctx context.Context, cs kubernetes.Interface) ([]corev1.Event, error) {
	p := pager.New(func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
		return cs.CoreV1().Events("").List(ctx, o)
	})
	p.PageSize = pageSize
	var out []corev1.Event
	err := p.EachListItem(ctx, metav1.ListOptions{}, func(o runtime.Object) error {
		e := o.(*corev1.Event)
		if _, ok := opevents.ParseRepair(e); ok || isCordonEvent(e) || operations.IsDrainFailure(e) {
			e.ManagedFields = nil
			out = append(out, *e)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list events: %w", err)
	}
	return out, nil
}

func isCordonEvent(e *corev1.Event) bool {
	return e.InvolvedObject.Kind == "Node" && (e.Reason == opevents.ReasonNodeNotSchedulable || e.Reason == opevents.ReasonNodeSchedulable)
}

// podNodes lists the pods of the namespaces that refused-eviction events
// are about (not the whole cluster).
func podNodes(ctx context.Context, cs kubernetes.Interface, events []corev1.Event) (PodNodeFunc, error) {
	where := map[string]string{}
	seen := map[string]bool{}
	for i := range events {
		io := events[i].InvolvedObject
		if io.Kind != "Pod" || seen[io.Namespace] || !operations.IsDrainFailure(&events[i]) {
			continue
		}
		seen[io.Namespace] = true
		list, err := cs.CoreV1().Pods(io.Namespace).List(ctx, metav1.ListOptions{})
		if err != nil {
			return nil, fmt.Errorf("list pods in %s: %w", io.Namespace, err)
		}
		for _, p := range list.Items {
			where[p.Namespace+"/"+p.Name] = p.Spec.NodeName
		}
	}
	return func(ns, name string) string { return where[ns+"/"+name] }, nil
}

// coverSlack is how far outside a recorded operation's window an event
// may fall and still be that operation's trace (the kubelet reports a
// cordon up to its node status interval later).
const coverSlack = time.Minute

// Merge returns the recorded operations plus the reconstructed ones that
// no record covers, sorted by start. A record covers a reconstructed
// operation of the same type (or a Repair record the drain it ran) when
// they share a node and the reconstructed one started within the record's
// window (±1 minute): a `kdiag drain run` leaves a NodeNotSchedulable
// event, and `kdiag repair` the NodeReboot* events and its drain's cordon,
// that tell the same story as its record.
func Merge(recorded, reconstructed []v1alpha1.Operation) []v1alpha1.Operation {
	out := slices.Clone(recorded)
	for _, r := range reconstructed {
		if !covered(&r, recorded) {
			out = append(out, r)
		}
	}
	sortOperations(out)
	return out
}

func covered(r *v1alpha1.Operation, recorded []v1alpha1.Operation) bool {
	start := startOf(r)
	for i := range recorded {
		c := &recorded[i]
		if !covers(c.Spec.Type, r.Spec.Type) || !sharesNode(c, r) {
			continue
		}
		from := startOf(c).Add(-coverSlack)
		if start.Before(from) {
			continue
		}
		if c.Status.EndTime == nil || !start.After(c.Status.EndTime.Add(coverSlack)) {
			return true
		}
	}
	return false
}

// covers reports whether a record of type rec may stand for a
// reconstructed operation of type got: the same type, or a repair's own
// drain (the controller cordons and drains before a reimage and records
// those steps in the Repair record).
func covers(rec, got v1alpha1.OperationType) bool {
	return rec == got || (rec == v1alpha1.TypeRepair && (got == v1alpha1.TypeDrain || got == v1alpha1.TypeEviction))
}

func sharesNode(a, b *v1alpha1.Operation) bool {
	for _, n := range a.Spec.Target.Nodes {
		if slices.Contains(b.Spec.Target.Nodes, n) {
			return true
		}
	}
	return false
}
