package pdb

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"

	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	ct "github.com/kdiag/kdiag/pkg/cluster/clustertest"
)

func podNames(pods []*corev1.Pod) []string {
	out := make([]string, 0, len(pods))
	for _, p := range pods {
		out = append(out, p.Name)
	}
	return out
}

func ptrs[T any](xs []T) []*T {
	out := make([]*T, len(xs))
	for i := range xs {
		out[i] = &xs[i]
	}
	return out
}

// TestSelectorSemantics pins the policy/v1 rules: null selects nothing,
// {} selects the whole namespace, and namespaces never mix.
func TestSelectorSemantics(t *testing.T) {
	pods := []corev1.Pod{
		ct.RunningPod("shop", "web-1", "n1", map[string]string{"app": "web", "tier": "fe"}),
		ct.RunningPod("shop", "web-2", "n2", map[string]string{"app": "web"}),
		ct.RunningPod("shop", "db-1", "n1", map[string]string{"app": "db"}),
		ct.RunningPod("shop", "bare", "n2", nil),
		ct.RunningPod("other", "web-x", "n1", map[string]string{"app": "web"}),
	}
	byNS := map[string][]*corev1.Pod{}
	for _, p := range ptrs(pods) {
		byNS[p.Namespace] = append(byNS[p.Namespace], p)
	}
	tests := []struct {
		name    string
		sel     *metav1.LabelSelector
		want    []string
		wantErr bool
		str     string // SelectorString's answer; "-" skips the check
	}{
		{name: "null selector selects nothing", sel: nil, want: nil, str: "<none>"},
		{name: "empty selector selects the whole namespace", sel: &metav1.LabelSelector{}, want: []string{"web-1", "web-2", "db-1", "bare"}, str: ""},
		{name: "matchLabels", sel: ct.PDBSelector(map[string]string{"app": "web"}), want: []string{"web-1", "web-2"}, str: "app=web"},
		{name: "two labels", sel: ct.PDBSelector(map[string]string{"app": "web", "tier": "fe"}), want: []string{"web-1"}, str: "app=web,tier=fe"},
		{name: "In", sel: &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "app", Operator: metav1.LabelSelectorOpIn, Values: []string{"db", "web"}}}}, want: []string{"web-1", "web-2", "db-1"}, str: "app in (db,web)"},
		{name: "NotIn matches pods without the key", sel: &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "app", Operator: metav1.LabelSelectorOpNotIn, Values: []string{"web"}}}}, want: []string{"db-1", "bare"}, str: "-"},
		{name: "Exists", sel: &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "tier", Operator: metav1.LabelSelectorOpExists}}}, want: []string{"web-1"}, str: "-"},
		{name: "no match", sel: ct.PDBSelector(map[string]string{"app": "ngnix"}), want: nil, str: "-"},
		{name: "invalid selector selects nothing", sel: &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "app", Operator: "Near"}}}, wantErr: true, str: "-"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := ct.MinAvailable(ct.PDB("shop", "b", tc.sel), 1)
			cov := NewCoverage([]*policyv1.PodDisruptionBudget{&p}, func(ns string) []*corev1.Pod { return byNS[ns] })
			if got := podNames(cov.PodsOf(&p)); !slices.Equal(got, tc.want) {
				t.Errorf("Coverage.PodsOf = %v, want %v", got, tc.want)
			}
			if (cov.SelectorError(&p) != nil) != tc.wantErr {
				t.Errorf("SelectorError = %v, want error %v", cov.SelectorError(&p), tc.wantErr)
			}
			var covered []string
			for _, pod := range ptrs(pods) {
				if Covers(&p, pod) {
					covered = append(covered, pod.Name)
				}
			}
			if !slices.Equal(covered, tc.want) {
				t.Errorf("Covers selects %v, want %v", covered, tc.want)
			}
			if tc.str != "-" {
				if got := SelectorString(&p); got != tc.str {
					t.Errorf("SelectorString = %q, want %q", got, tc.str)
				}
			}
		})
	}
}

func TestCoverageMultiplyCovered(t *testing.T) {
	pods := ptrs([]corev1.Pod{
		ct.RunningPod("shop", "web-1", "n1", map[string]string{"app": "web"}),
		ct.RunningPod("shop", "db-1", "n1", map[string]string{"app": "db"}),
	})
	a := ct.MinAvailable(ct.PDB("shop", "web", ct.PDBSelector(map[string]string{"app": "web"})), 1)
	all := ct.MaxUnavailable(ct.PDB("shop", "all", &metav1.LabelSelector{}), 1)
	cov := NewCoverage([]*policyv1.PodDisruptionBudget{&a, &all}, func(string) []*corev1.Pod { return pods })
	if got := podNames(cov.MultiplyCovered()); !slices.Equal(got, []string{"web-1"}) {
		t.Fatalf("MultiplyCovered = %v, want [web-1]", got)
	}
	if got := cov.PDBsOf(pods[0]); len(got) != 2 || got[0] != &a || got[1] != &all {
		t.Errorf("PDBsOf(web-1) = %v, want [web all]", got)
	}
	if got := cov.PDBsOf(pods[1]); len(got) != 1 || got[0] != &all {
		t.Errorf("PDBsOf(db-1) = %v, want [all]", got)
	}
}

// TestCoverageIndexAgreesWithScan checks the label index against testing
// every pod, on random pods and selectors.
func TestCoverageIndexAgreesWithScan(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	keys, vals := []string{"app", "tier", "zone"}, []string{"a", "b", "c"}
	var pods []*corev1.Pod
	for i := range 300 {
		lbls := map[string]string{}
		for _, k := range keys {
			if r.IntN(3) > 0 {
				lbls[k] = vals[r.IntN(len(vals))]
			}
		}
		p := ct.RunningPod("ns", fmt.Sprintf("p%d", i), "n1", lbls)
		pods = append(pods, &p)
	}
	ops := []metav1.LabelSelectorOperator{metav1.LabelSelectorOpIn, metav1.LabelSelectorOpNotIn, metav1.LabelSelectorOpExists, metav1.LabelSelectorOpDoesNotExist}
	for i := range 200 {
		sel := &metav1.LabelSelector{}
		if r.IntN(2) == 0 {
			sel.MatchLabels = map[string]string{keys[r.IntN(3)]: vals[r.IntN(3)]}
		}
		for range r.IntN(3) {
			op := ops[r.IntN(len(ops))]
			req := metav1.LabelSelectorRequirement{Key: keys[r.IntN(3)], Operator: op}
			if op == metav1.LabelSelectorOpIn || op == metav1.LabelSelectorOpNotIn {
				req.Values = []string{vals[r.IntN(3)], vals[r.IntN(3)]}
			}
			sel.MatchExpressions = append(sel.MatchExpressions, req)
		}
		p := ct.PDB("ns", fmt.Sprintf("b%d", i), sel)
		cov := NewCoverage([]*policyv1.PodDisruptionBudget{&p}, func(string) []*corev1.Pod { return pods })
		var want []string
		for _, pod := range pods {
			if Covers(&p, pod) {
				want = append(want, pod.Name)
			}
		}
		if got := podNames(cov.PodsOf(&p)); !slices.Equal(got, want) {
			t.Fatalf("selector %s: index found %d pods %v, scan found %d %v", metav1.FormatLabelSelector(sel), len(got), got, len(want), want)
		}
	}
}

func TestModeAndSpecString(t *testing.T) {
	base := ct.PDB("ns", "b", ct.PDBSelector(map[string]string{"a": "b"}))
	tests := []struct {
		p    policyv1.PodDisruptionBudget
		mode Mode
		spec string
	}{
		{ct.MinAvailable(base, 1), ModeMinAvailableInt, "minAvailable=1"},
		{ct.MinAvailable(base, "50%"), ModeMinAvailablePercent, "minAvailable=50%"},
		{ct.MaxUnavailable(base, 0), ModeMaxUnavailable, "maxUnavailable=0"},
		{ct.MaxUnavailable(base, "10%"), ModeMaxUnavailable, "maxUnavailable=10%"},
		{base, ModeNone, "neither minAvailable nor maxUnavailable set"},
	}
	for _, tc := range tests {
		if got := ModeOf(&tc.p); got != tc.mode {
			t.Errorf("ModeOf(%s) = %s, want %s", tc.spec, got, tc.mode)
		}
		if got := SpecString(&tc.p); got != tc.spec {
			t.Errorf("SpecString = %q, want %q", got, tc.spec)
		}
	}
}
