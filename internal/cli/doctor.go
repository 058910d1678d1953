package cli

import (
	"fmt"
	"io"
	"os"
	"strings"
	"sync"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/kdiag/kdiag/examples"
	"github.com/kdiag/kdiag/pkg/analyze"
	"github.com/kdiag/kdiag/pkg/cluster"
	"github.com/kdiag/kdiag/pkg/doctor"
	"github.com/kdiag/kdiag/pkg/findings"
	"github.com/kdiag/kdiag/pkg/report"
)

// failOnExitCode is the exit code when --fail-on matched a finding; 1 stays
// reserved for errors.
const failOnExitCode = 2

type doctorFlags struct {
	allNamespaces bool
	output        string
	from          string
	demo          bool
	failOn        string
	checks        []string
	skip          []string
	dryRun        string
	color         string
	chunkSize     int64
}

func newDoctorCommand(g *Globals) *cobra.Command {
	f := &doctorFlags{}
	cmd := &cobra.Command{
		Use:   "doctor",
		Short: "Read the cluster once and report findings by area, with dry-run-checked fixes",
		Long: `doctor reads the cluster once (paginated lists), runs every analyzer and prints
findings grouped by area: network, dns, node, operations, workload. Each finding has a
stable check ID (docs/checks/ID.md), evidence, an explanation and remediation commands;
every mutating command is verified by a server-side dry run. Nothing is ever changed.

Without -n, every namespace is read. --from reads a ` + "`kubectl cluster-info dump`" + ` or
` + "`kdiag dump`" + ` folder instead of a live cluster; --demo reads the embedded store-demo dump.`,
		Example: `  kdiag doctor
  kdiag doctor -n shop -o json
  kdiag doctor --from ./dump --fail-on critical
  kubectl diag doctor --context aks-prod -o markdown > ticket.md`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return runDoctor(cmd, g, f) },
	}
	fl := cmd.Flags()
	fl.BoolVarP(&f.allNamespaces, "all-namespaces", "A", false, "read every namespace (the default unless -n is given)")
	fl.StringVarP(&f.output, "output", "o", "text", "output format: "+strings.Join(report.Formats(), "|"))
	fl.StringVar(&f.from, "from", "", "read a cluster-info dump folder instead of a live cluster")
	fl.BoolVar(&f.demo, "demo", false, "read the embedded store-demo dump (no cluster needed)")
	fl.StringVar(&f.failOn, "fail-on", "", "exit with code 2 when a finding is at least this severe: critical|warning|info")
	fl.StringSliceVar(&f.checks, "check", nil, "run only these check IDs (repeatable)")
	fl.StringSliceVar(&f.skip, "skip", nil, "skip these check IDs (repeatable)")
	fl.StringVar(&f.dryRun, "dry-run", "server", "verify fixes: server (server-side dry run) or none")
	fl.StringVar(&f.color, "color", "auto", "colour text output: auto (only on a terminal), always or never")
	fl.Int64Var(&f.chunkSize, "chunk-size", 500, "objects per list page, as for kubectl")
	return cmd
}

func runDoctor(cmd *cobra.Command, g *Globals, f *doctorFlags) error {
	limitMemory()
	ctx := cmd.Context()
	var failOn findings.Severity
	if f.failOn != "" {
		s, err := findings.ParseSeverity(f.failOn)
		if err != nil {
			return fmt.Errorf("--fail-on: %w", err)
		}
		failOn = s
	}
	if f.dryRun != "server" && f.dryRun != "none" {
		return fmt.Errorf("--dry-run=%q: want server or none", f.dryRun)
	}
	if err := checkFormat(f.output); err != nil {
		return err
	}
	if err := checkIDs(append(append([]string{}, f.checks...), f.skip...)); err != nil {
		return err
	}
	if f.demo && f.from != "" {
		return fmt.Errorf("--demo and --from are exclusive: pick one source")
	}
	ns := ""
	if fl := cmd.Flags().Lookup("namespace"); fl != nil && fl.Changed && !f.allNamespaces {
		ns = *g.ConfigFlags.Namespace
	}
	opts := doctor.Options{
		Namespace:  ns,
		Filter:     analyze.Filter{Only: f.checks, Skip: f.skip},
		SkipDryRun: f.dryRun == "none",
		PageSize:   f.chunkSize,
		Logger:     g.Logger(),
	}

	var rep *report.Report
	var err error
	switch {
	case f.demo:
		fsys, ferr := examples.StoreDemo()
		if ferr != nil {
			return ferr
		}
		rep, err = doctor.Dump(fsys, "embedded store-demo", opts)
	case f.from != "":
		st, serr := os.Stat(f.from)
		if serr != nil {
			return fmt.Errorf("--from %s: %w", f.from, serr)
		}
		if !st.IsDir() {
			return fmt.Errorf("--from %s: not a folder; give the --output-directory of kubectl cluster-info dump", f.from)
		}
		rep, err = doctor.Dump(os.DirFS(f.from), f.from, opts)
	default:
		cfg, cerr := g.ConfigFlags.ToRESTConfig()
		if cerr != nil {
			return fmt.Errorf("load kubeconfig: %w", cerr)
		}
		progress := newProgress(g.Streams.ErrOut)
		opts.Progress = progress.update
		rep, err = doctor.Live(ctx, cfg, contextName(g), opts)
		progress.done()
	}
	if err != nil {
		return err
	}
	if err := report.Render(g.Streams.Out, rep, f.output, report.TextOptions{Color: useColor(f.color, g.Streams.Out)}); err != nil {
		return err
	}
	if failOn != "" && rep.AtLeast(failOn) {
		return &ExitError{Code: failOnExitCode, Err: fmt.Errorf("findings at or above %s severity (--fail-on)", failOn)}
	}
	return nil
}

func checkFormat(format string) error {
	for _, f := range report.Formats() {
		if f == format {
			return nil
		}
	}
	if format == "md" {
		return nil
	}
	return fmt.Errorf("--output=%q: want one of %s", format, strings.Join(report.Formats(), ", "))
}

func checkIDs(ids []string) error {
	known := map[string]bool{}
	for _, c := range analyze.Checks() {
		known[c.ID] = true
	}
	for _, id := range ids {
		if !known[id] {
			return fmt.Errorf("unknown check ID %q (see docs/checks/ or `kdiag checks`)", id)
		}
	}
	return nil
}

func contextName(g *Globals) string {
	if g.ConfigFlags.Context != nil && *g.ConfigFlags.Context != "" {
		return *g.ConfigFlags.Context
	}
	raw, err := g.ConfigFlags.ToRawKubeConfigLoader().RawConfig()
	if err == nil && raw.CurrentContext != "" {
		return raw.CurrentContext
	}
	return "current context"
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

func useColor(mode string, w io.Writer) bool {
	switch mode {
	case "always":
		return true
	case "never":
		return false
	}
	return os.Getenv("NO_COLOR") == "" && isTerminal(w)
}

// progress shows what is being read on stderr, only on a terminal, on one
// line that it rewrites.
type progress struct {
	w      io.Writer
	on     bool
	mu     sync.Mutex
	counts map[cluster.Resource]int
}

func newProgress(w io.Writer) *progress {
	return &progress{w: w, on: isTerminal(w), counts: map[cluster.Resource]int{}}
}

func (p *progress) update(r cluster.Resource, n int) {
	if !p.on {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.counts[r] = n
	var parts []string
	for _, res := range cluster.Resources() {
		if c, ok := p.counts[res]; ok {
			parts = append(parts, fmt.Sprintf("%s %d", res, c))
		}
	}
	fmt.Fprintf(p.w, "\r\x1b[Kreading: %s", strings.Join(parts, ", "))
}

func (p *progress) done() {
	if p.on {
		fmt.Fprint(p.w, "\r\x1b[K")
	}
}
