package pdb

import (
	"sort"

	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/selection"
)

// Coverage pairs budgets with the pods they select, both ways. It is built
// once per snapshot; lookups are then map reads.
type Coverage struct {
	podsOf   map[*policyv1.PodDisruptionBudget][]*corev1.Pod
	pdbsOf   map[*corev1.Pod][]*policyv1.PodDisruptionBudget
	badSel   map[*policyv1.PodDisruptionBudget]error
	ordered  []*policyv1.PodDisruptionBudget
	multiple []*corev1.Pod
}

// NewCoverage matches every budget against the pods of its namespace, which
// podsInNamespace returns. Budgets are processed in the order given and each
// budget's pods keep the order podsInNamespace returns them in.
//
// Matching uses a per-namespace label index so that a namespace with tens of
// thousands of pods and many budgets is not matched pod by budget: each
// selector starts from the pods of its narrowest equality or set-membership
// requirement and checks only those.
func NewCoverage(pdbs []*policyv1.PodDisruptionBudget, podsInNamespace func(ns string) []*corev1.Pod) *Coverage {
	c := &Coverage{
		podsOf:  make(map[*policyv1.PodDisruptionBudget][]*corev1.Pod, len(pdbs)),
		pdbsOf:  map[*corev1.Pod][]*policyv1.PodDisruptionBudget{},
		badSel:  map[*policyv1.PodDisruptionBudget]error{},
		ordered: pdbs,
	}
	indexes := map[string]*labelIndex{}
	for _, p := range pdbs {
		sel, err := Selector(p)
		if err != nil {
			c.badSel[p] = err
			continue
		}
		ix := indexes[p.Namespace]
		if ix == nil {
			ix = newLabelIndex(podsInNamespace(p.Namespace))
			indexes[p.Namespace] = ix
		}
		matched := ix.match(sel)
		c.podsOf[p] = matched
		for _, pod := range matched {
			c.pdbsOf[pod] = append(c.pdbsOf[pod], p)
			if len(c.pdbsOf[pod]) == 2 {
				c.multiple = append(c.multiple, pod)
			}
		}
	}
	return c
}

// PodsOf returns the pods the budget selects.
func (c *Coverage) PodsOf(p *policyv1.PodDisruptionBudget) []*corev1.Pod { return c.podsOf[p] }

// PDBsOf returns the budgets that cover the pod, in the order they were given.
func (c *Coverage) PDBsOf(pod *corev1.Pod) []*policyv1.PodDisruptionBudget { return c.pdbsOf[pod] }

// SelectorError returns why the budget's selector could not be parsed, or
// nil. Such a budget selects nothing.
func (c *Coverage) SelectorError(p *policyv1.PodDisruptionBudget) error { return c.badSel[p] }

// MultiplyCovered returns the pods covered by more than one budget, which
// the eviction API refuses to evict; in the order they were found.
func (c *Coverage) MultiplyCovered() []*corev1.Pod { return c.multiple }

// labelIndex finds the pods of one namespace that match a selector without
// testing every pod against it.
type labelIndex struct {
	pods []*corev1.Pod
	// byKV maps a label key and value to the positions of the pods that
	// carry it, in ascending order.
	byKV map[string]map[string][]int
}

func newLabelIndex(pods []*corev1.Pod) *labelIndex {
	ix := &labelIndex{pods: pods, byKV: map[string]map[string][]int{}}
	for i, p := range pods {
		for k, v := range p.Labels {
			m := ix.byKV[k]
			if m == nil {
				m = map[string][]int{}
				ix.byKV[k] = m
			}
			m[v] = append(m[v], i)
		}
	}
	return ix
}

// match returns the pods the selector matches, in index order.
func (ix *labelIndex) match(sel labels.Selector) []*corev1.Pod {
	reqs, selectable := sel.Requirements()
	if !selectable {
		return nil // labels.Nothing()
	}
	candidates, narrowed := ix.narrowest(reqs)
	var out []*corev1.Pod
	if !narrowed {
		for _, p := range ix.pods {
			if sel.Matches(labels.Set(p.Labels)) {
				out = append(out, p)
			}
		}
		return out
	}
	for _, i := range candidates {
		if p := ix.pods[i]; sel.Matches(labels.Set(p.Labels)) {
			out = append(out, p)
		}
	}
	return out
}

// narrowest returns the positions of the pods that satisfy the most
// selective requirement of the form key=value or key in (values); false when
// the selector has none, so every pod must be tested.
func (ix *labelIndex) narrowest(reqs labels.Requirements) ([]int, bool) {
	var best []int
	found := false
	for _, r := range reqs {
		switch r.Operator() {
		case selection.Equals, selection.DoubleEquals, selection.In:
		default:
			continue
		}
		var cand []int
		vals := r.Values().UnsortedList()
		for _, v := range vals {
			cand = append(cand, ix.byKV[r.Key()][v]...)
		}
		if len(vals) > 1 {
			sort.Ints(cand) // keep the pods' order; values never share a pod
		}
		if !found || len(cand) < len(best) {
			best, found = cand, true
		}
	}
	return best, found
}
