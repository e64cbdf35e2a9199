package main

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime/debug"

	"github.com/spf13/cobra"

	"github.com/cryptshift/cryptshift/internal/doors/secrets"
	"github.com/cryptshift/cryptshift/internal/exitcode"
)

// Set at build time: go build -ldflags "-X main.version=... -X main.commit=...".
var (
	version = "dev"
	commit  = ""
)

// verbs are the subcommands, in the order of the work they do: read the
// host, plan, apply, migrate, verify and keep the evidence, look closer,
// undo; then the helpers. A new verb is a file with its constructor, and a
// line here. (--help lists them alphabetically, as cobra does.)
var verbs = []func() *cobra.Command{
	newInventoryCmd,
	newPlanCmd,
	newApplyCmd,
	newMigrateCmd,
	newMigrateHostCmd,
	newUnlockCmd,
	newVerifyCmd,
	newCaptureCmd,
	newInspectCmd,
	newDoctorCmd,
	newRollbackCmd,
	newStepCmd,
	newGenDocsCmd,
}

// exitStatusHelp is the exit-status contract, the same for every verb
// (docs/cli.md has it in full; TestCLIContract holds every verb to it).
const exitStatusHelp = `Exit status (the same for every verb; see docs/cli.md):
  0  ok (verify: no check FAILed; doctor: ready)
  1  the checked thing is not ok (verify: a check FAILed; doctor: not ready),
     or an operation failed
  2  usage error or cannot check: unknown verb or flag, a missing or extra
     argument, a bad flag value, an input file that is missing or unreadable
     (verify: not a host tree, or INCOMPLETE: something that matters was not
     examined; the report is still written)
  3  invalid input: the layout, inventory or plan file has errors
  4  refused: a step would destroy data and --allow-destroy was not given
  5  drift: the system changed since the reviewed plan was made
  6  interrupted at a step boundary; rerun with --resume`

func newRootCmd() *cobra.Command {
	var verbose bool
	root := &cobra.Command{
		Use:   "cryptshift",
		Short: "Put Linux mail servers and their KVM guests onto LUKS-on-LVM encryption, and prove it",
		Long: `cryptshift plans LUKS-on-LVM layouts, applies them to block devices, migrates
libvirt guest disks onto encrypted volumes and verifies that no plaintext leak
path (swap, temp, dumps, leftover copies) remains.

Nothing destructive happens without an explicit flag, and a dry-run writes
nothing. Secrets are never taken from the command line.

` + exitStatusHelp,
		Version:       versionString(),
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, args []string) error {
			logLevel.Set(slog.LevelWarn)
			if verbose {
				logLevel.Set(slog.LevelDebug)
			}
			setLogger(os.Stderr, false)
			if err := checkInputs(cmd); err != nil {
				return err
			}
			if handlesSecrets[cmd.Name()] {
				// Before any passphrase or key is in memory: no core dump,
				// no ptrace (secrets.Harden).
				return secrets.Harden()
			}
			return nil
		},
	}
	root.PersistentFlags().BoolVarP(&verbose, "verbose", "v", false, "log every command run, with its duration")
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error {
		return exitcode.With(exitcode.Usage, err)
	})
	root.SetVersionTemplate("cryptshift {{.Version}}\n")
	for _, v := range verbs {
		root.AddCommand(v())
	}
	enforceContract(root)
	return root
}

// handlesSecrets names the verbs that hold passphrases or keys in memory.
var handlesSecrets = map[string]bool{"apply": true, "migrate": true, "rollback": true, "step": true}

// logLevel is WARN, or DEBUG with --verbose.
var logLevel = new(slog.LevelVar)

// setLogger sends log records to w: text lines normally, JSON lines when
// the verb's progress events on w are JSON, so that a reader of that stream
// sees nothing but JSON objects (a log record has "level" and "msg", an
// event has "event").
func setLogger(w io.Writer, asJSON bool) {
	opts := &slog.HandlerOptions{Level: logLevel}
	var h slog.Handler = slog.NewTextHandler(w, opts)
	if asJSON {
		h = slog.NewJSONHandler(w, opts)
	}
	slog.SetDefault(slog.New(h))
}

func versionString() string {
	return fmt.Sprintf("%s (commit %s)", version, buildCommit())
}

// buildCommit is the commit the binary was built from (ldflags, else the
// Go build info), shortened to 12 characters, or "unknown".
func buildCommit() string {
	c := commit
	if c == "" {
		if bi, ok := debug.ReadBuildInfo(); ok {
			for _, s := range bi.Settings {
				if s.Key == "vcs.revision" {
					c = s.Value
				}
			}
		}
	}
	if c == "" {
		c = "unknown"
	}
	if len(c) > 12 {
		c = c[:12]
	}
	return c
}

// usageError marks bad arguments so they exit with status 2.
func usageError(format string, a ...any) error {
	return exitcode.With(exitcode.Usage, fmt.Errorf(format, a...))
}
