package cli

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/kdiag/kdiag/pkg/lab"
	"github.com/kdiag/kdiag/pkg/lab/load"
)

func newLabLoadCommand(g *Globals) *cobra.Command {
	var (
		f    labFlags
		opts load.Options
	)
	cmd := &cobra.Command{
		Use:   "load",
		Short: "Fill a running lab with Deployments, Services and PDBs, for trying kdiag at scale",
		Long: `load creates --deployments Deployments of --replicas pods each, spread over
--namespaces namespaces, each with a Service and a PodDisruptionBudget, and waits until
every pod runs. One Deployment in fifty is broken on purpose (a Service targetPort that
matches no container port, a PDB that allows no disruption). The real controllers create
and schedule the pods, so start the lab with enough nodes (110 pods each).`,
		Example: "  kdiag lab up --nodes 1000 && kdiag lab load --deployments 3000 --replicas 10",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if opts.Namespaces <= 0 || opts.Deployments <= 0 || opts.Replicas <= 0 {
				return fmt.Errorf("--namespaces, --deployments and --replicas must be positive")
			}
			cfg, err := lab.AdminConfig(f.dir)
			if err != nil {
				return err
			}
			opts.Logger = g.Logger()
			start := time.Now()
			if err := load.Apply(cmd.Context(), cfg, opts); err != nil {
				return err
			}
			fmt.Fprintf(g.Streams.ErrOut, "kdiag lab: %d pods running in %d Deployments after %s\n",
				opts.Pods(), opts.Deployments, time.Since(start).Round(time.Second))
			return nil
		},
	}
	f.addDir(cmd)
	cmd.Flags().IntVar(&opts.Namespaces, "namespaces", 50, "namespaces to spread the Deployments over")
	cmd.Flags().IntVar(&opts.Deployments, "deployments", 300, "Deployments to create")
	cmd.Flags().Int32Var(&opts.Replicas, "replicas", 10, "pods per Deployment")
	cmd.Flags().DurationVar(&opts.Timeout, "timeout", 50*time.Minute, "how long to wait for every pod to run")
	return cmd
}
