package workload

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/kdiag/kdiag/pkg/cluster"
	"github.com/kdiag/kdiag/pkg/findings"
)

// withID returns the findings of one check.
func withID(fs []findings.Finding, id string) []findings.Finding {
	var out []findings.Finding
	for _, f := range fs {
		if f.ID == id {
			out = append(out, f)
		}
	}
	return out
}

// find returns the finding of check id about object name, failing the test
// when there is none.
func find(t *testing.T, fs []findings.Finding, id, name string) findings.Finding {
	t.Helper()
	for _, f := range fs {
		if f.ID == id && f.Object.Name == name {
			return f
		}
	}
	t.Fatalf("no %s finding about %q; got:\n%s", id, name, dump(fs))
	return findings.Finding{}
}

// none fails the test when check id reports anything about name.
func none(t *testing.T, fs []findings.Finding, id, name string) {
	t.Helper()
	for _, f := range fs {
		if f.ID == id && f.Object.Name == name {
			t.Fatalf("unexpected %s finding about %q: %s\n%s", id, name, f.Title, strings.Join(f.Evidence, "\n"))
		}
	}
}

// evidenceHas fails the test unless every want appears in the finding's
// title or evidence.
func evidenceHas(t *testing.T, f findings.Finding, want ...string) {
	t.Helper()
	all := f.Title + "\n" + strings.Join(f.Evidence, "\n")
	for _, w := range want {
		if !strings.Contains(all, w) {
			t.Errorf("%s %s: title/evidence lack %q:\n%s", f.ID, f.Object, w, all)
		}
	}
}

// mutating returns the mutating remediations of a finding.
func mutating(f findings.Finding) []findings.Remediation {
	var out []findings.Remediation
	for _, r := range f.Remediation {
		if r.Mutating() {
			out = append(out, r)
		}
	}
	return out
}

func dump(fs []findings.Finding) string {
	b, _ := json.MarshalIndent(fs, "", "  ")
	return string(b)
}

// gap returns a gap for a resource in every namespace.
func gap(r cluster.Resource) cluster.Gap {
	return cluster.Gap{Resource: r, Reason: cluster.GapForbidden, Message: "forbidden"}
}

// checkBasics asserts what every finding of this package must carry.
func checkBasics(t *testing.T, fs []findings.Finding) {
	t.Helper()
	ids := map[string]findings.Check{}
	for _, c := range Checks() {
		ids[c.ID] = c
	}
	for _, f := range fs {
		if _, ok := ids[f.ID]; !ok {
			t.Errorf("finding with undeclared check ID %q", f.ID)
		}
		if f.Area != findings.AreaWorkload || f.Severity.Rank() == 0 || f.Title == "" || len(f.Evidence) == 0 ||
			f.Explanation == "" || len(f.Remediation) == 0 || f.Object.Name == "" || f.Object.Kind == "" {
			t.Errorf("incomplete finding: %+v", f)
		}
	}
}
