package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/cryptshift/cryptshift/internal/exitcode"
	"github.com/cryptshift/cryptshift/internal/model/inventory"
	"github.com/cryptshift/cryptshift/internal/model/layout"
	"github.com/cryptshift/cryptshift/internal/planner"
	"github.com/cryptshift/cryptshift/internal/textfmt"
)

type inventoryOptions struct {
	output     string
	target     string
	layoutFile string
}

func newInventoryCmd() *cobra.Command {
	var o inventoryOptions
	cmd := &cobra.Command{
		Use:   "inventory",
		Short: "Record this machine's disks, partitions, LVM, LUKS headers and mounts (read-only)",
		Long: `inventory reads what block storage exists: disks with their sizes, sector
sizes and partition tables; the signature on every device (filesystem, LUKS
header parameters, LVM PV), and for a device without one whether it is
blank: its first and last MiB, the places where LUKS2, md, GPT, ext and
btrfs keep backup copies, and 64 samples of the rest must all be zero;
PVs, VGs and LVs (lvm --reportformat json);
open dm-crypt mappings; mounts and swaps; and, under --target, the state of
the new system's crypttab, fstab, key files and header backups (metadata
only, never a key's bytes).

It writes nothing. Save it as JSON to plan on another machine:
  cryptshift inventory -o json > host.json
  cryptshift plan -f layout.yaml --inventory host.json

Reading device signatures needs root.`,
		Example: `  sudo cryptshift inventory
  sudo cryptshift inventory -o json --layout my-host.yaml > host.json`,
		Args: cobra.NoArgs,
		PreRunE: func(*cobra.Command, []string) error {
			switch o.output {
			case "table", "text", "json":
				return nil
			}
			return usageError("unknown output format %q: use text or json", o.output)
		},
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runInventory(cmd.Context(), cmd.OutOrStdout(), o)
		},
	}
	f := cmd.Flags()
	outputFlag(cmd, &o.output, "text", []string{"text", "json"}, "output format (text: a table, alias table)")
	f.StringVar(&o.target, "target", planner.DefaultRoot, "`DIR` the layout's root is mounted on (its crypttab, fstab and key files are recorded)")
	f.StringVar(&o.layoutFile, "layout", "", "layout `FILE` whose key file and header backup directories to record")
	markInput(f, "layout")
	return cmd
}

func runInventory(ctx context.Context, w io.Writer, o inventoryOptions) error {
	if o.output == "table" {
		o.output = "text"
	}
	if o.output != "text" && o.output != "json" {
		return usageError("unknown output format %q: use text or json", o.output)
	}
	if ctx == nil {
		ctx = context.Background()
	}
	opt := inventory.Options{Target: o.target, KeyFileDir: layout.DefaultKeyFileDir}
	if o.layoutFile != "" {
		b, err := os.ReadFile(o.layoutFile)
		if err != nil {
			return exitcode.With(exitcode.Invalid, fmt.Errorf("cannot read layout: %w", err))
		}
		f, rep := layout.Parse(o.layoutFile, b)
		if rep.HasErrors() {
			return exitcode.With(exitcode.Invalid, rep)
		}
		opt.KeyFileDir, opt.HeaderBackupDir = f.Layout.Keys.KeyFileDir, f.Layout.Keys.HeaderBackupDir
	}
	inv, err := inventory.Gather(ctx, opt)
	if err != nil && inv == nil {
		return err
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "cryptshift: warning: %v\n", err)
	}
	if o.output == "json" {
		b, err := inv.Marshal()
		if err != nil {
			return err
		}
		_, err = w.Write(b)
		return err
	}
	return inventoryTable(w, inv, textfmt.For(w))
}

// inventoryTable lists the devices; the last column (what uses a device)
// comes first among the long ones so that CONTENT can wrap last.
func inventoryTable(w io.Writer, inv *inventory.Inventory, st textfmt.Style) error {
	t := textfmt.Table{Header: []string{"DEVICE", "KIND", "SIZE", "ON", "CONTENT"}}
	for _, d := range inv.Devices {
		content := "-"
		if d.Blank != "" {
			content = "blank"
		}
		if d.Content != nil {
			content = d.Content.Type
			if d.Content.Note != "" {
				content += " (" + d.Content.Note + ")"
			}
			if d.Content.LUKS != nil {
				content += fmt.Sprintf(" (LUKS%d %s %d-bit, %s)", d.Content.LUKS.Version, d.Content.LUKS.Cipher, d.Content.LUKS.KeySize, textfmt.Plural(len(d.Content.LUKS.Keyslots), "keyslot", "keyslots"))
			}
			if d.Content.Label != "" {
				content += fmt.Sprintf(" label %q", d.Content.Label)
			}
		}
		if d.Table != nil {
			content += fmt.Sprintf(" [%s, %s]", d.Table.Type, textfmt.Plural(len(d.Table.Partitions), "partition", "partitions"))
		}
		var on []string
		for _, m := range inv.Mounts {
			if m.Source == d.Path {
				on = append(on, m.Target)
			}
		}
		if inv.SwapOn(d.Path) {
			on = append(on, "[swap]")
		}
		if pv := inv.PV(d.Path); pv != nil && pv.VG != "" {
			on = append(on, "PV of "+pv.VG)
		}
		onText := strings.Join(on, ", ")
		if onText == "" {
			onText = "-"
		}
		t.Rows = append(t.Rows, []string{layout.Printable(d.Path), layout.Printable(d.Kind), layout.FormatBytes(d.Size), layout.Printable(onText), layout.Printable(content)})
	}
	return t.Write(w, st)
}
