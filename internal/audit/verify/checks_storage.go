package verify

import (
	"fmt"
	"io/fs"
	"path"
	"sort"
	"strings"

	"github.com/cryptshift/cryptshift/internal/hostview/blockstack"
	"github.com/cryptshift/cryptshift/internal/hostview/rootfs"
	"github.com/cryptshift/cryptshift/internal/hostview/sysconf"
)

// bootMounts are the plaintext mounts a LUKS layout keeps by design: the
// firmware reads the ESP and GRUB reads /boot before anything is unlocked.
var bootMounts = map[string]bool{"/boot": true, "/boot/efi": true, "/efi": true}

// pseudoFS have no storage of their own (or only the kernel's): they are
// not places where data rests.
var pseudoFS = map[string]bool{
	"proc": true, "sysfs": true, "cgroup": true, "cgroup2": true, "devpts": true, "mqueue": true, "debugfs": true,
	"tracefs": true, "securityfs": true, "pstore": true, "bpf": true, "configfs": true, "fusectl": true,
	"autofs": true, "binfmt_misc": true, "efivarfs": true, "nsfs": true, "rpc_pipefs": true, "selinuxfs": true,
}

// dataMount reports whether a mount stores files somewhere: on a block
// device, a disk-backed filesystem without one (btrfs, zfs), an overlay,
// a FUSE filesystem or a network share.
func dataMount(m blockstack.Mount) bool {
	switch {
	case pseudoFS[m.FSType], ramFSType(m.FSType), m.FSType == "devtmpfs", m.FSType == "hugetlbfs", m.FSType == "rootfs":
		return false
	case m.Major != 0, m.FSType == "btrfs", m.FSType == "zfs", m.FSType == "bcachefs", m.FSType == "overlay":
		return true
	}
	return strings.HasPrefix(m.FSType, "fuse.") || blockstack.IsNetworkFS(m.FSType)
}

// storage.mount: every mounted filesystem that stores data, judged by the
// storage under it: any program may write there.
func checkMounts(e *env) {
	const id = "storage.mount"
	n := 0
	for i := range e.sys.Mounts {
		m := &e.sys.Mounts[i]
		if !dataMount(*m) {
			continue
		}
		if top := e.sys.MountFor(m.MountPoint); top == nil || top.ID != m.ID {
			continue // hidden by a later mount on the same point
		}
		n++
		loc := e.locate(m.MountPoint)
		st, ev := e.statusOf(loc)
		if loc.Class != blockstack.Plaintext {
			e.add(id, st, m.MountPoint, ev...)
			continue
		}
		switch {
		case bootMounts[m.MountPoint]:
			keys, searched := e.keyMaterialUnder(m.MountPoint)
			if len(keys) > 0 {
				e.addKind(id, "storage.mount.fix.bootkeys", Fail, FindingKeys, m.MountPoint,
					append(ev, e.t("ev.storage.bootkeys", strings.Join(keys, ", ")))...)
				continue
			}
			e.add(id, Pass, m.MountPoint, append(ev, e.tn("ev.storage.boot", searched))...)
		case readOnly(m.Options):
			e.addKind(id, "storage.mount.fix", Warn, FindingPlaintext, m.MountPoint, append(ev, e.t("ev.storage.ro"))...)
		default:
			e.add(id, Fail, m.MountPoint, ev...)
		}
	}
	if n == 0 {
		e.add(id, Warn, "mountinfo", e.t("ev.storage.nomounts"))
	}
}

func readOnly(opts string) bool {
	for _, o := range strings.Split(opts, ",") {
		if o == "ro" {
			return true
		}
	}
	return false
}

// Bounds on the search for key material under /boot: a real /boot holds a
// few hundred files (ESP: a few dozen); a hostile tree cannot make verify
// walk more than this.
const (
	maxBootDepth   = 4
	maxBootEntries = 20000
)

// keyMaterialUnder lists key files under dir: crypttab key files that
// resolve there and files named like keys (*.key, *.keyfile, *.lek,
// cryptsetup-initramfs' keyfiles); it returns them and how many files it
// looked at.
func (e *env) keyMaterialUnder(dir string) ([]string, int) {
	var found []string
	named := map[string]bool{}
	for _, c := range e.crypttab {
		if c.KeyFile == "" || c.RandomKey() || c.KeyDevice != "" {
			continue
		}
		if r, err := rootfs.Resolve(e.fs, c.KeyFile); err == nil && (r == dir || strings.HasPrefix(r, dir+"/")) && e.exists(r) {
			found = append(found, c.KeyFile+" (crypttab "+c.Name+")")
			named[r] = true
		}
	}
	searched := 0
	var walk func(p string, depth int)
	walk = func(p string, depth int) {
		ents, err := rootfs.ReadDir(e.fs, p)
		if err != nil {
			return
		}
		for _, ent := range ents {
			if searched >= maxBootEntries {
				return
			}
			q := path.Join(p, ent.Name())
			switch {
			case ent.IsDir():
				if depth < maxBootDepth && !bootMounts[q] {
					walk(q, depth+1)
				}
			case ent.Type()&fs.ModeSymlink != 0:
			default:
				searched++
				if !named[q] && sysconf.IsKeyFileMember(strings.TrimPrefix(q, "/")) || strings.Contains(strings.ToLower(ent.Name()), "keyfile") {
					found = append(found, q)
				}
			}
		}
	}
	walk(dir, 0)
	sort.Strings(found)
	return dedup(found), searched
}

// storage.leftover: a disk, partition or RAID array that nothing uses (no
// mount, swap, holder, partition or guest) but that holds a plaintext
// filesystem, swap area or LVM physical volume: typically the old system
// disk after the host moved onto encrypted disks. Its data is readable by
// anyone who takes the disk. LVs are judged by lvm.leftover.
func checkDiskLeftovers(e *env) {
	const id = "storage.leftover"
	guest := e.guestBlockDevices()
	n := 0
	for _, d := range e.sys.Devices {
		if d.Kind != blockstack.KindDisk && d.Kind != blockstack.KindPart && d.Kind != blockstack.KindMD {
			continue
		}
		if d.Size == 0 || d.ReadOnly || len(d.Holders) > 0 || len(d.Mounts) > 0 || d.Swap || guest[d.Name] || len(e.sys.Uppers(d)) > 0 {
			continue
		}
		loc := e.sys.Classify(d)
		if loc.Class != blockstack.Plaintext {
			continue
		}
		n++
		loc.Path = "/dev/" + d.Name
		ev := []string{e.where(loc)}
		sig, known := e.signature(d)
		switch {
		case !known:
			e.add(id, Warn, loc.Path, append(ev, e.t("ev.lvm.nosig"))...)
		case sig == "luks":
			e.add(id, Pass, loc.Path, append(ev, e.t("ev.lvm.closedluks"))...)
		case sig == "" || sig == "partition-table":
			e.add(id, Pass, loc.Path, append(ev, e.t("ev.storage.nosig"))...)
		default:
			e.addKind(id, "storage.leftover.fix", Fail, FindingLeftover, loc.Path, append(ev, e.t("ev.storage.leftover", sig))...)
		}
	}
	if n == 0 {
		e.add(id, Pass, e.t("subj.disks"), e.t("ev.storage.noleftovers"))
	}
}

// guestBlockDevices names the devices libvirt guests use as disks.
func (e *env) guestBlockDevices() map[string]bool {
	guest := map[string]bool{}
	doms, _ := e.readDomains()
	for _, d := range doms {
		for _, g := range d.Disks {
			for _, l := range append([]layer{g.Source}, g.Chain...) {
				if l.Kind == "block" {
					if dev := e.sys.DeviceByPath(l.Path); dev != nil {
						guest[dev.Name] = true
						for _, low := range dev.Lower() {
							guest[low] = true
						}
					}
				}
			}
		}
	}
	return guest
}

var _ = fmt.Sprint
