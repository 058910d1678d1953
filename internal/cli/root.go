// Package cli wires kdiag's cobra commands and flags. It holds no diagnosis
// logic: each verb lives in its own file and calls into pkg/.
package cli

import (
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/genericiooptions"
)

// Globals carries what every subcommand shares: the IO streams, the standard
// kubectl connection flags and the logger.
type Globals struct {
	Streams     genericiooptions.IOStreams
	ConfigFlags *genericclioptions.ConfigFlags
	logLevel    string
}

// Logger returns a slog logger that writes to stderr at the level chosen with
// --log-level, so that machine output on stdout stays clean.
func (g *Globals) Logger() *slog.Logger {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(g.logLevel)); err != nil {
		lvl = slog.LevelWarn
	}
	return slog.New(slog.NewTextHandler(g.Streams.ErrOut, &slog.HandlerOptions{Level: lvl}))
}

// NewRootCommand builds the kdiag command tree. When the binary is installed
// as kubectl-diag, the usage line reads "kubectl diag" so that kubectl's
// plugin mechanism and the help text agree.
func NewRootCommand(streams genericiooptions.IOStreams) *cobra.Command {
	g := &Globals{
		Streams:     streams,
		ConfigFlags: genericclioptions.NewConfigFlags(true),
	}
	root := &cobra.Command{
		Use:   "kdiag",
		Short: "Find what is wrong with a Kubernetes cluster, prove it, and fix it safely",
		Long: `kdiag takes you from a symptom to its root cause and to a fix that was checked
by a server-side dry run before you apply it.

  doctor   read the cluster once and report findings by area
  dump     write what doctor reads to a folder, for offline analysis
  checks   list every check ID
  drain    predict whether a drain will stall on a PDB, with checked fixes; drain safely
  trace    eBPF tracing of TCP, DNS and OOM kills, labelled with pod names
  agent    node problem detection (NPD configs), PSI, OOM events, as a DaemonSet
  lab      run a real local control plane with the seed scenarios`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	if strings.HasPrefix(filepath.Base(os.Args[0]), "kubectl-diag") {
		// cobra's display-name annotation makes usage and help say
		// "kubectl diag ..." when kubectl runs us as a plugin.
		root.Use = "kubectl-diag"
		root.Annotations = map[string]string{cobra.CommandDisplayNameAnnotation: "kubectl diag"}
	}
	root.SetIn(streams.In)
	root.SetOut(streams.Out)
	root.SetErr(streams.ErrOut)
	g.ConfigFlags.AddFlags(root.PersistentFlags())
	root.PersistentFlags().StringVar(&g.logLevel, "log-level", "warn", "log level on stderr: debug, info, warn or error")

	for _, add := range []func(*Globals) *cobra.Command{
		newDoctorCommand,
		newChecksCommand,
		newDumpCommand,
		newLabCommand,
		newTraceCommand,
		newDrainCommand,
		newAgentCommand,
		newNodeCommand,
		newRepairCommand,
		newOpsCommand,
		newFixCommand,
	} {
		root.AddCommand(add(g))
	}
	return root
}
