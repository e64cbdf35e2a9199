package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/cryptshift/cryptshift/internal/audit/capture"
	"github.com/cryptshift/cryptshift/internal/exitcode"
	"github.com/cryptshift/cryptshift/internal/textfmt"
)

type captureOptions struct {
	root, comment string
}

func newCaptureCmd() *cobra.Command {
	var o captureOptions
	cmd := &cobra.Command{
		Use:   "capture DIR",
		Short: "Copy what verify reads from this system into DIR, without secrets",
		Long: `capture runs verify's reads against this system and copies exactly the files,
links and /proc and /sys entries it looked at into DIR (new or empty), so
that "cryptshift verify --root DIR" gives the same answers anywhere: as
evidence kept with the report, or as a test fixture.

Nothing secret is copied: key files, libvirt secret values, images and
device contents become empty stubs (size, mode and format go to
DIR/cryptshift-capture/manifest.json); LUKS headers are stored as parsed
metadata, never their keyslot areas; initramfs images as member lists;
configuration files only from an allow-list, with password-like values
redacted. Reading LUKS headers and /proc/1 needs root.

After copying, capture verifies DIR and fails (exit 1) if any verdict
differs from the live system's.`,
		Example: `  sudo cryptshift capture /var/tmp/mx1-2026-11-22
  cryptshift verify --root /var/tmp/mx1-2026-11-22 -o html --lang de`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) != 1 {
				return usageError("cannot capture: name exactly one destination DIR (got %d arguments)", len(args))
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			// A mistyped path must not grow a tree of new directories:
			// DIR itself may be new, its parent must exist.
			if parent := filepath.Dir(filepath.Clean(args[0])); !isDir(parent) {
				return usageError("cannot capture into %s: its parent directory %s does not exist; create it first (mkdir -p %s) or fix the path", args[0], parent, parent)
			}
			// A root that cannot be checked fails before DIR is made.
			if err := hostRoot("capture", o.root); err != nil {
				return err
			}
			res, err := capture.Capture(capture.Options{Root: o.root, Dest: args[0], Tool: versionString(), Comment: o.comment, Now: time.Now})
			if err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			fmt.Fprintf(w, "captured %s of %s into %s\n", textfmt.Plural(res.Files, "entry", "entries"), o.root, res.Dest)
			for _, s := range res.Skipped {
				fmt.Fprintf(w, "  not captured: %s\n", s)
			}
			if len(res.Mismatch) > 0 {
				return exitcode.With(exitcode.Failure, fmt.Errorf("cannot capture %s faithfully: verify differs on the capture:\n  %s", o.root, strings.Join(res.Mismatch, "\n  ")))
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&o.root, "root", "/", "`DIR` to capture (/ for this system)")
	cmd.Flags().StringVar(&o.comment, "comment", "", "a note (`TEXT`) stored in the manifest")
	_ = cmd.MarkFlagDirname("root")
	return cmd
}

func isDir(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.IsDir()
}
