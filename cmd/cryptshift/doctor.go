package main

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/cryptshift/cryptshift/internal/audit/doctor"
	"github.com/cryptshift/cryptshift/internal/exitcode"
	"github.com/cryptshift/cryptshift/internal/textfmt"
)

func newDoctorCmd() *cobra.Command {
	var o doctor.Options
	var output string
	var forCaps []string
	cmd := &cobra.Command{
		Use:   "doctor [--for CAPABILITY] [-o json]",
		Short: "Check what this host offers cryptshift and say what to install or enable",
		Long: `doctor checks what cryptshift needs on this host: kernel device-mapper,
dm-crypt, loop and XTS-AES support (from /proc, /sys, the kernel
configuration and /lib/modules), cryptsetup, lvm and qemu-img with their
versions, argon2id in cryptsetup (by formatting a 1 MiB scratch file),
the filesystem, swap and mount tools, an initramfs that can unlock an
encrypted root, a reachable libvirt, root privileges and the kernel's
random generator.
Each check says what it found and how to fix it; then doctor lists which
verbs can run here:

` + capabilityHelp() + `
It changes nothing on the host.

Exit status:
  0  ready: every capability checked (--for; default: all of them) can run
  1  not ready: at least one of them cannot
  2  usage error: unknown flag, output format or capability`,
		Example: `  cryptshift doctor
  cryptshift doctor --for verify,migrate-pool -o json
  cryptshift doctor --connect /run/libvirt/virtqemud-sock`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) > 0 {
				return usageError("cannot run doctor: it takes no arguments (got %q)", args)
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			if output != "text" && output != "json" {
				return usageError("cannot run doctor: unknown output format %q; use text or json", output)
			}
			for _, f := range forCaps {
				if !containsString(doctor.Capabilities(), f) {
					return usageError("cannot check readiness for %q: the capabilities are %s", f, strings.Join(doctor.Capabilities(), ", "))
				}
			}
			// doctor's --root is a fixture of /proc, /sys, /lib/modules
			// and /boot, not a whole host tree: it must exist.
			if err := readableRoot("check", o.Root); err != nil {
				return err
			}
			o.For = forCaps
			o.Version = versionString()
			r, err := doctor.Run(cmd.Context(), o)
			if err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			if output == "json" {
				err = r.WriteJSON(w)
			} else {
				err = r.WriteText(w, textfmt.For(w))
			}
			if err != nil {
				return err
			}
			if !r.Ready {
				return exitcode.With(exitcode.Failure, fmt.Errorf("not ready for %s (see the checks above)", textfmt.List(r.NotReady())))
			}
			return nil
		},
	}
	fl := cmd.Flags()
	fl.StringSliceVar(&forCaps, "for", nil, "`CAPABILITY` that must be ready (repeatable or comma-separated): "+strings.Join(doctor.Capabilities(), ", "))
	connectFlag(fl, &o.Connect, "libvirt `URI` (default qemu:///system) or the path of a daemon socket")
	outputFlag(cmd, &output, "text", []string{"text", "json"}, "output format")
	fl.StringVar(&o.Root, "root", "/", "`DIR` whose /proc, /sys, /lib/modules and /boot to read (a fixture; tools are still this host's)")
	_ = fl.MarkHidden("root")
	_ = cmd.RegisterFlagCompletionFunc("for", cobra.FixedCompletions(doctor.Capabilities(), cobra.ShellCompDirectiveNoFileComp))
	return cmd
}

// capabilityHelp lists doctor's capabilities as the package defines them,
// so the help cannot fall behind what doctor checks.
func capabilityHelp() string {
	var b strings.Builder
	for _, c := range doctor.Capabilities() {
		fmt.Fprintf(&b, "  %-16s %s\n", c, doctor.CapabilitySummary(c))
	}
	return b.String()
}

func containsString(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
