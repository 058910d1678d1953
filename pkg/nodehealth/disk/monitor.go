package disk

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kdiag/kdiag/pkg/nodehealth"
)

// Names under which the monitor reports.
const (
	// Source is the monitor's name in events and conditions.
	Source = "disk-monitor"
	// ConditionType is the node condition that is True while a watched
	// filesystem is above the threshold.
	ConditionType = "DiskUsageHigh"
	// ReasonHigh and ReasonNormal are the condition's reasons; ReasonHigh
	// is also the Warning event's reason, ReasonNormal the Normal one's.
	ReasonHigh   = "DiskUsageAboveThreshold"
	ReasonNormal = "DiskUsageNormal"
)

// Default thresholds, in percent of bytes or inodes used.
const (
	DefaultSetPercent   = 85
	DefaultClearPercent = 80
)

// DefaultPaths returns the directories watched unless configured: the
// kubelet's, containerd's and the logs.
func DefaultPaths() []string { return []string{"/var/lib/kubelet", "/var/lib/containerd", "/var/log"} }

// Options configure a Monitor.
type Options struct {
	// Paths are the directories whose filesystems are watched (default DefaultPaths).
	Paths []string
	// Interval between statfs reads (default 1m).
	Interval time.Duration
	// SetPercent marks a filesystem full when its bytes or inodes reach it
	// (default 85); ClearPercent clears it only when both are below
	// (default 80). The gap is the hysteresis.
	SetPercent, ClearPercent float64
	// Limits bound the top-consumer walk.
	Limits Limits
	// Registerer, when set, gets the disk metrics.
	Registerer prometheus.Registerer
	Logger     *slog.Logger
}

// Validate checks the thresholds.
func (o Options) Validate() error {
	if o.SetPercent <= 0 || o.SetPercent > 100 || o.ClearPercent <= 0 || o.ClearPercent > o.SetPercent {
		return fmt.Errorf("disk thresholds set=%g%% clear=%g%%: want 0 < clear <= set <= 100", o.SetPercent, o.ClearPercent)
	}
	return nil
}

// WithDefaults returns o with the default paths, interval, thresholds
// (when neither is set) and limits filled in.
func (o Options) WithDefaults() Options {
	if len(o.Paths) == 0 {
		o.Paths = DefaultPaths()
	}
	if o.Interval <= 0 {
		o.Interval = time.Minute
	}
	if o.SetPercent == 0 && o.ClearPercent == 0 {
		o.SetPercent, o.ClearPercent = DefaultSetPercent, DefaultClearPercent
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	o.Limits = o.Limits.withDefaults()
	return o
}

// Monitor polls the filesystems' usage, keeps the condition and walks a
// filesystem for its top consumers when it crosses the threshold.
type Monitor struct {
	opts Options
	sink nodehealth.Sink
	m    *diskMetrics

	mu     sync.Mutex
	fs     []Filesystem
	errs   []string
	high   map[uint64]bool
	scans  map[uint64]Scan
	cond   nodehealth.Condition
	resume bool // the Node says the condition was True at start
}

// NewMonitor validates the options and returns a monitor that resumes from
// the condition in resume. Paths that cannot be read are not an error here:
// each poll reports them (Errors) and watches the rest.
func NewMonitor(opts Options, sink nodehealth.Sink, resume map[string]nodehealth.Condition) (*Monitor, error) {
	opts = opts.WithDefaults()
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	m := &Monitor{opts: opts, sink: sink, high: map[uint64]bool{}, scans: map[uint64]Scan{},
		cond: nodehealth.Condition{Type: ConditionType, Reason: ReasonNormal, Message: "watched filesystems below the threshold", Transition: time.Now()}}
	if r, ok := resume[ConditionType]; ok {
		m.cond, m.resume = r, r.Status
	}
	if opts.Registerer != nil {
		var err error
		if m.m, err = newMetrics(opts.Registerer); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// Run publishes the condition and polls until ctx ends.
func (m *Monitor) Run(ctx context.Context) error {
	m.sink.SetCondition(Source, m.condition())
	t := time.NewTicker(m.opts.Interval)
	defer t.Stop()
	for {
		m.Poll(ctx)
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

func (m *Monitor) condition() nodehealth.Condition {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.cond
}

// Poll reads the usage once, updates metrics and the condition, and walks
// each filesystem that just crossed the threshold.
func (m *Monitor) Poll(ctx context.Context) {
	fss, errs := Usage(m.opts.Paths)
	var msgs []string
	for _, err := range errs {
		msgs = append(msgs, err.Error())
	}
	if len(errs) > 0 {
		m.opts.Logger.Warn("disk: some watched paths cannot be read; watching the rest", "errors", msgs)
	}
	var crossed []Filesystem
	m.mu.Lock()
	m.fs, m.errs = fss, msgs
	for _, fs := range fss {
		pct := max(fs.UsedPercent, fs.InodesUsedPercent)
		was, seen := m.high[fs.Device]
		if !seen && m.resume {
			// After a restart with the condition True, a filesystem still
			// above the clear bound stays high: no flip, no second walk.
			was = pct >= m.opts.ClearPercent
			m.high[fs.Device] = was
		}
		now := was
		if was {
			now = !(fs.UsedPercent < m.opts.ClearPercent && fs.InodesUsedPercent < m.opts.ClearPercent)
		} else {
			now = fs.UsedPercent >= m.opts.SetPercent || fs.InodesUsedPercent >= m.opts.SetPercent
		}
		m.high[fs.Device] = now
		if now && !was {
			crossed = append(crossed, fs)
		}
	}
	m.mu.Unlock()
	m.m.set(fss, m.highSnapshot())

	for _, fs := range crossed {
		scan := Walk(ctx, fs, m.opts.Limits)
		m.mu.Lock()
		m.scans[fs.Device] = scan
		m.mu.Unlock()
		m.m.scanned(fs, scan)
		m.sink.Emit(nodehealth.Event{Source: Source, Reason: ReasonHigh, Message: HighMessage(fs, m.opts.SetPercent, &scan), Time: time.Now()})
	}
	m.update(fss)
}

// update sets the condition from the filesystems' states.
func (m *Monitor) update(fss []Filesystem) {
	m.mu.Lock()
	var full []string
	for _, fs := range fss {
		if m.high[fs.Device] {
			full = append(full, fmt.Sprintf("%s %.0f%% used (inodes %.0f%%)", strings.Join(fs.Paths, ","), fs.UsedPercent, fs.InodesUsedPercent))
		}
	}
	status := len(full) > 0
	c := m.cond
	changed := c.Status != status
	if status {
		c.Reason, c.Message = ReasonHigh, fmt.Sprintf("filesystem above %.0f%%: %s", m.opts.SetPercent, strings.Join(full, "; "))
	} else {
		c.Reason, c.Message = ReasonNormal, fmt.Sprintf("watched filesystems below %.0f%%", m.opts.SetPercent)
	}
	if changed {
		c.Status, c.Transition = status, time.Now()
	}
	m.cond = c
	m.mu.Unlock()
	if changed && !status {
		m.sink.Emit(nodehealth.Event{Source: Source, Reason: ReasonNormal, Message: c.Message, Time: time.Now(), Normal: true})
	}
	m.sink.SetCondition(Source, c)
}

func (m *Monitor) highSnapshot() map[uint64]bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make(map[uint64]bool, len(m.high))
	for k, v := range m.high {
		out[k] = v
	}
	return out
}

// Latest returns the last poll's filesystems and unreadable paths.
func (m *Monitor) Latest() ([]Filesystem, []string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]Filesystem(nil), m.fs...), append([]string(nil), m.errs...)
}

// Scans returns the latest walk of each filesystem that crossed the threshold.
func (m *Monitor) Scans() []Scan {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []Scan
	for _, fs := range m.fs {
		if s, ok := m.scans[fs.Device]; ok {
			out = append(out, s)
		}
	}
	return out
}

// Options returns the monitor's options with defaults applied.
func (m *Monitor) Options() Options { return m.opts }

// HighMessage describes a full filesystem and, when scan is set, its top consumers.
func HighMessage(fs Filesystem, set float64, scan *Scan) string {
	msg := fmt.Sprintf("filesystem of %s is %.1f%% full (%s of %s used, %s available; inodes %.1f%%), threshold %.0f%%",
		strings.Join(fs.Paths, ", "), fs.UsedPercent, Bytes(int64(fs.UsedBytes)), Bytes(int64(fs.TotalBytes)), //nolint:gosec // sizes fit
		Bytes(int64(fs.AvailableBytes)), fs.InodesUsedPercent, set) //nolint:gosec // sizes fit
	if scan != nil && len(scan.Top) > 0 {
		var top []string
		for _, c := range scan.Top[:min(5, len(scan.Top))] {
			top = append(top, fmt.Sprintf("%s %s", c.Path, Bytes(c.Bytes)))
		}
		msg += "; top: " + strings.Join(top, ", ")
		if scan.Truncated != "" {
			msg += " (walk truncated: " + scan.Truncated + ")"
		}
	}
	return msg
}

// Bytes renders a size with a binary unit.
func Bytes(b int64) string {
	const unit = 1024
	if b < unit {
		return fmt.Sprintf("%dB", b)
	}
	div, exp := int64(unit), 0
	for n := b / unit; n >= unit; n /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f%ciB", float64(b)/float64(div), "KMGTPE"[exp])
}
