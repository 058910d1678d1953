package cli

import (
	"encoding/json"
	"fmt"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/kdiag/kdiag/pkg/analyze"
)

func newChecksCommand(g *Globals) *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "checks",
		Short: "List every check doctor runs, with its ID, area and default severity",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			checks := analyze.Checks()
			switch output {
			case "json":
				enc := json.NewEncoder(g.Streams.Out)
				enc.SetIndent("", "  ")
				return enc.Encode(checks)
			case "", "text":
				tw := tabwriter.NewWriter(g.Streams.Out, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "ID\tAREA\tSEVERITY\tSUMMARY")
				for _, c := range checks {
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", c.ID, c.Area, c.Severity, c.Summary)
				}
				return tw.Flush()
			}
			return fmt.Errorf("--output=%q: want text or json", output)
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "text", "output format: text|json")
	return cmd
}
