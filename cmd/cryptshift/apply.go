package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"github.com/cryptshift/cryptshift/internal/doors/execx"
	"github.com/cryptshift/cryptshift/internal/doors/progress"
	"github.com/cryptshift/cryptshift/internal/doors/secrets"
	"github.com/cryptshift/cryptshift/internal/exitcode"
	"github.com/cryptshift/cryptshift/internal/model/inventory"
	"github.com/cryptshift/cryptshift/internal/model/layout"
	"github.com/cryptshift/cryptshift/internal/model/plan"
	"github.com/cryptshift/cryptshift/internal/planner"
	"github.com/cryptshift/cryptshift/internal/runner/apply"
	"github.com/cryptshift/cryptshift/internal/textfmt"
	"github.com/cryptshift/cryptshift/lvm"
)

type applyOptions struct {
	layoutFile      string
	planFile        string
	resume          bool
	root            string
	devices         []string
	allowDestroy    bool
	yes             bool
	passphraseFile  string
	passphraseFD    int
	recoveryKeyFile string
	journal         string
	progress        string
	lvmConfig       string
}

// DefaultJournalDir holds apply journals unless --journal says otherwise.
const DefaultJournalDir = "/var/lib/cryptshift"

func newApplyCmd() *cobra.Command {
	var o applyOptions
	cmd := &cobra.Command{
		Use:   "apply (-f LAYOUT | --plan PLAN.json | --resume --journal FILE)",
		Short: "Carry a plan out on the block devices, with a journal, resume and rollback",
		Long: `apply plans the layout against this machine (or takes a plan reviewed
earlier with --plan, refusing if the system has drifted since) and runs its
steps: partitioning, LVM, luksFormat with the planned parameters, a recovery
keyslot, key files on the encrypted root, filesystems, mounts, swap,
crypttab and fstab.

Safety:
  --allow-destroy  needed for any step that overwrites existing data; the
                   plan names each device and what is on it.
  --yes            skip the confirmation (needed without a terminal).
  Every step is journalled before and after it runs. After a crash, kill or
  Ctrl-C (which stops at the next step boundary), run apply --resume
  --journal FILE; undo with cryptshift rollback FILE.

Secrets: the passphrase comes from a prompt without echo (asked twice),
--passphrase-file or --passphrase-fd, never from the command line. A
recovery key is generated, added to a second keyslot of every volume, and
shown once or written to --recovery-key-file (mode 0400; keep it offline).
Secrets go to cryptsetup on stdin or fd 3 and never into logs or journals.`,
		Example: `  # Review, then apply exactly the reviewed plan
  cryptshift plan -f host.yaml -o json > host.plan.json
  sudo cryptshift apply --plan host.plan.json --passphrase-file /root/pass --recovery-key-file /media/usb/recovery.key

  # Resume after an interruption (the journal the interrupted apply named)
  sudo cryptshift apply --resume --journal /var/lib/cryptshift/apply-mail-host.journal --passphrase-file /root/pass --recovery-key-file /media/usb/recovery.key`,
		Args:    cobra.NoArgs,
		PreRunE: func(*cobra.Command, []string) error { return o.validate() },
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runApply(cmd.Context(), cmd.OutOrStdout(), cmd.ErrOrStderr(), o)
		},
	}
	f := cmd.Flags()
	f.StringVarP(&o.layoutFile, "file", "f", "", "layout `FILE` to plan and apply")
	f.StringVar(&o.planFile, "plan", "", "apply exactly this reviewed plan `FILE` (JSON from plan -o json)")
	f.BoolVar(&o.resume, "resume", false, "continue the apply recorded in --journal")
	targetFlag(f, &o.root, "`DIR` to mount the layout's root on")
	f.StringArrayVar(&o.devices, "device", nil, "use device `NAME=PATH` for the layout's disk NAME (repeatable)")
	f.BoolVar(&o.allowDestroy, "allow-destroy", false, "permit steps that overwrite existing data")
	yesFlag(f, &o.yes, "do not ask for confirmation")
	f.StringVar(&o.passphraseFile, "passphrase-file", "", "read the passphrase from `FILE` (mode 0600 or stricter)")
	f.Var(newFDValue(&o.passphraseFD), "passphrase-fd", "read the passphrase from file descriptor `N`")
	f.StringVar(&o.recoveryKeyFile, "recovery-key-file", "", "write the new recovery key to `FILE` (on --resume: read it from there)")
	f.StringVar(&o.journal, "journal", "", "journal `FILE` (default "+DefaultJournalDir+"/apply-LAYOUT.journal; needed with --resume)")
	// bar is accepted as in migrate, so one --progress serves both verbs;
	// apply's steps report no byte counts, so its bar is the step line.
	choiceFlag(cmd, &o.progress, "progress", "", "auto", []string{"auto", "json", "none"}, []string{"bar"}, "progress on standard error (auto, or bar as in migrate: a line per step; json: one event per line, and log records as JSON)")
	f.StringVar(&o.lvmConfig, "lvm-config", "", "extra lvm --config `STRING` (e.g. for systems without udev)")
	f.MarkHidden("lvm-config")
	markInput(f, "file", "plan", "passphrase-file")
	return cmd
}

func journalPath(o applyOptions, layoutName string) string {
	if o.journal != "" {
		return o.journal
	}
	return filepath.Join(DefaultJournalDir, "apply-"+layoutName+".journal")
}

// validate checks the flags alone (usage errors, exit 2), before anything
// is read: --help's examples are held to it (TestHelpExamplesRun).
func (o applyOptions) validate() error {
	modes := 0
	for _, b := range []bool{o.layoutFile != "", o.planFile != "", o.resume} {
		if b {
			modes++
		}
	}
	if modes != 1 {
		return usageError("give exactly one of -f LAYOUT, --plan PLAN.json or --resume")
	}
	switch o.progress {
	case "auto", "bar", "json", "none":
	default:
		return usageError("--progress must be auto, json or none")
	}
	if o.passphraseFile != "" && o.passphraseFD >= 0 {
		return usageError("give either --passphrase-file or --passphrase-fd")
	}
	if o.resume && o.journal == "" {
		return usageError("--resume needs --journal FILE (the one the interrupted apply wrote)")
	}
	return nil
}

func runApply(ctx context.Context, stdout, stderr io.Writer, o applyOptions) error {
	if ctx == nil {
		ctx = context.Background()
	}
	if err := o.validate(); err != nil {
		return err
	}
	// With --progress json, standard error carries nothing but JSON lines
	// (events and log records, as in migrate); the lines for people go to
	// standard output then.
	human := stderr
	if o.progress == "json" {
		human = stdout
		setLogger(stderr, true)
	}
	lv := lvm.LVM{Run: execx.Exec{}, Config: o.lvmConfig}
	opt := apply.Options{Run: execx.Exec{}, LVM: lv, Out: human}

	var p *plan.Plan
	if o.resume {
		if err := readable("the journal", o.journal); err != nil {
			return err
		}
		var err error
		if p, err = apply.PlanOf(o.journal); err != nil {
			return err
		}
	} else {
		var err error
		if p, err = planForApply(ctx, o, lv); err != nil {
			return err
		}
		if len(p.Steps) == 0 {
			fmt.Fprintln(human, "Nothing to do: the system already matches the layout.")
			return nil
		}
		if !o.yes {
			p.TableStyled(human, textfmt.For(human))
			if err := confirm(fmt.Sprintf("Apply these %s to this machine?", textfmt.Plural(len(p.Steps), "step", "steps")), "refusing to apply without confirmation; nothing was changed", true); err != nil {
				return err
			}
		}
	}
	opt.JournalPath = journalPath(o, p.Layout)
	var err error
	if opt.Secrets, err = applySecrets(p, o, human); err != nil {
		return err
	}
	defer secrets.Wipe(opt.Secrets.Passphrase)
	defer secrets.Wipe(opt.Secrets.RecoveryKey)

	// Ctrl-C and SIGTERM stop at the next step boundary (the engine
	// handles them) with exit status 6.
	opt.Report = newStepReporter(o.progress, stdout, stderr)

	if o.resume {
		err = apply.Resume(ctx, opt)
	} else {
		if err := os.MkdirAll(filepath.Dir(opt.JournalPath), 0o700); err != nil {
			return fmt.Errorf("cannot create journal directory: %w", err)
		}
		err = apply.Run(ctx, p, opt)
	}
	if err != nil {
		return err
	}
	fmt.Fprintf(human, "Applied %s. Journal: %s\n", textfmt.Plural(len(p.Steps), "step", "steps"), opt.JournalPath)
	return nil
}

// planForApply plans against the live system; with --plan it also checks
// that re-planning the reviewed plan's layout gives the very same steps.
func planForApply(ctx context.Context, o applyOptions, lv lvm.LVM) (*plan.Plan, error) {
	gather := func(l *layout.Layout, root string) (*inventory.Inventory, error) {
		return inventory.Gather(ctx, inventory.Options{Target: root, KeyFileDir: l.Keys.KeyFileDir, HeaderBackupDir: l.Keys.HeaderBackupDir, LVM: &lv})
	}
	if o.planFile != "" {
		return apply.Reviewed(o.planFile, o.allowDestroy, gather)
	}
	devices, err := parseDeviceFlags(o.devices)
	if err != nil {
		return nil, err
	}
	f, inv, rep, err := planner.Load(planner.Inputs{LayoutFile: o.layoutFile, Devices: devices,
		Gather: func(l *layout.Layout) (*inventory.Inventory, error) { return gather(l, o.root) }})
	if err != nil {
		if rep != nil && rep.HasErrors() {
			printProblems(os.Stderr, rep)
		}
		return nil, err
	}
	p, rep, err := planner.Plan(f, inv, planner.Options{Root: o.root, AllowDestroy: o.allowDestroy, Devices: devices})
	var refused *planner.RefusedError
	switch {
	case errors.As(err, &refused):
		return nil, exitcode.With(exitcode.Refused, err)
	case err != nil:
		printProblems(os.Stderr, rep)
		return nil, exitcode.With(exitcode.Invalid, fmt.Errorf("cannot plan %s; nothing was changed", f.Name))
	}
	return p, nil
}

func applySecrets(p *plan.Plan, o applyOptions, w io.Writer) (apply.Secrets, error) {
	var s apply.Secrets
	var err error
	if apply.NeedsSecret(p, plan.SecretPassphrase) {
		switch {
		case o.passphraseFile != "":
			s.Passphrase, err = secrets.FromFile(o.passphraseFile)
		case o.passphraseFD >= 0:
			s.Passphrase, err = secrets.FromFD(o.passphraseFD)
		default:
			s.Passphrase, err = secrets.Prompt("Passphrase for the LUKS2 volumes: ", !o.resume)
		}
		if err != nil {
			return s, exitcode.With(exitcode.Usage, err)
		}
	}
	if !apply.NeedsSecret(p, plan.SecretRecoveryKey) {
		return s, nil
	}
	if o.resume {
		s.RecoveryKey, err = oldRecoveryKey(o.recoveryKeyFile, "apply")
		return s, err
	}
	s.RecoveryKey, err = newRecoveryKey(w, o.recoveryKeyFile, "every volume")
	return s, err
}

// stepReporter prints a line per step, or JSON progress events.
type stepReporter struct {
	json progress.Reporter
	w    io.Writer
}

func newStepReporter(mode string, stdout, stderr io.Writer) apply.Reporter {
	switch mode {
	case "none":
		return nil
	case "json":
		return &stepReporter{json: progress.NewJSON(stderr)}
	}
	return &stepReporter{w: stderr}
}

func (r *stepReporter) StepStart(n, total int, s plan.Step) {
	if r.json != nil {
		r.json.Start(s.ID, 0)
		return
	}
	fmt.Fprintf(r.w, "[%*d/%d] %s %s ... ", len(fmt.Sprint(total)), n, total, s.Action, s.Target)
}

func (r *stepReporter) StepDone(n, total int, s plan.Step, took time.Duration, skipped bool, err error) {
	if r.json != nil {
		r.json.Done(err)
		return
	}
	switch {
	case err != nil:
		fmt.Fprintln(r.w, "FAILED")
	case skipped:
		fmt.Fprintf(r.w, "already done (%s)\n", took.Round(time.Millisecond))
	default:
		fmt.Fprintf(r.w, "ok (%s)\n", took.Round(time.Millisecond))
	}
}
