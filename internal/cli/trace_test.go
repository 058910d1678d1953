package cli

import (
	"bytes"
	"strings"
	"testing"

	"github.com/spf13/cobra"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/genericiooptions"
)

// traceRoot builds a root with only the trace command, as NewRootCommand
// wires it (kubectl flags included), so the test does not depend on the
// rest of the tree.
func traceRoot(out, errOut *bytes.Buffer) *cobra.Command {
	g := &Globals{
		Streams:     genericiooptions.IOStreams{In: strings.NewReader(""), Out: out, ErrOut: errOut},
		ConfigFlags: genericclioptions.NewConfigFlags(true),
	}
	root := &cobra.Command{Use: "kdiag", SilenceUsage: true, SilenceErrors: true}
	root.SetOut(out)
	root.SetErr(errOut)
	g.ConfigFlags.AddFlags(root.PersistentFlags())
	root.AddCommand(newTraceCommand(g))
	return root
}

// These cases fail before any BPF is loaded, so they need no root.
func TestTraceRejectsBadFlags(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"trace", "tcp", "-o", "yaml", "--no-k8s"}, `unknown output format "yaml"`},
		{[]string{"trace", "dns", "--ring-mib", "3", "--no-k8s"}, "--ring-mib 3: must be a power of two"},
		{[]string{"trace", "dns", "--ports", "0", "--no-k8s"}, "--ports: 0 is not a port"},
		{[]string{"trace", "tcp", "-l", "a in (", "--no-k8s"}, `-l "a in ("`},
		{[]string{"trace", "oomkill", "extra"}, "unknown command"},
		{[]string{"trace", "tcp", "--node", "surely-not-this-host", "--no-k8s"}, "local tracing sees only the nodes hosted on this machine"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			var out, errOut bytes.Buffer
			root := traceRoot(&out, &errOut)
			root.SetArgs(tt.args)
			err := root.Execute()
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want it to contain %q", err, tt.want)
			}
			if out.Len() != 0 {
				t.Errorf("stdout must stay clean on error, got %q", out.String())
			}
		})
	}
}

func TestTraceHelpListsTheGadgets(t *testing.T) {
	var out bytes.Buffer
	root := traceRoot(&out, &out)
	root.SetArgs([]string{"trace", "--help"})
	if err := root.Execute(); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"tcp", "dns", "oomkill", "--pod", "--container", "--selector", "--node", "--output"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("trace --help lacks %q:\n%s", want, out.String())
		}
	}
}
