package cli

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"

	"github.com/kdiag/kdiag/pkg/fix"
	"github.com/kdiag/kdiag/pkg/ops"
)

type fixFlags struct {
	drain       drainFlags
	drainMode   bool
	pod         string
	remediation int
	yes         bool
	dryRun      string
	wait        bool
	waitTimeout time.Duration
	output      string
}

// newFixCommand builds `kdiag fix`: apply one fix proposed by doctor or
// drain check, re-verified, confirmed and recorded.
func newFixCommand(g *Globals) *cobra.Command {
	f := &fixFlags{}
	cmd := &cobra.Command{
		Use:   "fix CHECK-ID [OBJECT] | --drain NODE... | --drain --selector LABELS",
		Short: "Apply a fix kdiag proposed: re-verified by server-side dry run, confirmed, recorded as an Operation",
		Long: `fix applies one mutating fix that kdiag doctor or kdiag drain check proposes.

It reads the problem fresh (the check alone, or the drain check), picks the fix
(--remediation N when there are several; it lists them when the choice is ambiguous),
verifies the PATCH again with a server-side dry run, and refuses when the server does,
printing its reason. It shows the command, the patch and the fields that change, asks
for confirmation on a terminal (skip with --yes), then sends the same PATCH for real with
field manager "kdiag" and records an Operation of type Fix (kdiag ops list).
--dry-run=server only verifies. --wait reruns the check until the problem is gone.

OBJECT is kind/name (with -n), kind/namespace/name or namespace/kind/name, as doctor prints it.

Exit codes: 0 applied (or verified with --dry-run=server), 1 refused, cancelled or error.`,
		Example: `  kdiag fix service-target-port-mismatch service/shop/order-service
  kdiag fix pdb-blocks-eviction pdb/shop/nginx --remediation 2 --dry-run=server
  kdiag fix --drain --selector agentpool=np1 --ignore-daemonsets --remediation 1 --yes --wait
  kdiag fix --drain aks-np1-12345-vmss000000 --pod shop/nginx-7c5b8d6f4-x2x9q -o json --yes`,
		RunE: func(cmd *cobra.Command, args []string) error { return runFix(cmd, g, f, args) },
	}
	f.drain.bind(cmd)
	fl := cmd.Flags()
	fl.BoolVar(&f.drainMode, "drain", false, "fix a blocker of `kdiag drain check` on the nodes given as arguments or by --selector")
	fl.StringVar(&f.pod, "pod", "", "with --drain: the blocked pod (namespace/name) whose fix to apply")
	fl.IntVar(&f.remediation, "remediation", 0, "apply the Nth fix of the problem (1-based, counting only fixes that change something)")
	fl.BoolVarP(&f.yes, "yes", "y", false, "apply without asking for confirmation")
	fl.StringVar(&f.dryRun, "dry-run", "none", "server: only verify with a server-side dry run; none: apply")
	fl.BoolVar(&f.wait, "wait", false, "after applying, rerun the check until the problem is gone")
	fl.DurationVar(&f.waitTimeout, "wait-timeout", 2*time.Minute, "how long --wait waits")
	fl.StringVarP(&f.output, "output", "o", "text", "output format: text|json|yaml")
	return cmd
}

func runFix(cmd *cobra.Command, g *Globals, f *fixFlags, args []string) error {
	switch f.output {
	case "text", "json", "yaml":
	default:
		return fmt.Errorf("--output=%q: want text, json or yaml", f.output)
	}
	if f.dryRun != "server" && f.dryRun != "none" {
		return fmt.Errorf("--dry-run=%q: want server or none", f.dryRun)
	}
	if !f.drainMode && (f.drain.selector != "" || f.pod != "") {
		return errors.New("--selector and --pod select a drain blocker: add --drain")
	}
	if f.drainMode && f.pod != "" && !strings.Contains(f.pod, "/") {
		return fmt.Errorf("--pod %q: want namespace/name", f.pod)
	}
	if !f.drainMode {
		if len(args) < 1 || len(args) > 2 {
			return errors.New("give a check ID and optionally its object, e.g. kdiag fix service-target-port-mismatch service/shop/order-service (or --drain)")
		}
		if err := checkIDs(args[:1]); err != nil {
			return err
		}
	} else if err := drainTargets(&f.drain, args); err != nil {
		return err
	}
	ask := !f.yes && f.dryRun == "none"
	if in, ok := g.Streams.In.(*os.File); ask && (!ok || !term.IsTerminal(int(in.Fd()))) {
		return errors.New("refusing to apply without confirmation: stdin is not a terminal; pass --yes (or --dry-run=server to only verify)")
	}
	ctx := cmd.Context()
	cfg, err := g.ConfigFlags.ToRESTConfig()
	if err != nil {
		return fmt.Errorf("load kubeconfig: %w", err)
	}
	q := fix.Query{Number: f.remediation}
	var problems []fix.Problem
	if f.drainMode {
		q.Object, q.Hint = f.pod, "kdiag fix --drain "+drainArgs(&f.drain, args)
		if q.Object != "" {
			q.Object = "pod/" + q.Object
		}
		problems, err = fix.FromDrain(ctx, cfg, fix.DrainQuery{Nodes: args, Selector: f.drain.selector, Options: f.drain.options(), Source: contextName(g)})
	} else {
		ns := ""
		if fl := cmd.Flags().Lookup("namespace"); fl != nil && fl.Changed {
			ns = *g.ConfigFlags.Namespace
		}
		q.Hint, q.Namespace = "kdiag fix "+args[0], ns
		if len(args) == 2 {
			q.Object = args[1]
		}
		problems, err = fix.FromDoctor(ctx, cfg, contextName(g), args[0], ns)
	}
	if err != nil {
		return err
	}
	c, err := fix.Select(problems, q)
	if err != nil {
		return err
	}
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return fmt.Errorf("client: %w", err)
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return fmt.Errorf("client: %w", err)
	}
	rec, err := ops.NewRecorder(cfg, ops.RecorderOptions{Initiator: ops.Initiator(ctx, cs, "kdiag fix"), Warn: g.Streams.ErrOut})
	if err != nil {
		return err
	}
	opts := fix.Options{DryRunOnly: f.dryRun == "server"}
	if f.wait {
		opts.Wait = f.waitTimeout
	}
	planShown := false
	if ask {
		opts.Confirm = func(_ context.Context, plan *fix.Result) (bool, error) {
			w := g.Streams.Out
			if f.output != "text" {
				w = g.Streams.ErrOut
			} else {
				planShown = true
			}
			if err := fix.WritePlan(w, plan); err != nil {
				return false, err
			}
			return confirm(g.Streams.In, g.Streams.ErrOut, "Apply this fix to "+plan.Target+"? [y/N] ")
		}
	}
	res, applyErr := (&fix.Applier{Client: dyn, Recorder: rec}).Apply(ctx, c, opts)
	if res != nil {
		var werr error
		if f.output == "text" && planShown {
			werr = fix.WriteOutcome(g.Streams.Out, res)
		} else {
			werr = fix.Write(g.Streams.Out, res, f.output)
		}
		if werr != nil && applyErr == nil {
			applyErr = werr
		}
	}
	return applyErr
}

// drainArgs repeats the drain's node selection for the listing of choices.
func drainArgs(f *drainFlags, nodes []string) string {
	if f.selector != "" {
		return "--selector " + f.selector
	}
	return strings.Join(nodes, " ")
}

// confirm asks a yes/no question on a terminal; only "y" or "yes" agree.
func confirm(in io.Reader, out io.Writer, question string) (bool, error) {
	fmt.Fprint(out, question)
	line, err := bufio.NewReader(in).ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return false, fmt.Errorf("read answer: %w", err)
	}
	a := strings.ToLower(strings.TrimSpace(line))
	return a == "y" || a == "yes", nil
}
