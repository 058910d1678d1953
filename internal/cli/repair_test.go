package cli

import (
	"testing"
)

// Bad flags are refused with a one-line error before any cluster access
// (the kubeconfig points nowhere, so reaching the API would fail otherwise).
func TestRepairBadArguments(t *testing.T) {
	checkBadArgs(t, newRepairCommand, []badArgs{
		{nil, "no --provider: choose one of exec, clusterapi, lab"},
		{[]string{"--provider", "azure"}, `unknown provider "azure"`},
		{[]string{"--provider", "exec"}, "provider exec needs --exec-command"},
		{[]string{"--provider", "lab", "--lab-heals-at", "reinstall"}, `--lab-heals-at "reinstall"`},
		{[]string{"--provider", "lab", "--max-unhealthy", "150%"}, `max-unhealthy "150%"`},
		{[]string{"--provider", "lab", "--max-unhealthy", "many"}, `max-unhealthy "many"`},
		{[]string{"--provider", "lab"}, "load kubeconfig"},
		{[]string{"--provider", "lab", "node-1"}, "unknown command"},
	})
}
