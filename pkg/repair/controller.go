// Package repair is kdiag's node auto-repair controller (`kdiag repair`).
// A node whose Ready condition has been False or Unknown for longer than
// UnhealthyAfter is rebooted, then reimaged, then redeployed, through a
// Provider (exec, clusterapi, lab), each step waiting StepTimeout for the
// node to become Ready, the whole sequence retried MaxAttempts times with
// a back-off, and stopped as soon as the node is Ready. Before a reimage or
// a redeploy the node is cordoned and drained with pkg/drain (PDBs
// respected, with a timeout).
//
// Safety rails: at most MaxInFlight nodes at once; nothing at all when more
// than MaxUnhealthy nodes are unhealthy; nodes tainted by the cluster
// autoscaler or shut down, cordoned by another actor or annotated
// kdiag.io/skip-repair are skipped; the controller pauses with --paused or
// kdiag.io/repair-paused=true on its Lease.
//
// The sequence state is kept on the Node (annotation kdiag.io/repair-state),
// so a restarted controller resumes without repeating a step. The
// controller runs on controller-runtime with leader election on a Lease,
// emits Events with AKS's reasons (NodeRebootStart, ...) and serves
// Prometheus metrics through controller-runtime's registry.
package repair

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/utils/clock"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/config"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"
	crmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	"sigs.k8s.io/controller-runtime/pkg/source"

	"github.com/kdiag/kdiag/pkg/drain"
	"github.com/kdiag/kdiag/pkg/ops"
)

// Defaults of Options.
const (
	DefaultUnhealthyAfter = 5 * time.Minute
	DefaultStepTimeout    = 10 * time.Minute
	DefaultMaxAttempts    = 3
	DefaultMaxInFlight    = 1
	DefaultMaxUnhealthy   = "40%"
	DefaultBackoff        = 10 * time.Minute
	DefaultPollInterval   = 30 * time.Second
	// DefaultDrainSkipWaitForDeleteTimeout is, in seconds, the
	// --skip-wait-for-delete-timeout of the drain of a NotReady node.
	DefaultDrainSkipWaitForDeleteTimeout = 10
	DefaultLeaseName                     = "kdiag-repair"
	DefaultLeaseNamespace                = "kube-system"
)

// Options configure the controller. Zero values mean the defaults above.
type Options struct {
	// UnhealthyAfter is how long Ready must be False or Unknown before
	// the node is repaired.
	UnhealthyAfter time.Duration
	// StepTimeout is how long each action has to bring the node back to
	// Ready (it also bounds the provider call).
	StepTimeout time.Duration
	// MaxAttempts is how many times the whole sequence is tried.
	MaxAttempts int
	// MaxInFlight is how many nodes may be in a sequence at once.
	MaxInFlight int
	// MaxUnhealthy stops every repair when more nodes than this (a count
	// or a percentage of all nodes, rounded up) are unhealthy.
	MaxUnhealthy intstr.IntOrString
	// Backoff is the wait after the first failed attempt; it doubles
	// after each further one.
	Backoff time.Duration
	// DrainTimeout bounds the drain before a reimage or redeploy (default
	// drain.DefaultTimeout).
	DrainTimeout time.Duration
	// DrainSkipWaitForDeleteTimeout is, in whole seconds, kubectl drain's
	// --skip-wait-for-delete-timeout for the drain of a node that is not
	// Ready: an evicted pod whose deletionTimestamp (eviction plus grace
	// period) is older than this is not waited for, since a dead kubelet
	// never confirms its deletion. 0 means
	// DefaultDrainSkipWaitForDeleteTimeout; negative waits for every pod
	// (until DrainTimeout).
	DrainSkipWaitForDeleteTimeout int
	// PollInterval is how often a waiting, paused, halted or skipped node
	// is looked at again when nothing changes on it.
	PollInterval time.Duration
	// Paused stops every action (--paused).
	Paused bool
	// SkipTaints are the taint keys of nodes left alone (default
	// DefaultSkipTaints()).
	SkipTaints []string
	// LeaseName and LeaseNamespace name the leader-election Lease, which
	// also carries the pause annotation.
	LeaseName, LeaseNamespace string
	// LeaderElection can be switched off for a single replica (the
	// default is on: NoLeaderElection false).
	NoLeaderElection bool
	// LeaseDuration, RenewDeadline and RetryPeriod tune the election
	// (controller-runtime's defaults: 15 s, 10 s, 2 s).
	LeaseDuration, RenewDeadline, RetryPeriod time.Duration
	// MetricsAddr is where /metrics is served ("0" switches it off).
	MetricsAddr string
	// ProbeAddr serves /healthz and /readyz ("" or "0" switches it off).
	ProbeAddr string
}

// WithDefaults returns o with its zero fields set to the defaults.
func (o Options) WithDefaults() Options {
	if o.UnhealthyAfter <= 0 {
		o.UnhealthyAfter = DefaultUnhealthyAfter
	}
	if o.StepTimeout <= 0 {
		o.StepTimeout = DefaultStepTimeout
	}
	if o.MaxAttempts <= 0 {
		o.MaxAttempts = DefaultMaxAttempts
	}
	if o.MaxInFlight <= 0 {
		o.MaxInFlight = DefaultMaxInFlight
	}
	if o.MaxUnhealthy == (intstr.IntOrString{}) {
		o.MaxUnhealthy = intstr.FromString(DefaultMaxUnhealthy)
	}
	if o.Backoff <= 0 {
		o.Backoff = DefaultBackoff
	}
	if o.DrainTimeout <= 0 {
		o.DrainTimeout = drain.DefaultTimeout
	}
	if o.DrainSkipWaitForDeleteTimeout == 0 {
		o.DrainSkipWaitForDeleteTimeout = DefaultDrainSkipWaitForDeleteTimeout
	}
	if o.PollInterval <= 0 {
		o.PollInterval = DefaultPollInterval
	}
	if o.SkipTaints == nil {
		o.SkipTaints = DefaultSkipTaints()
	}
	if o.LeaseName == "" {
		o.LeaseName = DefaultLeaseName
	}
	if o.LeaseNamespace == "" {
		o.LeaseNamespace = DefaultLeaseNamespace
	}
	if o.MetricsAddr == "" {
		o.MetricsAddr = ":8080"
	}
	return o
}

// Config is what Run needs besides the Options.
type Config struct {
	// REST connects to the cluster.
	REST *rest.Config
	// Provider performs the actions.
	Provider Provider
	// Ops records the sequences as Operations; nil records nothing.
	Ops OperationRecorder
	// Logger receives the logs (default slog.Default()).
	Logger *slog.Logger
}

// Run starts the manager and the controller and blocks until ctx is done
// (nil) or the manager fails. With leader election on, only the replica
// holding the Lease acts; it releases the Lease when ctx ends, so a
// successor takes over at once.
func Run(ctx context.Context, c Config, o Options) error {
	if c.REST == nil {
		return errors.New("repair: no REST config")
	}
	if c.Provider == nil {
		return errors.New("repair: no provider")
	}
	o = o.WithDefaults()
	c.REST = rest.CopyConfig(c.REST)
	if c.REST.UserAgent == "" {
		c.REST.UserAgent = "kdiag-repair"
	}
	log := c.Logger
	if log == nil {
		log = slog.Default()
	}
	lr := logr.FromSlogHandler(log.Handler())
	// controller-runtime's own packages log through its global logger;
	// without it they print a warning and a stack trace after 30 s.
	ctrllog.SetLogger(lr)
	cs, err := kubernetes.NewForConfig(c.REST)
	if err != nil {
		return fmt.Errorf("repair: client for %s: %w", c.REST.Host, err)
	}
	if err := preflight(c.REST); err != nil {
		return err
	}
	probe := o.ProbeAddr
	if probe == "" {
		probe = "0"
	}
	mo := ctrl.Options{
		Logger:                        lr,
		Metrics:                       metricsserver.Options{BindAddress: o.MetricsAddr},
		HealthProbeBindAddress:        probe,
		LeaderElection:                !o.NoLeaderElection,
		LeaderElectionID:              o.LeaseName,
		LeaderElectionNamespace:       o.LeaseNamespace,
		LeaderElectionReleaseOnCancel: true,
		Controller:                    ctrlConfig(),
	}
	if o.LeaseDuration > 0 {
		mo.LeaseDuration = &o.LeaseDuration
	}
	if o.RenewDeadline > 0 {
		mo.RenewDeadline = &o.RenewDeadline
	}
	if o.RetryPeriod > 0 {
		mo.RetryPeriod = &o.RetryPeriod
	}
	mgr, err := ctrl.NewManager(c.REST, mo)
	if err != nil {
		return fmt.Errorf("repair: create the manager (API server %s): %w", c.REST.Host, err)
	}
	if probe != "0" {
		if err := mgr.AddHealthzCheck("ping", healthz.Ping); err != nil {
			return fmt.Errorf("repair: healthz: %w", err)
		}
		if err := mgr.AddReadyzCheck("ping", healthz.Ping); err != nil {
			return fmt.Errorf("repair: readyz: %w", err)
		}
	}
	r, err := NewReconciler(o, c.Provider, log)
	if err != nil {
		return err
	}
	r.Client = mgr.GetClient()
	r.Reader = mgr.GetAPIReader()
	r.Events = mgr.GetEventRecorder(fieldManager)
	r.Ops = c.Ops
	var record func(string) *ops.Record
	if or, ok := c.Ops.(*opsRecorder); ok {
		record = or.record
	}
	r.Drain = NewDrainer(cs, o.DrainTimeout, o.DrainSkipWaitForDeleteTimeout, log, record)
	r.wake = make(chan event.TypedGenericEvent[*corev1.Node], wakeBuffer)
	err = ctrl.NewControllerManagedBy(mgr).
		Named("kdiag-repair").
		For(&corev1.Node{}, builder.WithPredicates(relevantChange())).
		WatchesRawSource(source.Channel(r.wake, &handler.TypedEnqueueRequestForObject[*corev1.Node]{})).
		WithOptions(controller.Options{MaxConcurrentReconciles: o.MaxInFlight + 1}).
		Complete(r)
	if err != nil {
		return fmt.Errorf("repair: set up the controller: %w", err)
	}
	log.Info("repair controller starting", "provider", c.Provider.Name(), "leaderElection", !o.NoLeaderElection,
		"lease", o.LeaseNamespace+"/"+o.LeaseName, "unhealthyAfter", o.UnhealthyAfter, "stepTimeout", o.StepTimeout,
		"maxAttempts", o.MaxAttempts, "maxInFlight", o.MaxInFlight, "maxUnhealthy", o.MaxUnhealthy.String(), "paused", o.Paused)
	if err := mgr.Start(ctx); err != nil {
		return fmt.Errorf("repair: %w", err)
	}
	return nil
}

// wakeBuffer bounds the wake-ups in flight; beyond it a waiting node is
// picked up by its poll.
const wakeBuffer = 1024

// preflight fails fast with one clear line when the API server cannot be
// reached: the manager itself would retry its leader election forever.
func preflight(cfg *rest.Config) error {
	pc := rest.CopyConfig(cfg)
	pc.Timeout = 15 * time.Second
	dc, err := discovery.NewDiscoveryClientForConfig(pc)
	if err != nil {
		return fmt.Errorf("repair: client for %s: %w", cfg.Host, err)
	}
	if _, err := dc.ServerVersion(); err != nil {
		return fmt.Errorf("repair: cannot reach the API server at %s: %w", cfg.Host, err)
	}
	return nil
}

// ctrlConfig skips controller-runtime's check that controller names are
// unique in the process: the tests start a second controller after the
// first one stopped (to test resuming), which the check refuses.
func ctrlConfig() config.Controller {
	return config.Controller{SkipNameValidation: ptr.To(true)}
}

// NewReconciler returns a Reconciler with its policy, provider, clock and
// metrics set; the caller sets Client, Reader, Events, Drain and Ops.
func NewReconciler(o Options, p Provider, log *slog.Logger) (*Reconciler, error) {
	o = o.WithDefaults()
	m, err := newMetrics(crmetrics.Registry)
	if err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.Default()
	}
	return &Reconciler{
		Provider: p,
		Clock:    clock.RealClock{},
		Log:      log,
		Options:  o,
		metrics:  m,
		claims:   map[string]bool{},
		warned:   map[string]string{},
		waiting:  map[string]bool{},
	}, nil
}
