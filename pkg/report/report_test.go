package report_test

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/kdiag/kdiag/pkg/cluster"
	"github.com/kdiag/kdiag/pkg/cluster/clustertest"
	"github.com/kdiag/kdiag/pkg/findings"
	"github.com/kdiag/kdiag/pkg/report"
)

func sample() *report.Report {
	s := clustertest.Snapshot()
	s.Nodes = append(s.Nodes, clustertest.ReadyNode("n1"))
	s.Gaps = []cluster.Gap{{Resource: cluster.ResEvents, Namespace: "shop", Reason: cluster.GapForbidden, Message: "events is forbidden"}}
	fs := []findings.Finding{
		{ID: "pdb-blocks-disruption", Severity: findings.Critical, Area: findings.AreaOperations,
			Object: findings.ObjectRef{Kind: "PodDisruptionBudget", Namespace: "web", Name: "nginx"},
			Title:  "PDB web/nginx allows 0 disruptions", Evidence: []string{"spec: minAvailable=1 | *bold* <b>"},
			Explanation: "Drains stall.",
			Remediation: []findings.Remediation{
				findings.Scale("Add a replica", "deployment", "web", "nginx", 2),
				findings.Inspect("Show the PDB", "kubectl get pdb nginx -n web -o yaml"),
			}},
		{ID: "dns-upstreams", Severity: findings.Info, Area: findings.AreaDNS,
			Object: findings.ObjectRef{Kind: "ConfigMap", Namespace: "kube-system", Name: "coredns"},
			Title:  "CoreDNS forwards 1 zone", Evidence: []string{". -> /etc/resolv.conf"}, Explanation: "Map."},
	}
	fs[0].Remediation[0].DryRun = &findings.DryRun{Status: findings.DryRunFailed, Reason: "forbidden"}
	findings.Sort(fs)
	return report.New(s, fs)
}

func TestSummaryAndOrder(t *testing.T) {
	r := sample()
	if r.Summary.Critical != 1 || r.Summary.Info != 1 || r.Summary.ByArea[findings.AreaOperations] != 1 {
		t.Errorf("summary = %+v", r.Summary)
	}
	if r.Findings[0].Area != findings.AreaDNS {
		t.Errorf("findings not in area order: first is %s", r.Findings[0].Area)
	}
	if !r.AtLeast(findings.Warning) {
		t.Error("AtLeast(warning) = false with a critical finding")
	}
	if only := report.New(clustertest.Snapshot(), r.Findings[:1]); only.AtLeast(findings.Warning) {
		t.Error("AtLeast(warning) = true with only an info finding")
	}
}

func TestTextShowsDryRunAndGapsAndColoursOnlyWhenAsked(t *testing.T) {
	var plain, colour bytes.Buffer
	if err := report.Render(&plain, sample(), "text", report.TextOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := report.Render(&colour, sample(), "text", report.TextOptions{Color: true}); err != nil {
		t.Fatal(err)
	}
	out := plain.String()
	for _, want := range []string{"OPERATIONS", "[dry-run FAILED: forbidden]", "kubectl scale deployment/nginx -n web --replicas=2",
		"NOT READ", "events in shop not read (Forbidden)", "SUMMARY 1 critical, 0 warning, 1 info", "NETWORK  no findings"} {
		if !strings.Contains(out, want) {
			t.Errorf("text output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "\x1b[") {
		t.Error("plain text contains ANSI escapes")
	}
	if !strings.Contains(colour.String(), "\x1b[1;31mCRITICAL") {
		t.Error("coloured text does not colour CRITICAL red")
	}
}

func TestMarkdownEscapesUserText(t *testing.T) {
	var b bytes.Buffer
	if err := report.Render(&b, sample(), "markdown", report.TextOptions{}); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	if strings.Contains(out, "<b>") || !strings.Contains(out, `minAvailable=1 \| \*bold\* &lt;b&gt;`) {
		t.Errorf("evidence not escaped:\n%s", out)
	}
	if !strings.Contains(out, "(dry-run: failed: forbidden)") || !strings.Contains(out, "## Not read") {
		t.Errorf("markdown lacks dry-run result or gaps:\n%s", out)
	}
}

func TestJSONKeepsFieldNamesAndEmptyLists(t *testing.T) {
	s := clustertest.Snapshot()
	var b bytes.Buffer
	if err := report.Render(&b, report.New(s, nil), "json", report.TextOptions{}); err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b.Bytes(), &m); err != nil {
		t.Fatal(err)
	}
	if f, ok := m["findings"].([]any); !ok || len(f) != 0 {
		t.Errorf("findings = %v, want an empty list (not null)", m["findings"])
	}
	if g, ok := m["gaps"].([]any); !ok || len(g) != 0 {
		t.Errorf("gaps = %v, want an empty list", m["gaps"])
	}
	if err := report.Render(&b, report.New(s, nil), "xml", report.TextOptions{}); err == nil {
		t.Error("unknown format accepted")
	}
}
