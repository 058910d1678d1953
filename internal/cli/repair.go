package cli

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/kdiag/kdiag/pkg/repair"
)

type repairFlags struct {
	provider       string
	execCommand    []string
	labHealsAt     string
	maxUnhealthy   string
	leaderElect    bool
	opts           repair.Options
	metricsAddress string
}

// newRepairCommand builds `kdiag repair`, the node auto-repair controller.
func newRepairCommand(g *Globals) *cobra.Command {
	f := &repairFlags{}
	cmd := &cobra.Command{
		Use:   "repair --provider exec|clusterapi|lab",
		Short: "Node auto-repair controller: reboot, then reimage, then redeploy NotReady nodes, with safety limits",
		Long: `repair runs the node auto-repair controller until interrupted. A node whose Ready
condition has been False or Unknown for longer than --unhealthy-after is rebooted, then
reimaged, then redeployed through the provider; each step waits --step-timeout for Ready,
and the sequence stops as soon as the node is Ready. Before a reimage or a redeploy the
node is cordoned and drained (PodDisruptionBudgets respected, --drain-timeout).

Safety: at most --max-in-flight nodes at once; nothing at all while more than
--max-unhealthy nodes are unhealthy; nodes tainted ToBeDeletedByClusterAutoscaler or
node.cloudprovider.kubernetes.io/shutdown, cordoned by someone else (an upgrade) or
annotated kdiag.io/skip-repair are skipped; --paused, or the annotation
kdiag.io/repair-paused=true on the leader-election Lease, pauses everything.

Runs as a Deployment (deploy/repair/) with leader election, or as a process.
See docs/commands/repair.md.`,
		Example: `  kdiag repair --provider exec --exec-command '/opt/repair/az-vmss.sh'
  kdiag repair --provider clusterapi --max-unhealthy 40%
  kdiag repair --kubeconfig ~/.kdiag/lab/kubeconfig --provider lab --lab-heals-at reimage \
      --unhealthy-after 30s --step-timeout 30s --backoff 1m --metrics-bind-address 0`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return runRepair(cmd.Context(), g, f) },
	}
	fl := cmd.Flags()
	o := &f.opts
	fl.StringVar(&f.provider, "provider", "", "how actions are carried out: exec, clusterapi or lab (required)")
	fl.StringArrayVar(&f.execCommand, "exec-command", nil, "exec provider: the command, run with KDIAG_NODE and KDIAG_ACTION set; one value runs with /bin/sh -c, repeat the flag for an argv")
	fl.StringVar(&f.labHealsAt, "lab-heals-at", "reboot", "lab provider: the first action that heals a node (reboot, reimage or redeploy)")
	fl.DurationVar(&o.UnhealthyAfter, "unhealthy-after", repair.DefaultUnhealthyAfter, "repair a node whose Ready condition has been False or Unknown this long")
	fl.DurationVar(&o.StepTimeout, "step-timeout", repair.DefaultStepTimeout, "how long each action has to bring the node back to Ready before the next one")
	fl.IntVar(&o.MaxAttempts, "max-attempts", repair.DefaultMaxAttempts, "how many times the whole reboot-reimage-redeploy sequence is tried")
	fl.IntVar(&o.MaxInFlight, "max-in-flight", repair.DefaultMaxInFlight, "how many nodes may be under repair at once")
	fl.StringVar(&f.maxUnhealthy, "max-unhealthy", repair.DefaultMaxUnhealthy, "stop every repair when more nodes than this are unhealthy: a count (2) or a percentage of all nodes (40%)")
	fl.DurationVar(&o.Backoff, "backoff", repair.DefaultBackoff, "wait after a failed sequence before the next; doubles after each further failure")
	fl.DurationVar(&o.DrainTimeout, "drain-timeout", 5*time.Minute, "give up the drain before a reimage or redeploy after this long")
	fl.IntVar(&o.DrainSkipWaitForDeleteTimeout, "drain-skip-wait-for-delete-timeout", repair.DefaultDrainSkipWaitForDeleteTimeout, "drain of a NotReady node: do not wait for an evicted pod whose DeletionTimestamp is older than this many seconds (its dead kubelet never confirms the deletion), as kubectl drain --skip-wait-for-delete-timeout; 0 waits for every pod until --drain-timeout")
	fl.DurationVar(&o.PollInterval, "poll-interval", repair.DefaultPollInterval, "how often a waiting, paused or skipped node is looked at again")
	fl.BoolVar(&o.Paused, "paused", false, "do not act on any node (the annotation kdiag.io/repair-paused=true on the Lease does the same at run time)")
	fl.StringSliceVar(&o.SkipTaints, "skip-taint", repair.DefaultSkipTaints(), "skip nodes with a taint of these keys")
	fl.BoolVar(&f.leaderElect, "leader-elect", true, "elect a leader on a Lease, so that only one replica acts")
	fl.StringVar(&o.LeaseName, "lease-name", repair.DefaultLeaseName, "name of the leader-election Lease (it also carries the pause annotation)")
	fl.StringVar(&o.LeaseNamespace, "lease-namespace", repair.DefaultLeaseNamespace, "namespace of the leader-election Lease")
	fl.DurationVar(&o.LeaseDuration, "lease-duration", 15*time.Second, "how long a non-leader waits before taking over a Lease that is not renewed")
	fl.DurationVar(&o.RenewDeadline, "renew-deadline", 10*time.Second, "how long the leader retries renewing before it gives up leadership")
	fl.DurationVar(&o.RetryPeriod, "retry-period", 2*time.Second, "wait between leader-election tries")
	fl.StringVar(&o.MetricsAddr, "metrics-bind-address", ":8080", "serve Prometheus /metrics here (0 switches it off)")
	fl.StringVar(&o.ProbeAddr, "health-probe-bind-address", ":8081", "serve /healthz and /readyz here (0 switches it off)")
	return cmd
}

func runRepair(ctx context.Context, g *Globals, f *repairFlags) error {
	mu, err := repair.ParseMaxUnhealthy(f.maxUnhealthy)
	if err != nil {
		return err
	}
	f.opts.MaxUnhealthy = mu
	f.opts.NoLeaderElection = !f.leaderElect
	if f.opts.DrainSkipWaitForDeleteTimeout <= 0 {
		f.opts.DrainSkipWaitForDeleteTimeout = -1 // Options: negative waits for every pod
	}
	pc := repair.ProviderConfig{Name: f.provider, ExecCommand: f.execCommand, LabHealsAt: repair.Action(f.labHealsAt)}
	if err := pc.Validate(); err != nil {
		return err
	}
	cfg, err := g.ConfigFlags.ToRESTConfig()
	if err != nil {
		return fmt.Errorf("load kubeconfig: %w", err)
	}
	p, err := repair.NewProvider(cfg, pc)
	if err != nil {
		return err
	}
	if ctx == nil {
		ctx = context.Background()
	}
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	log := g.Logger()
	rec, err := repair.NewOperationRecorder(cfg, log)
	if err != nil {
		return err
	}
	return repair.Run(ctx, repair.Config{REST: cfg, Provider: p, Ops: rec, Logger: log}, f.opts)
}
