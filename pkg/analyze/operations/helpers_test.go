package operations

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"

	"github.com/kdiag/kdiag/pkg/cluster"
	ct "github.com/kdiag/kdiag/pkg/cluster/clustertest"
	"github.com/kdiag/kdiag/pkg/findings"
)

var (
	nginxLabels = map[string]string{"app": "nginx"}
	webLabels   = map[string]string{"app": "web"}
)

// base returns a snapshot with three Ready nodes, the seed's single-replica
// nginx under minAvailable: 1 on n1, and a healthy neighbour: web with 3
// replicas under minAvailable: 2. Statuses are what the disruption
// controller writes for them.
func base() *cluster.Snapshot {
	s := ct.Snapshot()
	s.Nodes = append(s.Nodes, ct.ReadyNode("n1"), ct.ReadyNode("n2"), ct.ReadyNode("n3"))
	addDeploy(s, "shop", "nginx", 1, nginxLabels, "n1")
	addDeploy(s, "shop", "web", 3, webLabels, "n1", "n2", "n3")
	s.PodDisruptionBudgets = append(s.PodDisruptionBudgets,
		ct.PDBStatus(ct.MinAvailable(ct.PDB("shop", "nginx", ct.PDBSelector(nginxLabels)), 1), 1, 1, 1, 0),
		ct.PDBStatus(ct.MinAvailable(ct.PDB("shop", "web", ct.PDBSelector(webLabels)), 2), 3, 2, 3, 1),
	)
	return s
}

func addDeploy(s *cluster.Snapshot, ns, name string, replicas int32, lbls map[string]string, nodes ...string) {
	d, rs := ct.Deployment(ns, name, replicas, lbls)
	s.Deployments = append(s.Deployments, d)
	s.ReplicaSets = append(s.ReplicaSets, rs)
	s.Pods = append(s.Pods, ct.ReplicaPods(d, rs, nodes...)...)
}

func podByName(s *cluster.Snapshot, name string) *corev1.Pod {
	for i := range s.Pods {
		if s.Pods[i].Name == name {
			return &s.Pods[i]
		}
	}
	panic("no pod " + name)
}

func pdbByName(s *cluster.Snapshot, name string) *policyv1.PodDisruptionBudget {
	for i := range s.PodDisruptionBudgets {
		if s.PodDisruptionBudgets[i].Name == name {
			return &s.PodDisruptionBudgets[i]
		}
	}
	panic("no pdb " + name)
}

// withID returns the findings with the given check ID.
func withID(fs []findings.Finding, id string) []findings.Finding {
	var out []findings.Finding
	for _, f := range fs {
		if f.ID == id {
			out = append(out, f)
		}
	}
	return out
}

// find returns the finding with the ID about the object name, or nil.
func find(fs []findings.Finding, id, name string) *findings.Finding {
	for i := range fs {
		if fs[i].ID == id && fs[i].Object.Name == name {
			return &fs[i]
		}
	}
	return nil
}

// mustFind fails the test when there is no such finding.
func mustFind(t *testing.T, fs []findings.Finding, id, name string) *findings.Finding {
	t.Helper()
	f := find(fs, id, name)
	if f == nil {
		var got []string
		for _, x := range fs {
			got = append(got, x.ID+" "+x.Object.String()+": "+x.Title)
		}
		t.Fatalf("no %s finding about %s; got:\n%s", id, name, strings.Join(got, "\n"))
	}
	return f
}

// assertEvidence fails unless every fragment appears in some evidence line.
func assertEvidence(t *testing.T, f *findings.Finding, fragments ...string) {
	t.Helper()
	all := strings.Join(f.Evidence, "\n")
	for _, frag := range fragments {
		if !strings.Contains(all, frag) {
			t.Errorf("%s %s: evidence lacks %q:\n%s", f.ID, f.Object.Name, frag, all)
		}
	}
}

// mutating returns the finding's mutating remediations.
func mutating(f *findings.Finding) []findings.Remediation {
	var out []findings.Remediation
	for _, r := range f.Remediation {
		if r.Mutating() {
			out = append(out, r)
		}
	}
	return out
}

// patchOf returns the mutating remediation acting on resource/subresource,
// or nil.
func patchOf(f *findings.Finding, resource, subresource string) *findings.Remediation {
	for _, r := range mutating(f) {
		if r.Action.Resource == resource && r.Action.Subresource == subresource {
			r := r
			return &r
		}
	}
	return nil
}

// assertJSON fails unless the raw JSON equals want (compared as values).
func assertJSON(t *testing.T, raw []byte, want string) {
	t.Helper()
	var got, exp any
	if err := json.Unmarshal(raw, &got); err != nil {
		t.Fatalf("patch %s: %v", raw, err)
	}
	if err := json.Unmarshal([]byte(want), &exp); err != nil {
		t.Fatalf("want %s: %v", want, err)
	}
	if !reflect.DeepEqual(got, exp) {
		t.Errorf("patch = %s, want %s", raw, want)
	}
}
