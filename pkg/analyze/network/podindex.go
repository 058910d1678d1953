package network

import (
	"sort"

	corev1 "k8s.io/api/core/v1"

	"github.com/kdiag/kdiag/pkg/analyze/internal/podready"
)

// podIndex finds the pods a Service selector matches without scanning the
// whole namespace for every Service: an inverted index from one label
// (key=value) to the pods carrying it. A selector is answered from the
// shortest posting list of its labels, then filtered on the others. With
// 30,000 pods and thousands of Services in one namespace, a scan per
// Service (cluster.Index.PodsMatching) would be quadratic.
type podIndex struct {
	byLabel map[string]map[labelPair][]*corev1.Pod
	// namespaces lists the namespaces that have pods, sorted.
	namespaces []string
	count      map[string]int
	// byName finds a pod by "namespace/name", e.g. an endpoint's targetRef.
	byName map[string]*corev1.Pod
}

type labelPair struct{ key, value string }

func newPodIndex(pods []corev1.Pod) *podIndex {
	ix := &podIndex{byLabel: map[string]map[labelPair][]*corev1.Pod{}, count: map[string]int{},
		byName: make(map[string]*corev1.Pod, len(pods))}
	for i := range pods {
		p := &pods[i]
		m := ix.byLabel[p.Namespace]
		if m == nil {
			m = map[labelPair][]*corev1.Pod{}
			ix.byLabel[p.Namespace] = m
			ix.namespaces = append(ix.namespaces, p.Namespace)
		}
		ix.count[p.Namespace]++
		ix.byName[p.Namespace+"/"+p.Name] = p
		for k, v := range p.Labels {
			lp := labelPair{k, v}
			m[lp] = append(m[lp], p)
		}
	}
	sort.Strings(ix.namespaces)
	return ix
}

// match returns the pods in ns whose labels contain every key=value of the
// selector, split into pods that can serve traffic and terminal ones
// (Succeeded or Failed). An empty selector matches nothing, as for
// Services. Both lists are sorted by name.
func (ix *podIndex) match(ns string, selector map[string]string) (live, terminal []*corev1.Pod) {
	if len(selector) == 0 {
		return nil, nil
	}
	m := ix.byLabel[ns]
	var shortest []*corev1.Pod
	first := true
	for k, v := range selector {
		l := m[labelPair{k, v}]
		if len(l) == 0 {
			return nil, nil
		}
		if first || len(l) < len(shortest) {
			shortest, first = l, false
		}
	}
	for _, p := range shortest {
		if !hasAll(p.Labels, selector) {
			continue
		}
		if podready.Terminal(p) {
			terminal = append(terminal, p)
		} else {
			live = append(live, p)
		}
	}
	sortPods(live)
	sortPods(terminal)
	return live, terminal
}

// pod returns the pod with the given namespace and name, or nil.
func (ix *podIndex) pod(ns, name string) *corev1.Pod { return ix.byName[ns+"/"+name] }

func hasAll(lbls, selector map[string]string) bool {
	for k, v := range selector {
		if got, ok := lbls[k]; !ok || got != v {
			return false
		}
	}
	return true
}

func sortPods(ps []*corev1.Pod) {
	sort.Slice(ps, func(i, j int) bool { return ps[i].Name < ps[j].Name })
}
