package evidence

import (
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/kdiag/kdiag/pkg/cluster"
)

// EventLine renders an event for evidence: type, reason, count, when it
// was last seen relative to now, and its message on one line:
// "event Warning FailedScheduling x3, last 2m ago: 0/3 nodes are available".
func EventLine(now time.Time, e *corev1.Event) string {
	line := fmt.Sprintf("event %s %s x%d, ", e.Type, e.Reason, cluster.EventCount(e))
	if t := cluster.EventTime(e); !t.IsZero() {
		line += "last " + Ago(now, t.Time)
	} else {
		line += Ago(now, time.Time{})
	}
	if e.Message != "" {
		line += ": " + Short(e.Message)
	}
	return line
}

// Latest returns the most recent events of evs, which the snapshot index
// orders oldest first, that keep accepts: newest first, at most n. keep is
// called newest first, once per event, until n are kept, so it may carry
// state (for example to keep one event per reason); nil keeps every event.
func Latest(evs []*corev1.Event, n int, keep func(*corev1.Event) bool) []*corev1.Event {
	var out []*corev1.Event
	for i := len(evs) - 1; i >= 0 && len(out) < n; i-- {
		if keep == nil || keep(evs[i]) {
			out = append(out, evs[i])
		}
	}
	return out
}

// LatestEvent returns the most recent event of evs (oldest first) that
// keep accepts, or nil.
func LatestEvent(evs []*corev1.Event, keep func(*corev1.Event) bool) *corev1.Event {
	if l := Latest(evs, 1, keep); len(l) > 0 {
		return l[0]
	}
	return nil
}

// LatestLines renders the events Latest returns, newest first.
func LatestLines(now time.Time, evs []*corev1.Event, n int, keep func(*corev1.Event) bool) []string {
	l := Latest(evs, n, keep)
	out := make([]string, len(l))
	for i, e := range l {
		out[i] = EventLine(now, e)
	}
	return out
}

// IsWarning reports whether an event is of type Warning; a keep function
// for Latest.
func IsWarning(e *corev1.Event) bool { return e.Type == corev1.EventTypeWarning }

// OnePerReason returns a keep function for Latest that accepts the first
// event it sees of each reason (the newest, as Latest calls it) and, when
// also is not nil, only events also accepts.
func OnePerReason(also func(*corev1.Event) bool) func(*corev1.Event) bool {
	seen := map[string]bool{}
	return func(e *corev1.Event) bool {
		if seen[e.Reason] || (also != nil && !also(e)) {
			return false
		}
		seen[e.Reason] = true
		return true
	}
}
