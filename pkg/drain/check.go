package drain

import (
	"fmt"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/klog/v2"

	resourcehelper "k8s.io/component-helpers/resource"
	corev1helpers "k8s.io/component-helpers/scheduling/corev1"
	"k8s.io/component-helpers/scheduling/corev1/nodeaffinity"

	"github.com/kdiag/kdiag/pkg/cluster"
	"github.com/kdiag/kdiag/pkg/findings"
	"github.com/kdiag/kdiag/pkg/pdb"
)

// Blocker is a pod on which the drain would stall, and how to unblock it.
type Blocker struct {
	// Node is the node being drained when the drain stalls.
	Node string `json:"node"`
	// Pod is namespace/name.
	Pod string `json:"pod"`
	// PDB is the namespace/name of the budget that refuses the eviction,
	// or "" when no budget is involved (a kubectl filter refused the pod).
	// For ReasonMultiplePDBs it lists every covering budget, comma-separated.
	PDB string `json:"pdb,omitempty"`
	// Reason is one of the Reason constants.
	Reason string `json:"reason"`
	// Message says why, in the eviction API's or kubectl's words.
	Message string `json:"message"`
	// Rolling is true when the eviction API would let this pod go right now
	// (a per-pod check, or kubectl drain --dry-run=server, passes), but the
	// earlier evictions of this drain spend the budget first.
	Rolling bool `json:"rolling,omitempty"`
	// SpentBy lists the pods evicted earlier in the drain, without a
	// replacement able to start, that spent the budget.
	SpentBy []string `json:"spentBy,omitempty"`
	// Remediation lists the fixes; mutating ones carry a server-side dry
	// run result once verified.
	Remediation []findings.Remediation `json:"remediation"`
}

// Step is what the simulation did on one node.
type Step struct {
	Node    string   `json:"node"`
	Evicted []string `json:"evicted,omitempty"`
	// Replaced maps an evicted pod to the node its replacement is assumed
	// to start on; evicted pods missing here are not replaced.
	Replaced map[string]string `json:"replaced,omitempty"`
	Skipped  []string          `json:"skipped,omitempty"`
	Warnings []string          `json:"warnings,omitempty"`
	Stalled  bool              `json:"stalled"`
}

// Report is the result of Check.
type Report struct {
	// Nodes are the drained nodes in drain order.
	Nodes []string `json:"nodes"`
	Steps []Step   `json:"steps"`
	// Blockers is empty when the drain would finish.
	Blockers []Blocker `json:"blockers"`
	// Stalls is true when the drain would stall (len(Blockers) > 0).
	Stalls bool `json:"stalls"`
	// Gaps lists what could not be read, which makes the answer partial.
	Gaps []string `json:"gaps,omitempty"`
}

// ResolveNodes returns the nodes to drain, in drain order: the named nodes
// in the order given (as kubectl drain takes them), or the nodes the
// selector matches sorted by name (the order the API lists them in). An
// unknown node or a selector that matches nothing is an error.
func ResolveNodes(nodes []corev1.Node, names []string, selector string) ([]string, error) {
	if (len(names) == 0) == (selector == "") {
		return nil, fmt.Errorf("give node names or --selector, not both and not neither")
	}
	if selector != "" {
		sel, err := labels.Parse(selector)
		if err != nil {
			return nil, fmt.Errorf("--selector %q: %w", selector, err)
		}
		var out []string
		for i := range nodes {
			if sel.Matches(labels.Set(nodes[i].Labels)) {
				out = append(out, nodes[i].Name)
			}
		}
		if len(out) == 0 {
			return nil, fmt.Errorf("--selector %q matches no node", selector)
		}
		sort.Strings(out)
		return out, nil
	}
	known := map[string]bool{}
	for i := range nodes {
		known[nodes[i].Name] = true
	}
	seen := map[string]bool{}
	var out []string
	for _, n := range names {
		if !known[n] {
			return nil, fmt.Errorf("node %q not found", n)
		}
		if !seen[n] {
			seen[n] = true
			out = append(out, n)
		}
	}
	return out, nil
}

// budgetState is one budget's status as the simulation spends it: the
// disruption controller's arithmetic applied to the API server's own
// status, so that the first eviction is judged exactly as the API would.
type budgetState struct {
	p       *policyv1.PodDisruptionBudget
	current int32
	spentBy []string
}

// view returns the budget with its simulated status, for pdb.Evict.
func (b *budgetState) view() *policyv1.PodDisruptionBudget {
	v := b.p.DeepCopy()
	st := &v.Status
	st.CurrentHealthy = b.current
	d := b.current - st.DesiredHealthy
	if st.ExpectedPods <= 0 || d < 0 {
		d = 0
	}
	if b.current != b.p.Status.CurrentHealthy {
		st.DisruptionsAllowed = d
	}
	return v
}

// simulation holds the state of Check.
type simulation struct {
	s        *cluster.Snapshot
	ix       *cluster.Index
	cov      *pdb.Coverage
	opts     Options
	nodes    []string
	draining map[string]bool
	budgets  map[*policyv1.PodDisruptionBudget]*budgetState
	// candidates are the nodes replacements may start on (not drained),
	// sorted by name.
	candidates []*corev1.Node
	// used holds, per candidate node, the CPU and memory requests of its
	// pods and of the replacements placed there so far; filled lazily.
	used map[string]corev1.ResourceList
}

// Check predicts the drain of nodes (in that order) from a snapshot. The
// model, documented in docs/commands/drain.md:
//   - like kubectl drain, every target node is cordoned first, then the
//     nodes are drained one after another;
//   - on each node, kubectl's filters decide what is evicted, skipped or
//     refused; a refused pod stops the drain of that node;
//   - each eviction is judged by pdb.Evict against the budget's status as
//     spent so far: an evicted healthy pod lowers currentHealthy by one,
//     and its replacement gives it back only if its controller recreates it
//     and it fits on a Ready node that is not being drained, not cordoned,
//     whose taints it tolerates and whose labels its nodeSelector and
//     required node affinity match, with room for its CPU and memory
//     requests; replacements are assumed to become Ready before the drain
//     retries;
//   - pods of one node are retried until no more can go; those left are
//     blockers, and the simulation carries on with the next node (kubectl
//     would stop there) so that every blocker is reported at once.
func Check(s *cluster.Snapshot, nodes []string, opts Options) *Report {
	ix := s.Index()
	var pdbs []*policyv1.PodDisruptionBudget
	for i := range s.PodDisruptionBudgets {
		pdbs = append(pdbs, &s.PodDisruptionBudgets[i])
	}
	sim := &simulation{
		s: s, ix: ix, opts: opts, nodes: nodes,
		cov:      pdb.NewCoverage(pdbs, ix.PodsInNamespace),
		draining: map[string]bool{},
		budgets:  map[*policyv1.PodDisruptionBudget]*budgetState{},
		used:     map[string]corev1.ResourceList{},
	}
	for _, p := range pdbs {
		sim.budgets[p] = &budgetState{p: p, current: p.Status.CurrentHealthy}
	}
	for _, n := range nodes {
		sim.draining[n] = true
	}
	for i := range s.Nodes {
		if n := &s.Nodes[i]; !sim.draining[n.Name] {
			sim.candidates = append(sim.candidates, n)
		}
	}
	sort.Slice(sim.candidates, func(i, j int) bool { return sim.candidates[i].Name < sim.candidates[j].Name })
	rep := &Report{Nodes: nodes, Blockers: []Blocker{}}
	for _, g := range s.Gaps {
		rep.Gaps = append(rep.Gaps, fmt.Sprintf("%v", g))
	}
	for _, n := range nodes {
		step, blockers := sim.drainNode(n)
		rep.Steps = append(rep.Steps, step)
		rep.Blockers = append(rep.Blockers, blockers...)
	}
	rep.Stalls = len(rep.Blockers) > 0
	for i := range rep.Blockers {
		rep.Blockers[i].Remediation = sim.remediate(&rep.Blockers[i])
	}
	return rep
}

func podRef(p *corev1.Pod) string { return p.Namespace + "/" + p.Name }

func (sim *simulation) daemonSetLookup() DaemonSetLookup {
	if !sim.s.Has(cluster.ResDaemonSets) {
		return nil
	}
	return func(ns, name string) (bool, bool) { return sim.ix.DaemonSet(ns, name) != nil, true }
}

func (sim *simulation) drainNode(node string) (Step, []Blocker) {
	step := Step{Node: node, Replaced: map[string]string{}}
	pods := append([]*corev1.Pod(nil), sim.ix.PodsOnNode(node)...)
	sort.Slice(pods, func(i, j int) bool { return podRef(pods[i]) < podRef(pods[j]) })
	var blockers []Blocker
	var evict []*corev1.Pod
	for _, p := range pods {
		d := Classify(p, sim.daemonSetLookup(), sim.opts)
		switch d.Action {
		case Skip:
			step.Skipped = append(step.Skipped, podRef(p)+": "+d.Message)
		case Refuse:
			blockers = append(blockers, Blocker{Node: node, Pod: podRef(p), Reason: d.Reason, Message: "cannot delete " + d.Message})
		default:
			if d.Message != "" {
				step.Warnings = append(step.Warnings, podRef(p)+": "+d.Message)
			}
			evict = append(evict, p)
		}
	}
	if len(blockers) > 0 {
		// kubectl refuses the node before evicting anything.
		step.Stalled = true
		return step, blockers
	}
	for progress := true; progress && len(evict) > 0; {
		progress = false
		var left []*corev1.Pod
		for _, p := range evict {
			if v := pdb.Evict(p, sim.views(p)); v.Allowed {
				sim.evicted(p, &step)
				progress = true
			} else {
				left = append(left, p)
			}
		}
		evict = left
	}
	for _, p := range evict {
		blockers = append(blockers, sim.blocker(node, p))
	}
	step.Stalled = len(blockers) > 0
	if len(step.Replaced) == 0 {
		step.Replaced = nil
	}
	return step, blockers
}

// views returns the budgets covering p with their simulated status.
func (sim *simulation) views(p *corev1.Pod) []*policyv1.PodDisruptionBudget {
	var out []*policyv1.PodDisruptionBudget
	for _, b := range sim.cov.PDBsOf(p) {
		out = append(out, sim.budgets[b].view())
	}
	return out
}

// evicted spends the budgets of an evicted pod and places its replacement.
func (sim *simulation) evicted(p *corev1.Pod, step *Step) {
	step.Evicted = append(step.Evicted, podRef(p))
	counted := p.DeletionTimestamp == nil && pdb.IsHealthy(p) && p.Status.Phase == corev1.PodRunning
	target, replaced := sim.replacement(p)
	if replaced {
		step.Replaced[podRef(p)] = target
	}
	if !counted || replaced {
		return
	}
	for _, b := range sim.cov.PDBsOf(p) {
		st := sim.budgets[b]
		st.current--
		st.spentBy = append(st.spentBy, podRef(p))
	}
}

// replacement says whether the pod's controller recreates it and where the
// new pod fits (see Check for the model).
func (sim *simulation) replacement(p *corev1.Pod) (string, bool) {
	if p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed {
		return "", false
	}
	ref := metav1.GetControllerOf(p)
	if ref == nil {
		return "", false
	}
	switch ref.Kind {
	case "DaemonSet", "Node":
		return "", false
	}
	req := resourcehelper.PodRequests(p, resourcehelper.PodResourcesOptions{})
	for _, n := range sim.candidates {
		if !Schedulable(n, p) || !sim.fits(n, req) {
			continue
		}
		used := sim.usedOn(n.Name)
		for _, r := range fitResources() {
			q := used[r]
			q.Add(req[r])
			used[r] = q
		}
		return n.Name, true
	}
	return "", false
}

// Schedulable reports whether a new copy of pod could be scheduled on node
// as far as kdiag models it: the node is Ready and not cordoned, the pod
// tolerates its NoSchedule and NoExecute taints, and the pod's nodeSelector
// and required node affinity match it. Resources and inter-pod
// (anti-)affinity are not checked here.
func Schedulable(n *corev1.Node, pod *corev1.Pod) bool {
	if n.Spec.Unschedulable || !nodeReady(n) {
		return false
	}
	if _, bad := corev1helpers.FindMatchingUntoleratedTaint(klog.Background(), n.Spec.Taints, pod.Spec.Tolerations, func(t *corev1.Taint) bool {
		return t.Effect == corev1.TaintEffectNoSchedule || t.Effect == corev1.TaintEffectNoExecute
	}, false); bad {
		return false
	}
	ok, err := nodeaffinity.GetRequiredNodeAffinity(pod).Match(n)
	return err == nil && ok
}

func nodeReady(n *corev1.Node) bool {
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// fitResources are the requests fits checks.
func fitResources() [2]corev1.ResourceName {
	return [2]corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory}
}

// usedOn returns the requests on a node, computing them on first use.
func (sim *simulation) usedOn(node string) corev1.ResourceList {
	if u, ok := sim.used[node]; ok {
		return u
	}
	u := corev1.ResourceList{}
	for _, p := range sim.ix.PodsOnNode(node) {
		if p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed {
			continue
		}
		req := resourcehelper.PodRequests(p, resourcehelper.PodResourcesOptions{})
		for _, r := range fitResources() {
			q := u[r]
			q.Add(req[r])
			u[r] = q
		}
	}
	sim.used[node] = u
	return u
}

// fits checks CPU and memory requests against the node's allocatable minus
// the requests of the pods running there and of replacements placed so far.
func (sim *simulation) fits(n *corev1.Node, req corev1.ResourceList) bool {
	for _, r := range fitResources() {
		want, ok := req[r]
		if !ok || want.IsZero() {
			continue
		}
		alloc, ok := n.Status.Allocatable[r]
		if !ok {
			continue
		}
		total := sim.usedOn(n.Name)[r]
		total.Add(want)
		if total.Cmp(alloc) > 0 {
			return false
		}
	}
	return true
}

// blocker explains why the eviction API refuses p at this point of the drain.
func (sim *simulation) blocker(node string, p *corev1.Pod) Blocker {
	b := Blocker{Node: node, Pod: podRef(p)}
	covering := sim.cov.PDBsOf(p)
	v := pdb.Evict(p, sim.views(p))
	if len(covering) > 1 {
		names := make([]string, len(covering))
		for i, c := range covering {
			names[i] = c.Namespace + "/" + c.Name
		}
		b.PDB, b.Reason = strings.Join(names, ","), ReasonMultiplePDBs
		b.Message = fmt.Sprintf("HTTP %d: %s", v.Code, v.Message)
		return b
	}
	orig := covering[0]
	b.PDB = orig.Namespace + "/" + orig.Name
	b.Message = fmt.Sprintf("HTTP %d: %s", v.Code, v.Message)
	switch {
	case orig.Status.ObservedGeneration < orig.Generation:
		b.Reason = ReasonStaleStatus
	case v.Code == 403:
		b.Reason = ReasonInvalidPDB
	default:
		b.Reason = ReasonDisruptionBudget
	}
	if now := pdb.Evict(p, covering); now.Allowed {
		b.Rolling = true
		b.SpentBy = append([]string(nil), sim.budgets[orig].spentBy...)
		b.Message += fmt.Sprintf(" (after %d earlier eviction(s) in this drain spent the budget: %s)", len(b.SpentBy), strings.Join(b.SpentBy, ", "))
	}
	return b
}
