package evidence

import (
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kdiag/kdiag/pkg/cluster"
)

var now = time.Date(2026, 5, 20, 12, 0, 0, 0, time.UTC)

func items(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = string(rune('a' + i))
	}
	return out
}

func TestLists(t *testing.T) {
	cases := []struct {
		name       string
		items      []string
		n          int
		wantCapped []string
		wantJoin   string
	}{
		{"empty", nil, 5, nil, ""},
		{"under the cap", items(3), 5, []string{"a", "b", "c"}, "a, b, c"},
		{"at the cap", items(5), 5, items(5), "a, b, c, d, e"},
		{"one over", items(6), 5, append(items(5), "... and 1 more"), "a, b, c, d, e ... and 1 more"},
		{"small cap", items(7), 2, []string{"a", "b", "... and 5 more"}, "a, b ... and 5 more"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			orig := slices.Clone(tc.items)
			if got := CappedN(tc.items, tc.n); !slices.Equal(got, tc.wantCapped) {
				t.Errorf("CappedN(%v, %d) = %q, want %q", tc.items, tc.n, got, tc.wantCapped)
			}
			if !slices.Equal(tc.items, orig) {
				t.Errorf("CappedN changed its input: %q, was %q", tc.items, orig)
			}
			if got := JoinN(tc.items, tc.n); got != tc.wantJoin {
				t.Errorf("JoinN(%v, %d) = %q, want %q", tc.items, tc.n, got, tc.wantJoin)
			}
			if tc.n == MaxListed {
				if got := Capped(tc.items); !slices.Equal(got, tc.wantCapped) {
					t.Errorf("Capped = %q, want %q", got, tc.wantCapped)
				}
				if got := Join(tc.items); got != tc.wantJoin {
					t.Errorf("Join = %q, want %q", got, tc.wantJoin)
				}
			}
		})
	}
}

func TestText(t *testing.T) {
	long := strings.Repeat("é", MaxMessage+10)
	cases := []struct {
		name, got, want string
	}{
		{"Short collapses whitespace", Short("  back-off\n\t10s   restarting\n"), "back-off 10s restarting"},
		{"Short keeps a message at the cap", Short(long[:2*MaxMessage]), strings.Repeat("é", MaxMessage)},
		{"Short cuts runes, not bytes", Short(long), strings.Repeat("é", MaxMessage) + "…"},
		{"ShortN", ShortN("one two three", 7), "one two…"},
		{"Plural one", Plural(1, "pod"), "1 pod"},
		{"Plural zero", Plural(0, "pod"), "0 pods"},
		{"Plural many", Plural(3, "endpoint"), "3 endpoints"},
		{"Word one", Word(1, "has", "have"), "has"},
		{"Word zero", Word(0, "has", "have"), "have"},
		{"Word many", Word(2, "declares", "declare"), "declare"},
	}
	for _, tc := range cases {
		if tc.got != tc.want {
			t.Errorf("%s: got %q, want %q", tc.name, tc.got, tc.want)
		}
	}
}

func TestTimes(t *testing.T) {
	at := func(d time.Duration) metav1.Time { return metav1.NewTime(now.Add(-d)) }
	cases := []struct {
		name, got, want string
	}{
		{"Ago", Ago(now, now.Add(-12*time.Minute)), "12m ago"},
		{"Ago seconds", Ago(now, now.Add(-5*time.Second)), "5s ago"},
		{"Ago zero time", Ago(now, time.Time{}), "at an unknown time"},
		{"Ago clock skew", Ago(now, now.Add(3*time.Minute)), "3m in the future (clock skew)"},
		{"Since", Since(now, at(20*time.Minute)), "20m"},
		{"Since hours", Since(now, at(3*time.Hour+5*time.Minute)), "3h5m"},
		{"Since zero time", Since(now, metav1.Time{}), "an unknown time"},
		{"Since clock skew", Since(now, at(-time.Minute)), "0s"},
		{"Stamp", Stamp(now, at(12*time.Minute)), "2026-05-20T11:48:00Z (12m ago)"},
		{"Stamp in another zone", Stamp(now, metav1.NewTime(now.Add(-time.Hour).In(time.FixedZone("CEST", 2*3600)))), "2026-05-20T11:00:00Z (60m ago)"},
		{"Stamp zero", Stamp(now, metav1.Time{}), "unknown"},
	}
	for _, tc := range cases {
		if tc.got != tc.want {
			t.Errorf("%s: got %q, want %q", tc.name, tc.got, tc.want)
		}
	}
}

func event(typ, reason, msg string, ago time.Duration, count int32) *corev1.Event {
	return &corev1.Event{Type: typ, Reason: reason, Message: msg, Count: count,
		FirstTimestamp: metav1.NewTime(now.Add(-ago - time.Hour)), LastTimestamp: metav1.NewTime(now.Add(-ago))}
}

func TestEventLine(t *testing.T) {
	series := event("Warning", "BackOff", "Back-off restarting failed container", time.Minute, 2)
	series.Series = &corev1.EventSeries{Count: 40, LastObservedTime: metav1.NewMicroTime(now.Add(-10 * time.Second))}
	noTime := &corev1.Event{Type: "Normal", Reason: "Pulled"}
	cases := []struct {
		name      string
		e         *corev1.Event
		wantCount int32
		want      string
	}{
		{"core/v1 count", event("Warning", "FailedScheduling", "0/3 nodes are available:\n  3 Insufficient memory.", 2*time.Minute, 3), 3,
			"event Warning FailedScheduling x3, last 2m ago: 0/3 nodes are available: 3 Insufficient memory."},
		{"series wins over count and last timestamp", series, 40,
			"event Warning BackOff x40, last 10s ago: Back-off restarting failed container"},
		{"no count, no time, no message", noTime, 1, "event Normal Pulled x1, at an unknown time"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := cluster.EventCount(tc.e); got != tc.wantCount {
				t.Errorf("EventCount = %d, want %d", got, tc.wantCount)
			}
			if got := EventLine(now, tc.e); got != tc.want {
				t.Errorf("EventLine = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestLatest(t *testing.T) {
	// Oldest first, as the snapshot index orders them.
	evs := []*corev1.Event{
		event("Warning", "Unhealthy", "old probe failure", 30*time.Minute, 1),
		event("Normal", "Pulled", "pulled", 20*time.Minute, 1),
		event("Warning", "BackOff", "back-off", 10*time.Minute, 1),
		event("Warning", "Unhealthy", "new probe failure", time.Minute, 1),
	}
	msgs := func(es []*corev1.Event) []string {
		var out []string
		for _, e := range es {
			out = append(out, e.Message)
		}
		return out
	}
	cases := []struct {
		name string
		n    int
		keep func(*corev1.Event) bool
		want []string
	}{
		{"all, newest first", 10, nil, []string{"new probe failure", "back-off", "pulled", "old probe failure"}},
		{"capped", 2, nil, []string{"new probe failure", "back-off"}},
		{"warnings", 10, IsWarning, []string{"new probe failure", "back-off", "old probe failure"}},
		{"one per reason", 10, OnePerReason(nil), []string{"new probe failure", "back-off", "pulled"}},
		{"one warning per reason", 10, OnePerReason(IsWarning), []string{"new probe failure", "back-off"}},
		{"none kept", 10, func(*corev1.Event) bool { return false }, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := msgs(Latest(evs, tc.n, tc.keep)); !slices.Equal(got, tc.want) {
				t.Errorf("Latest = %q, want %q", got, tc.want)
			}
		})
	}
	if e := LatestEvent(evs, func(e *corev1.Event) bool { return e.Reason == "Unhealthy" }); e == nil || e.Message != "new probe failure" {
		t.Errorf("LatestEvent(Unhealthy) = %+v, want the newest probe failure", e)
	}
	if e := LatestEvent(evs, func(e *corev1.Event) bool { return e.Reason == "Killing" }); e != nil {
		t.Errorf("LatestEvent(Killing) = %+v, want nil", e)
	}
	lines := LatestLines(now, evs, 1, IsWarning)
	if want := []string{"event Warning Unhealthy x1, last 60s ago: new probe failure"}; !slices.Equal(lines, want) {
		t.Errorf("LatestLines = %q, want %q", lines, want)
	}
}

func TestGaps(t *testing.T) {
	gap := func(r cluster.Resource, ns string) cluster.Gap {
		return cluster.Gap{Resource: r, Namespace: ns, Reason: cluster.GapForbidden, Message: "forbidden"}
	}
	cases := []struct {
		name       string
		limitedTo  string
		gaps       []cluster.Gap
		ns         string
		wantGapped bool
		wantReadIn bool
	}{
		{"full read", "", nil, "shop", false, true},
		{"gap everywhere", "", []cluster.Gap{gap(cluster.ResPods, "")}, "shop", true, false},
		{"gap in this namespace", "", []cluster.Gap{gap(cluster.ResPods, "shop")}, "shop", true, false},
		{"gap in another namespace", "", []cluster.Gap{gap(cluster.ResPods, "dev")}, "shop", false, true},
		{"gap of another resource", "", []cluster.Gap{gap(cluster.ResEvents, "")}, "shop", false, true},
		{"read limited to this namespace", "shop", nil, "shop", false, true},
		{"read limited to another namespace", "dev", nil, "shop", false, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := &cluster.Snapshot{Namespace: tc.limitedTo, Gaps: tc.gaps}
			if got := Gapped(s, cluster.ResPods, tc.ns); got != tc.wantGapped {
				t.Errorf("Gapped = %t, want %t", got, tc.wantGapped)
			}
			if got := ReadIn(s, cluster.ResPods, tc.ns); got != tc.wantReadIn {
				t.Errorf("ReadIn = %t, want %t", got, tc.wantReadIn)
			}
		})
	}
}
