package cli

import (
	"testing"
)

// Bad arguments are refused with a one-line error, and an unreachable or
// missing kubeconfig is a one-line error too.
func TestOpsBadArguments(t *testing.T) {
	checkBadArgs(t, newOpsCommand, []badArgs{
		{[]string{"list", "-o", "xml"}, `--output="xml": want wide, json or yaml`},
		{[]string{"last", "-o", "wide"}, `--output="wide": want text, json or yaml`},
		{[]string{"list", "--type", "Upgrade"}, `--type="Upgrade": want Drain, Repair, Fix or Eviction`},
		{[]string{"show"}, "accepts 1 arg(s), received 0"},
		{[]string{"list", "extra"}, `unknown command "extra"`},
		{[]string{"last", "--kubeconfig", "/nonexistent/kubeconfig"}, "load kubeconfig"},
	})
}
