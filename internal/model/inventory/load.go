package inventory

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"path"
	"sort"
	"strings"

	"github.com/cryptshift/cryptshift/internal/model/layout"
)

// Parse reads an inventory document and checks that it is coherent. Errors
// name the JSON path and, for syntax errors, the line and column.
func Parse(name string, data []byte) (*Inventory, error) {
	var inv Inventory
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&inv); err != nil {
		var se *json.SyntaxError
		var te *json.UnmarshalTypeError
		switch {
		case errors.As(err, &se):
			l, c := lineCol(data, se.Offset)
			return nil, fmt.Errorf("cannot read inventory %s: line %d col %d: %v; fix: regenerate it with cryptshift inventory -o json", name, l, c, se)
		case errors.As(err, &te):
			l, c := lineCol(data, te.Offset)
			return nil, fmt.Errorf("cannot read inventory %s: $.%s, line %d col %d: expected %s, found %s", name, te.Field, l, c, te.Type, te.Value)
		default:
			return nil, fmt.Errorf("cannot read inventory %s: %v", name, err)
		}
	}
	if dec.More() {
		return nil, fmt.Errorf("cannot read inventory %s: trailing data after the JSON object", name)
	}
	if errs := inv.check(); len(errs) > 0 {
		return nil, fmt.Errorf("cannot use inventory %s:\n  %s\nfix: regenerate it with cryptshift inventory -o json on the host, or correct these values", name, strings.Join(errs, "\n  "))
	}
	inv.Sort()
	return &inv, nil
}

func lineCol(data []byte, off int64) (int, int) {
	if off > int64(len(data)) {
		off = int64(len(data))
	}
	before := data[:off]
	line := bytes.Count(before, []byte("\n")) + 1
	col := int(off) - bytes.LastIndexByte(before, '\n')
	return line, col
}

func (inv *Inventory) check() []string {
	var errs []string
	bad := func(p, format string, a ...any) { errs = append(errs, p+": "+fmt.Sprintf(format, a...)) }
	if inv.APIVersion != APIVersion {
		bad("$.apiVersion", "is %q, want %q", inv.APIVersion, APIVersion)
	}
	if inv.Kind != Kind {
		bad("$.kind", "is %q, want %q", inv.Kind, Kind)
	}
	inv.checkText(bad)
	inv.checkNumbers(bad)
	seen := map[string]bool{}
	for i, d := range inv.Devices {
		p := fmt.Sprintf("$.devices[%d]", i)
		if !path.IsAbs(d.Path) {
			bad(p+".path", "%s is not an absolute path", layout.Short(d.Path))
		}
		if seen[d.Path] {
			bad(p+".path", "%s is listed twice", layout.Short(d.Path))
		}
		seen[d.Path] = true
		switch d.Kind {
		case KindDisk, KindPart, KindLVM, KindCrypt, KindLoop, KindDM:
		default:
			bad(p+".kind", "unknown kind %s", layout.Short(d.Kind))
		}
	}
	return errs
}

// Sort puts every list in a canonical order so output is deterministic.
func (inv *Inventory) Sort() {
	sort.Slice(inv.Devices, func(i, j int) bool { return inv.Devices[i].Path < inv.Devices[j].Path })
	sort.Slice(inv.PVs, func(i, j int) bool { return inv.PVs[i].Device < inv.PVs[j].Device })
	sort.Slice(inv.VGs, func(i, j int) bool { return inv.VGs[i].Name < inv.VGs[j].Name })
	sort.Slice(inv.LVs, func(i, j int) bool {
		return inv.LVs[i].VG+"/"+inv.LVs[i].Name < inv.LVs[j].VG+"/"+inv.LVs[j].Name
	})
	sort.Slice(inv.Mounts, func(i, j int) bool { return inv.Mounts[i].Target < inv.Mounts[j].Target })
	sort.Slice(inv.Swaps, func(i, j int) bool { return inv.Swaps[i].Path < inv.Swaps[j].Path })
	if inv.Target != nil {
		sort.Slice(inv.Target.Files, func(i, j int) bool { return inv.Target.Files[i].Path < inv.Target.Files[j].Path })
	}
}

// Marshal renders the inventory as indented, deterministic JSON; empty
// lists are written as [] rather than null.
func (inv *Inventory) Marshal() ([]byte, error) {
	inv.Sort()
	if inv.Devices == nil {
		inv.Devices = []Device{}
	}
	if inv.PVs == nil {
		inv.PVs = []PV{}
	}
	if inv.VGs == nil {
		inv.VGs = []VG{}
	}
	if inv.LVs == nil {
		inv.LVs = []LV{}
	}
	if inv.Mounts == nil {
		inv.Mounts = []Mount{}
	}
	if inv.Swaps == nil {
		inv.Swaps = []Swap{}
	}
	b, err := json.MarshalIndent(inv, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}

// Device finds a block device by path or alias.
func (inv *Inventory) Device(p string) *Device {
	for i := range inv.Devices {
		d := &inv.Devices[i]
		if d.Path == p {
			return d
		}
		for _, a := range d.Aliases {
			if a == p {
				return d
			}
		}
	}
	return nil
}

// PV finds the physical volume on device p.
func (inv *Inventory) PV(p string) *PV {
	d := inv.Device(p)
	for i := range inv.PVs {
		if inv.PVs[i].Device == p || (d != nil && inv.PVs[i].Device == d.Path) {
			return &inv.PVs[i]
		}
	}
	return nil
}

// VG finds a volume group by name.
func (inv *Inventory) VG(name string) *VG {
	for i := range inv.VGs {
		if inv.VGs[i].Name == name {
			return &inv.VGs[i]
		}
	}
	return nil
}

// LV finds a logical volume.
func (inv *Inventory) LV(vg, name string) *LV {
	for i := range inv.LVs {
		if inv.LVs[i].VG == vg && inv.LVs[i].Name == name {
			return &inv.LVs[i]
		}
	}
	return nil
}

// LVsOf lists the logical volumes of a volume group.
func (inv *Inventory) LVsOf(vg string) []LV {
	var out []LV
	for _, lv := range inv.LVs {
		if lv.VG == vg {
			out = append(out, lv)
		}
	}
	return out
}

// Mapping finds an open dm-crypt mapping by name.
func (inv *Inventory) Mapping(name string) *Device {
	for i := range inv.Devices {
		if inv.Devices[i].Kind == KindCrypt && inv.Devices[i].DMName == name {
			return &inv.Devices[i]
		}
	}
	return nil
}

// MountAt finds what is mounted at target.
func (inv *Inventory) MountAt(target string) *Mount {
	for i := range inv.Mounts {
		if inv.Mounts[i].Target == target {
			return &inv.Mounts[i]
		}
	}
	return nil
}

// SwapOn reports whether p is an active swap area.
func (inv *Inventory) SwapOn(p string) bool {
	for _, s := range inv.Swaps {
		if s.Path == p {
			return true
		}
	}
	return false
}

// File finds a file's metadata in the target root (path as the new system
// sees it).
func (inv *Inventory) File(p string) *File {
	if inv.Target == nil {
		return nil
	}
	for i := range inv.Target.Files {
		if inv.Target.Files[i].Path == p {
			return &inv.Target.Files[i]
		}
	}
	return nil
}

// Children lists the partitions of a disk, by partition number.
func (inv *Inventory) Children(disk string) []Device {
	var out []Device
	for _, d := range inv.Devices {
		if d.Kind == KindPart && d.Parent == disk {
			out = append(out, d)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].PartitionNumber < out[j].PartitionNumber })
	return out
}

// Holders lists devices stacked directly on p (a crypt mapping on an LV, an
// LV on a PV is not listed: LVM relations are in PVs/LVs).
func (inv *Inventory) Holders(p string) []Device {
	var out []Device
	for _, d := range inv.Devices {
		if d.Parent == p && d.Kind != KindPart {
			out = append(out, d)
		}
	}
	return out
}
