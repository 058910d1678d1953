package metrics

import (
	"testing"

	"github.com/kdiag/kdiag/pkg/nodehealth"
)

// value returns the value of the sample of family name whose labels match.
func value(t *testing.T, m *Metrics, name string, labels map[string]string) (float64, bool) {
	t.Helper()
	fams, err := m.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fams {
		if f.GetName() != name {
			continue
		}
	metric:
		for _, s := range f.GetMetric() {
			got := map[string]string{}
			for _, l := range s.GetLabel() {
				got[l.GetName()] = l.GetValue()
			}
			for k, v := range labels {
				if got[k] != v {
					continue metric
				}
			}
			if s.Counter != nil {
				return s.Counter.GetValue(), true
			}
			return s.Gauge.GetValue(), true
		}
	}
	return 0, false
}

func TestProblemMetricsUseNPDNames(t *testing.T) {
	m := New()
	s := m.Sink()
	s.Emit(nodehealth.Event{Reason: "OOMKilling"})
	s.Emit(nodehealth.Event{Reason: "OOMKilling"})
	s.Emit(nodehealth.Event{Reason: "Recovered", Normal: true})
	s.SetCondition("ro", nodehealth.Condition{Type: "ReadonlyFilesystem", Status: true, Reason: "FilesystemIsReadOnly"})
	tests := []struct {
		step   string
		name   string
		labels map[string]string
		want   float64
	}{
		{"two OOM events", "problem_counter", map[string]string{"reason": "OOMKilling"}, 2},
		{"condition set", "problem_gauge", map[string]string{"type": "ReadonlyFilesystem", "reason": "FilesystemIsReadOnly"}, 1},
	}
	for _, tt := range tests {
		if got, ok := value(t, m, tt.name, tt.labels); !ok || got != tt.want {
			t.Errorf("%s: %s%v = %v (found %v), want %v", tt.step, tt.name, tt.labels, got, ok, tt.want)
		}
	}
	if _, ok := value(t, m, "problem_counter", map[string]string{"reason": "Recovered"}); ok {
		t.Error("a Normal (recovery) event was counted as a problem")
	}
	s.SetCondition("ro", nodehealth.Condition{Type: "ReadonlyFilesystem", Status: false, Reason: "Remounted"})
	if got, _ := value(t, m, "problem_gauge", map[string]string{"type": "ReadonlyFilesystem", "reason": "FilesystemIsReadOnly"}); got != 0 {
		t.Errorf("after clearing, problem_gauge for the old reason = %v, want 0", got)
	}
	if got, ok := value(t, m, "problem_gauge", map[string]string{"type": "ReadonlyFilesystem", "reason": "Remounted"}); !ok || got != 0 {
		t.Errorf("after clearing, problem_gauge for the new reason = %v (found %v), want 0", got, ok)
	}
}
