package cli

import (
	"strings"
	"testing"

	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/genericiooptions"
)

// Bad flags are refused with a one-line error before any cluster access
// (the kubeconfig points nowhere, so reaching the API would fail otherwise).
func TestRepairBadArguments(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{nil, "no --provider: choose one of exec, clusterapi, lab"},
		{[]string{"--provider", "azure"}, `unknown provider "azure"`},
		{[]string{"--provider", "exec"}, "provider exec needs --exec-command"},
		{[]string{"--provider", "lab", "--lab-heals-at", "reinstall"}, `--lab-heals-at "reinstall"`},
		{[]string{"--provider", "lab", "--max-unhealthy", "150%"}, `max-unhealthy "150%"`},
		{[]string{"--provider", "lab", "--max-unhealthy", "many"}, `max-unhealthy "many"`},
		{[]string{"--provider", "lab"}, "load kubeconfig"},
		{[]string{"--provider", "lab", "node-1"}, "unknown command"},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			kubeconfig := "/nonexistent/kubeconfig"
			g := &Globals{Streams: genericiooptions.NewTestIOStreamsDiscard(), ConfigFlags: genericclioptions.NewConfigFlags(true)}
			g.ConfigFlags.KubeConfig = &kubeconfig
			cmd := newRepairCommand(g)
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
