package cli

import (
	"strings"
	"testing"
)

// Bad arguments, and applying without a terminal to confirm on, are refused
// with a one-line error before any cluster access (the kubeconfig points
// nowhere, so reaching the API would fail with "load kubeconfig").
func TestFixBadArguments(t *testing.T) {
	checkBadArgs(t, newFixCommand, []badArgs{
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
	})
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
