package cli

import (
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/kdiag/kdiag/pkg/cluster"
	"github.com/kdiag/kdiag/pkg/drain"
	"github.com/kdiag/kdiag/pkg/findings"
	"github.com/kdiag/kdiag/pkg/ops"
)

// drainStallExitCode is the exit code of `drain check` when the drain would
// stall and of `drain run` when it timed out; 1 stays reserved for errors.
const drainStallExitCode = 2

type drainFlags struct {
	selector           string
	ignoreDaemonSets   bool
	deleteEmptyDirData bool
	force              bool
	output             string
	dryRun             string
	timeout            time.Duration
	retryInterval      time.Duration
	skipWaitForDelete  int
}

func (f *drainFlags) bind(cmd *cobra.Command) {
	fl := cmd.Flags()
	fl.StringVarP(&f.selector, "selector", "l", "", "drain the nodes with these labels, e.g. agentpool=np1 (a node pool)")
	fl.BoolVar(&f.ignoreDaemonSets, "ignore-daemonsets", false, "skip DaemonSet-managed pods (as kubectl drain)")
	fl.BoolVar(&f.deleteEmptyDirData, "delete-emptydir-data", false, "evict pods with emptyDir volumes, losing their data (as kubectl drain)")
	fl.BoolVar(&f.force, "force", false, "evict pods that declare no controller (as kubectl drain)")
}

func (f *drainFlags) options() drain.Options {
	return drain.Options{IgnoreDaemonSets: f.ignoreDaemonSets, DeleteEmptyDirData: f.deleteEmptyDirData, Force: f.force}
}

// newDrainCommand builds `kdiag drain check|run`.
func newDrainCommand(g *Globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "drain",
		Short: "Predict whether draining nodes or a node pool will stall on PodDisruptionBudgets, or drain with a timeout",
	}
	cmd.AddCommand(newDrainCheckCommand(g), newDrainRunCommand(g))
	return cmd
}

func newDrainCheckCommand(g *Globals) *cobra.Command {
	f := &drainFlags{}
	cmd := &cobra.Command{
		Use:   "check NODE... | --selector LABELS",
		Short: "Predict, without changing anything, whether a drain will stall, on which pod and why, with dry-run-checked fixes",
		Long: `check reads the cluster once and simulates kubectl drain of the nodes: kubectl's pod
filters, the eviction API's rules, and for several nodes the budgets spent pod after pod
(see docs/commands/drain.md for the model). Each blocker comes with fixes, every mutating
one verified by a server-side dry run. Nothing is changed.

Exit codes: 0 the drain would finish, 2 it would stall, 1 error.`,
		Example: `  kdiag drain check aks-np1-12345-vmss000000
  kdiag drain check --selector agentpool=np1 --ignore-daemonsets -o json`,
		RunE: func(cmd *cobra.Command, args []string) error { return runDrainCheck(cmd, g, f, args) },
	}
	f.bind(cmd)
	cmd.Flags().StringVarP(&f.output, "output", "o", "text", "output format: text|json|yaml")
	cmd.Flags().StringVar(&f.dryRun, "dry-run", "server", "verify fixes: server (server-side dry run) or none")
	return cmd
}

func newDrainRunCommand(g *Globals) *cobra.Command {
	f := &drainFlags{}
	cmd := &cobra.Command{
		Use:   "run NODE... | --selector LABELS",
		Short: "Drain nodes for real: cordon, evict respecting PodDisruptionBudgets, give up after --timeout naming the blocker",
		Long: `run cordons the nodes, then drains them one after another through the eviction API,
retrying refused evictions, and stops after --timeout (default 5m, unlike kubectl's
forever), naming the pods and PodDisruptionBudgets that blocked it. The nodes stay cordoned.
Every run is recorded as an Operation (kdiag.io/v1alpha1) with its steps, error and a
hint: see "kdiag ops last --node NODE". Without the Operation CRD, or without the right
to write it, the drain still runs and prints one warning.

On a node whose kubelet is dead, evicted pods stay Terminating forever: with
--skip-wait-for-delete-timeout=N (as kubectl drain) a pod whose DeletionTimestamp is older
than N seconds is not waited for.

Exit codes: 0 drained, 2 timed out on a blocker, 1 error.`,
		Example: `  kdiag drain run aks-np1-12345-vmss000000 --ignore-daemonsets
  kdiag drain run --selector agentpool=np1 --ignore-daemonsets --timeout 10m`,
		RunE: func(cmd *cobra.Command, args []string) error { return runDrainRun(cmd, g, f, args) },
	}
	f.bind(cmd)
	cmd.Flags().DurationVar(&f.timeout, "timeout", drain.DefaultTimeout, "give up after this long (0 means the default)")
	cmd.Flags().DurationVar(&f.retryInterval, "retry-interval", 5*time.Second, "wait between retries of a refused eviction")
	cmd.Flags().IntVar(&f.skipWaitForDelete, "skip-wait-for-delete-timeout", 0, "if a pod's DeletionTimestamp is older than N seconds, do not wait for it (as kubectl drain); 0 waits for every pod. For nodes whose kubelet is dead")
	return cmd
}

// drainClient loads the kubeconfig from kubectl's flags.
func drainClient(g *Globals) (*rest.Config, kubernetes.Interface, error) {
	cfg, err := g.ConfigFlags.ToRESTConfig()
	if err != nil {
		return nil, nil, fmt.Errorf("load kubeconfig: %w", err)
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, nil, fmt.Errorf("client: %w", err)
	}
	return cfg, cs, nil
}

func drainTargets(f *drainFlags, args []string) error {
	if (len(args) == 0) == (f.selector == "") {
		return fmt.Errorf("give node names or --selector, not both and not neither")
	}
	return nil
}

func runDrainCheck(cmd *cobra.Command, g *Globals, f *drainFlags, args []string) error {
	if err := drainTargets(f, args); err != nil {
		return err
	}
	switch f.output {
	case "text", "json", "yaml":
	default:
		return fmt.Errorf("--output=%q: want text, json or yaml", f.output)
	}
	if f.dryRun != "server" && f.dryRun != "none" {
		return fmt.Errorf("--dry-run=%q: want server or none", f.dryRun)
	}
	cfg, cs, err := drainClient(g)
	if err != nil {
		return err
	}
	ctx := cmd.Context()
	snap, err := cluster.ReadLive(ctx, cs, cluster.LiveOptions{Source: contextName(g)})
	if err != nil {
		return err
	}
	if !snap.Has(cluster.ResNodes) || !snap.Has(cluster.ResPods) || !snap.Has(cluster.ResPDBs) {
		return fmt.Errorf("cannot check the drain: could not read %s", gapSummary(snap))
	}
	nodes, err := drain.ResolveNodes(snap.Nodes, args, f.selector)
	if err != nil {
		return err
	}
	rep := drain.Check(snap, nodes, f.options())
	if f.dryRun == "server" {
		dyn, err := dynamic.NewForConfig(cfg)
		if err != nil {
			return fmt.Errorf("client: %w", err)
		}
		if err := drain.Verify(ctx, &findings.Verifier{Client: dyn}, rep); err != nil {
			return err
		}
	} else {
		for i := range rep.Blockers {
			fs := []findings.Finding{{Remediation: rep.Blockers[i].Remediation}}
			findings.SkipDryRuns(fs, "--dry-run=none")
		}
	}
	if err := rep.Write(g.Streams.Out, f.output); err != nil {
		return err
	}
	if rep.Stalls {
		return &ExitError{Code: drainStallExitCode, Err: fmt.Errorf("the drain would stall on %d pod(s)", len(rep.Blockers))}
	}
	return nil
}

func gapSummary(s *cluster.Snapshot) string {
	var parts []string
	for _, gp := range s.Gaps {
		parts = append(parts, fmt.Sprintf("%v", gp))
	}
	return strings.Join(parts, "; ")
}

func runDrainRun(cmd *cobra.Command, g *Globals, f *drainFlags, args []string) error {
	if err := drainTargets(f, args); err != nil {
		return err
	}
	cfg, cs, err := drainClient(g)
	if err != nil {
		return err
	}
	ctx := cmd.Context()
	nodes := args
	if f.selector != "" {
		list, err := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{LabelSelector: f.selector})
		if err != nil {
			return fmt.Errorf("list nodes with selector %q: %w", f.selector, err)
		}
		if nodes, err = drain.ResolveNodes(list.Items, nil, f.selector); err != nil {
			return err
		}
	}
	opts := drain.RunOptions{Options: f.options(), Timeout: f.timeout, RetryInterval: f.retryInterval, Out: g.Streams.Out, SkipWaitForDeleteTimeoutSeconds: f.skipWaitForDelete}
	if isTerminal(g.Streams.ErrOut) {
		opts.Progress = g.Streams.ErrOut
	}
	rec, err := ops.NewRecorder(cfg, ops.RecorderOptions{Initiator: ops.Initiator(ctx, cs, "kdiag drain run"), Warn: g.Streams.ErrOut})
	if err != nil {
		return err
	}
	err = drain.RunRecorded(ctx, cs, rec, nodes, f.selector, opts)
	if drain.IsStalled(err) {
		return &ExitError{Code: drainStallExitCode, Err: err}
	}
	return err
}
