package operations

import (
	"strings"
	"testing"

	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/kdiag/kdiag/pkg/cluster"
	ct "github.com/kdiag/kdiag/pkg/cluster/clustertest"
	"github.com/kdiag/kdiag/pkg/findings"
)

// TestPDBBlocksSeed is the seed story: nginx with 1 replica under
// minAvailable: 1 blocks draining n1; the 3-replica neighbour does not.
func TestPDBBlocksSeed(t *testing.T) {
	s := base()
	fs := Analyze(s)
	f := ct.MustFind(t, fs, idPDBBlocks, "nginx")
	if f.Severity != findings.Critical || f.Area != findings.AreaOperations {
		t.Errorf("severity/area = %s/%s, want critical/operations", f.Severity, f.Area)
	}
	if f.Object != (findings.ObjectRef{Kind: "PodDisruptionBudget", Namespace: "shop", Name: "nginx"}) {
		t.Errorf("object = %+v", f.Object)
	}
	for _, frag := range []string{"shop/nginx", "minAvailable=1", "Deployment nginx, 1 replica", "draining node n1 will stall"} {
		if !strings.Contains(f.Title, frag) {
			t.Errorf("title %q lacks %q", f.Title, frag)
		}
	}
	ct.AssertEvidence(t, f,
		"spec: minAvailable=1; selector app=nginx selects 1 pod",
		"status: disruptionsAllowed=0 currentHealthy=1 desiredHealthy=1 expectedPods=1",
		"(matches the status)",
		"owner: Deployment shop/nginx spec.replicas=1",
		"desiredHealthy=1 >= expectedPods=1",
		"nginx-5d8f7c-0 on n1 (HTTP 429",
		"will stall: node n1 (nginx-5d8f7c-0)",
	)
	scale := ct.PatchOf(f, "deployments", "scale")
	if scale == nil {
		t.Fatalf("no scale remediation in %+v", f.Remediation)
	}
	ct.AssertJSON(t, scale.Action.Patch, `{"spec":{"replicas":2}}`)
	if scale.Command != "kubectl scale deployment/nginx -n shop --replicas=2" {
		t.Errorf("scale command = %q", scale.Command)
	}
	relax := ct.PatchOf(f, "poddisruptionbudgets", "")
	if relax == nil {
		t.Fatalf("no relax remediation in %+v", f.Remediation)
	}
	a := relax.Action
	if a.Group != "policy" || a.Version != "v1" || a.Namespace != "shop" || a.Name != "nginx" || a.PatchType != types.MergePatchType {
		t.Errorf("relax action = %+v", a)
	}
	ct.AssertJSON(t, a.Patch, `{"spec":{"maxUnavailable":1,"minAvailable":null}}`)
	if !strings.HasPrefix(relax.Command, "kubectl patch pdb nginx -n shop --type=merge -p ") {
		t.Errorf("relax command = %q", relax.Command)
	}
	if !strings.Contains(relax.Description, "single replica") {
		t.Errorf("relax description does not explain the trade-off: %q", relax.Description)
	}
	if ct.Find(fs, idPDBBlocks, "web") != nil {
		t.Errorf("healthy neighbour web (3 replicas, minAvailable 2) reported")
	}
}

func TestPDBBlocksCases(t *testing.T) {
	tests := []struct {
		name     string
		build    func(s *cluster.Snapshot)
		pdb      string
		severity findings.Severity
		evidence []string
		// scale and relax are the expected patch bodies; "" means absent.
		scale, relax string
		explain      string
	}{
		{
			name: "minAvailable equal to replicas",
			build: func(s *cluster.Snapshot) {
				addDeploy(s, "shop", "api", 3, map[string]string{"app": "api"}, "n1", "n2", "n3")
				s.PodDisruptionBudgets = append(s.PodDisruptionBudgets, ct.PDBStatus(ct.MinAvailable(ct.PDB("shop", "api", ct.PDBSelector(map[string]string{"app": "api"})), 3), 3, 3, 3, 0))
			},
			pdb: "api", severity: findings.Critical,
			evidence: []string{"desiredHealthy=3 >= expectedPods=3", "n1 (api-5d8f7c-0), n2 (api-5d8f7c-1), n3 (api-5d8f7c-2)"},
			scale:    `{"spec":{"replicas":4}}`, relax: `{"spec":{"minAvailable":2}}`,
		},
		{
			name: "percentage minAvailable over one replica",
			build: func(s *cluster.Snapshot) {
				addDeploy(s, "shop", "api", 1, map[string]string{"app": "api"}, "n2")
				s.PodDisruptionBudgets = append(s.PodDisruptionBudgets, ct.PDBStatus(ct.MinAvailable(ct.PDB("shop", "api", ct.PDBSelector(map[string]string{"app": "api"})), "80%"), 1, 1, 1, 0))
			},
			pdb: "api", severity: findings.Critical,
			evidence: []string{"minAvailable=80%", "will stall: node n2"},
			scale:    `{"spec":{"replicas":5}}`, relax: `{"spec":{"maxUnavailable":1,"minAvailable":null}}`,
		},
		{
			name: "maxUnavailable 0 is reported and called deliberate",
			build: func(s *cluster.Snapshot) {
				addDeploy(s, "shop", "db", 2, map[string]string{"app": "db"}, "n2", "n3")
				s.PodDisruptionBudgets = append(s.PodDisruptionBudgets, ct.PDBStatus(ct.MaxUnavailable(ct.PDB("shop", "db", ct.PDBSelector(map[string]string{"app": "db"})), 0), 2, 2, 2, 0))
			},
			pdb: "db", severity: findings.Critical,
			evidence: []string{"maxUnavailable=0 allows no pod to be unavailable", "usually a deliberate"},
			relax:    `{"spec":{"maxUnavailable":1}}`, explain: "usually intentional",
		},
		{
			name: "unhealthy pods spend the budget",
			build: func(s *cluster.Snapshot) {
				addDeploy(s, "shop", "api", 3, map[string]string{"app": "api"}, "n1", "n2", "n3")
				ct.SetPodReady(podByName(s, "api-5d8f7c-1"), false)
				s.PodDisruptionBudgets = append(s.PodDisruptionBudgets, ct.PDBStatus(ct.MaxUnavailable(ct.PDB("shop", "api", ct.PDBSelector(map[string]string{"app": "api"})), 1), 3, 2, 2, 0))
			},
			pdb: "api", severity: findings.Critical,
			evidence: []string{"currentHealthy=2 <= desiredHealthy=2", "api-5d8f7c-1 on n2 (not Ready)"},
			relax:    `{"spec":{"unhealthyPodEvictionPolicy":"AlwaysAllow"}}`, explain: "not healthy",
		},
		{
			name: "stale status blocks even with room",
			build: func(s *cluster.Snapshot) {
				p := pdbByName(s, "web")
				p.Generation = 2 // spec edited, controller not caught up
			},
			pdb: "web", severity: findings.Critical,
			evidence: []string{"status is stale: status.observedGeneration=1 < metadata.generation=2", "still being processed"},
			explain:  "kube-controller-manager",
		},
		{
			name: "status says 0 but the pods allow 1: lagging controller",
			build: func(s *cluster.Snapshot) {
				*pdbByName(s, "web") = ct.PDBStatus(*pdbByName(s, "web"), 3, 2, 2, 0)
			},
			pdb: "web", severity: findings.Critical,
			evidence: []string{"disruptionsAllowed=1 (differs from the status"},
			explain:  "kube-controller-manager",
		},
		{
			name: "DaemonSet under maxUnavailable: sync failure, drains skip the pods",
			build: func(s *cluster.Snapshot) {
				lbls := map[string]string{"app": "agent"}
				s.DaemonSets = append(s.DaemonSets, ct.DaemonSetOf("shop", "agent", lbls))
				for _, n := range []string{"n1", "n2"} {
					p := ct.RunningPod("shop", "agent-"+n, n, lbls)
					ct.SetController(&p, "apps/v1", "DaemonSet", "agent")
					s.Pods = append(s.Pods, p)
				}
				p := ct.PDBStatus(ct.MaxUnavailable(ct.PDB("shop", "agent", ct.PDBSelector(lbls)), 1), 0, 0, 0, 0)
				p.Status.Conditions[0].Reason = policyv1.SyncFailedReason
				p.Status.Conditions[0].Message = "daemonsets.apps does not implement the scale subresource"
				s.PodDisruptionBudgets = append(s.PodDisruptionBudgets, p)
			},
			pdb: "agent", severity: findings.Warning,
			evidence: []string{"does not implement the scale subresource", "reason=SyncFailed", "DaemonSet shop/agent (no scale subresource)"},
			relax:    `{"spec":{"maxUnavailable":null,"minAvailable":1}}`, explain: "scale subresource",
		},
		{
			name: "pods not scheduled yet: warning",
			build: func(s *cluster.Snapshot) {
				addDeploy(s, "shop", "api", 1, map[string]string{"app": "api"}, "")
				s.PodDisruptionBudgets = append(s.PodDisruptionBudgets, ct.PDBStatus(ct.MinAvailable(ct.PDB("shop", "api", ct.PDBSelector(map[string]string{"app": "api"})), 1), 1, 1, 1, 0))
			},
			pdb: "api", severity: findings.Warning,
			evidence: []string{"api-5d8f7c-0 (not scheduled)"},
			scale:    `{"spec":{"replicas":2}}`, relax: `{"spec":{"maxUnavailable":1,"minAvailable":null}}`,
		},
		{
			name: "neither minAvailable nor maxUnavailable",
			build: func(s *cluster.Snapshot) {
				addDeploy(s, "shop", "api", 2, map[string]string{"app": "api"}, "n1", "n2")
				s.PodDisruptionBudgets = append(s.PodDisruptionBudgets, ct.PDBStatus(ct.PDB("shop", "api", ct.PDBSelector(map[string]string{"app": "api"})), 0, 0, 2, 0))
			},
			pdb: "api", severity: findings.Critical,
			evidence: []string{"neither spec.minAvailable nor spec.maxUnavailable is set"},
			relax:    `{"spec":{"maxUnavailable":1}}`,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := base()
			tc.build(s)
			fs := Analyze(s)
			f := ct.MustFind(t, fs, idPDBBlocks, tc.pdb)
			if f.Severity != tc.severity {
				t.Errorf("severity = %s, want %s (title %q)", f.Severity, tc.severity, f.Title)
			}
			ct.AssertEvidence(t, f, tc.evidence...)
			scale := ct.PatchOf(f, "deployments", "scale")
			switch {
			case tc.scale == "" && scale != nil:
				t.Errorf("unexpected scale remediation %s", scale.Command)
			case tc.scale != "" && scale == nil:
				t.Errorf("no scale remediation, want %s", tc.scale)
			case scale != nil:
				ct.AssertJSON(t, scale.Action.Patch, tc.scale)
			}
			relax := ct.PatchOf(f, "poddisruptionbudgets", "")
			switch {
			case tc.relax == "" && relax != nil:
				t.Errorf("unexpected relax remediation %s", relax.Command)
			case tc.relax != "" && relax == nil:
				t.Errorf("no relax remediation, want %s", tc.relax)
			case relax != nil:
				ct.AssertJSON(t, relax.Action.Patch, tc.relax)
			}
			if tc.explain != "" && !strings.Contains(f.Explanation, tc.explain) {
				t.Errorf("explanation lacks %q: %s", tc.explain, f.Explanation)
			}
			if ct.Find(fs, idPDBBlocks, "web") != nil && tc.pdb != "web" {
				t.Errorf("healthy neighbour web reported")
			}
		})
	}
}

func TestPDBBlocksGaps(t *testing.T) {
	t.Run("budgets not read: silent", func(t *testing.T) {
		s := base()
		s.PodDisruptionBudgets = nil
		s.Gaps = append(s.Gaps, cluster.Gap{Resource: cluster.ResPDBs, Reason: cluster.GapForbidden, Message: "forbidden"})
		if got := ct.WithID(Analyze(s), idPDBBlocks); len(got) != 0 {
			t.Errorf("findings without budgets: %+v", got)
		}
	})
	t.Run("pods not read: status only, warning", func(t *testing.T) {
		s := base()
		s.Pods = nil
		s.Gaps = append(s.Gaps, cluster.Gap{Resource: cluster.ResPods, Namespace: "shop", Reason: cluster.GapForbidden, Message: "forbidden"})
		fs := Analyze(s)
		f := ct.MustFind(t, fs, idPDBBlocks, "nginx")
		if f.Severity != findings.Warning {
			t.Errorf("severity = %s, want warning without pods", f.Severity)
		}
		ct.AssertEvidence(t, f, "pods in namespace shop were not read", "disruptionsAllowed=0")
		if len(ct.Mutating(f)) != 0 {
			t.Errorf("mutating remediations without pods: %+v", ct.Mutating(f))
		}
		if ct.Find(fs, idPDBBlocks, "web") != nil {
			t.Errorf("web (status allows 1) reported")
		}
		if got := ct.WithID(fs, idNoMatchingPods); len(got) != 0 {
			t.Errorf("pdb-no-matching-pods fired without pods: %+v", got)
		}
	})
}
