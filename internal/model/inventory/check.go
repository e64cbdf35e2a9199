package inventory

import (
	"fmt"
	"reflect"

	"github.com/cryptshift/cryptshift/internal/model/layout"
)

// An inventory is untrusted input: it may come from another machine, be
// edited by hand, or describe disks whose labels and headers anyone could
// have written (a recycled disk's LUKS label or cipher string can be any
// bytes). Its strings reach plans, scripts, tab files and terminals, and
// its numbers the planner's arithmetic; both are checked here.

// MaxBytes bounds every size and offset: 1 EiB is far beyond any disk or
// volume group a host has, and keeps sums of a few sizes inside int64.
const MaxBytes = 1 << 60

// textFields walks the strings of the inventory for which want is true,
// by their JSON paths. The target root's crypttab and fstab are file
// contents (line breaks are their syntax); they are only ever compared,
// never written, and are skipped.
func (inv *Inventory) textFields(want func(string) bool, fn func(path string, v reflect.Value)) {
	layout.WalkText(inv, "json", want, func(p string, v reflect.Value) {
		if p != "$.target.crypttab" && p != "$.target.fstab" {
			fn(p, v)
		}
	})
}

// makePrintable escapes, in place, every character a plan could not carry
// (layout.Printable): a gathered inventory then always passes Parse.
func (inv *Inventory) makePrintable() {
	changes := func(s string) bool { return layout.Printable(s) != s }
	inv.textFields(changes, func(_ string, v reflect.Value) { v.SetString(layout.Printable(v.String())) })
}

func (inv *Inventory) checkText(bad func(p, format string, a ...any)) {
	inv.textFields(layout.TextProblem, func(p string, v reflect.Value) {
		s := v.String()
		if what, i, found := layout.BadChar(s); found {
			bad(p, "value %s contains %s at byte %d", layout.Short(s), what, i)
		} else {
			bad(p, "value %s is %d bytes long; at most %d are allowed", layout.Short(s), len(s), layout.MaxText)
		}
	})
}

func inRange(n int64) bool { return n >= 0 && n <= MaxBytes }

func powerOfTwo(n int64) bool { return n > 0 && n&(n-1) == 0 }

// checkNumbers refuses sizes, offsets and counts no real system reports,
// before the planner computes with them: a partition whose start plus size
// overflows, a negative free count, an extent size of zero.
func (inv *Inventory) checkNumbers(bad func(p, format string, a ...any)) {
	size := func(p string, n int64) bool {
		if !inRange(n) {
			bad(p, "%d is out of range (0 to %d bytes)", n, int64(MaxBytes))
			return false
		}
		return true
	}
	for i, d := range inv.Devices {
		p := fmt.Sprintf("$.devices[%d]", i)
		devOK := size(p+".size", d.Size)
		for _, ss := range []struct {
			name string
			v    int
		}{{"logicalSectorSize", d.LogicalSectorSize}, {"physicalSectorSize", d.PhysicalSectorSize}} {
			if ss.v != 0 && (!powerOfTwo(int64(ss.v)) || ss.v < 512 || ss.v > 65536) {
				bad(p+"."+ss.name, "%d is not a sector size (a power of two from 512 to 65536)", ss.v)
			}
		}
		if d.PartitionNumber < 0 || d.PartitionNumber > 65535 {
			bad(p+".partitionNumber", "%d is out of range (0 to 65535)", d.PartitionNumber)
		}
		if d.Table != nil {
			for j, part := range d.Table.Partitions {
				pp := fmt.Sprintf("%s.table.partitions[%d]", p, j)
				if part.Number < 1 || part.Number > 65535 {
					bad(pp+".number", "%d is out of range (1 to 65535)", part.Number)
				}
				if !size(pp+".start", part.Start) || !size(pp+".size", part.Size) || !devOK {
					continue
				}
				// Both are at most MaxBytes: the sum cannot overflow.
				if part.Size == 0 || part.Start+part.Size > d.Size {
					bad(pp, "partition %d (start %d, size %d) does not fit the %d-byte device", part.Number, part.Start, part.Size, d.Size)
				}
			}
		}
		if c := d.Content; c != nil && c.LUKS != nil {
			h, hp := c.LUKS, p+".content.luks"
			if h.KeySize < 0 || h.KeySize > 4096 {
				bad(hp+".keySize", "%d bits is out of range (0 to 4096)", h.KeySize)
			}
			if h.SectorSize != 0 && (!powerOfTwo(int64(h.SectorSize)) || h.SectorSize < 512 || h.SectorSize > 4096) {
				bad(hp+".sectorSize", "%d is not a LUKS2 sector size (512 to 4096)", h.SectorSize)
			}
			if h.DataOffset > MaxBytes {
				bad(hp+".dataOffset", "%d is out of range (0 to %d bytes)", h.DataOffset, int64(MaxBytes))
			}
			if len(h.Keyslots) > 32 { // LUKS2_KEYSLOTS_MAX
				bad(hp+".keyslots", "%d keyslots; LUKS2 has at most 32", len(h.Keyslots))
			}
		}
	}
	for i, pv := range inv.PVs {
		p := fmt.Sprintf("$.pvs[%d]", i)
		if size(p+".size", pv.Size) && size(p+".free", pv.Free) && pv.Free > pv.Size {
			bad(p+".free", "%d free bytes on a %d-byte physical volume", pv.Free, pv.Size)
		}
	}
	for i, vg := range inv.VGs {
		p := fmt.Sprintf("$.vgs[%d]", i)
		size(p+".size", vg.Size)
		size(p+".free", vg.Free)
		// lvm(8): extents are powers of two of at least 1 KiB; vgcreate
		// takes at most 16 GiB... and more would only overflow here.
		if !powerOfTwo(vg.ExtentSize) || vg.ExtentSize < 1024 || vg.ExtentSize > 1<<34 {
			bad(p+".extentSize", "%d is not an extent size (a power of two from 1 KiB to 16 GiB)", vg.ExtentSize)
			continue
		}
		maxExt := int64(MaxBytes) / vg.ExtentSize
		switch {
		case vg.ExtentCount < 0 || vg.ExtentCount > maxExt:
			bad(p+".extentCount", "%d is out of range (0 to %d extents of %d bytes)", vg.ExtentCount, maxExt, vg.ExtentSize)
		case vg.FreeCount < 0 || vg.FreeCount > vg.ExtentCount:
			bad(p+".freeCount", "%d free extents of %d", vg.FreeCount, vg.ExtentCount)
		}
	}
	for i, lv := range inv.LVs {
		size(fmt.Sprintf("$.lvs[%d].size", i), lv.Size)
	}
	for i, s := range inv.Swaps {
		size(fmt.Sprintf("$.swaps[%d].size", i), s.Size)
	}
	if inv.Target != nil {
		for i, f := range inv.Target.Files {
			p := fmt.Sprintf("$.target.files[%d]", i)
			size(p+".size", f.Size)
			if f.Mode > 0o7777 {
				bad(p+".mode", "%o is not a file mode", f.Mode)
			}
		}
	}
}
