package main

import (
	"context"
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/cryptshift/cryptshift/internal/doors/execx"
	"github.com/cryptshift/cryptshift/internal/runner/apply"
	"github.com/cryptshift/cryptshift/internal/runner/engine"
	"github.com/cryptshift/cryptshift/internal/runner/migrate"
	"github.com/cryptshift/cryptshift/internal/textfmt"
	"github.com/cryptshift/cryptshift/lvm"
)

func newRollbackCmd() *cobra.Command {
	var journalFile, connect, lvmConfig string
	var allowDestroy, yes bool
	cmd := &cobra.Command{
		Use:   "rollback [--journal] FILE",
		Short: "Undo an interrupted or unwanted apply or migrate, from its journal",
		Long: `rollback reads an apply or migrate journal and undoes what it recorded,
newest step first.

For apply it unmounts, turns swap off, closes mappings, removes the key
files, volumes, volume group, PVs and partition table apply created, and
restores crypttab and fstab. It never destroys data it did not create: a
step that wiped existing data (only possible with --allow-destroy) cannot be
undone, and rollback says so. An apply that finished is rolled back only
with --allow-destroy and a confirmation (or --yes): the system may have
written data to its volumes since; rollback lists what it would wipe.

For migrate it puts the guest back on its original disks with all its data.`,
		Example: `  sudo cryptshift rollback /var/lib/cryptshift/apply-mail-host.journal
  sudo cryptshift rollback --allow-destroy /var/lib/cryptshift/apply-mail-host.journal   # a finished apply
  sudo cryptshift rollback /var/lib/cryptshift/migrate/mail.journal`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 1 {
				if journalFile != "" && journalFile != args[0] {
					return usageError("give the journal once, as an argument or with --journal")
				}
				journalFile = args[0]
			}
			if journalFile == "" {
				return usageError("rollback needs the journal FILE")
			}
			if err := readable("the journal", journalFile); err != nil {
				return err
			}
			return runRollback(cmd.Context(), cmd.ErrOrStderr(), journalFile, connect, lvmConfig, allowDestroy, yes)
		},
	}
	cmd.Flags().StringVar(&journalFile, "journal", "", "the journal `FILE` of the apply or migrate to undo")
	connectFlag(cmd.Flags(), &connect, "libvirt `URI` or daemon socket for a migrate journal (default: the one it recorded)")
	cmd.Flags().BoolVar(&allowDestroy, "allow-destroy", false, "roll back an apply that finished: wipe its volumes and what was written to them since")
	yesFlag(cmd.Flags(), &yes, "with --allow-destroy: do not ask for confirmation")
	cmd.Flags().StringVar(&lvmConfig, "lvm-config", "", "extra lvm --config `STRING`")
	cmd.Flags().MarkHidden("lvm-config")
	return cmd
}

func runRollback(ctx context.Context, w io.Writer, journalFile, connect, lvmConfig string, allowDestroy, yes bool) error {
	if ctx == nil {
		ctx = context.Background()
	}
	kind, err := engine.KindOf(journalFile)
	if err != nil {
		return err
	}
	if kind == migrate.JournalKind {
		return migrate.Rollback(ctx, journalFile, migrate.RollbackOptions{Connect: connect, Out: w})
	}
	ro := apply.RollbackOptions{AllowDestroy: allowDestroy, Confirm: func(wiped string) error {
		fmt.Fprintf(w, "The apply in %s finished. Rolling it back wipes:\n%s\n", journalFile, wiped)
		if yes {
			return nil
		}
		return confirm("Wipe all of this?", "refusing to roll back a finished apply; nothing was changed", true)
	}}
	rep, err := apply.Rollback(ctx, journalFile, apply.Options{Run: execx.Exec{}, LVM: lvm.LVM{Run: execx.Exec{}, Config: lvmConfig}, Out: w}, ro)
	if rep != nil {
		for _, s := range rep.NotUndone {
			fmt.Fprintf(w, "not undone: %s\n", s)
		}
		fmt.Fprintf(w, "undid %s\n", textfmt.Plural(len(rep.Undone), "step", "steps"))
	}
	return err
}
