package repair

import (
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the controller's Prometheus metrics, registered in
// controller-runtime's registry (served by the manager on
// --metrics-bind-address with its own controller metrics).
type metrics struct {
	started, succeeded, failed *prometheus.CounterVec
	unhealthy, inFlight        prometheus.Gauge
	paused, halted             prometheus.Gauge
}

// newMetrics registers the metrics in reg. A registry that already holds
// them (a second controller in the same process, as in the tests) hands
// back the registered collectors, so both count into the same series.
func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		started: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kdiag_repair_actions_started_total", Help: "Repair actions started, by action (reboot, reimage, redeploy).",
		}, []string{"action"}),
		succeeded: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kdiag_repair_actions_succeeded_total", Help: "Repair actions after which the node became Ready, by action.",
		}, []string{"action"}),
		failed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kdiag_repair_actions_failed_total", Help: "Repair actions that failed (provider error, drain timeout, or node not Ready within the step timeout), by action.",
		}, []string{"action"}),
		unhealthy: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "kdiag_repair_nodes_unhealthy", Help: "Nodes whose Ready condition has been False or Unknown for longer than --unhealthy-after.",
		}),
		inFlight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "kdiag_repair_in_flight", Help: "Nodes with a repair sequence in flight (draining, acting or waiting for Ready).",
		}),
		paused: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "kdiag_repair_paused", Help: "1 when the controller is paused (--paused or the kdiag.io/repair-paused annotation on its Lease).",
		}),
		halted: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "kdiag_repair_halted", Help: "1 when more nodes than --max-unhealthy are unhealthy and every repair is stopped.",
		}),
	}
	var err error
	if m.started, err = register(reg, m.started); err != nil {
		return nil, err
	}
	if m.succeeded, err = register(reg, m.succeeded); err != nil {
		return nil, err
	}
	if m.failed, err = register(reg, m.failed); err != nil {
		return nil, err
	}
	for _, g := range []*prometheus.Gauge{&m.unhealthy, &m.inFlight, &m.paused, &m.halted} {
		if *g, err = register(reg, *g); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// register registers c, or returns the collector already registered under
// the same descriptor.
func register[C prometheus.Collector](reg prometheus.Registerer, c C) (C, error) {
	err := reg.Register(c)
	var are prometheus.AlreadyRegisteredError
	if errors.As(err, &are) {
		if prev, ok := are.ExistingCollector.(C); ok {
			return prev, nil
		}
	}
	if err != nil {
		return c, fmt.Errorf("register repair metrics: %w", err)
	}
	return c, nil
}
