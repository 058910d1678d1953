package cli

import (
	"strings"
	"testing"

	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/genericiooptions"
)

// Bad arguments are refused with a one-line error, and an unreachable or
// missing kubeconfig is a one-line error too.
func TestOpsBadArguments(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"list", "-o", "xml"}, `--output="xml": want wide, json or yaml`},
		{[]string{"last", "-o", "wide"}, `--output="wide": want text, json or yaml`},
		{[]string{"list", "--type", "Upgrade"}, `--type="Upgrade": want Drain, Repair, Fix or Eviction`},
		{[]string{"show"}, "accepts 1 arg(s), received 0"},
		{[]string{"list", "extra"}, `unknown command "extra"`},
		{[]string{"last", "--kubeconfig", "/nonexistent/kubeconfig"}, "load kubeconfig"},
	}
	for _, tc := range tests {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			kubeconfig := "/nonexistent/kubeconfig"
			g := &Globals{Streams: genericiooptions.NewTestIOStreamsDiscard(), ConfigFlags: genericclioptions.NewConfigFlags(true)}
			g.ConfigFlags.KubeConfig = &kubeconfig
			cmd := newOpsCommand(g)
			g.ConfigFlags.AddFlags(cmd.PersistentFlags())
			cmd.SetArgs(tc.args)
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
