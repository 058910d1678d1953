package network

import (
	"fmt"
	"sort"

	corev1 "k8s.io/api/core/v1"

	"github.com/kdiag/kdiag/pkg/analyze/internal/editdist"
	"github.com/kdiag/kdiag/pkg/analyze/internal/evidence"
	"github.com/kdiag/kdiag/pkg/findings"
)

// noMatchingPods reports a Service whose selector matches no pod that can
// serve. The caller has checked that pods were read in the namespace. The
// evidence looks for the usual causes: pods that differ by one label, pods
// in another namespace, a workload scaled to zero, pods that have finished.
func (a *analysis) noMatchingPods(svc *corev1.Service, terminal []*corev1.Pod) findings.Finding {
	sel := svc.Spec.Selector
	selStr := selectorString(sel)
	ev := []string{
		"spec.selector: " + selStr,
		fmt.Sprintf("none of the %s in namespace %s matches", evidence.Plural(a.pods.count[svc.Namespace], "pod"), svc.Namespace),
	}
	if len(terminal) > 0 {
		ev = append(ev, fmt.Sprintf("%s %s but %s finished (Succeeded/Failed) and never get traffic: %s",
			evidence.Plural(len(terminal), "pod"), evidence.Word(len(terminal), "matches", "match"), evidence.Word(len(terminal), "has", "have"), podNames(terminal)))
	}
	near := a.nearMisses(svc)
	for _, g := range near {
		ev = append(ev, a.describe(g, sel))
	}
	ev = append(ev, a.idleWorkloads(svc)...)
	ev = append(ev, a.otherNamespaces(svc)...)

	title := fmt.Sprintf("Service %s/%s selects no pods (selector %s)", svc.Namespace, svc.Name, selStr)
	if len(near) > 0 && !near[0].missing {
		title = fmt.Sprintf("Service %s/%s selects no pods (selector %s; closest: %s=%s on %s)", svc.Namespace, svc.Name, selStr, near[0].key, near[0].got, a.who(near[0]))
	}
	return findings.Finding{
		ID: idNoMatchingPods, Severity: findings.Warning, Area: findings.AreaNetwork, Object: objectRef(svc),
		Title:    title,
		Evidence: ev,
		Explanation: "A Service sends traffic only to pods in its own namespace whose labels contain every key=value of its selector. " +
			"None does, so the Service has no endpoints and its clients get connection refused or time out. " +
			"Usual causes: a typo or a renamed label, pods deployed to another namespace, or a workload scaled to zero.",
		Remediation: []findings.Remediation{
			findings.Inspect("List the pods the selector matches", fmt.Sprintf("kubectl get pods -n %s -l %s", svc.Namespace, selStr)),
			findings.Inspect("Compare with the labels the pods really have", fmt.Sprintf("kubectl get pods -n %s --show-labels", svc.Namespace)),
			findings.Inspect("Show the Service selector", fmt.Sprintf("kubectl get service %s -n %s -o jsonpath='{.spec.selector}'", svc.Name, svc.Namespace)),
		},
	}
}

// nearMiss is a group of pods that match every selector term but one.
type nearMiss struct {
	key, got string
	missing  bool
	pods     []*corev1.Pod
	distance int
}

// nearMisses finds pods in the Service's namespace that match every
// selector term but one, grouped by the term they miss. Groups whose value
// is closest to the wanted one come first (a typo), then larger groups.
// For a one-term selector only pods that carry the key with another value
// count; otherwise every pod without the key would be a near miss.
func (a *analysis) nearMisses(svc *corev1.Service) []*nearMiss {
	sel := svc.Spec.Selector
	groups := map[string]*nearMiss{}
	for _, p := range a.ix.PodsInNamespace(svc.Namespace) {
		var miss, got string
		var has bool
		n := 0
		for k, v := range sel {
			if g, ok := p.Labels[k]; !ok || g != v {
				n++
				miss, got, has = k, g, ok
			}
		}
		if n != 1 || (len(sel) == 1 && !has) {
			continue
		}
		key := miss + "\x00" + got
		g := groups[key]
		if g == nil {
			d := len(sel[miss]) + 100 // a missing key ranks after any other value
			if has {
				d = editdist.Levenshtein(got, sel[miss])
			}
			g = &nearMiss{key: miss, got: got, missing: !has, distance: d}
			groups[key] = g
		}
		g.pods = append(g.pods, p)
	}
	list := make([]*nearMiss, 0, len(groups))
	for _, g := range groups {
		sortPods(g.pods)
		list = append(list, g)
	}
	sort.Slice(list, func(i, j int) bool {
		a, b := list[i], list[j]
		if a.distance != b.distance {
			return a.distance < b.distance
		}
		if len(a.pods) != len(b.pods) {
			return len(a.pods) > len(b.pods)
		}
		if a.key != b.key {
			return a.key < b.key
		}
		return a.got < b.got
	})
	if len(list) > 3 {
		list = list[:3]
	}
	return list
}

// who renders the pods of a near miss: "2 pods of Deployment shop/x".
func (a *analysis) who(g *nearMiss) string {
	s := evidence.Plural(len(g.pods), "pod")
	if o := owners(a.ix, g.pods); o != "" {
		s += " of " + o
	}
	return s
}

// describe renders a near miss as an evidence line.
func (a *analysis) describe(g *nearMiss, sel map[string]string) string {
	n := len(g.pods)
	if g.missing {
		return fmt.Sprintf("%s %s label %s (selector wants %s=%s)", a.who(g), evidence.Word(n, "lacks", "lack"), g.key, g.key, sel[g.key])
	}
	return fmt.Sprintf("%s %s %s=%s where the selector wants %s=%s", a.who(g), evidence.Word(n, "has", "have"), g.key, g.got, g.key, sel[g.key])
}

// idleWorkloads names Deployments and StatefulSets in the namespace whose
// pod template carries the selector's labels but which run no pod.
func (a *analysis) idleWorkloads(svc *corev1.Service) []string {
	var out []string
	add := func(kind, name string, tmpl map[string]string, spec *int32, status int32) {
		if !hasAll(tmpl, svc.Spec.Selector) {
			return
		}
		want := int32(1)
		if spec != nil {
			want = *spec
		}
		if want == 0 {
			out = append(out, fmt.Sprintf("%s %s/%s has matching pod template labels but spec.replicas=0", kind, svc.Namespace, name))
		} else {
			out = append(out, fmt.Sprintf("%s %s/%s has matching pod template labels and spec.replicas=%d but status.replicas=%d: its pods are not being created (see its events)", kind, svc.Namespace, name, want, status))
		}
	}
	for i := range a.s.Deployments {
		d := &a.s.Deployments[i]
		if d.Namespace == svc.Namespace {
			add("Deployment", d.Name, d.Spec.Template.Labels, d.Spec.Replicas, d.Status.Replicas)
		}
	}
	for i := range a.s.StatefulSets {
		st := &a.s.StatefulSets[i]
		if st.Namespace == svc.Namespace {
			add("StatefulSet", st.Name, st.Spec.Template.Labels, st.Spec.Replicas, st.Status.Replicas)
		}
	}
	sort.Strings(out)
	return out
}

// otherNamespaces finds pods the selector would match in other namespaces:
// a Service only ever selects pods in its own.
func (a *analysis) otherNamespaces(svc *corev1.Service) []string {
	var out []string
	for _, ns := range a.pods.namespaces {
		if ns == svc.Namespace {
			continue
		}
		live, _ := a.pods.match(ns, svc.Spec.Selector)
		if len(live) == 0 {
			continue
		}
		if len(out) == 3 {
			out = append(out, "... and pods in more namespaces")
			break
		}
		out = append(out, fmt.Sprintf("%s in namespace %s %s this selector, but a Service selects only pods of its own namespace: %s",
			evidence.Plural(len(live), "pod"), ns, evidence.Word(len(live), "matches", "match"), podNames(live)))
	}
	return out
}
