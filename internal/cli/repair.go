package cli

import (
	"errors"

	"github.com/spf13/cobra"
)

// newRepairCommand is a placeholder replaced by its owner in this session.
func newRepairCommand(_ *Globals) *cobra.Command {
	return &cobra.Command{
		Use:   "repair",
		Short: "(in progress)",
		RunE:  func(*cobra.Command, []string) error { return errors.New("repair: not built yet") },
	}
}
