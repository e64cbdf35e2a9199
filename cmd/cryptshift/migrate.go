package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/cryptshift/cryptshift/internal/doors/progress"
	"github.com/cryptshift/cryptshift/internal/runner/migrate"
	"github.com/cryptshift/cryptshift/internal/textfmt"
)

type migrateFlags struct {
	o        migrate.Options
	yes      bool
	progress string
	output   string
}

func newMigrateCmd() *cobra.Command {
	var f migrateFlags
	cmd := &cobra.Command{
		Use:   "migrate DOMAIN --to pool:NAME|vg:NAME --mode offline|live [-y] [--dry-run [-o json|text]]",
		Short: "Move every disk of a libvirt guest onto encrypted storage: copy, verify, switch",
		Long: `migrate moves the disks of a libvirt/KVM guest onto encrypted volumes, one
encrypted target per disk, and switches the guest onto them only after each
copy has been verified byte for byte against its frozen source.

Targets:
  pool:NAME  a LUKS-encrypted image per disk in the libvirt storage pool NAME
             (a directory pool); qemu encrypts (LUKS1: qemu 7.2 reads no
             other), the key is a random 256-bit value in a libvirt secret.
  vg:NAME    an LV per disk in the volume group NAME with LUKS2 (apply's
             parameters), opened as /dev/mapper/DOMAIN-DEV_crypt and given
             to the guest as a raw block disk of its old size. A random key
             file per disk in --key-dir (on encrypted storage; mode 0400)
             opens it, also at boot through a marked block in /etc/crypttab;
             a recovery key in a second keyslot opens every new volume: it
             is written to --recovery-key-file, or shown once on the
             terminal. Live mode keeps the overlays in --overlay-dir, which
             must be on encrypted storage too.

Modes:
  offline  the guest must be shut off (or --shutdown shuts it down and starts
           it again afterwards); each disk is copied with qemu-img.
  live     the guest keeps running. Default engine "snapshot": an external
           disk-only snapshot (quiesced through the guest agent when it
           answers) onto an encrypted overlay freezes the base; the base is
           copied and verified; a shallow block copy and an active block
           commit move the guest onto the target; the guest never pauses.
           --engine mirror: one full block copy per disk; the guest is
           paused while its disks are compared, then pivoted.

Nothing is written with --dry-run: it prints the ordered steps as JSON
(the planner's step format), or as a numbered list with -o text, and
creates no snapshot, volume or secret. With --domain-xml FILE (saved with
virsh dumpxml --inactive) the domain comes from the file, so libvirtd need
not run: vg: targets plan without it; pool: targets still ask libvirtd for
the pool. The disks' images must be readable where the dry-run runs.

Every step is journaled (default /var/lib/cryptshift/migrate/DOMAIN.journal);
after a crash or Ctrl-C, --resume continues, and "cryptshift rollback
JOURNAL" puts the guest back on its original disks with all its data.
The plaintext source is kept unless --retire-source, which overwrites and
removes source image files, and discards (blkdiscard) and removes source
LVs, after the switch (see the notes it prints about SSDs). Exit status 0 only when every disk is switched and verified.

Progress goes to standard error: a bar on a terminal, or JSON lines with
--progress=json.`,
		Example: `  # Show what would happen, as JSON; changes nothing
  cryptshift migrate mail --to pool:encrypted --mode live --dry-run

  # The same from a saved definition, without asking libvirtd for the domain
  virsh dumpxml --inactive mail > mail.xml
  cryptshift migrate mail --to vg:vg0 --mode offline --dry-run --domain-xml mail.xml

  # Live migration, no questions
  cryptshift migrate mail --to pool:encrypted --mode live --yes

  # Offline: shut the guest down, migrate, start it again
  cryptshift migrate mail --to pool:encrypted --mode offline --shutdown --yes

  # Onto LVs in volume group vg0 (dm-crypt), the recovery key on a USB stick
  cryptshift migrate mail --to vg:vg0 --mode offline --recovery-key-file /media/usb/mail.recovery --yes

  # After a crash or Ctrl-C
  cryptshift migrate mail --to pool:encrypted --mode live --resume --yes

  # Modular daemons
  cryptshift migrate mail --connect /run/libvirt/virtqemud-sock --to pool:encrypted --mode live --yes`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) != 1 {
				return usageError("cannot migrate: name exactly one domain (got %d arguments)", len(args))
			}
			return nil
		},
		PreRunE: func(cmd *cobra.Command, args []string) error {
			f.o.Domain = args[0]
			return f.validate()
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			f.o.Domain = args[0]
			return runMigrate(cmd.Context(), cmd.InOrStdin(), cmd.OutOrStdout(), cmd.ErrOrStderr(), f)
		},
	}
	fl := cmd.Flags()
	connectFlag(fl, &f.o.Connect, "libvirt `URI` (default qemu:///system) or the path of a daemon socket, e.g. /run/libvirt/virtqemud-sock")
	fl.StringVar(&f.o.To, "to", "", "where the encrypted disks go: `pool:NAME|vg:NAME` (a libvirt storage pool or a volume group)")
	choiceFlag(cmd, &f.o.Mode, "mode", "", "", []string{"offline", "live"}, nil, "offline (the guest is shut off) or live (it keeps running)")
	choiceFlag(cmd, &f.o.Engine, "engine", "", "", []string{"snapshot", "mirror"}, nil, "live mode: snapshot (default; the guest never pauses) or mirror (full block copy; pauses to verify)")
	outputFlag(cmd, &f.output, "json", []string{"json", "text"}, "--dry-run's format (json: the steps in the plan's shape; text: a numbered list)")
	fl.BoolVar(&f.o.Shutdown, "shutdown", false, "offline mode: shut a running guest down gracefully first and start it again afterwards")
	fl.DurationVar(&f.o.ShutdownTimeout, "shutdown-timeout", 5*time.Minute, "how long --shutdown waits for the guest to power off (a `DURATION` such as 90s or 5m)")
	fl.BoolVar(&f.o.ForceOff, "force-off", false, "with --shutdown: power the guest off when it does not shut down in time")
	fl.BoolVar(&f.o.DryRun, "dry-run", false, "print the ordered steps as JSON and change nothing")
	fl.StringVar(&f.o.DomainXML, "domain-xml", "", "with --dry-run: plan from this saved domain definition `FILE` (virsh dumpxml --inactive DOMAIN) instead of asking libvirtd for the domain")
	fl.BoolVar(&f.o.Resume, "resume", false, "continue the migration recorded in the journal")
	fl.StringVar(&f.o.JournalPath, "journal", "", "journal `FILE` (default /var/lib/cryptshift/migrate/DOMAIN.journal)")
	fl.BoolVar(&f.o.RetireSource, "retire-source", false, "after verify and switch, overwrite the plaintext source image files with zeros and remove them; discard and remove source LVs")
	fl.StringVar(&f.o.PassphraseFile, "passphrase-file", "", "pool: targets: use the passphrase in `FILE` for the new targets instead of a random key per disk")
	fl.BoolVar(&f.o.AllowPlaintextSecretStore, "allow-plaintext-secret-store", false, "pool: targets: accept that libvirtd keeps the disks' keys in "+migrate.LibvirtSecretStore+" on storage that is not encrypted")
	choiceFlag(cmd, &f.o.TargetFormat, "target-format", "", "", []string{"raw", "qcow2"}, nil, "pool: targets: raw (a LUKS image of the full virtual size: hides which parts hold data) or qcow2 (LUKS inside qcow2: stores only the data, but its allocation tables are not encrypted); default: each disk keeps its source's format")
	fl.IntVar(&f.o.IterTimeMS, "iter-time", 0, "LUKS PBKDF2 iteration time in `ms` for qemu-encrypted images (default: qemu's 2000)")
	fl.StringVar(&f.o.KeyDir, "key-dir", "", "vg: targets: `DIR` for the disks' key files, on encrypted storage (default /etc/cryptsetup-keys.d)")
	fl.StringVar(&f.o.RecoveryKeyFile, "recovery-key-file", "", "vg: targets: write the new recovery key to `FILE` (mode 0400; keep it offline); on --resume: read it from there")
	fl.StringVar(&f.o.OverlayDir, "overlay-dir", "", "vg: targets, live mode: `DIR` for the encrypted overlays, on encrypted storage (default /var/lib/cryptshift/overlays)")
	fl.StringVar(&f.o.Crypttab, "crypttab", "", "vg: targets: the crypttab `FILE` (default /etc/crypttab)")
	fl.StringVar(&f.o.LVMConfig, "lvm-config", "", "extra lvm --config `STRING` (e.g. for systems without udev)")
	// Tests under emulation cannot afford argon2id at 1 GiB and 2 s per
	// keyslot; a lower cost is never what an admin wants.
	fl.IntVar(&f.o.PBKDFIterations, "pbkdf-force-iterations", 0, "vg: targets: argon2 time cost instead of a 2 s benchmark (tests)")
	fl.IntVar(&f.o.PBKDFMemoryKiB, "pbkdf-memory", 0, "vg: targets: argon2 memory in `KiB` (tests)")
	fl.IntVar(&f.o.PBKDFParallel, "pbkdf-parallel", 0, "vg: targets: argon2 threads (tests)")
	for _, hidden := range []string{"crypttab", "lvm-config", "pbkdf-force-iterations", "pbkdf-memory", "pbkdf-parallel"} {
		fl.MarkHidden(hidden)
	}
	yesFlag(fl, &f.yes, "do not ask for confirmation")
	choiceFlag(cmd, &f.progress, "progress", "", "auto", []string{"auto", "bar", "json", "none"}, nil, "progress on standard error (auto: a bar on a terminal; json: one event per line, and log records as JSON)")
	markInput(fl, "passphrase-file", "domain-xml")
	_ = cmd.RegisterFlagCompletionFunc("to", completeTo(&f.o.Connect))
	return cmd
}

// validate checks the flags alone (usage errors, exit 2).
func (f migrateFlags) validate() error {
	if err := f.o.Validate(); err != nil {
		return err
	}
	switch f.progress {
	case "auto", "bar", "json", "none":
	default:
		return usageError("cannot migrate: unknown --progress %q; use auto, bar, json or none", f.progress)
	}
	if f.output != "json" && f.output != "text" {
		return usageError("unknown output format %q: use json or text", f.output)
	}
	return nil
}

func runMigrate(ctx context.Context, stdin io.Reader, stdout, stderr io.Writer, f migrateFlags) error {
	if ctx == nil {
		ctx = context.Background()
	}
	// No signal handling here: while the journalled steps run, the engine
	// owns SIGINT and SIGTERM (the running step is cut short and reruns on
	// --resume; exit status 6). Before them migrate only reads, saves the
	// domain definition and asks, and Ctrl-C ends the process as for every
	// verb (it used to be swallowed at the prompts).
	o := f.o
	if err := f.validate(); err != nil {
		return err
	}
	switch f.progress {
	case "auto":
		if isTerminal(stderr) {
			o.Progress = progress.NewTerminal(stderr)
		}
	case "bar":
		o.Progress = progress.NewTerminal(stderr)
	case "json":
		o.Progress = progress.NewJSON(stderr)
		setLogger(stderr, true)
	case "none":
	default:
		return usageError("cannot migrate: unknown --progress %q; use auto, bar, json or none", f.progress)
	}
	if o.DryRun {
		res, err := migrate.Run(ctx, o)
		if err != nil {
			return err
		}
		if f.output == "text" {
			printMigratePlan(stdout, o, res.Plan)
			return nil
		}
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(res.Plan)
	}
	if !f.yes {
		// Show the plan and ask; a script must say --yes.
		if !isTerminal(stdin) {
			return usageError("cannot migrate %s without confirmation: pass --yes (or review the steps first with --dry-run)", o.Domain)
		}
		po := o
		po.DryRun = true
		if po.Resume {
			po.Resume = false
		}
		if !o.Resume {
			res, err := migrate.Run(ctx, po)
			if err != nil {
				return err
			}
			printMigratePlan(stdout, o, res.Plan)
		}
		if err := confirm("Proceed?", fmt.Sprintf("cannot migrate %s without confirmation", o.Domain), false); err != nil {
			return err
		}
	}
	o.Out = stdout
	o.RecoveryKey = func(resume bool, file string) ([]byte, error) {
		return migrateRecoveryKey(stdout, o.RecoveryKeyFile, resume, file)
	}
	res, err := migrate.Run(ctx, o)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "migrated %s: ", o.Domain)
	var parts []string
	for _, d := range res.Plan.Disks {
		parts = append(parts, fmt.Sprintf("%s %s", d.Target, res.States[d.Target]))
	}
	fmt.Fprintf(stdout, "%s (journal %s)\n", strings.Join(parts, ", "), res.Journal)
	return nil
}

// migrateRecoveryKey gives migrate the recovery key of vg: targets, the way
// apply does (newRecoveryKey, oldRecoveryKey): a resumed migration reads
// it back from the flag's file, else the one the journal recorded.
func migrateRecoveryKey(w io.Writer, flagFile string, resume bool, recorded string) ([]byte, error) {
	if resume {
		file := flagFile
		if file == "" {
			file = recorded
		}
		return oldRecoveryKey(file, "migration")
	}
	return newRecoveryKey(w, flagFile, "every new volume")
}

// printMigratePlan lists a migration's steps for people.
func printMigratePlan(w io.Writer, o migrate.Options, doc *migrate.Document) {
	pal := newPalette(w)
	fmt.Fprintf(w, "migrate %s to %s (%s): %s\n", o.Domain, o.To, o.Mode, textfmt.Plural(len(doc.Steps), "step", "steps"))
	for i, s := range doc.Steps {
		mark := ""
		if s.Destructive {
			mark = "  " + pal.Fail("[DESTROYS DATA]")
		}
		fmt.Fprintf(w, "  %2d. %s%s\n", i+1, s.Description, mark)
	}
	for _, n := range doc.Notes {
		fmt.Fprintf(w, "  note: %s\n", n)
	}
}

func isTerminal(v any) bool {
	f, ok := v.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}
