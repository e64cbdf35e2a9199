package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/cryptshift/cryptshift/internal/audit/verify"
	"github.com/cryptshift/cryptshift/internal/exitcode"
	"github.com/cryptshift/cryptshift/internal/hostview/sysconf"
	"github.com/cryptshift/cryptshift/luks"
)

func newInspectCmd() *cobra.Command {
	var root, output string
	cmd := &cobra.Command{
		Use:   "inspect [FILE|DEVICE]",
		Short: "Show the storage stack as a tree, or a LUKS or qcow2 header's metadata",
		Long: `Without an argument, inspect prints the storage stack from the disks up:
disk → partition → PV → LV → crypt → mount, swap or guest disk; every mount,
swap area and guest disk is marked encrypted or PLAINTEXT.

With a FILE or DEVICE it prints the metadata of the LUKS header on it
(version, cipher, key size, sector size, keyslots with their key
derivation, tokens, flags) or of a qcow2 image header (backing file,
encryption) — never keyslot material.`,
		Example: `  cryptshift inspect
  cryptshift inspect --root ./mx1-capture
  sudo cryptshift inspect /dev/vg0/mail
  cryptshift inspect -o json header-backup.img`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if output != "text" && output != "json" {
				return usageError("unknown output format %q: use text or json", output)
			}
			w := cmd.OutOrStdout()
			if len(args) == 0 {
				nodes, err := verify.Inspect(root)
				if err != nil {
					return err
				}
				return verify.RenderTree(w, nodes, output)
			}
			v, err := inspectFile(args[0])
			if err != nil {
				return err
			}
			if output == "json" {
				b, _ := json.MarshalIndent(v, "", "  ")
				_, err = fmt.Fprintf(w, "%s\n", b)
				return err
			}
			return printHeader(w, v)
		},
	}
	cmd.Flags().StringVar(&root, "root", "/", "`DIR` to read: / or a tree made by cryptshift capture")
	cmd.Flags().StringVarP(&output, "output", "o", "text", "output format: text or json")
	return cmd
}

// inspectFile reads a LUKS or qcow2 header.
func inspectFile(p string) (any, error) {
	h, err := luks.ReadHeader(p)
	if err == nil {
		return h, nil
	}
	if !errors.Is(err, luks.ErrNotLUKS) {
		return nil, err
	}
	f, ferr := os.Open(p)
	if ferr != nil {
		return nil, fmt.Errorf("cannot inspect %s: %w", p, ferr)
	}
	defer f.Close()
	q, qerr := sysconf.ParseQCOW2(f)
	if qerr == nil {
		return q, nil
	}
	return nil, exitcode.With(exitcode.Failure, fmt.Errorf("cannot inspect %s: neither a LUKS header nor a qcow2 image", p))
}

func printHeader(w interface{ Write([]byte) (int, error) }, v any) error {
	switch h := v.(type) {
	case *luks.Header:
		fmt.Fprintf(w, "LUKS%d  UUID %s", h.Version, h.UUID)
		if h.Label != "" {
			fmt.Fprintf(w, "  label %q", h.Label)
		}
		fmt.Fprintf(w, "\ncipher %s, key %d bits, sector %d bytes, data offset %d bytes\n", h.Cipher, h.KeySize, h.SectorSize, h.DataOffset)
		if len(h.Flags) > 0 {
			fmt.Fprintf(w, "flags: %v\n", h.Flags)
		}
		for _, k := range h.Keyslots {
			if k.KDF == "pbkdf2" {
				fmt.Fprintf(w, "keyslot %d: pbkdf2-%s, %d iterations, key %d bits\n", k.ID, k.Hash, k.Iterations, k.KeySize)
			} else {
				fmt.Fprintf(w, "keyslot %d: %s, time %d, memory %d KiB, %d threads, key %d bits\n", k.ID, k.KDF, k.Time, k.MemoryKiB, k.Parallel, k.KeySize)
			}
		}
		for _, t := range h.Tokens {
			fmt.Fprintf(w, "token: %s\n", t)
		}
	case *sysconf.QCOW2:
		fmt.Fprintf(w, "qcow2 v%d, virtual size %d bytes, clusters of %d bytes\n", h.Version, h.Size, 1<<h.ClusterBits)
		enc := map[int]string{0: "none", 1: "legacy AES (weak)", 2: "LUKS"}[h.CryptMethod]
		fmt.Fprintf(w, "encryption: %s\n", enc)
		if h.BackingFile != "" {
			fmt.Fprintf(w, "backing file: %s (%s)\n", h.BackingFile, h.BackingFormat)
		}
		if h.DataFile != "" {
			fmt.Fprintf(w, "external data file: %s\n", h.DataFile)
		}
		if h.Snapshots > 0 {
			fmt.Fprintf(w, "internal snapshots: %d\n", h.Snapshots)
		}
	}
	return nil
}
