package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/cryptshift/cryptshift/internal/doors/execx"
	"github.com/cryptshift/cryptshift/internal/doors/secrets"
	"github.com/cryptshift/cryptshift/internal/exitcode"
	"github.com/cryptshift/cryptshift/internal/model/layout"
	"github.com/cryptshift/cryptshift/internal/model/plan"
	"github.com/cryptshift/cryptshift/internal/runner/hostmove"
)

type migrateHostOptions struct {
	layoutFile, target, output, progress, modules, journal string
	passphraseFile                                         string
	devices, services, cmdline                             []string
	dryRun, yes, resume                                    bool
}

func newMigrateHostCmd() *cobra.Command {
	var o migrateHostOptions
	cmd := &cobra.Command{
		Use:   "migrate-host -f LAYOUT [--target DIR] [--stop-service UNIT]... [--dry-run | --yes | --resume]",
		Short: "Move the running host's operating system onto the applied encrypted layout and make it boot",
		Long: `migrate-host copies the running system onto the layout that apply laid out
and mounted at --target (default /target), then makes the copy boot and unlock:

  - each source filesystem is copied onto its planned volume with rsync
    (owners, modes, ACLs, extended attributes and capabilities, hard links,
    sparse files kept; pseudo filesystems, the target itself and the paths
    the layout puts on tmpfs skipped): a first pass while the services run,
    then --stop-service units are stopped and a final pass (with --delete)
    copies what changed;
  - in the new root: the crypttab and fstab apply wrote, the root's crypttab
    entry marked for the initramfs, initramfs-tools configured (RESUME,
    MODULES, network drivers), dropbear-initramfs when the layout's
    keys.unlock.ssh asks for SSH unlock, the kernel command line (ip=);
  - Clevis bindings of the root for keys.unlock.tang and keys.unlock.tpm2
    (a new keyslot each; Tang servers must answer with their pinned
    thumbprint and a TPM must be present, or the move is refused first);
  - update-initramfs and GRUB (UEFI on the layout's ESP, BIOS where it has a
    bios-boot partition) run in a chroot of the new system, and every
    initramfs is checked to contain cryptsetup, dm-crypt, the root's crypttab
    entry and the unlock method.

It refuses up front, changing nothing, when the target is not mounted or not
on dm-crypt, apply has not finished, the system is not Debian-based, or a
source filesystem is ZFS or a btrfs subvolume.

The source is only read (the journal lives on the new root). Ctrl-C stops at
a step boundary or cuts the copy short; continue with --resume. Reboot into
the new disks afterwards, then run cryptshift verify.`,
		Example: `  # Review the steps, then move, stopping the mail services for the final pass
  cryptshift migrate-host -f mail-host.yaml --dry-run
  sudo cryptshift migrate-host -f mail-host.yaml --stop-service postfix --stop-service dovecot --yes

  # After a crash or kill: continue where it stopped
  sudo cryptshift migrate-host -f mail-host.yaml --stop-service postfix --stop-service dovecot --resume`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runMigrateHost(cmd.Context(), cmd.OutOrStdout(), cmd.ErrOrStderr(), o)
		},
	}
	f := cmd.Flags()
	f.StringVarP(&o.layoutFile, "file", "f", "", "the layout `FILE` that apply laid out")
	targetFlag(f, &o.target, "`DIR` where apply mounted the layout")
	f.StringArrayVar(&o.devices, "device", nil, "use device `NAME=PATH` for the layout's disk NAME, as given to apply (repeatable)")
	f.StringArrayVar(&o.services, "stop-service", nil, "stop systemd `UNIT` before the final copy pass (repeatable)")
	f.StringArrayVar(&o.cmdline, "kernel-cmdline", nil, "extra kernel `PARAMETER` for the new system, e.g. console=ttyS0 (repeatable)")
	choiceFlag(cmd, &o.modules, "initramfs-modules", "", hostmove.ModulesMost, []string{hostmove.ModulesMost, "dep"}, nil, "initramfs-tools MODULES policy: most (boots on other hardware) or dep (this machine's drivers only)")
	f.StringVar(&o.journal, "journal", "", "journal `FILE` (default ROOT/var/lib/cryptshift/migrate-host-LAYOUT.journal)")
	f.StringVar(&o.passphraseFile, "passphrase-file", "", "the root volume's passphrase from `FILE` (mode 0600), needed for the layout's tang and tpm2 bindings")
	f.BoolVar(&o.dryRun, "dry-run", false, "print the steps and change nothing")
	outputFlag(cmd, &o.output, "text", []string{"text", "json"}, "dry-run format")
	yesFlag(f, &o.yes, "do not ask for confirmation")
	f.BoolVar(&o.resume, "resume", false, "continue the move recorded in the journal")
	choiceFlag(cmd, &o.progress, "progress", "", "auto", []string{"auto", "json", "none"}, nil, "progress on standard error (auto: a line per step; json: one event per line)")
	return cmd
}

func runMigrateHost(ctx context.Context, stdout, stderr io.Writer, o migrateHostOptions) error {
	if ctx == nil {
		ctx = context.Background()
	}
	if o.layoutFile == "" {
		return usageError("give the layout apply laid out: -f LAYOUT")
	}
	if o.dryRun && o.resume {
		return usageError("give either --dry-run or --resume")
	}
	devices, err := parseDeviceFlags(o.devices)
	if err != nil {
		return err
	}
	data, err := os.ReadFile(o.layoutFile)
	if err != nil {
		return exitcode.With(exitcode.Invalid, fmt.Errorf("cannot read layout: %w", err))
	}
	lf, rep := layout.Parse(o.layoutFile, data)
	if rep.HasErrors() {
		printProblems(stderr, rep)
		return exitcode.With(exitcode.Invalid, fmt.Errorf("cannot move the host: the layout %s has errors; nothing was changed", o.layoutFile))
	}
	var cmdline []string
	for _, c := range o.cmdline {
		cmdline = append(cmdline, strings.Fields(c)...)
	}
	var pass []byte
	if o.passphraseFile != "" {
		if err := secrets.Harden(); err != nil {
			return err
		}
		if pass, err = secrets.FromFile(o.passphraseFile); err != nil {
			return exitcode.With(exitcode.Usage, err)
		}
		defer secrets.Wipe(pass)
	}
	m, err := hostmove.Prepare(hostmove.Options{Passphrase: pass,
		Layout: lf.Layout, Root: "/", Target: o.target, Devices: devices, StopServices: o.services,
		KernelCmdline: cmdline, InitramfsModules: o.modules, JournalPath: o.journal, Resume: o.resume,
		Run: execx.Exec{}, Out: stderr, Report: newStepReporter(o.progress, stdout, stderr),
	})
	var refused *hostmove.RefusedError
	if errors.As(err, &refused) {
		return exitcode.With(exitcode.Refused, err)
	}
	if err != nil {
		return err
	}
	p := m.Plan()
	if o.dryRun {
		return printDryRun(stdout, p, o.output)
	}
	if !o.yes && !o.resume {
		p.Table(stderr)
		if err := confirm(fmt.Sprintf("Move this host onto %s in these %d step(s)?", o.target, len(p.Steps)), "refusing to move the host without confirmation; nothing was changed", true); err != nil {
			return err
		}
	}
	if err := m.Run(ctx); err != nil {
		return err
	}
	fmt.Fprintf(stderr, "Moved the host onto %s. Journal: %s\nNext: shut down, boot from the new disks (unlock the root), then run cryptshift verify.\n", o.target, m.JournalPath())
	return nil
}

// printDryRun prints the steps a verb would run: the plan's table, or its
// JSON with -o json.
func printDryRun(w io.Writer, p *plan.Plan, output string) error {
	if output == "json" {
		b, err := p.JSON()
		if err != nil {
			return err
		}
		_, err = w.Write(b)
		return err
	}
	return p.Table(w)
}
