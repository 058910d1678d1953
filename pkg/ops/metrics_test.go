package ops

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/kdiag/kdiag/pkg/apis/kdiag/v1alpha1"
)

// Two Recorders of one process count into the same series, and each
// operation moves started, running, the result counter, the duration
// histogram and the last-end gauge.
func TestMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	m1, m2 := NewMetrics(reg), NewMetrics(reg)
	now := t0
	for i, m := range []*Metrics{m1, m2} {
		r, _ := NewRecorder(nil, RecorderOptions{Metrics: m, Now: func() time.Time { return now }})
		rec, err := r.Start(t.Context(), v1alpha1.Operation{Spec: v1alpha1.OperationSpec{Type: v1alpha1.TypeRepair, Target: v1alpha1.OperationTarget{Name: "n1"}}})
		if err != nil {
			t.Fatal(err)
		}
		if got := testutil.ToFloat64(m1.running.WithLabelValues("Repair")); got != 1 {
			t.Errorf("running during operation %d = %v, want 1", i, got)
		}
		now = now.Add(90 * time.Second)
		var err2 error
		if i == 1 {
			err2 = errBoom
		}
		_ = rec.Finish(t.Context(), err2, "")
	}
	for _, c := range []struct {
		name string
		got  float64
		want float64
	}{
		{"started", testutil.ToFloat64(m1.startedC.WithLabelValues("Repair")), 2},
		{"succeeded", testutil.ToFloat64(m1.finishedC.WithLabelValues("Repair", "succeeded")), 1},
		{"failed", testutil.ToFloat64(m2.finishedC.WithLabelValues("Repair", "failed")), 1},
		{"running", testutil.ToFloat64(m1.running.WithLabelValues("Repair")), 0},
		{"last failed end", testutil.ToFloat64(m1.lastEnd.WithLabelValues("Repair", "failed")), float64(t0.Add(180 * time.Second).Unix())},
	} {
		if c.got != c.want {
			t.Errorf("%s = %v, want %v", c.name, c.got, c.want)
		}
	}
	if n := testutil.CollectAndCount(m1.duration); n != 2 {
		t.Errorf("duration series = %d, want 2 (succeeded, failed)", n)
	}
	if n, err := testutil.GatherAndCount(reg, "kdiag_operations_total"); err != nil || n != 2 {
		t.Errorf("registry has %d kdiag_operations_total series (%v), want 2", n, err)
	}
}
