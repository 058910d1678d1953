package cli

import (
	"errors"

	"github.com/spf13/cobra"
)

// newNodeCommand is a placeholder replaced by its owner in this session.
func newNodeCommand(_ *Globals) *cobra.Command {
	return &cobra.Command{
		Use:   "node",
		Short: "(in progress)",
		RunE:  func(*cobra.Command, []string) error { return errors.New("node: not built yet") },
	}
}
