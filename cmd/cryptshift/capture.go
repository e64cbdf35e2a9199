package main

import (
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/cryptshift/cryptshift/internal/audit/capture"
	"github.com/cryptshift/cryptshift/internal/exitcode"
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
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			res, err := capture.Capture(capture.Options{Root: o.root, Dest: args[0], Tool: versionString(), Comment: o.comment, Now: time.Now})
			if err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			fmt.Fprintf(w, "captured %d entries of %s into %s\n", res.Files, o.root, res.Dest)
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
	cmd.Flags().StringVar(&o.comment, "comment", "", "a note stored in the manifest")
	return cmd
}
