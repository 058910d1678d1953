package hostid

import (
	"os"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/util/validation"
)

func TestGetIsAStableLabelValue(t *testing.T) {
	a, err := Get()
	if err != nil {
		t.Fatalf("Get: %v", err)
	}
	if msgs := validation.IsValidLabelValue(a); len(msgs) > 0 {
		t.Fatalf("Get() = %q, not a label value: %v", a, msgs)
	}
	b, err := Get()
	if err != nil || a != b {
		t.Fatalf("Get() changed between calls: %q then %q (%v)", a, b, err)
	}
	if raw, err := os.ReadFile(machineIDFile); err == nil && strings.TrimSpace(string(raw)) != "" {
		if want := strings.TrimSpace(string(raw)); a != want {
			t.Errorf("Get() = %q, want the machine id %q from %s", a, want, machineIDFile)
		}
	}
}
