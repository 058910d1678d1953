package pdb

import (
	"encoding/json"
	"reflect"
	"slices"
	"testing"

	jsonpatch "github.com/evanphx/json-patch/v5"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/kdiag/kdiag/pkg/cluster"
	ct "github.com/kdiag/kdiag/pkg/cluster/clustertest"
)

func TestReplicasForOneDisruption(t *testing.T) {
	sel := ct.PDBSelector(web)
	tests := []struct {
		name  string
		build func(s *cluster.Snapshot)
		want  int32
		ok    bool
	}{
		{name: "seed: minAvailable 1 over 1 replica needs 2", want: 2, ok: true, build: func(s *cluster.Snapshot) {
			addDeployment(s, "nginx", 1, web, "n1")
			s.PodDisruptionBudgets = append(s.PodDisruptionBudgets, ct.MinAvailable(ct.PDB("shop", "b", sel), 1))
		}},
		{name: "minAvailable 3 over 3 replicas needs 4", want: 4, ok: true, build: func(s *cluster.Snapshot) {
			addDeployment(s, "web", 3, web, "n1", "n2", "n3")
			s.PodDisruptionBudgets = append(s.PodDisruptionBudgets, ct.MinAvailable(ct.PDB("shop", "b", sel), 3))
		}},
		{name: "an extra healthy unmanaged pod counts", want: 2, ok: true, build: func(s *cluster.Snapshot) {
			addDeployment(s, "web", 1, web, "n1")
			s.Pods = append(s.Pods, ct.RunningPod("shop", "bare", "n2", web))
			s.PodDisruptionBudgets = append(s.PodDisruptionBudgets, ct.MinAvailable(ct.PDB("shop", "b", sel), 2))
		}},
		{name: "minAvailable 50% over 1 replica needs 2", want: 2, ok: true, build: func(s *cluster.Snapshot) {
			addDeployment(s, "web", 1, web, "n1")
			s.PodDisruptionBudgets = append(s.PodDisruptionBudgets, ct.MinAvailable(ct.PDB("shop", "b", sel), "50%"))
		}},
		{name: "minAvailable 80% over 1 replica needs 5 (ceil(0.8n) < n)", want: 5, ok: true, build: func(s *cluster.Snapshot) {
			addDeployment(s, "web", 1, web, "n1")
			s.PodDisruptionBudgets = append(s.PodDisruptionBudgets, ct.MinAvailable(ct.PDB("shop", "b", sel), "80%"))
		}},
		{name: "minAvailable 100% never allows one", ok: false, build: func(s *cluster.Snapshot) {
			addDeployment(s, "web", 2, web, "n1", "n2")
			s.PodDisruptionBudgets = append(s.PodDisruptionBudgets, ct.MinAvailable(ct.PDB("shop", "b", sel), "100%"))
		}},
		{name: "maxUnavailable 0 never allows one", ok: false, build: func(s *cluster.Snapshot) {
			addDeployment(s, "web", 2, web, "n1", "n2")
			s.PodDisruptionBudgets = append(s.PodDisruptionBudgets, ct.MaxUnavailable(ct.PDB("shop", "b", sel), 0))
		}},
		{name: "unhealthy pods: the answer is not above the current replicas", want: 1, ok: true, build: func(s *cluster.Snapshot) {
			addDeployment(s, "web", 3, web, "n1", "n2", "n3")
			ct.SetPodReady(pod(s, "web-5d8f7c-0"), false)
			ct.SetPodReady(pod(s, "web-5d8f7c-1"), false)
			s.PodDisruptionBudgets = append(s.PodDisruptionBudgets, ct.MaxUnavailable(ct.PDB("shop", "b", sel), 1))
		}},
		{name: "sync failure", ok: false, build: func(s *cluster.Snapshot) {
			addDaemonSet(s, "agent", web, "n1")
			s.PodDisruptionBudgets = append(s.PodDisruptionBudgets, ct.MaxUnavailable(ct.PDB("shop", "b", sel), 1))
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := ct.Snapshot()
			tc.build(s)
			p, b := budgetOf(s)
			if len(b.Controllers) == 0 {
				t.Fatal("no controller")
			}
			n, ok := ReplicasForOneDisruption(p, b, b.Controllers[0])
			if ok != tc.ok || n != tc.want {
				t.Fatalf("ReplicasForOneDisruption = %d, %v; want %d, %v", n, ok, tc.want, tc.ok)
			}
		})
	}
}

// applyMerge applies the relaxation's merge patch to the budget the way the
// API server does and returns the resulting spec.
func applyMerge(t *testing.T, p *policyv1.PodDisruptionBudget, patch map[string]any) policyv1.PodDisruptionBudgetSpec {
	t.Helper()
	orig, err := json.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	body, err := json.Marshal(patch)
	if err != nil {
		t.Fatal(err)
	}
	merged, err := jsonpatch.MergePatch(orig, body)
	if err != nil {
		t.Fatalf("merge patch %s: %v", body, err)
	}
	var out policyv1.PodDisruptionBudget
	if err := json.Unmarshal(merged, &out); err != nil {
		t.Fatal(err)
	}
	return out.Spec
}

func TestRelax(t *testing.T) {
	sel := ct.PDBSelector(web)
	tests := []struct {
		name  string
		build func(s *cluster.Snapshot)
		// patch is the expected merge patch's spec, as JSON.
		patch string
		// allowedAfter is the computed disruptionsAllowed after the patch.
		allowedAfter int32
		unready      bool
		ok           bool
	}{
		{name: "seed: one replica switches to maxUnavailable 1", ok: true, allowedAfter: 1,
			patch: `{"maxUnavailable":1,"minAvailable":null}`,
			build: func(s *cluster.Snapshot) {
				addDeployment(s, "nginx", 1, web, "n1")
				s.PodDisruptionBudgets = append(s.PodDisruptionBudgets, ct.MinAvailable(ct.PDB("shop", "b", sel), 1))
			}},
		{name: "minAvailable 3 of 3 becomes 2", ok: true, allowedAfter: 1,
			patch: `{"minAvailable":2}`,
			build: func(s *cluster.Snapshot) {
				addDeployment(s, "web", 3, web, "n1", "n2", "n3")
				s.PodDisruptionBudgets = append(s.PodDisruptionBudgets, ct.MinAvailable(ct.PDB("shop", "b", sel), 3))
			}},
		{name: "minAvailable 100% of 4 becomes 75%", ok: true, allowedAfter: 1,
			patch: `{"minAvailable":"75%"}`,
			build: func(s *cluster.Snapshot) {
				addDeployment(s, "web", 4, web, "n1", "n2", "n3", "n1")
				s.PodDisruptionBudgets = append(s.PodDisruptionBudgets, ct.MinAvailable(ct.PDB("shop", "b", sel), "100%"))
			}},
		{name: "minAvailable 100% of 3 becomes 66%", ok: true, allowedAfter: 1,
			patch: `{"minAvailable":"66%"}`,
			build: func(s *cluster.Snapshot) {
				addDeployment(s, "web", 3, web, "n1", "n2", "n3")
				s.PodDisruptionBudgets = append(s.PodDisruptionBudgets, ct.MinAvailable(ct.PDB("shop", "b", sel), "100%"))
			}},
		{name: "maxUnavailable 0 becomes 1", ok: true, allowedAfter: 1,
			patch: `{"maxUnavailable":1}`,
			build: func(s *cluster.Snapshot) {
				addDeployment(s, "web", 2, web, "n1", "n2")
				s.PodDisruptionBudgets = append(s.PodDisruptionBudgets, ct.MaxUnavailable(ct.PDB("shop", "b", sel), 0))
			}},
		{name: "no budget gets maxUnavailable 1", ok: true, allowedAfter: 1,
			patch: `{"maxUnavailable":1}`,
			build: func(s *cluster.Snapshot) {
				addDeployment(s, "web", 2, web, "n1", "n2")
				s.PodDisruptionBudgets = append(s.PodDisruptionBudgets, ct.PDB("shop", "b", sel))
			}},
		{name: "DaemonSet under maxUnavailable switches to an integer minAvailable", ok: true, allowedAfter: 1,
			patch: `{"maxUnavailable":null,"minAvailable":2}`,
			build: func(s *cluster.Snapshot) {
				addDaemonSet(s, "agent", web, "n1", "n2", "n3")
				s.PodDisruptionBudgets = append(s.PodDisruptionBudgets, ct.MaxUnavailable(ct.PDB("shop", "b", sel), 1))
			}},
		{name: "unmanaged pods under a percentage switch to an integer minAvailable", ok: true, allowedAfter: 1,
			patch: `{"minAvailable":1}`,
			build: func(s *cluster.Snapshot) {
				s.Pods = append(s.Pods, ct.RunningPod("shop", "a", "n1", web), ct.RunningPod("shop", "b", "n2", web))
				s.PodDisruptionBudgets = append(s.PodDisruptionBudgets, ct.MinAvailable(ct.PDB("shop", "b", sel), "50%"))
			}},
		{name: "unhealthy pods get AlwaysAllow only", ok: true, allowedAfter: 0, unready: true,
			patch: `{"unhealthyPodEvictionPolicy":"AlwaysAllow"}`,
			build: func(s *cluster.Snapshot) {
				addDeployment(s, "web", 3, web, "n1", "n2", "n3")
				ct.SetPodReady(pod(s, "web-5d8f7c-0"), false)
				s.PodDisruptionBudgets = append(s.PodDisruptionBudgets, ct.MaxUnavailable(ct.PDB("shop", "b", sel), 1))
			}},
		{name: "one unready replica under minAvailable 1 gets both", ok: true, allowedAfter: 0, unready: true,
			patch: `{"maxUnavailable":1,"minAvailable":null,"unhealthyPodEvictionPolicy":"AlwaysAllow"}`,
			build: func(s *cluster.Snapshot) {
				addDeployment(s, "nginx", 1, web, "n1")
				ct.SetPodReady(pod(s, "nginx-5d8f7c-0"), false)
				s.PodDisruptionBudgets = append(s.PodDisruptionBudgets, ct.MinAvailable(ct.PDB("shop", "b", sel), 1))
			}},
		{name: "unhealthy pods with AlwaysAllow already: nothing to relax", ok: false,
			build: func(s *cluster.Snapshot) {
				addDeployment(s, "web", 3, web, "n1", "n2", "n3")
				ct.SetPodReady(pod(s, "web-5d8f7c-0"), false)
				p := ct.MaxUnavailable(ct.PDB("shop", "b", sel), 1)
				pol := policyv1.AlwaysAllow
				p.Spec.UnhealthyPodEvictionPolicy = &pol
				s.PodDisruptionBudgets = append(s.PodDisruptionBudgets, p)
			}},
		{name: "healthy budget: nothing to relax", ok: false,
			build: func(s *cluster.Snapshot) {
				addDeployment(s, "web", 3, web, "n1", "n2", "n3")
				s.PodDisruptionBudgets = append(s.PodDisruptionBudgets, ct.MinAvailable(ct.PDB("shop", "b", sel), 2))
			}},
		{name: "no pods: nothing to relax", ok: false,
			build: func(s *cluster.Snapshot) {
				s.PodDisruptionBudgets = append(s.PodDisruptionBudgets, ct.MinAvailable(ct.PDB("shop", "b", sel), 1))
			}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := ct.Snapshot()
			tc.build(s)
			p, b := budgetOf(s)
			r, ok := Relax(p, b)
			if ok != tc.ok {
				t.Fatalf("Relax ok = %v, want %v (changes %v)", ok, tc.ok, r.Changes)
			}
			if !ok {
				return
			}
			got, _ := json.Marshal(r.Patch["spec"])
			var gotV, wantV any
			_ = json.Unmarshal(got, &gotV)
			if err := json.Unmarshal([]byte(tc.patch), &wantV); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(gotV, wantV) {
				t.Errorf("patch spec = %s, want %s", got, tc.patch)
			}
			applied := applyMerge(t, p, r.Patch)
			if err := ValidateSpec(applied); err != nil {
				t.Errorf("patched spec is invalid: %v", err)
			}
			if !reflect.DeepEqual(applied, r.Spec) {
				t.Errorf("merge patch gives %+v, Relax says %+v", applied, r.Spec)
			}
			if r.After.DisruptionsAllowed != tc.allowedAfter {
				t.Errorf("after: disruptionsAllowed = %d, want %d", r.After.DisruptionsAllowed, tc.allowedAfter)
			}
			if r.UnreadyEvictable != tc.unready {
				t.Errorf("UnreadyEvictable = %v, want %v", r.UnreadyEvictable, tc.unready)
			}
			if r.TradeOff == "" || len(r.Changes) == 0 {
				t.Errorf("relaxation lacks a trade-off or changes: %+v", r)
			}
		})
	}
}

func TestValidateSpec(t *testing.T) {
	i := func(v int) *intstr.IntOrString { x := intstr.FromInt32(int32(v)); return &x }
	s := func(v string) *intstr.IntOrString { x := intstr.FromString(v); return &x }
	bogus := policyv1.UnhealthyPodEvictionPolicyType("Sometimes")
	tests := []struct {
		name string
		spec policyv1.PodDisruptionBudgetSpec
		ok   bool
	}{
		{"minAvailable 1", policyv1.PodDisruptionBudgetSpec{MinAvailable: i(1)}, true},
		{"maxUnavailable 0%", policyv1.PodDisruptionBudgetSpec{MaxUnavailable: s("0%")}, true},
		{"neither", policyv1.PodDisruptionBudgetSpec{}, true},
		{"both", policyv1.PodDisruptionBudgetSpec{MinAvailable: i(1), MaxUnavailable: i(1)}, false},
		{"negative", policyv1.PodDisruptionBudgetSpec{MinAvailable: i(-1)}, false},
		{"over 100%", policyv1.PodDisruptionBudgetSpec{MaxUnavailable: s("101%")}, false},
		{"not a percent", policyv1.PodDisruptionBudgetSpec{MinAvailable: s("two")}, false},
		{"unknown policy", policyv1.PodDisruptionBudgetSpec{MinAvailable: i(1), UnhealthyPodEvictionPolicy: &bogus}, false},
	}
	for _, tc := range tests {
		if err := ValidateSpec(tc.spec); (err == nil) != tc.ok {
			t.Errorf("%s: ValidateSpec = %v, want ok %v", tc.name, err, tc.ok)
		}
	}
}

func TestReasonsOrderIsStable(t *testing.T) {
	b := Budget{Mode: ModeMinAvailableInt, Members: []Member{{}}, ExpectedPods: 1, DesiredHealthy: 1}
	if got := b.Reasons(); !slices.Equal(got, []Reason{ReasonMinAvailableAtLeastExpected, ReasonUnhealthyPods}) {
		t.Errorf("Reasons = %v", got)
	}
}
