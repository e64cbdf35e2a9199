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
	"github.com/cryptshift/cryptshift/lvm"
)

func init() { verbs = append(verbs, newRollbackCmd) }

func newRollbackCmd() *cobra.Command {
	var journalFile, connect, lvmConfig string
	cmd := &cobra.Command{
		Use:   "rollback [--journal] FILE",
		Short: "Undo an interrupted or unwanted apply or migrate, from its journal",
		Long: `rollback reads an apply or migrate journal and undoes what it recorded,
newest step first.

For apply it unmounts, turns swap off, closes mappings, removes the key
files, volumes, volume group, PVs and partition table apply created, and
restores crypttab and fstab. It never destroys data it did not create: a
step that wiped existing data (only possible with --allow-destroy) cannot be
undone, and rollback says so.

For migrate it puts the guest back on its original disks with all its data.`,
		Example: `  sudo cryptshift rollback --journal /var/lib/cryptshift/apply-mail-host.journal
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
			return runRollback(cmd.Context(), cmd.ErrOrStderr(), journalFile, connect, lvmConfig)
		},
	}
	cmd.Flags().StringVar(&journalFile, "journal", "", "the journal `FILE` of the apply or migrate to undo")
	cmd.Flags().StringVar(&connect, "connect", "", "libvirt `URI` for a migrate journal (default: the one it recorded)")
	cmd.Flags().StringVar(&lvmConfig, "lvm-config", "", "extra lvm --config `STRING`")
	cmd.Flags().MarkHidden("lvm-config")
	return cmd
}

func runRollback(ctx context.Context, w io.Writer, journalFile, connect, lvmConfig string) error {
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
	rep, err := apply.Rollback(ctx, journalFile, apply.Options{Run: execx.Exec{}, LVM: lvm.LVM{Run: execx.Exec{}, Config: lvmConfig}}, w)
	if rep != nil {
		for _, s := range rep.NotUndone {
			fmt.Fprintf(w, "not undone: %s\n", s)
		}
		fmt.Fprintf(w, "undid %d step(s)\n", len(rep.Undone))
	}
	return err
}
