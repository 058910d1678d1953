package ops

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	apierrors "k8s.io/apimachinery/pkg/api/errors"

	"github.com/kdiag/kdiag/pkg/apis/kdiag/v1alpha1"
)

// Metrics are the Prometheus metrics of operations, counted by the
// Recorder for every operation it sees, recorded or not. All methods are
// no-ops on a nil *Metrics.
type Metrics struct {
	startedC    *prometheus.CounterVec
	finishedC   *prometheus.CounterVec
	duration    *prometheus.HistogramVec
	running     *prometheus.GaugeVec
	lastEnd     *prometheus.GaugeVec
	writeFailed *prometheus.CounterVec
}

// NewMetrics creates the operation metrics and registers them with reg
// (the repair controller's registry); a nil reg leaves them unregistered.
// Calling it again with the same registry returns metrics backed by the
// collectors registered first, so several Recorders in one process (tests
// start several controllers) count into the same series. It panics on any
// other registration error, as prometheus.MustRegister does.
//
//	kdiag_operations_started_total{type}
//	kdiag_operations_total{type,result}            result: succeeded|failed
//	kdiag_operation_duration_seconds{type,result}  histogram, 1s..2h
//	kdiag_operations_running{type}
//	kdiag_operation_last_end_timestamp_seconds{type,result}
//	kdiag_operation_record_failures_total{reason}  reason: crd_missing|forbidden|error
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		startedC: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "kdiag_operations_started_total",
			Help: "Operations (drains, node repairs, applied fixes) started, by type."}, []string{"type"}),
		finishedC: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "kdiag_operations_total",
			Help: "Operations finished, by type and result (succeeded or failed)."}, []string{"type", "result"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "kdiag_operation_duration_seconds",
			Help:    "How long operations took, by type and result.",
			Buckets: []float64{1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200}}, []string{"type", "result"}),
		running: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "kdiag_operations_running",
			Help: "Operations running now, by type."}, []string{"type"}),
		lastEnd: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "kdiag_operation_last_end_timestamp_seconds",
			Help: "Unix time the last operation of a type and result ended (alert on a recent failed one)."}, []string{"type", "result"}),
		writeFailed: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "kdiag_operation_record_failures_total",
			Help: "Operation records that could not be written, by reason (crd_missing, forbidden, error)."}, []string{"reason"}),
	}
	if reg != nil {
		register(reg, &m.startedC)
		register(reg, &m.finishedC)
		register(reg, &m.duration)
		register(reg, &m.running)
		register(reg, &m.lastEnd)
		register(reg, &m.writeFailed)
	}
	return m
}

// register registers *c, or replaces it with the identical collector
// already registered.
func register[C prometheus.Collector](reg prometheus.Registerer, c *C) {
	err := reg.Register(*c)
	var are prometheus.AlreadyRegisteredError
	switch {
	case err == nil:
	case errors.As(err, &are):
		existing, ok := are.ExistingCollector.(C)
		if !ok {
			panic(fmt.Sprintf("ops metrics: a different collector is registered under the same name: %v", err))
		}
		*c = existing
	default:
		panic(fmt.Sprintf("ops metrics: %v", err))
	}
}

func result(p v1alpha1.OperationPhase) string { return strings.ToLower(string(p)) }

func (m *Metrics) started(t v1alpha1.OperationType) {
	if m == nil {
		return
	}
	m.startedC.WithLabelValues(string(t)).Inc()
	m.running.WithLabelValues(string(t)).Inc()
}

func (m *Metrics) finished(t v1alpha1.OperationType, p v1alpha1.OperationPhase, took time.Duration, end time.Time) {
	if m == nil {
		return
	}
	r := result(p)
	m.finishedC.WithLabelValues(string(t), r).Inc()
	m.duration.WithLabelValues(string(t), r).Observe(took.Seconds())
	m.running.WithLabelValues(string(t)).Dec()
	m.lastEnd.WithLabelValues(string(t), r).Set(float64(end.Unix()))
}

func (m *Metrics) recordFailed(err error) {
	if m == nil {
		return
	}
	reason := "error"
	switch {
	case isCRDMissing(err):
		reason = "crd_missing"
	case apierrors.IsForbidden(err):
		reason = "forbidden"
	}
	m.writeFailed.WithLabelValues(reason).Inc()
}
