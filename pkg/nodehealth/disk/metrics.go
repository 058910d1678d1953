package disk

import (
	"fmt"
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
)

// diskMetrics are the disk monitor's gauges. Every series is labelled by the
// filesystem's first watched path ("path") and its device number.
type diskMetrics struct {
	bytes, percent, inodes, inodesPercent, high *prometheus.GaugeVec
	scanSeconds, scanEntries, top               *prometheus.GaugeVec
	scans                                       *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) (*diskMetrics, error) {
	l := []string{"path", "device"}
	m := &diskMetrics{
		bytes: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "kdiag_disk_bytes",
			Help: "Filesystem size by kind: total, used, available (as df)."}, append(l, "kind")),
		percent: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "kdiag_disk_used_percent",
			Help: "Filesystem bytes used in percent of used+available (df's Use%)."}, l),
		inodes: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "kdiag_disk_inodes",
			Help: "Filesystem inodes by kind: total, used."}, append(l, "kind")),
		inodesPercent: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "kdiag_disk_inodes_used_percent",
			Help: "Filesystem inodes used in percent."}, l),
		high: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "kdiag_disk_above_threshold",
			Help: "1 while the filesystem counts as full (threshold with hysteresis)."}, l),
		scanSeconds: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "kdiag_disk_scan_duration_seconds",
			Help: "Duration of the last top-consumer walk of the filesystem."}, l),
		scanEntries: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "kdiag_disk_scan_entries",
			Help: "Directory entries looked at by the last top-consumer walk."}, l),
		top: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "kdiag_disk_top_consumer_bytes",
			Help: "Bytes under each of the largest directories found by the last walk."}, append(l, "dir")),
		scans: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "kdiag_disk_scans_total",
			Help: "Top-consumer walks by result: complete or truncated."}, []string{"result"}),
	}
	for _, c := range []prometheus.Collector{m.bytes, m.percent, m.inodes, m.inodesPercent, m.high, m.scanSeconds, m.scanEntries, m.top, m.scans} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("disk metrics: %w", err)
		}
	}
	return m, nil
}

func labels(fs Filesystem) []string {
	return []string{fs.Paths[0], strconv.FormatUint(fs.Device, 10)}
}

// set exports the usage of fss; a nil receiver does nothing.
func (m *diskMetrics) set(fss []Filesystem, high map[uint64]bool) {
	if m == nil {
		return
	}
	for _, fs := range fss {
		l := labels(fs)
		m.bytes.WithLabelValues(append(l, "total")...).Set(float64(fs.TotalBytes))
		m.bytes.WithLabelValues(append(l, "used")...).Set(float64(fs.UsedBytes))
		m.bytes.WithLabelValues(append(l, "available")...).Set(float64(fs.AvailableBytes))
		m.percent.WithLabelValues(l...).Set(fs.UsedPercent)
		m.inodes.WithLabelValues(append(l, "total")...).Set(float64(fs.InodesTotal))
		m.inodes.WithLabelValues(append(l, "used")...).Set(float64(fs.InodesUsed))
		m.inodesPercent.WithLabelValues(l...).Set(fs.InodesUsedPercent)
		v := 0.0
		if high[fs.Device] {
			v = 1
		}
		m.high.WithLabelValues(l...).Set(v)
	}
}

// scanned exports a walk's figures and top consumers.
func (m *diskMetrics) scanned(fs Filesystem, s Scan) {
	if m == nil {
		return
	}
	l := labels(fs)
	m.scanSeconds.WithLabelValues(l...).Set(s.Duration.Seconds())
	m.scanEntries.WithLabelValues(l...).Set(float64(s.Entries))
	m.top.DeletePartialMatch(prometheus.Labels{"path": l[0], "device": l[1]})
	for _, c := range s.Top {
		m.top.WithLabelValues(append(l, c.Path)...).Set(float64(c.Bytes))
	}
	result := "complete"
	if s.Truncated != "" {
		result = "truncated"
	}
	m.scans.WithLabelValues(result).Inc()
}
