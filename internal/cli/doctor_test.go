package cli

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"k8s.io/cli-runtime/pkg/genericiooptions"
)

func runCLI(t *testing.T, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	var out, errb bytes.Buffer
	root := NewRootCommand(genericiooptions.IOStreams{In: strings.NewReader(""), Out: &out, ErrOut: &errb})
	root.SetArgs(args)
	err = root.Execute()
	return out.String(), errb.String(), err
}

func repoFile(t *testing.T, rel string) string {
	t.Helper()
	p, err := filepath.Abs(filepath.Join("..", "..", rel))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// The README's first command: doctor on the embedded store-demo dump. Its
// JSON must follow docs/report-schema.json and carry the seed's findings.
func TestDoctorDemoJSONFollowsSchemaAndFindsSeedProblems(t *testing.T) {
	stdout, stderr, err := runCLI(t, "doctor", "--demo", "-o", "json")
	if err != nil {
		t.Fatalf("doctor --demo: %v\nstderr: %s", err, stderr)
	}
	c := jsonschema.NewCompiler()
	sch, err := c.Compile(repoFile(t, "docs/report-schema.json"))
	if err != nil {
		t.Fatalf("compile docs/report-schema.json: %v", err)
	}
	doc, err := jsonschema.UnmarshalJSON(strings.NewReader(stdout))
	if err != nil {
		t.Fatalf("stdout is not JSON: %v\n%s", err, stdout)
	}
	if err := sch.Validate(doc); err != nil {
		t.Fatalf("report does not follow docs/report-schema.json: %v", err)
	}
	var rep struct {
		Findings []struct {
			ID          string `json:"id"`
			Object      struct{ Kind, Namespace, Name string }
			Remediation []struct {
				Command string
				DryRun  *struct{ Status, Reason string } `json:"dryRun"`
			}
		}
	}
	if err := json.Unmarshal([]byte(stdout), &rep); err != nil {
		t.Fatal(err)
	}
	want := map[string]bool{
		"service-target-port-mismatch shop/order-service": false,
		"pdb-blocks-disruption web/nginx":                 false,
		"node-not-ready":                                  false,
		"node-pressure":                                   false,
		"oom-killed":                                      false,
		"dns-upstreams":                                   false,
	}
	for _, f := range rep.Findings {
		for k := range want {
			id, obj, _ := strings.Cut(k, " ")
			if f.ID == id && (obj == "" || obj == f.Object.Namespace+"/"+f.Object.Name) {
				want[k] = true
			}
		}
		for _, r := range f.Remediation {
			if r.DryRun != nil && r.DryRun.Status != "skipped" {
				t.Errorf("%s: offline dry run = %s, want skipped", f.ID, r.DryRun.Status)
			}
		}
	}
	for k, found := range want {
		if !found {
			t.Errorf("demo report lacks %s", k)
		}
	}
}

func TestDoctorDemoEqualsCommittedExample(t *testing.T) {
	a, _, err := runCLI(t, "doctor", "--demo", "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	b, _, err := runCLI(t, "doctor", "--from", repoFile(t, "examples/store-demo"), "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	// Only the source line differs.
	strip := func(s string) string {
		var lines []string
		for _, l := range strings.Split(s, "\n") {
			if !strings.Contains(l, `"source"`) {
				lines = append(lines, l)
			}
		}
		return strings.Join(lines, "\n")
	}
	if strip(a) != strip(b) {
		t.Error("--demo and --from examples/store-demo disagree: the embedded dump is stale")
	}
}

func TestDoctorFailOnSetsExitCode(t *testing.T) {
	_, _, err := runCLI(t, "doctor", "--demo", "--fail-on", "critical")
	var ee *ExitError
	if !errors.As(err, &ee) || ee.Code != failOnExitCode {
		t.Fatalf("err = %v, want ExitError code %d", err, failOnExitCode)
	}
	if ExitCode(err) != 2 {
		t.Errorf("ExitCode = %d, want 2", ExitCode(err))
	}
}

func TestDoctorOutputFormats(t *testing.T) {
	tests := []struct {
		format string
		want   string
	}{
		{"text", "SUMMARY"},
		{"markdown", "# kdiag doctor report"},
		{"yaml", "apiVersion: kdiag.io/v1alpha1"},
	}
	for _, tc := range tests {
		t.Run(tc.format, func(t *testing.T) {
			out, _, err := runCLI(t, "doctor", "--demo", "-o", tc.format)
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(out, tc.want) {
				t.Errorf("-o %s output lacks %q", tc.format, tc.want)
			}
			if strings.Contains(out, "\x1b[") {
				t.Errorf("-o %s wrote ANSI colour to a non-terminal", tc.format)
			}
		})
	}
}

func TestDoctorNamespaceRestrictsDump(t *testing.T) {
	out, _, err := runCLI(t, "doctor", "--demo", "-n", "web", "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	var rep struct {
		Namespace string `json:"namespace"`
		Findings  []struct {
			Object struct{ Namespace string }
		}
	}
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatal(err)
	}
	if rep.Namespace != "web" {
		t.Errorf("namespace = %q, want web", rep.Namespace)
	}
	for _, f := range rep.Findings {
		if ns := f.Object.Namespace; ns != "" && ns != "web" && ns != "kube-system" {
			t.Errorf("finding in namespace %q with -n web", ns)
		}
	}
}

func TestDoctorBadInput(t *testing.T) {
	notDir := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(notDir, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	emptyDir := t.TempDir()
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"missing dump", []string{"doctor", "--from", "/nonexistent/dump"}, "/nonexistent/dump"},
		{"dump is a file", []string{"doctor", "--from", notDir}, "not a folder"},
		{"empty folder", []string{"doctor", "--from", emptyDir}, "does not look like a cluster dump"},
		{"bad format", []string{"doctor", "--demo", "-o", "xml"}, "want one of"},
		{"bad severity", []string{"doctor", "--demo", "--fail-on", "fatal"}, "unknown severity"},
		{"bad check", []string{"doctor", "--demo", "--check", "no-such-check"}, "unknown check ID"},
		{"bad dry-run", []string{"doctor", "--demo", "--dry-run", "client"}, "want server or none"},
		{"two sources", []string{"doctor", "--demo", "--from", emptyDir}, "exclusive"},
		{"unreachable", []string{"doctor", "--server", "https://127.0.0.1:1", "--insecure-skip-tls-verify", "--request-timeout", "5s"}, "unreachable"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := runCLI(t, tc.args...)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want it to contain %q", err, tc.want)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("error spans several lines: %q", err)
			}
		})
	}
}

func TestChecksListsEveryCheck(t *testing.T) {
	out, _, err := runCLI(t, "checks", "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	var checks []struct{ ID, Area, Severity, Summary string }
	if err := json.Unmarshal([]byte(out), &checks); err != nil {
		t.Fatal(err)
	}
	if len(checks) < 20 {
		t.Errorf("kdiag checks lists %d checks, want every analyzer's (at least 20)", len(checks))
	}
}
