package cli

import (
	"testing"
)

// Bad arguments are refused with a one-line error before any cluster access
// (the kubeconfig points nowhere, so reaching the API would fail otherwise).
func TestDrainBadArguments(t *testing.T) {
	checkBadArgs(t, newDrainCommand, []badArgs{
		{[]string{"check"}, "give node names or --selector, not both and not neither"},
		{[]string{"check", "n1", "--selector", "agentpool=np1"}, "give node names or --selector"},
		{[]string{"check", "n1", "-o", "xml"}, `--output="xml": want text, json or yaml`},
		{[]string{"check", "n1", "--dry-run", "client"}, `--dry-run="client": want server or none`},
		{[]string{"run"}, "give node names or --selector"},
		{[]string{"check", "n1", "--kubeconfig", "/nonexistent/kubeconfig"}, "load kubeconfig"},
	})
}
