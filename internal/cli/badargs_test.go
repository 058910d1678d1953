package cli

import (
	"strings"
	"testing"

	"github.com/spf13/cobra"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/genericiooptions"
)

// badArgs is a command line that must be refused with a one-line error
// containing want.
type badArgs struct {
	args []string
	want string
}

// checkBadArgs runs each command line through a fresh command built by
// newCmd, with a kubeconfig that points nowhere (so that any cluster access
// would fail otherwise), and checks the one-line error.
func checkBadArgs(t *testing.T, newCmd func(*Globals) *cobra.Command, tests []badArgs) {
	t.Helper()
	for _, tc := range tests {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			kubeconfig := "/nonexistent/kubeconfig"
			g := &Globals{Streams: genericiooptions.NewTestIOStreamsDiscard(), ConfigFlags: genericclioptions.NewConfigFlags(true)}
			g.ConfigFlags.KubeConfig = &kubeconfig
			cmd := newCmd(g)
			g.ConfigFlags.AddFlags(cmd.PersistentFlags())
			// A nil slice would make cobra parse the test binary's own
			// arguments.
			cmd.SetArgs(append([]string{}, tc.args...))
			cmd.SilenceUsage, cmd.SilenceErrors = true, true
			err := cmd.Execute()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error = %v, want it to contain %q", err, tc.want)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("error spans lines: %q", err)
			}
		})
	}
}
