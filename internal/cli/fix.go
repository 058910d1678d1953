package cli

import (
	"errors"

	"github.com/spf13/cobra"
)

// newFixCommand is a placeholder replaced by its owner in this session.
func newFixCommand(_ *Globals) *cobra.Command {
	return &cobra.Command{
		Use:   "fix",
		Short: "(in progress)",
		RunE:  func(*cobra.Command, []string) error { return errors.New("fix: not built yet") },
	}
}
