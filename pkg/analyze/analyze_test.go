package analyze_test

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/kdiag/kdiag/examples"
	"github.com/kdiag/kdiag/pkg/analyze"
	"github.com/kdiag/kdiag/pkg/cluster"
	"github.com/kdiag/kdiag/pkg/findings"
)

var idPattern = regexp.MustCompile(`^[a-z0-9]+(-[a-z0-9]+)*$`)

// Every check has a unique, well-formed ID and a page under docs/checks/
// that states its area and severity.
func TestEveryCheckIsDocumented(t *testing.T) {
	seen := map[string]bool{}
	for _, c := range analyze.Checks() {
		if !idPattern.MatchString(c.ID) {
			t.Errorf("check ID %q is not kebab-case", c.ID)
		}
		if seen[c.ID] {
			t.Errorf("check ID %q is registered twice", c.ID)
		}
		seen[c.ID] = true
		if c.Severity.Rank() == 0 || c.Summary == "" {
			t.Errorf("check %q lacks a severity or summary: %+v", c.ID, c)
		}
		page := filepath.Join("..", "..", "docs", "checks", c.ID+".md")
		data, err := os.ReadFile(page)
		if err != nil {
			t.Errorf("check %q has no page: %v", c.ID, err)
			continue
		}
		text := string(data)
		for _, want := range []string{"# " + c.ID, "Area: " + string(c.Area), "## What it detects", "## How kdiag decides", "## Fix"} {
			if !strings.Contains(text, want) {
				t.Errorf("%s lacks %q", page, want)
			}
		}
	}
	pages, _ := filepath.Glob(filepath.Join("..", "..", "docs", "checks", "*.md"))
	for _, p := range pages {
		id := strings.TrimSuffix(filepath.Base(p), ".md")
		if id != "README" && !seen[id] {
			t.Errorf("%s documents a check that does not exist", p)
		}
	}
}

// Running every analyzer on the committed store-demo dump emits only
// registered IDs, with the registered area, and complete findings.
func TestFindingsUseRegisteredChecks(t *testing.T) {
	fsys, err := examples.StoreDemo()
	if err != nil {
		t.Fatal(err)
	}
	snap, err := cluster.ReadDump(fsys, "store-demo")
	if err != nil {
		t.Fatal(err)
	}
	checks := map[string]findings.Check{}
	for _, c := range analyze.Checks() {
		checks[c.ID] = c
	}
	fs := analyze.Run(snap, analyze.Filter{})
	if len(fs) == 0 {
		t.Fatal("no findings on the store-demo dump, which is broken on purpose")
	}
	for _, f := range fs {
		c, ok := checks[f.ID]
		switch {
		case !ok:
			t.Errorf("finding with unregistered ID %q", f.ID)
		case c.Area != f.Area:
			t.Errorf("%s: area %s, registered as %s", f.ID, f.Area, c.Area)
		}
		if f.Title == "" || len(f.Evidence) == 0 || f.Explanation == "" || f.Object.Name == "" || f.Object.Kind == "" {
			t.Errorf("%s on %s is incomplete: %+v", f.ID, f.Object, f)
		}
	}
}

func TestFilter(t *testing.T) {
	fsys, err := examples.StoreDemo()
	if err != nil {
		t.Fatal(err)
	}
	snap, err := cluster.ReadDump(fsys, "store-demo")
	if err != nil {
		t.Fatal(err)
	}
	only := analyze.Run(snap, analyze.Filter{Only: []string{"pdb-blocks-disruption"}})
	if len(only) == 0 {
		t.Fatal("--check pdb-blocks-disruption found nothing on store-demo")
	}
	for _, f := range only {
		if f.ID != "pdb-blocks-disruption" {
			t.Errorf("Only filter let %s through", f.ID)
		}
	}
	for _, f := range analyze.Run(snap, analyze.Filter{Skip: []string{"pdb-blocks-disruption"}}) {
		if f.ID == "pdb-blocks-disruption" {
			t.Error("Skip filter let pdb-blocks-disruption through")
		}
	}
}
