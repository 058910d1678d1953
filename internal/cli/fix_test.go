package cli

import (
	"strings"
	"testing"

	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/genericiooptions"
)

// Bad arguments, and applying without a terminal to confirm on, are refused
// with a one-line error before any cluster access (the kubeconfig points
// nowhere, so reaching the API would fail with "load kubeconfig").
func TestFixBadArguments(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{nil, "give a check ID"},
		{[]string{"a", "b", "c"}, "give a check ID"},
		{[]string{"no-such-check", "--yes"}, `unknown check ID "no-such-check"`},
		{[]string{"service-target-port-mismatch", "-o", "xml"}, `--output="xml": want text, json or yaml`},
		{[]string{"service-target-port-mismatch", "--dry-run", "client"}, `--dry-run="client": want server or none`},
		{[]string{"service-target-port-mismatch", "--pod", "shop/x"}, "add --drain"},
		{[]string{"service-target-port-mismatch", "--selector", "agentpool=np1"}, "add --drain"},
		{[]string{"--drain"}, "give node names or --selector"},
		{[]string{"--drain", "n1", "--pod", "nginx"}, `--pod "nginx": want namespace/name`},
		{[]string{"service-target-port-mismatch"}, "refusing to apply without confirmation: stdin is not a terminal"},
		{[]string{"service-target-port-mismatch", "--yes"}, "load kubeconfig"},
		{[]string{"service-target-port-mismatch", "--dry-run=server"}, "load kubeconfig"},
	}
	for _, tc := range tests {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			kubeconfig := "/nonexistent/kubeconfig"
			g := &Globals{Streams: genericiooptions.NewTestIOStreamsDiscard(), ConfigFlags: genericclioptions.NewConfigFlags(true)}
			g.ConfigFlags.KubeConfig = &kubeconfig
			cmd := newFixCommand(g)
			g.ConfigFlags.AddFlags(cmd.PersistentFlags())
			cmd.SetArgs(tc.args)
			if tc.args == nil {
				cmd.SetArgs([]string{})
			}
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

func TestConfirm(t *testing.T) {
	for in, want := range map[string]bool{"y\n": true, "YES\n": true, "n\n": false, "\n": false, "": false, "yes please\n": false} {
		var out strings.Builder
		got, err := confirm(strings.NewReader(in), &out, "Apply? ")
		if err != nil || got != want || out.String() != "Apply? " {
			t.Errorf("confirm(%q) = %v, %v (prompt %q), want %v", in, got, err, out.String(), want)
		}
	}
}
