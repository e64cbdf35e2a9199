package planner

import (
	"fmt"
	"github.com/cryptshift/cryptshift/internal/textfmt"
	"regexp"
	"strings"

	"github.com/cryptshift/cryptshift/internal/doors/fs"
	"github.com/cryptshift/cryptshift/internal/doors/gpt"
	"github.com/cryptshift/cryptshift/internal/model/inventory"
	"github.com/cryptshift/cryptshift/internal/model/layout"
	"github.com/cryptshift/cryptshift/internal/model/plan"
	"github.com/cryptshift/cryptshift/lvm"
)

const (
	mib = 1 << 20
	// Partitions start and end on 1 MiB boundaries, as parted, sgdisk and
	// systemd-repart align them; that suits 4K sectors and SSD pages.
	partAlign = mib
	// LVM puts the first physical extent 1 MiB into a PV by default
	// (pvcreate --dataalignment, pe_start); loop devices have no larger
	// optimal_io_size to change that.
	peStart = mib
	// The backup GPT at the end of a disk: 16 KiB of entries plus a header.
	gptTailEntries = 16384
)

// GPT partition type GUIDs (UEFI spec; freedesktop Discoverable Partitions).
var partTypeGUID = map[string]string{
	layout.PartESP:      "C12A7328-F81F-11D2-BA4B-00A0C93EC93B",
	layout.PartBIOSBoot: "21686148-6449-6E6F-744E-656564454649",
	layout.PartBoot:     "BC13C2FF-59E6-4262-A352-B275FD6F7172", // XBOOTLDR
	layout.PartLVM:      "E6D6D379-F507-44C2-A23C-238F2A3DF928",
	"linux":             "0FC63DAF-8483-4772-8E79-3D69D8477DE4",
}

type partState struct {
	layoutPath string
	disk       layout.Disk
	part       layout.Partition
	number     int
	device     string
	start      int64
	size       int64
	fresh      bool // the partition table is (re)written by this plan
	content    *inventory.Content
}

type pvState struct {
	device     string
	layoutPath string
	size       int64
	existing   *inventory.PV
	fresh      bool // created on a partition this plan writes
}

type vgState struct {
	layoutPath  string
	vg          layout.VolumeGroup
	pvs         []*pvState
	existing    *inventory.VG
	extentSize  int64
	totalExt    int64
	freeExt     int64 // actually free when this plan's new LVs are made
	created     bool
	virtualFree int64
}

var trailingDigit = regexp.MustCompile(`[0-9]$`)

// PartitionPath names partition n of a disk the way the kernel and udev do:
// sda1, nvme0n1p1, loop0p1, and by-id/...-part1 for udev links.
func PartitionPath(disk string, n int) string {
	if strings.HasPrefix(disk, "/dev/disk/by-") {
		return fmt.Sprintf("%s-part%d", disk, n)
	}
	if trailingDigit.MatchString(disk) {
		return fmt.Sprintf("%sp%d", disk, n)
	}
	return fmt.Sprintf("%s%d", disk, n)
}

func alignUp(n, a int64) int64   { return (n + a - 1) / a * a }
func alignDown(n, a int64) int64 { return n / a * a }

// describe says what a device holds, for refusals and destructive steps.
func (p *planner) describe(dev *inventory.Device) string {
	var parts []string
	if dev.Table != nil {
		parts = append(parts, fmt.Sprintf("%s partition table with %s", strings.ToUpper(dev.Table.Type), textfmt.Plural(len(dev.Table.Partitions), "partition", "partitions")))
		for _, c := range p.inv.Children(dev.Path) {
			if c.Content != nil {
				parts = append(parts, fmt.Sprintf("%s holds %s", layout.Printable(c.Path), contentText(p.inv, c.Path, c.Content)))
			}
		}
	}
	if c := p.content(dev); c != nil && (dev.Table == nil || (c.Type != "gpt" && c.Type != "dos")) {
		parts = append(parts, contentText(p.inv, dev.Path, c))
	}
	if len(parts) == 0 {
		return "data of unknown kind"
	}
	return strings.Join(parts, "; ")
}

// contentText says what a device holds, for refusals and destructive
// steps. Every value in it comes from an inventory, that is from disks
// anyone may have prepared: each is made printable (or quoted), so the
// text stays one harmless line in a plan, a script comment or a terminal.
func contentText(inv *inventory.Inventory, devPath string, c *inventory.Content) string {
	var b strings.Builder
	pr := layout.Printable
	switch c.Type {
	case "crypto_LUKS":
		fmt.Fprintf(&b, "a LUKS%s header", pr(c.Version))
		if c.LUKS != nil {
			fmt.Fprintf(&b, " (%s, %s)", pr(c.LUKS.Cipher), textfmt.Plural(len(c.LUKS.Keyslots), "keyslot", "keyslots"))
		}
	case "LVM2_member":
		b.WriteString("an LVM physical volume")
		if pv := inv.PV(devPath); pv != nil && pv.VG != "" {
			var lvs []string
			for _, lv := range inv.LVsOf(pv.VG) {
				lvs = append(lvs, pr(lv.Name))
			}
			fmt.Fprintf(&b, " of volume group %s", pr(pv.VG))
			if len(lvs) > 0 {
				fmt.Fprintf(&b, " (LVs: %s)", strings.Join(lvs, ", "))
			}
		}
	case "linux_raid_member":
		b.WriteString("an md RAID member")
	case "swap":
		b.WriteString("a swap area")
	case "qcow2":
		b.WriteString("a qcow2 image")
	case "gpt", "dos":
		fmt.Fprintf(&b, "a %s partition table", strings.ToUpper(c.Type))
	case "unknown":
		b.WriteString("data with no recognised signature")
		if c.Note != "" {
			fmt.Fprintf(&b, " (%s)", pr(c.Note))
		}
	case "unreadable":
		b.WriteString("data cryptshift could not read (" + pr(c.Note) + ")")
		return b.String()
	default:
		fmt.Fprintf(&b, "an %s filesystem", pr(c.Type))
	}
	if c.UUID != "" && c.Type != "gpt" && c.Type != "dos" {
		fmt.Fprintf(&b, " UUID %s", pr(c.UUID))
	}
	if c.Label != "" {
		fmt.Fprintf(&b, " label %q", c.Label)
	}
	return b.String()
}

// content is what the planner may assume a device holds. A device that
// existed before this plan (a disk, a partition, a loop device, an LV or a
// mapping) counts as empty only when its inventory says probe.Blank found
// it blank: an inventory written by hand or by an older cryptshift that
// merely shows no signature does not prove that nothing is there, and
// wiping or formatting it needs --allow-destroy.
func (p *planner) content(d *inventory.Device) *inventory.Content {
	if d == nil {
		return nil
	}
	if d.Content == nil && d.Blank == "" && d.Table == nil {
		return &inventory.Content{Type: "unknown", Note: "the inventory does not show that it was probed and found blank; re-run cryptshift inventory"}
	}
	return d.Content
}

var uuidRe = regexp.MustCompile(`^([0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}|[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4})$`)

// isUUID accepts the UUIDs cryptshift writes into fstab and crypttab:
// RFC 4122 form, or a FAT volume serial. What an inventory says a device's
// UUID is may be any text; only these are kept.
func isUUID(s string) bool { return uuidRe.MatchString(s) }

// inUse reports why a device (or one of its partitions) cannot be wiped at
// all: it is mounted, active swap, open under a mapping, or a PV of a VG
// with active volumes. Those need the admin, not --allow-destroy.
func (p *planner) inUse(devPath string) string {
	check := []string{devPath}
	for _, c := range p.inv.Children(devPath) {
		check = append(check, c.Path)
	}
	for _, d := range check {
		dev := p.inv.Device(d)
		names := []string{d}
		if dev != nil {
			names = append(names, dev.Path)
			names = append(names, dev.Aliases...)
		}
		for _, n := range names {
			for _, m := range p.inv.Mounts {
				if m.Source == n {
					return fmt.Sprintf("%s is mounted at %s; unmount it first", d, m.Target)
				}
			}
			if p.inv.SwapOn(n) {
				return fmt.Sprintf("%s is active swap; run swapoff first", d)
			}
		}
		if h := p.inv.Holders(d); len(h) > 0 {
			return fmt.Sprintf("%s is held open by %s; close it first", d, h[0].Path)
		}
		if pv := p.inv.PV(d); pv != nil && pv.VG != "" {
			for _, lv := range p.inv.LVsOf(pv.VG) {
				if lv.Active {
					return fmt.Sprintf("%s is a PV of volume group %s whose volume %s is active; deactivate it (vgchange -an %s) first", d, pv.VG, lv.Name, pv.VG)
				}
			}
		}
	}
	return ""
}

// wipe adds a destructive signature wipe of dev, or reports why it cannot.
func (p *planner) wipe(layoutPath string, dev *inventory.Device) bool {
	if why := p.inUse(dev.Path); why != "" {
		p.rep.Errorf(layoutPath, "free the device, or point the layout at another one", "cannot reuse %s: %s", dev.Path, why)
		return false
	}
	p.add(plan.Step{
		Action: plan.ActWipe, Target: dev.Path,
		Description: fmt.Sprintf("erase the signatures on %s so it can be reused", dev.Path),
		Destructive: true, Destroys: p.describe(dev),
	}, &plan.Params{Wipe: &fs.Wipe{Device: dev.Path}}, nil)
	p.note("wipefs on %s removes signatures only: the old data stays readable in every block the new layout does not overwrite; erase the disk first (blkdiscard on SSDs, or a random fill) if it held plaintext", dev.Path)
	return true
}

func (p *planner) planDisks() {
	for i, d := range p.l.Disks {
		lp := fmt.Sprintf("$.disks[%d]", i)
		dev := p.device(d)
		if dev == nil {
			want := d.Device
			if o, ok := p.opt.Devices[d.Name]; ok {
				want = o
			}
			var known []string
			for _, x := range p.inv.Devices {
				if x.Kind == inventory.KindDisk || x.Kind == inventory.KindLoop {
					known = append(known, fmt.Sprintf("%s (%s)", x.Path, layout.FormatBytes(x.Size)))
				}
			}
			fix := "check the device path; the inventory has no disks"
			if len(known) > 0 {
				fix = "use one of: " + strings.Join(known, ", ")
			}
			p.rep.Errorf(lp+".device", fix, "device %s is not in the inventory", want)
			continue
		}
		p.devices[d.Name] = dev.Path
		if dev.ReadOnly {
			p.rep.Errorf(lp+".device", "use a writable device", "device %s is read-only", dev.Path)
			continue
		}
		switch dev.Kind {
		case inventory.KindDisk, inventory.KindLoop:
		case inventory.KindPart:
			if d.Table == "gpt" {
				p.rep.Errorf(lp+".table", "partition the disk itself, or use table: none on the partition", "%s is a partition; it cannot hold a partition table", dev.Path)
				continue
			}
		default:
			p.rep.Errorf(lp+".device", "name a disk or a partition", "%s is a %s device, not a disk", dev.Path, dev.Kind)
			continue
		}
		if d.Table == "none" {
			p.addPV(lp, dev.Path, dev.Size, d.VolumeGroup, false)
			continue
		}
		p.planGPT(lp, d, dev)
	}
}

func (p *planner) planGPT(lp string, d layout.Disk, dev *inventory.Device) {
	ss := int64(dev.LogicalSectorSize)
	if ss == 0 {
		ss = 512
	}
	limit := alignDown(dev.Size-ss-gptTailEntries, partAlign)
	cur := int64(partAlign)
	type want struct{ start, size int64 }
	var wants []want
	for j, part := range d.Partitions {
		pp := fmt.Sprintf("%s.partitions[%d].size", lp, j)
		var size int64
		if part.Size.Relative() {
			size = alignDown(int64(float64(limit-cur)*part.Size.Percent/100), partAlign)
		} else {
			size = alignUp(part.Size.Bytes, partAlign)
		}
		if size <= 0 || cur+size > limit {
			p.rep.Errorf(pp, "shrink the partitions or use a larger disk",
				"partition %s (%s) does not fit: %s of %s is left on %s", part.Name, part.Size.Raw,
				layout.FormatBytes(max(limit-cur, 0)), layout.FormatBytes(dev.Size), dev.Path)
			return
		}
		wants = append(wants, want{cur, size})
		cur += size
	}
	// Does the disk already carry exactly this table?
	match := dev.Table != nil && dev.Table.Type == "gpt" && len(dev.Table.Partitions) == len(wants)
	if match {
		for j, w := range wants {
			e := dev.Table.Partitions[j]
			if e.Number != j+1 || e.Start != w.start || e.Size != w.size || !strings.EqualFold(e.Type, partTypeGUID[d.Partitions[j].Type]) {
				match = false
				break
			}
		}
	}
	fresh := !match
	if fresh {
		if dev.Table != nil || p.content(dev) != nil {
			if !p.wipe(lp+".device", dev) {
				return
			}
		}
		// The new partitions may start where old ones did: with
		// WipePartitions their first and last MiB are cleared so no stale
		// signature shows through.
		pt := &plan.Partition{Device: dev.Path, TableUUID: p.ids.uuid("gpt", d.Name), WipePartitions: dev.Table != nil || p.content(dev) != nil}
		for j, part := range d.Partitions {
			pt.Partitions = append(pt.Partitions, gpt.Partition{Number: j + 1, Start: wants[j].start, Size: wants[j].size,
				Type: partTypeGUID[part.Type], Name: part.Name, UUID: p.ids.uuid("part", d.Name+"/"+part.Name)})
		}
		p.add(plan.Step{
			Action: plan.ActPartition, Target: dev.Path,
			Description: fmt.Sprintf("write a GPT with %s to %s", textfmt.Plural(len(d.Partitions), "partition", "partitions"), dev.Path),
		}, &plan.Params{Partition: pt},
			// The disk was blank (or wiped with consent): clearing the
			// primary and backup GPT puts it back.
			&plan.Params{Zero: &plan.Zero{Device: dev.Path, Head: mib, Tail: mib}})
	}
	children := p.inv.Children(dev.Path)
	for j, part := range d.Partitions {
		ps := &partState{
			layoutPath: fmt.Sprintf("%s.partitions[%d]", lp, j), disk: d, part: part, number: j + 1,
			device: PartitionPath(dev.Path, j+1), start: wants[j].start, size: wants[j].size, fresh: fresh,
		}
		if !fresh {
			for _, c := range children {
				if c.PartitionNumber == j+1 {
					ps.device = c.Path
					ps.content = p.content(&c)
				}
			}
		}
		if part.Type == layout.PartLVM {
			p.addPV(ps.layoutPath, ps.device, ps.size, part.VolumeGroup, fresh)
			continue
		}
		p.parts = append(p.parts, ps)
		p.planPartitionFS(ps)
	}
}

func (p *planner) planPartitionFS(ps *partState) {
	part := ps.part
	if part.Filesystem == "" {
		return
	}
	uuid := ""
	if ps.content != nil && ps.content.Type == part.Filesystem && isUUID(ps.content.UUID) {
		uuid = ps.content.UUID
	} else {
		if ps.content != nil {
			dev := p.inv.Device(ps.device)
			if dev == nil || !p.wipe(ps.layoutPath, dev) {
				return
			}
		}
		mk := &fs.Mkfs{FS: part.Filesystem, Device: ps.device, Label: part.Label}
		switch part.Filesystem {
		case fs.VFAT:
			mk.UUID = fatUUID(p.ids.volumeID(ps.disk.Name + "/" + part.Name))
			if mk.Label == "" {
				mk.Label = strings.ToUpper(part.Name)
			}
		default:
			mk.UUID = p.ids.uuid("fs", ps.disk.Name+"/"+part.Name)
		}
		uuid = mk.UUID
		// Unencrypted, right on the partition: rollback erases its
		// signature (a filesystem inside a LUKS volume goes with the
		// volume's header).
		p.add(plan.Step{
			Action: plan.ActMkfs, Target: ps.device,
			Description: fmt.Sprintf("create %s filesystem on %s (unencrypted: %s)", article(part.Filesystem), ps.device, part.Encryption.Reason),
		}, &plan.Params{Mkfs: mk}, &plan.Params{Wipe: &fs.Wipe{Device: ps.device}})
	}
	p.addMount(mountSpec{
		layoutPath: ps.layoutPath, device: ps.device, fsUUID: uuid, fstype: part.Filesystem,
		mount: part.Mount, options: partOptions(part),
	})
}

func partOptions(part layout.Partition) []string {
	if len(part.MountOptions) > 0 {
		return part.MountOptions
	}
	if part.Type == layout.PartESP {
		return []string{"umask=0077"} // the ESP holds boot loaders; keep it root-only
	}
	return nil
}

func (p *planner) addPV(lp, device string, size int64, vg string, fresh bool) {
	vs := p.vgState(vg)
	if vs == nil {
		return
	}
	pv := &pvState{device: device, layoutPath: lp, size: size, fresh: fresh}
	vs.pvs = append(vs.pvs, pv)
	if fresh {
		p.addPVCreate(device)
		return
	}
	if existing := p.inv.PV(device); existing != nil {
		if existing.VG == "" || existing.VG == vg {
			pv.existing = existing
			pv.size = existing.Size
			return
		}
	}
	dev := p.inv.Device(device)
	if dev != nil && (p.content(dev) != nil || dev.Table != nil) {
		if !p.wipe(lp, dev) {
			return
		}
	}
	p.addPVCreate(device)
}

func (p *planner) addPVCreate(device string) {
	p.add(plan.Step{
		Action: plan.ActPVCreate, Target: device,
		Description: fmt.Sprintf("make %s an LVM physical volume", device),
	}, &plan.Params{PVCreate: &lvm.PVCreate{Device: device}},
		// The label and metadata area live before pe_start (1 MiB).
		&plan.Params{Zero: &plan.Zero{Device: device, Head: peStart}})
}

func (p *planner) vgState(name string) *vgState {
	if vs, ok := p.vgs[name]; ok {
		return vs
	}
	for i, vg := range p.l.VolumeGroups {
		if vg.Name == name {
			vs := &vgState{layoutPath: fmt.Sprintf("$.volumeGroups[%d]", i), vg: vg, extentSize: vg.ExtentSize.Bytes}
			p.vgs[name] = vs
			return vs
		}
	}
	return nil
}

func (p *planner) planVGs() {
	for _, vg := range p.l.VolumeGroups {
		vs := p.vgState(vg.Name)
		existing := p.inv.VG(vg.Name)
		var newPVs []string
		if existing != nil {
			vs.existing = existing
			if existing.ExtentSize != vs.extentSize {
				p.rep.Warnf(vs.layoutPath+".extentSize", "set extentSize: "+layout.FormatBytes(existing.ExtentSize),
					"volume group %s exists with %s extents; the layout's %s cannot be applied", vg.Name,
					layout.FormatBytes(existing.ExtentSize), vg.ExtentSize.Raw)
				vs.extentSize = existing.ExtentSize
			}
			vs.totalExt, vs.freeExt = existing.ExtentCount, existing.FreeCount
			for _, pv := range vs.pvs {
				if pv.existing == nil || pv.existing.VG != vg.Name {
					newPVs = append(newPVs, pv.device)
					vs.totalExt += pvExtents(pv.size, vs.extentSize)
					vs.freeExt += pvExtents(pv.size, vs.extentSize)
				}
			}
			if len(newPVs) > 0 {
				p.add(plan.Step{
					Action: plan.ActVGExtend, Target: vg.Name,
					Description: fmt.Sprintf("add %s to volume group %s", strings.Join(newPVs, ", "), vg.Name),
				}, &plan.Params{VGExtend: &lvm.VGExtend{VG: vg.Name, PVs: newPVs}}, &plan.Params{VGReduce: &lvm.VGReduce{VG: vg.Name, PVs: newPVs}})
			}
			continue
		}
		vs.created = true
		for _, pv := range vs.pvs {
			newPVs = append(newPVs, pv.device)
			vs.totalExt += pvExtents(pv.size, vs.extentSize)
		}
		vs.freeExt = vs.totalExt
		if len(newPVs) == 0 {
			continue // reported by layout validation
		}
		p.add(plan.Step{
			Action: plan.ActVGCreate, Target: vg.Name,
			Description: fmt.Sprintf("create volume group %s on %s", vg.Name, strings.Join(newPVs, ", ")),
		}, &plan.Params{VGCreate: &lvm.VGCreate{VG: vg.Name, ExtentSize: vs.extentSize, PVs: newPVs}}, &plan.Params{VGRemove: &lvm.VGRemove{VG: vg.Name}})
	}
}

// pvExtents is how many extents LVM makes of a new PV of the given size:
// everything after pe_start, in whole extents.
func pvExtents(size, extent int64) int64 {
	if size <= peStart || extent <= 0 {
		return 0
	}
	return (size - peStart) / extent
}

// article prefixes a filesystem name with "a" or "an" as English wants it.
func article(fs string) string {
	if strings.ContainsRune("aeiouAEIOU", rune(fs[0])) {
		return "an " + fs
	}
	return "a " + fs
}
