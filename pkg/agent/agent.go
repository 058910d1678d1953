// Package agent wires kdiag's node agent: NPD-format log monitors, the PSI
// monitor and the disk monitor feed conditions and events to the API-server
// exporter and to the Prometheus metrics, served with /healthz and the
// NotReady diagnostic (/diagnose) on an HTTP listener; when the node
// degrades the agent records a diagnostic in the cluster by itself.
package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/sync/errgroup"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/kdiag/kdiag/pkg/nodehealth"
	"github.com/kdiag/kdiag/pkg/nodehealth/diagnose"
	"github.com/kdiag/kdiag/pkg/nodehealth/disk"
	"github.com/kdiag/kdiag/pkg/nodehealth/exporter"
	"github.com/kdiag/kdiag/pkg/nodehealth/logmon"
	"github.com/kdiag/kdiag/pkg/nodehealth/metrics"
	"github.com/kdiag/kdiag/pkg/nodehealth/psi"
)

// Options configure an Agent.
type Options struct {
	// Node is the name of the Node this agent runs on.
	Node string
	// RESTConfig reaches the API server.
	RESTConfig *rest.Config
	// ConfigFiles are NPD system-log-monitor configs; when empty the
	// built-in monitors run.
	ConfigFiles []string
	// Listen is the address of /metrics and /healthz ("" disables it).
	Listen string
	// Heartbeat re-patches the conditions when nothing changes (default 5m).
	Heartbeat time.Duration
	// PSI configures the PSI monitor; PSI.Metrics and PSI.Logger are set by the agent.
	PSI psi.Options
	// DisablePSI turns the PSI monitor off.
	DisablePSI bool
	// Disk configures the disk monitor; Disk.Registerer and Disk.Logger
	// are set by the agent.
	Disk disk.Options
	// DisableDisk turns the disk monitor off.
	DisableDisk bool
	// Diagnose configures the NotReady diagnostic; Node, Client, Pods, Disk
	// and the disk paths and threshold are set by the agent.
	Diagnose diagnose.Options
	// ReportInterval is the least time between two reports the agent
	// records by itself when the node degrades (default 10m; negative
	// turns automatic reports off; GET /diagnose always works).
	ReportInterval time.Duration
	// Logger defaults to slog.Default().
	Logger *slog.Logger
	// Handlers are extra HTTP endpoints served next to /metrics and
	// /healthz, keyed by their ServeMux pattern (for example "/gadgets/"
	// for the trace gadgets, or "/diagnose" for the NotReady report).
	Handlers map[string]http.Handler
}

// Agent is a configured node agent.
type Agent struct {
	opts     Options
	log      *slog.Logger
	cs       kubernetes.Interface
	metrics  *metrics.Metrics
	configs  []*logmon.Config
	listener net.Listener

	mu       sync.Mutex
	problems []string
	resumed  bool
	exp      *exporter.Exporter
	reporter *reporter
}

// New loads the monitor configs and opens the listener. A config that does
// not load is recorded as a problem (see Problems) and skipped, so that the
// others still run; New fails only when nothing could run at all.
func New(opts Options) (*Agent, error) {
	if opts.Node == "" {
		return nil, errors.New("agent: the node name is required (--node, or NODE_NAME from the downward API)")
	}
	if opts.RESTConfig == nil {
		return nil, errors.New("agent: no API server configuration")
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	cs, err := kubernetes.NewForConfig(opts.RESTConfig)
	if err != nil {
		return nil, fmt.Errorf("agent: API client: %w", err)
	}
	a := &Agent{opts: opts, log: opts.Logger, cs: cs, metrics: metrics.New()}
	if len(opts.ConfigFiles) == 0 {
		if a.configs, err = logmon.Defaults(); err != nil {
			return nil, fmt.Errorf("agent: %w", err)
		}
	}
	for _, f := range opts.ConfigFiles {
		c, err := logmon.LoadFile(f)
		if err != nil {
			a.problem(err)
			continue
		}
		a.configs = append(a.configs, c)
	}
	if !opts.DisableDisk {
		// Check the thresholds now: a bad flag is an error at start.
		if err := opts.Disk.WithDefaults().Validate(); err != nil {
			return nil, fmt.Errorf("agent: %w", err)
		}
	}
	if len(a.configs) == 0 && opts.DisablePSI && opts.DisableDisk {
		return nil, fmt.Errorf("agent: nothing to run: %s", strings.Join(a.problems, "; "))
	}
	if opts.Listen != "" {
		if a.listener, err = net.Listen("tcp", opts.Listen); err != nil {
			return nil, fmt.Errorf("agent: listen on %s: %w", opts.Listen, err)
		}
	}
	return a, nil
}

// Addr is the listener's address, or "" without one.
func (a *Agent) Addr() string {
	if a.listener == nil {
		return ""
	}
	return a.listener.Addr().String()
}

// Metrics returns the agent's metrics.
func (a *Agent) Metrics() *metrics.Metrics { return a.metrics }

// Problems lists what could not run: configs that did not load, log
// sources that failed, a missing PSI.
func (a *Agent) Problems() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]string(nil), a.problems...)
}

// Patches returns how many condition patches have succeeded so far.
func (a *Agent) Patches() int {
	a.mu.Lock()
	e := a.exp
	a.mu.Unlock()
	if e == nil {
		return 0
	}
	return e.Patches()
}

func (a *Agent) problem(err error) {
	a.log.Error("agent problem; continuing with the rest", "err", err)
	a.mu.Lock()
	defer a.mu.Unlock()
	a.problems = append(a.problems, err.Error())
}

// Run starts everything and returns when ctx ends.
func (a *Agent) Run(ctx context.Context) error {
	g, ctx := errgroup.WithContext(ctx)
	if a.listener != nil {
		srv := &http.Server{Handler: a.handler(), ReadHeaderTimeout: 5 * time.Second}
		g.Go(func() error {
			if err := srv.Serve(a.listener); err != nil && !errors.Is(err, http.ErrServerClosed) {
				return fmt.Errorf("agent: serve %s: %w", a.listener.Addr(), err)
			}
			return nil
		})
		g.Go(func() error {
			<-ctx.Done()
			sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			return srv.Shutdown(sctx)
		})
	}

	pods, err := exporter.NewPodCache(a.cs, a.opts.Node)
	if err != nil {
		return fmt.Errorf("agent: %w", err)
	}
	defer pods.Shutdown()
	exp := exporter.New(a.cs, a.opts.Node, exporter.Options{
		Heartbeat: a.opts.Heartbeat, Pods: pods, Metrics: a.metrics, Logger: a.log})
	resume, err := a.resume(ctx, exp)
	if err != nil {
		_ = g.Wait()
		return err
	}
	a.mu.Lock()
	a.exp, a.resumed = exp, true
	a.mu.Unlock()
	// The reporter watches the conditions (as a sink) and the Node's Ready
	// condition, and records a diagnostic when one turns bad.
	rp := newReporter(a, a.opts.ReportInterval, resume)
	sinks := []nodehealth.Sink{exp, a.metrics.Sink()}
	if rp.interval > 0 {
		sinks = append(sinks, rp)
	}
	sink := nodehealth.Tee(sinks...)
	g.Go(func() error { return exp.Run(ctx) })
	var dm *disk.Monitor
	if !a.opts.DisableDisk {
		do := a.opts.Disk.WithDefaults()
		do.Registerer, do.Logger = a.metrics.Registry, a.log
		if dm, err = disk.NewMonitor(do, sink, resume); err != nil {
			a.problem(fmt.Errorf("disk monitor off: %w", err))
			dm = nil
		} else {
			g.Go(func() error { return dm.Run(ctx) })
		}
	}
	rp.diag = diagnose.New(a.diagnoseOptions(pods, dm))
	a.mu.Lock()
	a.reporter = rp
	a.mu.Unlock()
	if rp.interval > 0 {
		g.Go(func() error { rp.watchReady(ctx); return nil })
		g.Go(func() error { rp.run(ctx); return nil })
	}
	// /diagnose answers from here on; pods are named once the list arrives.
	if err := pods.Start(ctx, 10*time.Second); err != nil {
		a.problem(fmt.Errorf("OOM events will lack pod details until the pod list arrives: %w", err))
	}

	for _, c := range a.configs {
		m := logmon.NewMonitor(c, sink, resume, nil)
		src, err := logmon.NewSource(c)
		if err != nil {
			a.problem(fmt.Errorf("monitor %s: %w", c.Source, err))
			continue
		}
		up := a.metrics.MonitorUp.WithLabelValues(c.Source)
		up.Set(1)
		src = countingSource{src, a.metrics.LogLines.WithLabelValues(c.Source).Inc}
		g.Go(func() error {
			m.Run(ctx, src, func(err error) {
				up.Set(0)
				a.problem(err)
			})
			return nil
		})
	}

	if !a.opts.DisablePSI {
		po := a.opts.PSI
		po.Metrics, po.Logger = a.metrics, a.log
		pm, err := psi.NewMonitor(po, sink, resume)
		if err != nil {
			a.problem(fmt.Errorf("PSI monitor off: %w", err))
		} else {
			g.Go(func() error { return pm.Run(ctx) })
		}
	}
	return g.Wait()
}

// diagnoseOptions completes the diagnostic's options with what the agent
// has: its client, pod cache and disk monitor.
func (a *Agent) diagnoseOptions(pods diagnose.PodResolver, dm *disk.Monitor) diagnose.Options {
	o := a.opts.Diagnose
	o.Node, o.Client, o.Pods = a.opts.Node, a.cs, pods
	o.APIServerHost = a.opts.RESTConfig.Host
	if dm != nil {
		o.Disk = dm
	}
	do := a.opts.Disk.WithDefaults()
	if len(o.DiskPaths) == 0 {
		o.DiskPaths = do.Paths
	}
	if o.DiskThresholdPercent == 0 {
		o.DiskThresholdPercent = do.SetPercent
	}
	if o.ProcPressure == "" {
		o.ProcPressure = a.opts.PSI.ProcDir
	}
	if o.CgroupV2Roots == nil {
		o.CgroupV2Roots = a.opts.PSI.CgroupRoots
	}
	return o
}

// resume reads the Node's conditions, retrying until the API server
// answers: starting from defaults instead would flip conditions.
func (a *Agent) resume(ctx context.Context, exp *exporter.Exporter) (map[string]nodehealth.Condition, error) {
	backoff := 500 * time.Millisecond
	for {
		r, err := exp.Resume(ctx)
		if err == nil {
			return r, nil
		}
		a.log.Warn("cannot read the node's conditions yet; retrying", "err", err, "in", backoff)
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("agent: stopped before the node's conditions could be read: %w", err)
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 30*time.Second)
	}
}

// handler serves /metrics and /healthz. /healthz is 200 once the agent has
// read its Node and lists any problems, including failing condition
// patches; 503 before. It stays 200 while the API server is unreachable,
// because restarting the agent would not help.
func (a *Agent) handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(a.metrics.Registry, promhttp.HandlerOpts{}))
	mux.Handle("/diagnose", a.diagnoseHandler())
	for pattern, h := range a.opts.Handlers {
		mux.Handle(pattern, h)
	}
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		a.mu.Lock()
		resumed, problems, exp := a.resumed, append([]string(nil), a.problems...), a.exp
		a.mu.Unlock()
		if exp != nil {
			if since, err := exp.Failing(); err != nil {
				problems = append(problems, fmt.Sprintf("node conditions not written for %s: %v", time.Since(since).Round(time.Second), err))
			}
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if !resumed {
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintln(w, "not ready: the node's conditions have not been read yet")
			return
		}
		fmt.Fprintln(w, "ok")
		for _, p := range problems {
			fmt.Fprintln(w, "problem:", p)
		}
	})
	return mux
}

// countingSource counts the lines a source produces.
type countingSource struct {
	logmon.Source
	inc func()
}

func (c countingSource) Run(ctx context.Context, out chan<- logmon.Line) error {
	mid := make(chan logmon.Line)
	done := make(chan error, 1)
	go func() { done <- c.Source.Run(ctx, mid); close(mid) }()
	for l := range mid {
		c.inc()
		select {
		case out <- l:
		case <-ctx.Done():
		}
	}
	return <-done
}
