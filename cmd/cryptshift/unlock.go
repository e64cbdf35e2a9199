package main

import (
	"context"
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/cryptshift/cryptshift/internal/doors/secrets"
	"github.com/cryptshift/cryptshift/internal/exitcode"
	"github.com/cryptshift/cryptshift/internal/model/plan"
	"github.com/cryptshift/cryptshift/internal/runner/unlock"
)

type unlockOptions struct {
	o              unlock.Options
	passphraseFile string
	output         string
}

func newUnlockCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "unlock (add|remove) (tang|tpm2) --volume NAME",
		Short: "Add or remove a Tang or TPM2 unlock method on an existing LUKS2 volume, without rewriting it",
		Long: `unlock adds a keyslot that Clevis opens with a Tang server (network-bound:
the volume opens only where the server answers) or with this machine's TPM2
(sealed to a PCR policy), or removes such a binding. The volume is not
rewritten: a keyslot and its LUKS2 token are added or removed, and the
passphrase and recovery keyslots always stay.

Before anything changes, a Tang server must answer and advertise the
thumbprint you pinned (tang-show-keys on the server), and a TPM must be
present. With clevis-initramfs installed, the next initramfs unlocks the
root by itself (Tang needs ip= on the kernel command line).

TPM2 and PCRs: the default policy is PCR 7 (the Secure Boot state and keys):
it survives kernel, initramfs and GRUB updates, but opens the volume for
anyone who boots this machine (no PIN); binding PCRs 0,2,4,8,9 too would
also stop a changed boot chain, and must then be re-bound after every
firmware, kernel or GRUB update, or the passphrase is needed at the next
boot.`,
		Example: `  sudo cryptshift unlock add tang --volume root_crypt --url http://tang.example:7500 --thumbprint voU6475c-6TIakg7U7LoBHrS9ESNwU98S-1Gr2IDA2k --passphrase-file /run/pass
  sudo cryptshift unlock add tpm2 --volume root_crypt --pcrs 7 --passphrase-file /run/pass
  sudo cryptshift unlock remove tang --volume root_crypt`,
		Args: cobra.ArbitraryArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return usageError("cannot run unlock: name add or remove (cryptshift unlock --help)")
		},
	}
	cmd.AddCommand(newUnlockSubCmd("add"), newUnlockSubCmd("remove"))
	return cmd
}

func newUnlockSubCmd(op string) *cobra.Command {
	var u unlockOptions
	c := &cobra.Command{
		Use:   op + " (tang|tpm2) --volume NAME",
		Short: op + " a Tang or TPM2 unlock method",
		Args: func(cmd *cobra.Command, args []string) error {
			if err := cobra.MatchAll(cobra.ExactArgs(1), cobra.OnlyValidArgs)(cmd, args); err != nil {
				return usageError("%v: give tang or tpm2", err)
			}
			return nil
		},
		ValidArgs: []string{unlock.Tang, unlock.TPM2},
		RunE: func(cmd *cobra.Command, args []string) error {
			u.o.Method = args[0]
			return runUnlock(cmd.Context(), cmd.OutOrStdout(), op, u)
		},
	}
	f := c.Flags()
	f.StringVar(&u.o.Volume, "volume", "", "the volume: its open mapping `NAME` (root_crypt) or its LUKS2 device")
	f.BoolVar(&u.o.DryRun, "dry-run", false, "print the steps and change nothing")
	outputFlag(c, &u.output, "text", []string{"text", "json"}, "dry-run format")
	if op == "add" {
		f.StringVar(&u.o.URL, "url", "", "tang: the server's `URL`, e.g. http://tang.example:7500")
		f.StringVar(&u.o.Thumbprint, "thumbprint", "", "tang: the server's signing key `THP` (S256, from tang-show-keys)")
		f.StringVar(&u.o.PCRs, "pcrs", "7", "tpm2: the `PCRS` the key is sealed to, comma-separated")
		f.StringVar(&u.o.PCRBank, "pcr-bank", "sha256", "tpm2: the PCR `BANK`")
		f.StringVar(&u.passphraseFile, "passphrase-file", "", "a passphrase that opens the volume now, from `FILE` (mode 0600)")
	}
	return c
}

func runUnlock(ctx context.Context, stdout io.Writer, op string, u unlockOptions) error {
	if ctx == nil {
		ctx = context.Background()
	}
	if op == "add" && !u.o.DryRun {
		if u.passphraseFile == "" {
			return usageError("give --passphrase-file with a passphrase that opens the volume")
		}
		if err := secrets.Harden(); err != nil {
			return err
		}
		p, err := secrets.FromFile(u.passphraseFile)
		if err != nil {
			return exitcode.With(exitcode.Usage, err)
		}
		defer secrets.Wipe(p)
		u.o.Passphrase = p
	}
	run := unlock.Add
	if op == "remove" {
		run = unlock.Remove
	}
	res, err := run(ctx, u.o)
	if err != nil {
		return err
	}
	if u.o.DryRun {
		p := &plan.Plan{APIVersion: plan.APIVersion, Kind: plan.Kind, Layout: "-", Root: res.Device, Steps: res.Steps,
			Crypttab: []plan.CrypttabEntry{}, Fstab: []plan.FstabEntry{}, Secrets: []plan.Secret{}}
		return printDryRun(stdout, p, u.output)
	}
	for _, s := range res.Steps {
		fmt.Fprintf(stdout, "done: %s\n", s.Description)
	}
	return nil
}
