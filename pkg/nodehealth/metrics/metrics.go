// Package metrics holds the agent's Prometheus metrics: NPD's
// problem_counter and problem_gauge, so that NPD dashboards and alerts keep
// working, and kdiag's own agent, API-write and PSI metrics.
package metrics

import (
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/kdiag/kdiag/pkg/nodehealth"
)

// Metrics is one agent's set of metrics, registered on its own registry.
type Metrics struct {
	// Registry serves /metrics.
	Registry *prometheus.Registry
	// ProblemCounter counts problems by reason (NPD's name and labels).
	ProblemCounter *prometheus.CounterVec
	// ProblemGauge is 1 while a condition is True with a reason (NPD's name and labels).
	ProblemGauge *prometheus.GaugeVec
	// APIWrites counts writes to the API server by kind (condition_patch,
	// event) and result (ok, error).
	APIWrites *prometheus.CounterVec
	// LogLines counts log lines read by monitor.
	LogLines *prometheus.CounterVec
	// MonitorUp is 1 while a monitor's source is being read.
	MonitorUp *prometheus.GaugeVec
	// PSIAvg is a pressure average in percent by resource (cpu, memory, io),
	// kind (some, full) and window (10, 60, 300 seconds).
	PSIAvg *prometheus.GaugeVec
	// PSITotal is the total stall time in seconds by resource and kind.
	PSITotal *prometheus.GaugeVec
	// PodPSIAvg is PSIAvg for one pod's cgroup (cgroup v2 only).
	PodPSIAvg *prometheus.GaugeVec

	mu      sync.Mutex
	reasons map[string]string // condition type -> reason last set in ProblemGauge
}

// New builds and registers the metrics, plus the Go and process collectors.
func New() *Metrics {
	m := &Metrics{
		Registry: prometheus.NewRegistry(),
		ProblemCounter: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "problem_counter", Help: "Number of times a specific type of problem have occurred.",
		}, []string{"reason"}),
		ProblemGauge: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "problem_gauge", Help: "Whether a specific type of problem is affecting the node or not.",
		}, []string{"type", "reason"}),
		APIWrites: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kdiag_agent_api_writes_total", Help: "Writes to the API server by kind and result.",
		}, []string{"kind", "result"}),
		LogLines: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kdiag_agent_log_lines_total", Help: "Log lines read, by monitor source.",
		}, []string{"source"}),
		MonitorUp: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "kdiag_agent_monitor_up", Help: "1 while a monitor's log source is being read, 0 after it failed.",
		}, []string{"source"}),
		PSIAvg: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "kdiag_node_pressure_avg_percent", Help: "Node pressure stall information average, in percent.",
		}, []string{"resource", "kind", "window"}),
		PSITotal: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "kdiag_node_pressure_stalled_seconds_total", Help: "Node total pressure stall time, in seconds.",
		}, []string{"resource", "kind"}),
		PodPSIAvg: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "kdiag_pod_pressure_avg_percent", Help: "Pod cgroup pressure stall information average, in percent.",
		}, []string{"pod_uid", "resource", "kind", "window"}),
		reasons: map[string]string{},
	}
	m.Registry.MustRegister(m.ProblemCounter, m.ProblemGauge, m.APIWrites, m.LogLines, m.MonitorUp,
		m.PSIAvg, m.PSITotal, m.PodPSIAvg,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Sink returns a nodehealth.Sink that keeps problem_counter and
// problem_gauge up to date.
func (m *Metrics) Sink() nodehealth.Sink { return problemSink{m} }

type problemSink struct{ m *Metrics }

// SetCondition moves problem_gauge to the condition's reason.
func (s problemSink) SetCondition(_ string, c nodehealth.Condition) {
	s.m.mu.Lock()
	defer s.m.mu.Unlock()
	if old, ok := s.m.reasons[c.Type]; ok && old != c.Reason {
		s.m.ProblemGauge.WithLabelValues(c.Type, old).Set(0)
	}
	s.m.reasons[c.Type] = c.Reason
	v := 0.0
	if c.Status {
		v = 1
	}
	s.m.ProblemGauge.WithLabelValues(c.Type, c.Reason).Set(v)
}

// Emit counts the problem; a Normal event (a recovery) is not a problem.
func (s problemSink) Emit(e nodehealth.Event) {
	if !e.Normal {
		s.m.ProblemCounter.WithLabelValues(e.Reason).Inc()
	}
}
