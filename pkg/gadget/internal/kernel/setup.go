package kernel

import (
	"log/slog"
	"time"

	"github.com/cilium/ebpf"

	"github.com/kdiag/kdiag/pkg/enrich"
)

// SelectAndClock does what every gadget does before loading its programs:
// it resolves the pod filter to the cgroups and network namespaces it
// selects (nil when the filter is empty, meaning trace everything) and
// opens the clock that converts kernel timestamps.
func SelectAndClock(e *enrich.Enricher, f enrich.Filter) (*enrich.Selection, BootClock, error) {
	var sel *enrich.Selection
	if !f.Empty() {
		s, err := e.Select(f)
		if err != nil {
			return nil, BootClock{}, err
		}
		sel = s
	}
	clock, err := NewBootClock()
	if err != nil {
		return nil, BootClock{}, err
	}
	return sel, clock, nil
}

// FilterRefreshInterval is how often a gadget's in-kernel filter follows
// pods that appear or go away.
const FilterRefreshInterval = 2 * time.Second

// FilterRefresher returns a ring-reader tick function that, every
// FilterRefreshInterval, refreshes the selection and makes the filter maps
// hold its keys. It does nothing when sel is nil (no filter).
func FilterRefresher(sel *enrich.Selection, cgroups, netns *ebpf.Map, log *slog.Logger) func(now time.Time) {
	last := time.Now()
	return func(now time.Time) {
		if sel == nil || now.Sub(last) < FilterRefreshInterval {
			return
		}
		last = now
		sel.Refresh()
		if err := SyncFilter(cgroups, netns, sel); err != nil {
			log.Warn("refresh filter", "err", err)
		}
	}
}
