package main

import (
	"os"

	"github.com/spf13/cobra"

	"github.com/cryptshift/cryptshift/internal/doors/execx"
	"github.com/cryptshift/cryptshift/internal/runner/apply"
)

// step runs one in-process action of a plan; the script form of a plan
// calls it, apply runs the same code without a subprocess.
func newStepCmd() *cobra.Command {
	return &cobra.Command{
		Use:                "step ACTION [ARGS]",
		Short:              "Run one cryptshift-internal plan step (used by plan -o script)",
		Hidden:             true,
		DisableFlagParsing: true,
		RunE: func(cmd *cobra.Command, args []string) error {
			// Flags are the action's own; --help (or nothing) is ours.
			if len(args) == 0 {
				return usageError("cannot run step: name the ACTION (see cryptshift plan -o script)")
			}
			if args[0] == "--help" || args[0] == "-h" || args[0] == "help" {
				return cmd.Help()
			}
			return apply.Step(cmd.Context(), execx.Exec{}, args, os.Stdin, cmd.OutOrStdout())
		},
	}
}
