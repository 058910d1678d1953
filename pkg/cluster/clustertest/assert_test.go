package clustertest

import (
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"

	"github.com/kdiag/kdiag/pkg/findings"
)

// sample is what the assertions are tested on: a finding with a patch and
// a read-only command, and one without fix.
func sample() []findings.Finding {
	fix := findings.MustPatch("Point targetPort at the containers' port", schema.GroupVersionResource{Version: "v1", Resource: "services"},
		"service", "shop", "order", types.JSONPatchType, []map[string]any{{"op": "replace", "path": "/spec/ports/0/targetPort", "value": 3000}})
	return []findings.Finding{
		{ID: "service-target-port-mismatch", Severity: findings.Critical, Area: findings.AreaNetwork,
			Object: findings.ObjectRef{Kind: "Service", Namespace: "shop", Name: "order"},
			Title:  "Service shop/order targetPort 8080 matches no containerPort", Evidence: []string{"spec.ports[0].targetPort=8080", "pods expose 3000/TCP"},
			Explanation: "why", Remediation: []findings.Remediation{findings.Inspect("Show it", "kubectl get svc order -n shop"), fix}},
		{ID: "service-no-matching-pods", Severity: findings.Warning, Area: findings.AreaNetwork,
			Object: findings.ObjectRef{Kind: "Service", Namespace: "dev", Name: "order"},
			Title:  "Service dev/order selects no pods", Evidence: []string{"spec.selector: app=order"},
			Explanation: "why", Remediation: []findings.Remediation{findings.Inspect("List pods", "kubectl get pods -n dev")}},
	}
}

func TestLookups(t *testing.T) {
	fs := sample()
	if got := WithID(fs, "service-no-matching-pods"); len(got) != 1 || got[0].Object.Namespace != "dev" {
		t.Errorf("WithID = %+v", got)
	}
	if f := Find(fs, "service-target-port-mismatch", "order"); f == nil || f != &fs[0] {
		t.Errorf("Find = %p, want the first finding %p", f, &fs[0])
	}
	if f := Find(fs, "service-target-port-mismatch", "cart"); f != nil {
		t.Errorf("Find of an absent object = %+v", f)
	}
	if m := Mutating(&fs[0]); len(m) != 1 || m[0].Action.Resource != "services" {
		t.Errorf("Mutating = %+v", m)
	}
	if p := PatchOf(&fs[0], "services", ""); p == nil {
		t.Error("PatchOf(services) = nil")
	}
	if p := PatchOf(&fs[0], "deployments", ""); p != nil {
		t.Errorf("PatchOf(deployments) = %+v", p)
	}
	if g := Gap("pods"); g.Resource != "pods" || g.Namespace != "" || g.Reason == "" {
		t.Errorf("Gap = %+v", g)
	}
	if d := Dump(fs); !strings.Contains(d, "critical service-target-port-mismatch shop/service/order") || !strings.Contains(d, "pods expose 3000/TCP") {
		t.Errorf("Dump lacks the finding or its evidence:\n%s", d)
	}
}

func TestAssertions(t *testing.T) {
	fs := sample()
	f := &fs[0]
	patch := string(f.Remediation[1].Action.Patch)
	checks := []findings.Check{
		{ID: "service-target-port-mismatch", Area: findings.AreaNetwork, Severity: findings.Critical, Summary: "targetPort matches no containerPort"},
		{ID: "service-no-matching-pods", Area: findings.AreaNetwork, Severity: findings.Warning, Summary: "selector matches no pod"},
	}
	cases := []struct {
		name      string
		run       func(tb testing.TB)
		wantFail  bool
		wantFatal bool
	}{
		{"MustFind present", func(tb testing.TB) { MustFind(tb, fs, "service-no-matching-pods", "order") }, false, false},
		{"MustFind absent", func(tb testing.TB) { MustFind(tb, fs, "service-no-matching-pods", "cart") }, true, true},
		{"MustFindIn present", func(tb testing.TB) { MustFindIn(tb, fs, "service-target-port-mismatch", "shop", "order") }, false, false},
		{"MustFindIn other namespace", func(tb testing.TB) { MustFindIn(tb, fs, "service-target-port-mismatch", "dev", "order") }, true, true},
		{"None silent", func(tb testing.TB) { None(tb, fs, "service-no-endpointslices", "order") }, false, false},
		{"None fires", func(tb testing.TB) { None(tb, fs, "service-no-matching-pods", "order") }, true, false},
		{"NoneAbout silent", func(tb testing.TB) { NoneAbout(tb, fs, "shop", "cart") }, false, false},
		{"NoneAbout fires", func(tb testing.TB) { NoneAbout(tb, fs, "dev", "order") }, true, false},
		{"AssertEvidence holds", func(tb testing.TB) { AssertEvidence(tb, f, "targetPort=8080", "3000/TCP") }, false, false},
		{"AssertEvidence ignores the title", func(tb testing.TB) { AssertEvidence(tb, f, "matches no containerPort") }, true, false},
		{"AssertMentions reads the title", func(tb testing.TB) { AssertMentions(tb, f, "matches no containerPort", "3000/TCP") }, false, false},
		{"AssertMentions fails", func(tb testing.TB) { AssertMentions(tb, f, "9090") }, true, false},
		{"AssertJSON equal values", func(tb testing.TB) {
			AssertJSON(tb, []byte(patch), `[{"value":3000,"path":"/spec/ports/0/targetPort","op":"replace"}]`)
		}, false, false},
		{"AssertJSON differs", func(tb testing.TB) {
			AssertJSON(tb, []byte(patch), `[{"op":"replace","path":"/spec/ports/0/targetPort","value":8080}]`)
		}, true, false},
		{"AssertJSON malformed", func(tb testing.TB) { AssertJSON(tb, []byte("{"), `{}`) }, true, true},
		{"AssertChecks holds", func(tb testing.TB) {
			AssertChecks(tb, checks, findings.AreaNetwork, "service-target-port-mismatch", "service-no-matching-pods")
		}, false, false},
		{"AssertChecks lacks one", func(tb testing.TB) {
			AssertChecks(tb, checks[:1], findings.AreaNetwork, "service-target-port-mismatch", "service-no-matching-pods")
		}, true, false},
		{"AssertChecks declares one more", func(tb testing.TB) {
			AssertChecks(tb, checks, findings.AreaNetwork, "service-target-port-mismatch")
		}, true, false},
		{"AssertChecks duplicate", func(tb testing.TB) {
			AssertChecks(tb, append(checks, checks[0]), findings.AreaNetwork, "service-target-port-mismatch", "service-no-matching-pods")
		}, true, false},
		{"AssertChecks other area", func(tb testing.TB) {
			AssertChecks(tb, checks, findings.AreaDNS, "service-target-port-mismatch", "service-no-matching-pods")
		}, true, false},
		{"AssertChecks without summary", func(tb testing.TB) {
			AssertChecks(tb, []findings.Check{{ID: "x", Area: findings.AreaNetwork, Severity: findings.Info}}, findings.AreaNetwork, "x")
		}, true, false},
		{"AssertComplete holds", func(tb testing.TB) {
			AssertComplete(tb, fs, []findings.Check{{ID: "service-target-port-mismatch"}, {ID: "service-no-matching-pods"}}, findings.AreaNetwork)
		}, false, false},
		{"AssertComplete undeclared ID", func(tb testing.TB) {
			AssertComplete(tb, fs, []findings.Check{{ID: "service-target-port-mismatch"}}, findings.AreaNetwork)
		}, true, false},
		{"AssertComplete other area", func(tb testing.TB) {
			AssertComplete(tb, fs, []findings.Check{{ID: "service-target-port-mismatch"}, {ID: "service-no-matching-pods"}}, findings.AreaDNS)
		}, true, false},
		{"AssertComplete incomplete", func(tb testing.TB) {
			bad := sample()
			bad[1].Evidence = nil
			AssertComplete(tb, bad, []findings.Check{{ID: "service-target-port-mismatch"}, {ID: "service-no-matching-pods"}}, findings.AreaNetwork)
		}, true, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := Record(tc.run)
			if failed := len(r.Errors) > 0; failed != tc.wantFail || r.Stopped != tc.wantFatal {
				t.Errorf("failed=%t fatal=%t, want failed=%t fatal=%t; errors: %q", failed, r.Stopped, tc.wantFail, tc.wantFatal, r.Errors)
			}
		})
	}
}

func TestAssertFindings(t *testing.T) {
	port := Want{ID: "service-target-port-mismatch", Severity: findings.Critical, Object: "shop/service/order",
		Title: []string{"targetPort 8080"}, Evidence: []string{"3000/TCP"}, NotEvidence: []string{"9090"},
		Patches: []string{`"value":3000`}, Commands: []string{"kubectl patch service order -n shop"}}
	noMatch := Want{ID: "service-no-matching-pods", Severity: findings.Warning, Object: "dev/service/order", NoPatch: true}
	with := func(w Want, edit func(*Want)) Want { edit(&w); return w }
	cases := []struct {
		name  string
		wants []Want
		fails int // how many failures, at least
	}{
		{"exactly what is wanted", []Want{port, noMatch}, 0},
		{"order does not matter", []Want{noMatch, port}, 0},
		{"an unexpected finding", []Want{port}, 1},
		{"a missing finding", []Want{port, noMatch, with(noMatch, func(w *Want) { w.Object = "prod/service/order" })}, 1},
		{"wrong severity", []Want{with(port, func(w *Want) { w.Severity = findings.Warning }), noMatch}, 1},
		{"title lacks a fragment", []Want{with(port, func(w *Want) { w.Title = append(w.Title, "9090") }), noMatch}, 1},
		{"first title fragment picks", []Want{with(port, func(w *Want) { w.Title = []string{"9090"} }), noMatch}, 2}, // missing, then unexpected
		{"evidence lacks a fragment", []Want{with(port, func(w *Want) { w.Evidence = []string{"4000/TCP"} }), noMatch}, 1},
		{"evidence has a forbidden fragment", []Want{with(port, func(w *Want) { w.NotEvidence = []string{"8080"} }), noMatch}, 1},
		{"no such patch", []Want{with(port, func(w *Want) { w.Patches = []string{`"value":4000`} }), noMatch}, 1},
		{"patches are not commands", []Want{with(port, func(w *Want) { w.Patches = []string{"kubectl patch"} }), noMatch}, 1},
		{"no such command", []Want{with(port, func(w *Want) { w.Commands = []string{"kubectl scale"} }), noMatch}, 1},
		{"a patch where none is wanted", []Want{with(port, func(w *Want) { w.NoPatch = true }), noMatch}, 1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var matched []*findings.Finding
			r := Record(func(tb testing.TB) { matched = AssertFindings(tb, findings.AreaNetwork, sample(), tc.wants) })
			if tc.fails == 0 && len(r.Errors) > 0 || len(r.Errors) < tc.fails {
				t.Errorf("%d failures, want %d: %q", len(r.Errors), tc.fails, r.Errors)
			}
			if len(matched) != len(tc.wants) {
				t.Fatalf("matched %d findings for %d wants", len(matched), len(tc.wants))
			}
			for i, w := range tc.wants {
				if m := matched[i]; m != nil && (m.ID != w.ID || m.Object.String() != w.Object) {
					t.Errorf("want %d (%s on %s) matched %s on %s", i, w.ID, w.Object, m.ID, m.Object)
				}
			}
		})
	}
	r := Record(func(tb testing.TB) { AssertFindings(tb, findings.AreaDNS, sample(), []Want{port, noMatch}) })
	if len(r.Errors) != 2 {
		t.Errorf("findings of another area: %d failures, want 2: %q", len(r.Errors), r.Errors)
	}
}
