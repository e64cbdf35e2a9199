package verify

import (
	"path"
	"sort"
	"strings"

	"github.com/cryptshift/cryptshift/internal/hostview/blockstack"
	"github.com/cryptshift/cryptshift/internal/hostview/rootfs"
	"github.com/cryptshift/cryptshift/internal/hostview/sysconf"
)

// lvmBackupDir holds LVM's copy of each VG's metadata, rewritten by every
// LVM command that changes the VG (lvm.conf backup/backup_dir).
const lvmBackupDir = "/etc/lvm/backup"

// lvm.snapshot (inactive): a snapshot that is not active has no dm device,
// so sysfs does not show it, yet its blocks still hold the origin's old
// data. Thin snapshots are created with the activation-skip flag and are
// never active unless asked. LVM's metadata backup lists them all.
func checkLVMMetadata(e *env) {
	const id = "lvm.snapshot"
	ents, err := rootfs.ReadDir(e.fs, lvmBackupDir)
	if err != nil {
		if !e.absent(lvmBackupDir) {
			e.skip("lvm.metadata", lvmBackupDir, e.unreadable(lvmBackupDir, err))
		} else {
			e.na("lvm.metadata", lvmBackupDir, e.t("ev.absent", lvmBackupDir))
		}
		return
	}
	n := 0
	for _, ent := range ents {
		if !ent.Type().IsRegular() || strings.HasPrefix(ent.Name(), ".") {
			continue
		}
		f := path.Join(lvmBackupDir, ent.Name())
		e.inputs[f] = "lvm-metadata"
		b, err := rootfs.ReadFile(e.fs, f)
		if err != nil {
			e.skip("lvm.metadata", f, e.unreadable(f, err))
			continue
		}
		vg, err := sysconf.ParseLVMMetadata(string(b))
		if err != nil {
			e.skip("lvm.metadata", f, err.Error())
			continue
		}
		n++
		names := make([]string, 0, len(vg.LVs))
		for name := range vg.LVs {
			names = append(names, name)
		}
		sort.Strings(names)
		for _, name := range names {
			lv := vg.LVs[name]
			if !lv.Snapshot() {
				continue
			}
			shown := name
			if !lv.Visible { // classic: the hidden snapshotN LV; users know its exception store
				for _, r := range lv.Refs {
					if o := vg.LVs[r]; o != nil && o.Visible && r != lv.Origin {
						shown = r
					}
				}
			}
			if e.sys.DeviceByDMName(blockstack.DMName(vg.Name, shown)) != nil {
				continue // active: judged from sysfs above
			}
			subj := vg.Name + "/" + shown
			src := f + ": " + e.t("ev.lvm.inactivesnap", shown, lv.Origin, strings.Join(lv.Types, ","))
			st, ev := Pass, []string{src}
			for _, pv := range vg.PVsOf(name) {
				hint := vg.PVs[pv]
				d := e.sys.DeviceByPath(hint)
				if d == nil {
					st = worse(st, Warn)
					ev = append(ev, pv+" "+hint+": "+e.t("ev.nodevice"))
					continue
				}
				loc := e.sys.Classify(d)
				loc.Path = hint
				s, lev := e.statusOf(loc)
				st = worse(st, s)
				ev = append(ev, pv+" "+lev[0])
			}
			e.add(id, st, subj, ev...)
		}
	}
	e.na("lvm.metadata", lvmBackupDir, e.tn("ev.lvm.metadata", n))
}

func worse(a, b Status) Status {
	if b.rank() > a.rank() {
		return b
	}
	return a
}

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
