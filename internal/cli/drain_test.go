package cli

import (
	"strings"
	"testing"

	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/genericiooptions"
)

// Bad arguments are refused with a one-line error before any cluster access
// (the kubeconfig points nowhere, so reaching the API would fail otherwise).
func TestDrainBadArguments(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"check"}, "give node names or --selector, not both and not neither"},
		{[]string{"check", "n1", "--selector", "agentpool=np1"}, "give node names or --selector"},
		{[]string{"check", "n1", "-o", "xml"}, `--output="xml": want text, json or yaml`},
		{[]string{"check", "n1", "--dry-run", "client"}, `--dry-run="client": want server or none`},
		{[]string{"run"}, "give node names or --selector"},
		{[]string{"check", "n1", "--kubeconfig", "/nonexistent/kubeconfig"}, "load kubeconfig"},
	}
	for _, tc := range tests {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			kubeconfig := "/nonexistent/kubeconfig"
			g := &Globals{Streams: genericiooptions.NewTestIOStreamsDiscard(), ConfigFlags: genericclioptions.NewConfigFlags(true)}
			g.ConfigFlags.KubeConfig = &kubeconfig
			cmd := newDrainCommand(g)
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
