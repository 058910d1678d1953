package cluster

import (
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestEventCountAndFirstSeen(t *testing.T) {
	now := time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)
	first := metav1.NewTime(now.Add(-time.Hour))
	cases := []struct {
		name      string
		e         *corev1.Event
		wantCount int32
		wantFirst time.Time
	}{
		{"core/v1 count and firstTimestamp", &corev1.Event{Count: 3, FirstTimestamp: first, LastTimestamp: metav1.NewTime(now)}, 3, first.Time},
		{"series count wins over count; eventTime of an events.k8s.io event",
			&corev1.Event{Count: 2, Series: &corev1.EventSeries{Count: 40}, EventTime: metav1.NewMicroTime(first.Time)}, 40, first.Time},
		{"only lastTimestamp", &corev1.Event{LastTimestamp: first}, 1, first.Time},
		{"nothing", &corev1.Event{}, 1, time.Time{}},
	}
	for _, tc := range cases {
		if got := EventCount(tc.e); got != tc.wantCount {
			t.Errorf("%s: EventCount = %d, want %d", tc.name, got, tc.wantCount)
		}
		if got := EventFirstSeen(tc.e); !got.Time.Equal(tc.wantFirst) {
			t.Errorf("%s: EventFirstSeen = %v, want %v", tc.name, got, tc.wantFirst)
		}
	}
}
