package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strings"
	"syscall"

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
				if err := hostRoot("inspect", root); err != nil {
					return err
				}
				nodes, err := verify.Inspect(root)
				if err != nil {
					return err
				}
				return verify.RenderTree(w, nodes, output)
			}
			if err := readable("the header of", args[0]); err != nil {
				return err
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
	outputFlag(cmd, &output, "text", []string{"text", "json"}, "output format")
	_ = cmd.MarkFlagDirname("root")
	return cmd
}

func printLUKS(w interface{ Write([]byte) (int, error) }, h *luks.Header) {
	c := verify.Clean
	fmt.Fprintf(w, "LUKS%d  UUID %s", h.Version, c(h.UUID))
	if h.Label != "" {
		fmt.Fprintf(w, "  label %q", h.Label)
	}
	fmt.Fprintf(w, "\ncipher %s, key %d bits, sector %d bytes, data offset %d bytes\n", c(h.Cipher), h.KeySize, h.SectorSize, h.DataOffset)
	if len(h.Flags) > 0 {
		fmt.Fprintf(w, "flags: %s\n", c(strings.Join(h.Flags, ", ")))
	}
	for _, k := range h.Keyslots {
		if k.KDF == "pbkdf2" {
			fmt.Fprintf(w, "keyslot %d: pbkdf2-%s, %d iterations, key %d bits\n", k.ID, c(k.Hash), k.Iterations, k.KeySize)
		} else {
			fmt.Fprintf(w, "keyslot %d: %s, time %d, memory %d KiB, %d threads, key %d bits\n", k.ID, c(k.KDF), k.Time, k.MemoryKiB, k.Parallel, k.KeySize)
		}
	}
	for _, t := range h.TokenInfo {
		desc := c(t.Type)
		if t.Clevis != nil {
			desc += " " + c(t.Clevis.String())
		}
		if t.TPM2 != nil {
			desc += fmt.Sprintf(" pcrs %v %s pin %v", t.TPM2.PCRs, c(t.TPM2.Bank), t.TPM2.PIN)
		}
		fmt.Fprintf(w, "token %d: %s → keyslots %v\n", t.ID, desc, t.Keyslots)
	}
}

// inspectFile reads a LUKS or qcow2 header.
func inspectFile(p string) (any, error) {
	// Never block on a FIFO, never read a character device.
	f, err := os.OpenFile(p, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, fmt.Errorf("cannot inspect %s: %w", p, err)
	}
	defer f.Close()
	if fi, err := f.Stat(); err != nil || !(fi.Mode().IsRegular() || fi.Mode()&fs.ModeDevice != 0 && fi.Mode()&fs.ModeCharDevice == 0) {
		return nil, exitcode.With(exitcode.Failure, fmt.Errorf("cannot inspect %s: not a regular file or block device", p))
	}
	h, err := luks.ReadHeaderFile(f, p)
	if err == nil {
		return h, nil
	}
	if !errors.Is(err, luks.ErrNotLUKS) {
		return nil, err
	}
	q, qerr := sysconf.ParseQCOW2(f)
	if qerr == nil {
		out := &qcowInfo{QCOW2: q}
		if q.CryptMethod == 2 {
			out.Encryption, out.EncryptionError = qcowLUKS(f, q)
		}
		return out, nil
	}
	return nil, exitcode.With(exitcode.Failure, fmt.Errorf("cannot inspect %s: neither a LUKS header nor a qcow2 image", p))
}

// qcowInfo is a qcow2 header with the parameters of the LUKS header qemu
// keeps inside an encrypted image.
type qcowInfo struct {
	*sysconf.QCOW2
	Encryption      *luks.Header `json:"encryption,omitempty"`
	EncryptionError string       `json:"encryptionError,omitempty"`
}

// maxQCOWLUKSHeader bounds the LUKS header read from inside a qcow2
// image: qemu's LUKS1 header with 8 keyslots of a 512-bit key is about 2
// MiB; LUKS2 metadata is at most 4 MiB plus keyslots.
const maxQCOWLUKSHeader = 32 << 20

// qcowLUKS reads the LUKS header inside an encrypted qcow2 image, bounded
// by the extension's length; only metadata is decoded (luks.Parse).
func qcowLUKS(f *os.File, q *sysconf.QCOW2) (*luks.Header, string) {
	if q.CryptHeaderOffset == 0 || q.CryptHeaderLength == 0 {
		return nil, "no LUKS header pointer in the qcow2 header"
	}
	if q.CryptHeaderLength > maxQCOWLUKSHeader || q.CryptHeaderOffset > 1<<62 {
		return nil, fmt.Sprintf("LUKS header of %d bytes at %d: out of bounds", q.CryptHeaderLength, q.CryptHeaderOffset)
	}
	h, err := luks.Parse(io.NewSectionReader(f, int64(q.CryptHeaderOffset), int64(q.CryptHeaderLength)))
	if err != nil {
		return nil, "cannot read the LUKS header inside: " + err.Error()
	}
	return h, ""
}

func printHeader(w interface{ Write([]byte) (int, error) }, v any) error {
	switch h := v.(type) {
	case *luks.Header:
		printLUKS(w, h)
	case *qcowInfo:
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
		if h.Encryption != nil {
			fmt.Fprintf(w, "LUKS header inside (offset %d, %d bytes):\n", h.CryptHeaderOffset, h.CryptHeaderLength)
			printLUKS(w, h.Encryption)
		} else if h.EncryptionError != "" {
			fmt.Fprintf(w, "LUKS header inside: %s\n", verify.Clean(h.EncryptionError))
		}
	}
	return nil
}
