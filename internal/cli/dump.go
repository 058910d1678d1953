package cli

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/kdiag/kdiag/pkg/cluster"
)

func newDumpCommand(g *Globals) *cobra.Command {
	var allNamespaces bool
	var chunkSize int64
	cmd := &cobra.Command{
		Use:   "dump DIR",
		Short: "Write what doctor reads to a folder, for offline analysis with doctor --from",
		Long: `dump reads the cluster exactly as doctor does and writes it in the layout of
` + "`kubectl cluster-info dump --output-directory`" + `, plus the resources kdiag also reads
(EndpointSlices, StatefulSets, PodDisruptionBudgets, the CoreDNS ConfigMaps and node
Leases) and kdiag-dump.json with the time of the read and anything that could not be
read. Secrets are never read.`,
		Example: "  kdiag dump ./incident-42 && kdiag doctor --from ./incident-42",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			limitMemory()
			cfg, err := g.ConfigFlags.ToRESTConfig()
			if err != nil {
				return fmt.Errorf("load kubeconfig: %w", err)
			}
			cs, err := cluster.NewReadClient(cfg)
			if err != nil {
				return err
			}
			ns := ""
			if fl := cmd.Flags().Lookup("namespace"); fl != nil && fl.Changed && !allNamespaces {
				ns = *g.ConfigFlags.Namespace
			}
			p := newProgress(g.Streams.ErrOut)
			snap, err := cluster.ReadLive(cmd.Context(), cs, cluster.LiveOptions{
				Source: contextName(g), Namespace: ns, PageSize: chunkSize, Progress: p.update,
			})
			p.done()
			if err != nil {
				return err
			}
			if err := cluster.WriteDump(args[0], snap); err != nil {
				return err
			}
			fmt.Fprintf(g.Streams.ErrOut, "wrote %d nodes and %d pods to %s", len(snap.Nodes), len(snap.Pods), args[0])
			if len(snap.Gaps) > 0 {
				fmt.Fprintf(g.Streams.ErrOut, "; %d resources could not be read (see kdiag-dump.json)", len(snap.Gaps))
			}
			fmt.Fprintln(g.Streams.ErrOut)
			return nil
		},
	}
	cmd.Flags().BoolVarP(&allNamespaces, "all-namespaces", "A", false, "dump every namespace (the default unless -n is given)")
	cmd.Flags().Int64Var(&chunkSize, "chunk-size", 500, "objects per list page, as for kubectl")
	return cmd
}
