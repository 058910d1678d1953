package cli

import (
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/kdiag/kdiag/pkg/lab/programs"
)

// newLabProgramCommand runs one of the lab's built-in programs: what a
// lab pod with image kdiag.io/lab/<name> executes (see package programs).
// It is hidden: users meet it only in the lab's process list.
func newLabProgramCommand(g *Globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:    "program NAME [args]",
		Short:  "Run a built-in lab program (what a kdiag.io/lab/<name> container runs)",
		Hidden: true,
	}
	for _, p := range programs.All() {
		cmd.AddCommand(&cobra.Command{
			Use:   p.Name + " [args]",
			Short: p.Short,
			// The program parses its own flags, as a container entrypoint does.
			DisableFlagParsing: true,
			RunE: func(cmd *cobra.Command, args []string) error {
				ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGTERM, syscall.SIGINT)
				defer stop()
				cmd.SilenceUsage = true
				return programs.Run(ctx, p.Name, programs.Env{Out: g.Streams.Out}, args)
			},
		})
	}
	return cmd
}
