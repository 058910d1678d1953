package cli

import (
	"strings"
	"testing"

	"github.com/kdiag/kdiag/pkg/lab/programs"
)

func TestLabProgramRunsProgramsWithTheirOwnFlags(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		// The program parses its flags, not cobra.
		{[]string{"lab", "program", programs.HTTPServer, "--bogus"}, "flag provided but not defined: -bogus"},
		{[]string{"lab", "program", programs.MemoryHog, "--size", "lots"}, `memory-hog: --size "lots"`},
		{[]string{"lab", "program", programs.UpstreamDNS, "--answer", "x.example"}, "want NAME=IPv4"},
	}
	for _, tc := range tests {
		_, _, err := runCLI(t, tc.args...)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("kdiag %s: err = %v, want %q", strings.Join(tc.args, " "), err, tc.want)
		}
	}
	out, _, err := runCLI(t, "lab", "program", "--help")
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range programs.All() {
		if !strings.Contains(out, p.Name) {
			t.Errorf("kdiag lab program --help does not list %s:\n%s", p.Name, out)
		}
	}
	root, _, err := runCLI(t, "lab", "--help")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(root, "\n  program ") {
		t.Errorf("kdiag lab --help lists the hidden program command:\n%s", root)
	}
}
