// Package hostid names the machine kdiag runs on, so that Nodes hosted on
// this machine can say so. A real node is its own machine and needs no
// such label; the lab runs many simulated Nodes on one machine and labels
// each of them with the machine's id, so that `kdiag trace` on that
// machine knows that their pods are local and traces them in the kernel
// it runs on, without being told which node it is.
package hostid

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"k8s.io/apimachinery/pkg/util/validation"
)

// Label is set on a Node to the id of the machine whose kernel runs its
// pods, when that machine hosts several Nodes (the lab).
const Label = "kdiag.io/host-id"

// Where the machine id is read from, in order: systemd's machine-id, then
// D-Bus's copy of it.
const (
	machineIDFile     = "/etc/machine-id"
	dbusMachineIDFile = "/var/lib/dbus/machine-id"
)

// Get returns this machine's id: its systemd machine id, or, when there is
// none, its host name. The result is a valid label value.
func Get() (string, error) {
	var errs []error
	for _, f := range []string{machineIDFile, dbusMachineIDFile} {
		b, err := os.ReadFile(f)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if id := strings.TrimSpace(string(b)); id != "" && len(validation.IsValidLabelValue(id)) == 0 {
			return id, nil
		}
	}
	h, err := os.Hostname()
	if err != nil {
		return "", fmt.Errorf("machine id: %w", errors.Join(append(errs, err)...))
	}
	h = strings.ToLower(h)
	if msgs := validation.IsValidLabelValue(h); len(msgs) > 0 {
		return "", fmt.Errorf("machine id: no machine-id file and host name %q is not a label value: %s", h, strings.Join(msgs, "; "))
	}
	return h, nil
}
