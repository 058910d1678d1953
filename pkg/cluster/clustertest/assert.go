package clustertest

import (
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
	"testing"

	"github.com/kdiag/kdiag/pkg/cluster"
	"github.com/kdiag/kdiag/pkg/findings"
)

// This file holds what analyzer tests (unit and integration) assert about
// the findings an Analyze returns: finding one by check ID and object,
// checking its evidence and fixes, and checking a whole list against what
// a test wants.

// Gap returns a gap for resource r in every namespace, as an RBAC denial
// records it.
func Gap(r cluster.Resource) cluster.Gap {
	return cluster.Gap{Resource: r, Reason: cluster.GapForbidden, Message: "forbidden"}
}

// WithID returns the findings of check id, in order.
func WithID(fs []findings.Finding, id string) []findings.Finding {
	var out []findings.Finding
	for _, f := range fs {
		if f.ID == id {
			out = append(out, f)
		}
	}
	return out
}

// Find returns the first finding of check id about an object named name
// (of any kind and namespace), or nil.
func Find(fs []findings.Finding, id, name string) *findings.Finding {
	for i := range fs {
		if fs[i].ID == id && fs[i].Object.Name == name {
			return &fs[i]
		}
	}
	return nil
}

// MustFind returns the first finding of check id about an object named
// name, and fails the test, listing what was found, when there is none.
func MustFind(t testing.TB, fs []findings.Finding, id, name string) *findings.Finding {
	t.Helper()
	if f := Find(fs, id, name); f != nil {
		return f
	}
	t.Fatalf("no %s finding about %q; got:\n%s", id, name, Dump(fs))
	return nil
}

// MustFindIn is MustFind for the object name in namespace ns.
func MustFindIn(t testing.TB, fs []findings.Finding, id, ns, name string) *findings.Finding {
	t.Helper()
	for i := range fs {
		if fs[i].ID == id && fs[i].Object.Namespace == ns && fs[i].Object.Name == name {
			return &fs[i]
		}
	}
	t.Fatalf("no %s finding about %s/%s; got:\n%s", id, ns, name, Dump(fs))
	return nil
}

// None fails the test when check id reports anything about an object named
// name: the healthy neighbour of a broken object must stay silent.
func None(t testing.TB, fs []findings.Finding, id, name string) {
	t.Helper()
	for _, f := range fs {
		if f.ID == id && f.Object.Name == name {
			t.Errorf("unexpected %s finding about %q: %s\n%s", id, name, f.Title, strings.Join(f.Evidence, "\n"))
		}
	}
}

// NoneAbout fails the test when any finding, of any check, concerns the
// object name in namespace ns.
func NoneAbout(t testing.TB, fs []findings.Finding, ns, name string) {
	t.Helper()
	for _, f := range fs {
		if f.Object.Namespace == ns && f.Object.Name == name {
			t.Errorf("unexpected %s finding about %s/%s: %s", f.ID, ns, name, f.Title)
		}
	}
}

// AssertEvidence fails the test unless every fragment appears in the
// finding's evidence.
func AssertEvidence(t testing.TB, f *findings.Finding, fragments ...string) {
	t.Helper()
	all := strings.Join(f.Evidence, "\n")
	for _, frag := range fragments {
		if !strings.Contains(all, frag) {
			t.Errorf("%s %s: evidence lacks %q:\n%s", f.ID, f.Object, frag, all)
		}
	}
}

// AssertMentions fails the test unless every fragment appears in the
// finding's title or evidence.
func AssertMentions(t testing.TB, f *findings.Finding, fragments ...string) {
	t.Helper()
	all := f.Title + "\n" + strings.Join(f.Evidence, "\n")
	for _, frag := range fragments {
		if !strings.Contains(all, frag) {
			t.Errorf("%s %s: title/evidence lack %q:\n%s", f.ID, f.Object, frag, all)
		}
	}
}

// Mutating returns the finding's mutating remediations, those that carry
// an Action for the server-side dry run.
func Mutating(f *findings.Finding) []findings.Remediation {
	var out []findings.Remediation
	for _, r := range f.Remediation {
		if r.Mutating() {
			out = append(out, r)
		}
	}
	return out
}

// PatchOf returns the finding's first mutating remediation acting on
// resource (and subresource, "" for none), or nil.
func PatchOf(f *findings.Finding, resource, subresource string) *findings.Remediation {
	for _, r := range Mutating(f) {
		if r.Action.Resource == resource && r.Action.Subresource == subresource {
			return &r
		}
	}
	return nil
}

// AssertJSON fails the test unless the raw JSON (a patch body) equals want,
// compared as values so that key order and spacing do not matter.
func AssertJSON(t testing.TB, raw []byte, want string) {
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

// AssertChecks fails the test unless checks, what an analyzer of area
// declares, are complete (area, severity, summary), unique, and exactly the
// check IDs ids.
func AssertChecks(t testing.TB, checks []findings.Check, area findings.Area, ids ...string) {
	t.Helper()
	declared := map[string]bool{}
	for _, c := range checks {
		if declared[c.ID] {
			t.Errorf("check %s declared twice", c.ID)
		}
		declared[c.ID] = true
		if c.Area != area || c.Severity.Rank() == 0 || c.Summary == "" {
			t.Errorf("incomplete check %+v", c)
		}
	}
	want := map[string]bool{}
	for _, id := range ids {
		want[id] = true
		if !declared[id] {
			t.Errorf("Checks() lacks %s", id)
		}
	}
	for _, c := range checks {
		if !want[c.ID] {
			t.Errorf("Checks() declares %s, which the test does not expect", c.ID)
		}
	}
}

// AssertComplete fails the test for every finding that an analyzer of area
// must not emit: a check ID that checks does not declare, another area, or
// a finding without severity, title, evidence, explanation, remediation or
// object.
func AssertComplete(t testing.TB, fs []findings.Finding, checks []findings.Check, area findings.Area) {
	t.Helper()
	ids := map[string]bool{}
	for _, c := range checks {
		ids[c.ID] = true
	}
	for _, f := range fs {
		if !ids[f.ID] {
			t.Errorf("finding with undeclared check ID %q", f.ID)
		}
		if f.Area != area || f.Severity.Rank() == 0 || f.Title == "" || len(f.Evidence) == 0 ||
			f.Explanation == "" || len(f.Remediation) == 0 || f.Object.Name == "" || f.Object.Kind == "" {
			t.Errorf("incomplete finding: %+v", f)
		}
	}
}

// Want is a finding a test expects, for AssertFindings.
type Want struct {
	ID       string
	Severity findings.Severity
	// Object is ObjectRef.String(), e.g. "shop/service/order-service".
	Object string
	// Title holds substrings of the title. The first also picks among
	// several findings of one check on one object.
	Title []string
	// Evidence holds substrings of the evidence lines joined by newlines;
	// NotEvidence holds substrings that must not appear there.
	Evidence, NotEvidence []string
	// Patches holds substrings each of which some mutating remediation's
	// patch body contains; Commands likewise for their commands.
	Patches, Commands []string
	// NoPatch asserts that no mutating remediation is offered.
	NoPatch bool
}

// AssertFindings checks that got holds exactly the wanted findings, so that
// healthy neighbours stay silent, each in area and complete (title,
// explanation, evidence, remediation), with the wanted severity, title,
// evidence and fixes. It returns, in the order of wants, the findings it
// matched (nil where one is missing), for further checks.
func AssertFindings(t testing.TB, area findings.Area, got []findings.Finding, wants []Want) []*findings.Finding {
	t.Helper()
	used := make([]bool, len(got))
	matched := make([]*findings.Finding, len(wants))
	for k, w := range wants {
		idx := -1
		for i, f := range got {
			if used[i] || f.ID != w.ID || f.Object.String() != w.Object {
				continue
			}
			if len(w.Title) > 0 && !strings.Contains(f.Title, w.Title[0]) {
				continue // several findings of one ID on one object: pick by title
			}
			idx = i
			break
		}
		if idx < 0 {
			t.Errorf("missing finding %s on %s %q; got:\n%s", w.ID, w.Object, w.Title, Dump(got))
			continue
		}
		used[idx] = true
		f := &got[idx]
		matched[k] = f
		if f.Severity != w.Severity {
			t.Errorf("%s on %s: severity %s, want %s", w.ID, w.Object, f.Severity, w.Severity)
		}
		if f.Area != area {
			t.Errorf("%s on %s: area %s, want %s", w.ID, w.Object, f.Area, area)
		}
		if f.Title == "" || f.Explanation == "" || len(f.Evidence) == 0 || len(f.Remediation) == 0 {
			t.Errorf("%s: title, explanation, evidence and remediation must all be set: %+v", w.ID, *f)
		}
		for _, s := range w.Title {
			if !strings.Contains(f.Title, s) {
				t.Errorf("%s: title %q lacks %q", w.ID, f.Title, s)
			}
		}
		ev := strings.Join(f.Evidence, "\n")
		for _, s := range w.Evidence {
			if !strings.Contains(ev, s) {
				t.Errorf("%s: evidence lacks %q; evidence:\n%s", w.ID, s, ev)
			}
		}
		for _, s := range w.NotEvidence {
			if strings.Contains(ev, s) {
				t.Errorf("%s: evidence must not mention %q; evidence:\n%s", w.ID, s, ev)
			}
		}
		var patches, commands []string
		for _, r := range Mutating(f) {
			patches = append(patches, string(r.Action.Patch))
			commands = append(commands, r.Command)
		}
		for _, p := range w.Patches {
			if !strings.Contains(strings.Join(patches, "\n"), p) {
				t.Errorf("%s: no patch contains %s; patches: %q", w.ID, p, patches)
			}
		}
		for _, c := range w.Commands {
			if !strings.Contains(strings.Join(commands, "\n"), c) {
				t.Errorf("%s: no mutating command contains %s; commands: %q", w.ID, c, commands)
			}
		}
		if w.NoPatch && len(patches) > 0 {
			t.Errorf("%s: want no mutating remediation, got %q", w.ID, patches)
		}
	}
	for i, f := range got {
		if !used[i] {
			t.Errorf("unexpected finding %s on %s: %s\n%s", f.ID, f.Object, f.Title, strings.Join(f.Evidence, "\n"))
		}
	}
	return matched
}

// LogFindings writes one line per finding to the test log: severity, ID,
// object and title.
func LogFindings(t testing.TB, fs []findings.Finding) {
	t.Helper()
	for _, f := range fs {
		t.Logf("%s %s %s: %s", f.Severity, f.ID, f.Object, f.Title)
	}
}

// Dump renders findings for a failure message: one line per finding with
// its severity, ID, object and title, then its evidence indented.
func Dump(fs []findings.Finding) string {
	if len(fs) == 0 {
		return "  (no findings)\n"
	}
	var b strings.Builder
	for _, f := range fs {
		fmt.Fprintf(&b, "  %s %s %s: %s\n    %s\n", f.Severity, f.ID, f.Object, f.Title, strings.Join(f.Evidence, "\n    "))
	}
	return b.String()
}
