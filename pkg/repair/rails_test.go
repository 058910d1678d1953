package repair

import (
	"errors"
	"fmt"
	"testing"

	"github.com/kdiag/kdiag/pkg/drain"
)

func TestOnlyTerminating(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
		want bool
	}{
		{"nil", nil, false},
		{"other error", errors.New("list pods: forbidden"), false},
		{"terminating only", fmt.Errorf("wrapped: %w", &drain.StalledError{Node: "n1", Refused: []drain.Refusal{{Pod: "a/b", Message: terminatingMessage}}}), true},
		{"a budget refused", &drain.StalledError{Node: "n1", Refused: []drain.Refusal{
			{Pod: "a/b", Message: terminatingMessage},
			{Pod: "shop/nginx", PDB: "shop/nginx", Message: "Cannot evict pod as it would violate the pod's disruption budget."},
		}}, false},
		{"empty stall", &drain.StalledError{Node: "n1"}, false},
	} {
		if got := onlyTerminating(tc.err); got != tc.want {
			t.Errorf("%s: onlyTerminating = %v, want %v", tc.name, got, tc.want)
		}
	}
}
