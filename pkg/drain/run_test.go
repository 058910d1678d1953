package drain

import (
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// TestSkipWaitForDelete follows kubectl drain's rule: skip > 0, a
// deletionTimestamp, and an age truncated to whole seconds strictly above
// skip.
func TestSkipWaitForDelete(t *testing.T) {
	now := time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)
	deleted := func(ago time.Duration) *corev1.Pod {
		ts := metav1.NewTime(now.Add(-ago))
		return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p", DeletionTimestamp: &ts}}
	}
	tests := []struct {
		name string
		pod  *corev1.Pod
		skip int
		want bool
	}{
		{"not deleted", &corev1.Pod{}, 5, false},
		{"option off", deleted(time.Hour), 0, false},
		{"negative is off, as kubectl", deleted(time.Hour), -1, false},
		{"younger than skip", deleted(3 * time.Second), 5, false},
		{"exactly skip seconds is not older", deleted(5 * time.Second), 5, false},
		{"5.9 s truncates to 5: not older than 5", deleted(5900 * time.Millisecond), 5, false},
		{"6 s is older than 5", deleted(6 * time.Second), 5, true},
		{"deletionTimestamp in the future (grace period running)", deleted(-30 * time.Second), 1, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := SkipWaitForDelete(tt.pod, tt.skip, now); got != tt.want {
				t.Errorf("SkipWaitForDelete(deletionTimestamp %v, skip %d) = %v, want %v", tt.pod.DeletionTimestamp, tt.skip, got, tt.want)
			}
		})
	}
}
