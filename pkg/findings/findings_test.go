package findings

import (
	"testing"

	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
)

func TestParseSeverity(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    Severity
		wantErr bool
	}{
		{"critical", Critical, false}, {" Warning ", Warning, false}, {"INFO", Info, false}, {"fatal", "", true}, {"", "", true},
	} {
		got, err := ParseSeverity(tc.in)
		if (err != nil) != tc.wantErr || got != tc.want {
			t.Errorf("ParseSeverity(%q) = %q, %v; want %q, error %v", tc.in, got, err, tc.want, tc.wantErr)
		}
	}
}

func TestRemediationCommands(t *testing.T) {
	pdb := schema.GroupVersionResource{Group: "policy", Version: "v1", Resource: "poddisruptionbudgets"}
	tests := []struct {
		name        string
		r           Remediation
		wantCmd     string
		wantPatch   string
		wantSub     string
		wantMutates bool
	}{
		{"scale", Scale("d", "deployment", "web", "nginx", 2),
			"kubectl scale deployment/nginx -n web --replicas=2", `{"spec":{"replicas":2}}`, "scale", true},
		{"scale statefulset", Scale("d", "StatefulSet", "db", "pg", 3),
			"kubectl scale statefulset/pg -n db --replicas=3", `{"spec":{"replicas":3}}`, "scale", true},
		{"merge patch with a quote", MustPatch("d", pdb, "pdb", "web", "nginx", types.MergePatchType, map[string]any{"metadata": map[string]any{"annotations": map[string]string{"note": "it's"}}}),
			`kubectl patch pdb nginx -n web --type=merge -p '{"metadata":{"annotations":{"note":"it'"'"'s"}}}'`, `{"metadata":{"annotations":{"note":"it's"}}}`, "", true},
		{"inspect", Inspect("d", "kubectl get pdb -A"), "kubectl get pdb -A", "", "", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if tc.r.Command != tc.wantCmd {
				t.Errorf("command = %s\nwant      %s", tc.r.Command, tc.wantCmd)
			}
			if tc.r.Mutating() != tc.wantMutates {
				t.Fatalf("Mutating() = %v", tc.r.Mutating())
			}
			if !tc.wantMutates {
				return
			}
			if string(tc.r.Action.Patch) != tc.wantPatch || tc.r.Action.Subresource != tc.wantSub {
				t.Errorf("action = %s (sub %q), want %s (sub %q)", tc.r.Action.Patch, tc.r.Action.Subresource, tc.wantPatch, tc.wantSub)
			}
		})
	}
	if _, err := Patch("d", pdb, "pdb", "web", "x", types.ApplyYAMLPatchType, map[string]any{}); err == nil {
		t.Error("Patch accepted an apply patch, which kubectl patch does not take")
	}
}

func TestSortGroupsByAreaThenSeverity(t *testing.T) {
	fs := []Finding{
		{ID: "b", Area: AreaWorkload, Severity: Critical},
		{ID: "a", Area: AreaNode, Severity: Info},
		{ID: "c", Area: AreaNode, Severity: Critical},
		{ID: "d", Area: AreaNetwork, Severity: Warning},
	}
	Sort(fs)
	var got string
	for _, f := range fs {
		got += f.ID
	}
	if got != "dcab" {
		t.Errorf("order = %s, want dcab (network, node critical, node info, workload)", got)
	}
}
