package cli

import (
	"bytes"
	"strings"
	"testing"

	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/genericiooptions"
)

func TestAgentCommandErrors(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"no node", []string{"--node", ""}, "--node is required"},
		{"inverted thresholds", []string{"--node", "n1", "--psi-clear-avg10", "90"}, "want 0 < clear <= set"},
		{"inverted disk thresholds", []string{"--node", "n1", "--disk-threshold", "70"}, "disk thresholds set=70% clear=80%: want 0 < clear <= set <= 100"},
		{"unreadable kubeconfig", []string{"--node", "n1", "--kubeconfig", "/nonexistent/kubeconfig"}, "API server configuration"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			g := &Globals{Streams: genericiooptions.IOStreams{Out: &out, ErrOut: &errOut}, ConfigFlags: genericclioptions.NewConfigFlags(true)}
			cmd := newAgentCommand(g)
			g.ConfigFlags.AddFlags(cmd.PersistentFlags())
			cmd.SetArgs(tt.args)
			cmd.SetOut(&out)
			cmd.SetErr(&errOut)
			err := cmd.Execute()
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error = %v, want one containing %q", err, tt.want)
			}
		})
	}
}
