package verify

import (
	"sort"

	"github.com/cryptshift/cryptshift/internal/hostview/blockstack"
	"github.com/cryptshift/cryptshift/internal/hostview/rootfs"
	"github.com/cryptshift/cryptshift/internal/hostview/sysconf"
)

func init() { register(true, checkLVMSnapshots, checkLVMLeftovers) }

// lvm.snapshot: a classic LVM snapshot's exception store (the "-cow"
// device) keeps the origin's old blocks; for a plaintext origin it is one
// more plaintext copy, and it survives migrating the origin.
func checkLVMSnapshots(e *env) {
	const id = "lvm.snapshot"
	n := 0
	for _, d := range e.sys.Devices {
		if !d.IsLVM() || d.LVMRole() != "" {
			continue
		}
		if !e.isSnapshot(d) {
			continue
		}
		n++
		loc := e.sys.Classify(d)
		loc.Path = "/dev/mapper/" + d.DMName
		st, ev := e.statusOf(loc)
		e.add(id, st, d.DMName, ev...)
	}
	if n == 0 {
		e.na(id, "LVM", e.t("ev.lvm.nosnapshots"))
	}
}

// lvm.leftover: an active plaintext LV that nothing uses (no mount, swap,
// holder or guest) may be the plaintext original of a migrated disk.
// Inactive LVs have no device-mapper device and are invisible in sysfs.
func checkLVMLeftovers(e *env) {
	const id = "lvm.leftover"
	if !e.sys.HaveSysfs() {
		e.skip(id, "LVM", e.t("ev.nosysfs"))
		return
	}
	guest := e.guestBlockDevices()
	// A loop device's backing file is not a holder in sysfs; neither is a
	// guest. Everything else that uses an LV shows up as mount, swap or holder.
	var cands []*blockstack.Device
	for _, d := range e.sys.Devices {
		if !d.IsLVM() || d.LVMRole() != "" || len(d.Holders) > 0 || len(d.Mounts) > 0 || d.Swap || guest[d.Name] || e.isSnapshot(d) {
			continue
		}
		cands = append(cands, d)
	}
	sort.Slice(cands, func(i, j int) bool { return cands[i].DMName < cands[j].DMName })
	n := 0
	for _, d := range cands {
		loc := e.sys.Classify(d)
		if loc.Class != blockstack.Plaintext {
			continue
		}
		n++
		loc.Path = "/dev/mapper/" + d.DMName
		sig, known := e.signature(d)
		ev := []string{e.where(loc)}
		switch {
		case !known:
			ev = append(ev, e.t("ev.lvm.nosig"))
			e.add(id, Warn, d.DMName, ev...)
		case sig == "luks":
			e.add(id, Pass, d.DMName, append(ev, e.t("ev.lvm.closedluks"))...)
		case sig == "" || sig == "partition-table":
			e.add(id, Warn, d.DMName, append(ev, e.t("ev.lvm.sig", orDash(sig)))...)
		default:
			// A plaintext filesystem, swap area or PV that nothing uses: an
			// old copy, readable by anyone with the disk.
			e.addKind(id, "storage.leftover.fix", Fail, FindingLeftover, d.DMName, append(ev, e.t("ev.storage.leftover", sig))...)
		}
	}
	if n == 0 {
		e.add(id, Pass, "LVM", e.t("ev.lvm.noleftovers"))
	}
}

// signature reads what a device starts with: from the capture manifest,
// or from the device node on a live root.
func (e *env) signature(d *blockstack.Device) (string, bool) {
	if e.manifest != nil {
		s, ok := e.manifest.Signatures[d.Name]
		return s, ok
	}
	f, err := rootfs.OpenDevice(e.fs, "/dev/"+d.Name)
	if err != nil {
		return "", false
	}
	defer f.Close()
	return sysconf.ProbeSignature(f), true
}

// isSnapshot reports whether an LV is a classic snapshot: one of its
// slaves is an exception store ("-cow").
func (e *env) isSnapshot(d *blockstack.Device) bool {
	for _, s := range d.Slaves {
		if sd := e.sys.Device(s); sd != nil && sd.LVMRole() == "cow" {
			return true
		}
	}
	return false
}
