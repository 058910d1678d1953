package cli

import (
	"errors"

	"github.com/spf13/cobra"
)

// newOpsCommand is a placeholder replaced by its owner in this session.
func newOpsCommand(_ *Globals) *cobra.Command {
	return &cobra.Command{
		Use:   "ops",
		Short: "(in progress)",
		RunE:  func(*cobra.Command, []string) error { return errors.New("ops: not built yet") },
	}
}
