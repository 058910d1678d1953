package kernel

import (
	"log/slog"
	"testing"
	"time"

	"github.com/kdiag/kdiag/pkg/enrich"
)

func TestSelectAndClockWithoutFilter(t *testing.T) {
	sel, clock, err := SelectAndClock(nil, enrich.Filter{})
	if err != nil {
		t.Fatalf("SelectAndClock: %v", err)
	}
	if sel != nil {
		t.Errorf("empty filter gave selection %+v, want nil (trace everything)", sel)
	}
	if got := clock.Time(0); got.After(time.Now()) {
		t.Errorf("boot time %v is in the future", got)
	}
}

func TestFilterRefresherWithoutSelectionDoesNothing(t *testing.T) {
	tick := FilterRefresher(nil, nil, nil, slog.New(slog.DiscardHandler))
	// nil maps would panic if the refresher touched them.
	tick(time.Now().Add(time.Hour))
}
