package cli

import (
	"os"
	"strings"
	"testing"

	"k8s.io/cli-runtime/pkg/genericiooptions"
)

// Installed as kubectl-diag, the binary is a kubectl plugin and its help
// says "kubectl diag".
func TestRootUsageAsKubectlPlugin(t *testing.T) {
	tests := []struct {
		argv0 string
		want  string
	}{
		{"/usr/local/bin/kdiag", "kdiag"},
		{"/usr/local/bin/kubectl-diag", "kubectl diag"},
		{"kubectl-diag", "kubectl diag"},
	}
	saved := os.Args
	t.Cleanup(func() { os.Args = saved })
	for _, tc := range tests {
		os.Args = []string{tc.argv0}
		root := NewRootCommand(genericiooptions.NewTestIOStreamsDiscard())
		if got := root.DisplayName(); got != tc.want {
			t.Errorf("argv0 %s: display name = %q, want %q", tc.argv0, got, tc.want)
		}
		if usage := root.UsageString(); !strings.Contains(usage, tc.want+" [command]") {
			t.Errorf("argv0 %s: usage does not say %q:\n%s", tc.argv0, tc.want+" [command]", usage)
		}
	}
}

// Every command documented in docs/commands has a page, and every top-level
// command has one.
func TestEveryCommandHasADocPage(t *testing.T) {
	root := NewRootCommand(genericiooptions.NewTestIOStreamsDiscard())
	for _, c := range root.Commands() {
		if c.Hidden || c.Name() == "help" || c.Name() == "completion" {
			continue
		}
		if _, err := os.Stat(repoFile(t, "docs/commands/"+c.Name()+".md")); err != nil {
			t.Errorf("command %q has no docs/commands/%s.md", c.Name(), c.Name())
		}
	}
}
