package pdb

import (
	"encoding/json"
	"testing"

	policyv1 "k8s.io/api/policy/v1"

	ct "github.com/kdiag/kdiag/pkg/cluster/clustertest"
)

func TestAllowDisruptions(t *testing.T) {
	sel := ct.PDBSelector(web)
	tests := []struct {
		name    string
		pdb     policyv1.PodDisruptionBudget
		b       Budget
		k       int32
		patch   string
		change  string
		keepsUp bool
	}{
		{name: "integer minAvailable keeps current-k", pdb: ct.MinAvailable(ct.PDB("shop", "b", sel), 2), b: Budget{CurrentHealthy: 4, ExpectedPods: 4}, k: 3,
			patch: `{"spec":{"minAvailable":1}}`, change: "minAvailable 2 -> 1", keepsUp: true},
		{name: "integer minAvailable down to 0 loses the service", pdb: ct.MinAvailable(ct.PDB("shop", "b", sel), 1), b: Budget{CurrentHealthy: 2, ExpectedPods: 2}, k: 2,
			patch: `{"spec":{"minAvailable":0}}`, change: "minAvailable 1 -> 0"},
		{name: "percentage minAvailable becomes maxUnavailable k", pdb: ct.MinAvailable(ct.PDB("shop", "b", sel), "50%"), b: Budget{CurrentHealthy: 3, ExpectedPods: 3}, k: 2,
			patch: `{"spec":{"maxUnavailable":2,"minAvailable":null}}`, change: "minAvailable 50% -> maxUnavailable 2", keepsUp: true},
		{name: "maxUnavailable raised to k", pdb: ct.MaxUnavailable(ct.PDB("shop", "b", sel), 0), b: Budget{CurrentHealthy: 2, ExpectedPods: 2}, k: 2,
			patch: `{"spec":{"maxUnavailable":2}}`, change: "maxUnavailable 0 -> 2"},
		{name: "k below 1 means 1", pdb: ct.MaxUnavailable(ct.PDB("shop", "b", sel), 0), b: Budget{CurrentHealthy: 3, ExpectedPods: 3}, k: 0,
			patch: `{"spec":{"maxUnavailable":1}}`, change: "maxUnavailable 0 -> 1", keepsUp: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			patch, change, keepsUp := AllowDisruptions(&tc.pdb, tc.b, tc.k)
			body, err := json.Marshal(patch)
			if err != nil {
				t.Fatal(err)
			}
			if string(body) != tc.patch || change != tc.change || keepsUp != tc.keepsUp {
				t.Errorf("AllowDisruptions = %s, %q, %v; want %s, %q, %v", body, change, keepsUp, tc.patch, tc.change, tc.keepsUp)
			}
		})
	}
}

func TestAlwaysAllowRemediation(t *testing.T) {
	p := ct.MinAvailable(ct.PDB("shop", "b", ct.PDBSelector(web)), 1)
	r, ok := AlwaysAllowRemediation(&p)
	if !ok || r.Action == nil || string(r.Action.Patch) != `{"spec":{"unhealthyPodEvictionPolicy":"AlwaysAllow"}}` || r.Command != `kubectl patch pdb b -n shop --type=merge -p '{"spec":{"unhealthyPodEvictionPolicy":"AlwaysAllow"}}'` {
		t.Errorf("AlwaysAllowRemediation = %+v, %v", r, ok)
	}
	pol := policyv1.AlwaysAllow
	p.Spec.UnhealthyPodEvictionPolicy = &pol
	if _, ok := AlwaysAllowRemediation(&p); ok {
		t.Error("proposed AlwaysAllow for a budget that already has it")
	}
}

func TestScaleTo(t *testing.T) {
	p := ct.MinAvailable(ct.PDB("shop", "b", ct.PDBSelector(web)), 1)
	for kind, want := range map[string]string{
		"Deployment":  "kubectl scale deployment/x -n shop --replicas=3",
		"StatefulSet": "kubectl scale statefulset/x -n shop --replicas=3",
		"ReplicaSet":  "kubectl scale replicaset/x -n shop --replicas=3",
		"DaemonSet":   "",
	} {
		r, ok := ScaleTo(&p, Controller{Kind: kind, Name: "x", Replicas: 1, Scale: ScaleKnown}, 3)
		if ok != (want != "") || r.Command != want {
			t.Errorf("ScaleTo(%s) = %q, %v; want %q", kind, r.Command, ok, want)
		}
	}
}
