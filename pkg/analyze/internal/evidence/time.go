package evidence

import (
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/duration"
)

// Ago renders how long before now t was, as kubectl prints ages: "12m ago".
// A zero t is "at an unknown time"; a t after now (clock skew between the
// writer and the reader) says so instead of printing a negative age.
func Ago(now, t time.Time) string {
	if t.IsZero() {
		return "at an unknown time"
	}
	d := now.Sub(t)
	if d < 0 {
		return duration.HumanDuration(-d) + " in the future (clock skew)"
	}
	return duration.HumanDuration(d) + " ago"
}

// Since renders how long t was before now as a bare duration, for phrases
// such as "NotReady for 12m": a zero t is "an unknown time", and a t after
// now counts as "0s".
func Since(now time.Time, t metav1.Time) string {
	if t.IsZero() {
		return "an unknown time"
	}
	return duration.HumanDuration(max(now.Sub(t.Time), 0))
}

// Stamp renders a timestamp and its age: "2026-05-20T11:48:00Z (12m ago)",
// or "unknown" for a zero time.
func Stamp(now time.Time, t metav1.Time) string {
	if t.IsZero() {
		return "unknown"
	}
	return t.UTC().Format(time.RFC3339) + " (" + Ago(now, t.Time) + ")"
}
