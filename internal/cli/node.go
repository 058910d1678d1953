package cli

import (
	"context"
	"fmt"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/yaml"

	"github.com/kdiag/kdiag/pkg/nodehealth/diagnose"
)

type nodeDiagnoseFlags struct {
	output  string
	stored  bool
	timeout time.Duration
}

// newNodeCommand is `kdiag node`: node-level diagnostics.
func newNodeCommand(g *Globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "node",
		Short: "Node diagnostics: the NotReady diagnostic from the node's agent",
		Long:  "node groups the commands that ask a node's kdiag agent. See docs/commands/node.md.",
		Args:  cobra.NoArgs,
		RunE:  func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	cmd.AddCommand(newNodeDiagnoseCommand(g))
	return cmd
}

func newNodeDiagnoseCommand(g *Globals) *cobra.Command {
	f := &nodeDiagnoseFlags{}
	cmd := &cobra.Command{
		Use:   "diagnose NODE",
		Short: "Ask a node's agent for the NotReady diagnostic: pressure, disk, network, kubelet and runtime, and a verdict",
		Long: `diagnose asks the kdiag agent on NODE, through the API server's pod proxy, for
a fresh NotReady diagnostic: CPU, memory and I/O pressure with the top pods,
disk usage and its top consumers, the default route, API server and cluster
DNS, kubelet and container runtime health, and a one-line verdict.

With --stored, or when no agent answers (said on stderr), it shows the report
the agent stored when the node last degraded (ConfigMap
kube-system/kdiag-node-report-NODE). See docs/commands/node.md.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runNodeDiagnose(cmd.Context(), g, f, args[0])
		},
	}
	cmd.Flags().StringVarP(&f.output, "output", "o", "text", "output format: text|json|yaml")
	cmd.Flags().BoolVar(&f.stored, "stored", false, "show the stored report instead of asking the agent")
	cmd.Flags().DurationVar(&f.timeout, "timeout", 30*time.Second, "give up after this long")
	return cmd
}

func runNodeDiagnose(ctx context.Context, g *Globals, f *nodeDiagnoseFlags, node string) error {
	switch f.output {
	case "text", "json", "yaml":
	default:
		return fmt.Errorf("--output=%q: want text, json or yaml", f.output)
	}
	cfg, err := g.ConfigFlags.ToRESTConfig()
	if err != nil {
		return fmt.Errorf("node diagnose: API server configuration: %w", err)
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return fmt.Errorf("node diagnose: API client: %w", err)
	}
	if ctx == nil {
		ctx = context.Background()
	}
	ctx, cancel := context.WithTimeout(ctx, f.timeout)
	defer cancel()
	got, err := diagnose.Fetch(ctx, cs, node, diagnose.FetchOptions{Stored: f.stored})
	if err != nil {
		return fmt.Errorf("node diagnose: %w", err)
	}
	if got.Note != "" {
		fmt.Fprintln(g.Streams.ErrOut, "kdiag: "+got.Note)
	}
	switch f.output {
	case "json":
		b, err := got.Report.JSON()
		if err != nil {
			return err
		}
		_, err = fmt.Fprintln(g.Streams.Out, string(b))
		return err
	case "yaml":
		b, err := got.Report.JSON()
		if err != nil {
			return err
		}
		y, err := yaml.JSONToYAML(b)
		if err != nil {
			return fmt.Errorf("node diagnose: YAML: %w", err)
		}
		_, err = g.Streams.Out.Write(y)
		return err
	}
	if got.Stored {
		fmt.Fprintf(g.Streams.Out, "(stored report, taken %s ago)\n", time.Since(got.Report.Time).Round(time.Second))
	}
	return got.Report.WriteText(g.Streams.Out)
}
