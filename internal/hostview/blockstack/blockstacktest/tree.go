// Package blockstacktest writes sysfs/proc trees in the layout that
// `cryptshift capture` produces, so tests (and fixture generators) can
// describe a machine's block stack in a few lines instead of hand-made
// symlink farms:
//
//	t := blockstacktest.New(dir)
//	t.Disk("sda", "8:0", 20<<30)
//	t.Part("sda", 2, "8:2", 19<<30, 1<<30)
//	t.Crypt("dm-0", "253:0", "LUKS2", "sda2_crypt", 19<<30, "sda2")
//	t.LV("dm-1", "253:1", "vg0", "root", 10<<30, "dm-0")
//	t.Mount("/", "ext4", "/dev/mapper/vg0-root", "253:1", "rw,relatime")
//	err := t.Finish()
//
// Like the kernel's sysfs, /sys/class/block/NAME is a relative symlink to
// the device's directory under /sys/devices, a partition's directory sits in
// its disk's, and slaves/holders are relative symlinks.
package blockstacktest

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"github.com/cryptshift/cryptshift/internal/hostview/rootfs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
)

// Tree builds a root directory. Methods record the first error; Finish
// writes the accumulated mountinfo and swaps and returns it.
type Tree struct {
	Dir    string
	err    error
	real   map[string]string // device name -> its directory under /sys (absolute inside the tree)
	mounts []mountLine
	swaps  []string
	nextID int
}

type mountLine struct {
	id, parent                         int
	majmin, root, mp, opts, fs, source string
	super                              string
}

// New starts a tree in dir (created if missing).
func New(dir string) *Tree {
	return &Tree{Dir: dir, real: map[string]string{}, nextID: 21}
}

// Err returns the first error recorded.
func (t *Tree) Err() error { return t.err }

func (t *Tree) fail(err error) {
	if t.err == nil && err != nil {
		t.err = err
	}
}

func (t *Tree) host(p string) string {
	return filepath.Join(t.Dir, filepath.FromSlash(path.Clean("/"+p)))
}

// File writes a file (creating parent directories) with the given mode.
func (t *Tree) File(p, content string, mode os.FileMode) *Tree {
	h := t.host(p)
	t.fail(os.MkdirAll(filepath.Dir(h), 0o755))
	t.fail(os.WriteFile(h, []byte(content), mode))
	t.fail(os.Chmod(h, mode)) // WriteFile leaves an existing file's mode and applies umask
	return t
}

// Bytes writes a binary file.
func (t *Tree) Bytes(p string, content []byte, mode os.FileMode) *Tree {
	return t.File(p, string(content), mode)
}

// Mkdir creates a directory.
func (t *Tree) Mkdir(p string) *Tree {
	t.fail(os.MkdirAll(t.host(p), 0o755))
	return t
}

// Symlink creates a symlink at p pointing to target (verbatim).
func (t *Tree) Symlink(p, target string) *Tree {
	h := t.host(p)
	t.fail(os.MkdirAll(filepath.Dir(h), 0o755))
	_ = os.Remove(h)
	t.fail(os.Symlink(target, h))
	return t
}

// relLink makes a relative symlink at p (absolute inside the tree) pointing
// to the absolute in-tree path target, the way sysfs does.
func (t *Tree) relLink(p, target string) {
	rel, err := filepath.Rel(path.Dir(p), target)
	t.fail(err)
	t.Symlink(p, filepath.ToSlash(rel))
}

func (t *Tree) attr(dir, name, value string) {
	t.File(path.Join(dir, name), value+"\n", 0o444)
}

// device creates the directory of a block device and its class link.
func (t *Tree) device(name, dir, majmin string, size uint64) {
	if _, dup := t.real[name]; dup {
		t.fail(fmt.Errorf("device %s defined twice", name))
		return
	}
	t.real[name] = dir
	t.Mkdir(dir)
	t.attr(dir, "dev", majmin)
	t.attr(dir, "size", fmt.Sprint(size/512))
	t.attr(dir, "ro", "0")
	t.Mkdir(path.Join(dir, "holders"))
	t.relLink("/sys/class/block/"+name, dir)
}

func (t *Tree) queue(dir string, logical, physical int, rotational bool, discard uint64) {
	q := path.Join(dir, "queue")
	t.attr(q, "logical_block_size", fmt.Sprint(logical))
	t.attr(q, "physical_block_size", fmt.Sprint(physical))
	rot := "0"
	if rotational {
		rot = "1"
	}
	t.attr(q, "rotational", rot)
	t.attr(q, "discard_max_bytes", fmt.Sprint(discard))
}

// Disk adds a whole disk with 512-byte sectors that accepts discards.
func (t *Tree) Disk(name, majmin string, size uint64) *Tree {
	return t.DiskWith(name, majmin, size, 512, 4096, 2<<30)
}

// DiskWith adds a whole disk with the given sector sizes and
// discard_max_bytes (0: no discard support).
func (t *Tree) DiskWith(name, majmin string, size uint64, logical, physical int, discard uint64) *Tree {
	dir := "/sys/devices/pci0000:00/0000:00:01.0/block/" + name
	t.device(name, dir, majmin, size)
	t.queue(dir, logical, physical, false, discard)
	t.Mkdir(path.Join(dir, "slaves"))
	t.devNode(name)
	return t
}

// PartName returns the kernel's name of partition n of disk: a "p" goes
// between when the disk name ends in a digit (block/partitions/core.c).
func PartName(disk string, n int) string {
	if disk != "" && disk[len(disk)-1] >= '0' && disk[len(disk)-1] <= '9' {
		return fmt.Sprintf("%sp%d", disk, n)
	}
	return fmt.Sprintf("%s%d", disk, n)
}

// Part adds partition n of disk, start and size in bytes.
func (t *Tree) Part(disk string, n int, majmin string, size, start uint64) *Tree {
	dd, ok := t.real[disk]
	if !ok {
		t.fail(fmt.Errorf("partition of unknown disk %s", disk))
		return t
	}
	name := PartName(disk, n)
	dir := path.Join(dd, name)
	t.device(name, dir, majmin, size)
	t.attr(dir, "partition", fmt.Sprint(n))
	t.attr(dir, "start", fmt.Sprint(start/512))
	t.devNode(name)
	return t
}

func (t *Tree) virtual(name, majmin string, size uint64, slaves []string) string {
	dir := "/sys/devices/virtual/block/" + name
	t.device(name, dir, majmin, size)
	t.queue(dir, 512, 4096, false, 0)
	t.Mkdir(path.Join(dir, "slaves"))
	for _, s := range slaves {
		sd, ok := t.real[s]
		if !ok {
			t.fail(fmt.Errorf("%s: unknown slave %s", name, s))
			continue
		}
		t.relLink(path.Join(dir, "slaves", s), sd)
		t.relLink(path.Join(sd, "holders", name), dir)
	}
	t.devNode(name)
	return dir
}

// DM adds a device-mapper device with an explicit dm name and UUID.
func (t *Tree) DM(name, majmin, dmName, dmUUID string, size uint64, slaves ...string) *Tree {
	dir := t.virtual(name, majmin, size, slaves)
	t.attr(dir, "dm/name", dmName)
	t.attr(dir, "dm/uuid", dmUUID)
	t.attr(dir, "dm/suspended", "0")
	t.relLinkDev("/dev/mapper/"+dmName, name)
	return t
}

// CryptUUID derives a stable LUKS UUID for a test device name.
func CryptUUID(dmName string) string {
	h := hex.EncodeToString(sum(dmName))
	return h[0:8] + "-" + h[8:12] + "-4" + h[13:16] + "-8" + h[17:20] + "-" + h[20:32]
}

func sum(s string) []byte { b := sha256.Sum256([]byte(s)); return b[:16] }

// Crypt adds a dm-crypt node of cryptsetup type typ (LUKS1, LUKS2, PLAIN)
// named dmName on one slave, with the dm UUID cryptsetup would give it.
func (t *Tree) Crypt(name, majmin, typ, dmName string, size uint64, slave string) *Tree {
	uuid := "CRYPT-" + typ + "-" + dmName
	if typ == "LUKS1" || typ == "LUKS2" {
		uuid = "CRYPT-" + typ + "-" + strings.ReplaceAll(CryptUUID(dmName), "-", "") + "-" + dmName
	}
	return t.DM(name, majmin, dmName, uuid, size, slave)
}

// CryptDiscard adds a crypt node opened with allow_discards: dm-crypt then
// advertises discard support (discard_max_bytes > 0).
func (t *Tree) CryptDiscard(name, majmin, typ, dmName string, size uint64, slave string) *Tree {
	t.Crypt(name, majmin, typ, dmName, size, slave)
	t.attr(t.real[name], "queue/discard_max_bytes", fmt.Sprint(uint64(2<<30)))
	return t
}

// LVMUUID returns the dm UUID LVM gives an LV ("LVM-" + VG UUID + LV UUID,
// 32 characters each), derived from the names for tests.
func LVMUUID(vg, lv string) string {
	return "LVM-" + hex.EncodeToString(sum("vg:"+vg)) + hex.EncodeToString(sum("lv:"+vg+"/"+lv))
}

// DMName joins VG and LV names as device-mapper does (dashes doubled).
func DMName(vg, lv string) string {
	return strings.ReplaceAll(vg, "-", "--") + "-" + strings.ReplaceAll(lv, "-", "--")
}

// LV adds an LVM logical volume on the given PV devices, with /dev/VG/LV.
func (t *Tree) LV(name, majmin, vg, lv string, size uint64, pvs ...string) *Tree {
	t.DM(name, majmin, DMName(vg, lv), LVMUUID(vg, lv), size, pvs...)
	t.relLinkDev("/dev/"+vg+"/"+lv, name)
	return t
}

// LVRole adds an LVM-internal device (suffix "real", "cow", ...).
func (t *Tree) LVRole(name, majmin, vg, lv, role string, size uint64, pvs ...string) *Tree {
	return t.DM(name, majmin, DMName(vg, lv)+"-"+role, LVMUUID(vg, lv)+"-"+role, size, pvs...)
}

// Loop adds a bound loop device.
func (t *Tree) Loop(name, majmin, backing string, size uint64) *Tree {
	dir := t.virtual(name, majmin, size, nil)
	t.attr(dir, "loop/backing_file", backing)
	t.attr(dir, "loop/offset", "0")
	t.attr(dir, "loop/autoclear", "0")
	return t
}

// Zram adds a zram device; backingDev "" means no writeback.
func (t *Tree) Zram(name, majmin string, size uint64, backingDev string) *Tree {
	dir := t.virtual(name, majmin, size, nil)
	if backingDev == "" {
		backingDev = "none"
	}
	t.attr(dir, "backing_dev", backingDev)
	t.attr(dir, "comp_algorithm", "lzo-rle [zstd]")
	t.attr(dir, "disksize", fmt.Sprint(size))
	return t
}

func (t *Tree) devNode(name string) {
	// Device nodes cannot live in a fixture tree (git stores no device
	// files); capture records only symlinks under /dev. An empty regular
	// file marks that the node exists.
	t.File("/dev/"+name, "", 0o600)
}

func (t *Tree) relLinkDev(p, name string) {
	t.relLink(p, "/dev/"+name)
}

// DevLink adds a /dev symlink (/dev/disk/by-uuid/X -> ../../sda2).
func (t *Tree) DevLink(p, name string) *Tree {
	t.relLinkDev(p, name)
	return t
}

// Mount adds a mountinfo line for a filesystem mounted at mp. The parent is
// the mount with the longest prefix added before.
func (t *Tree) Mount(mp, fstype, source, majmin, super string) *Tree {
	return t.BindMount(mp, "/", fstype, source, majmin, super)
}

// BindMount adds a mount whose root inside the filesystem is root.
func (t *Tree) BindMount(mp, root, fstype, source, majmin, super string) *Tree {
	parent := 1
	best := -1
	for _, m := range t.mounts {
		if (m.mp == "/" || mp == m.mp || strings.HasPrefix(mp, m.mp+"/")) && len(m.mp) > best {
			parent, best = m.id, len(m.mp)
		}
	}
	if super == "" {
		super = "rw"
	}
	t.mounts = append(t.mounts, mountLine{id: t.nextID, parent: parent, majmin: majmin, root: root,
		mp: mp, opts: "rw,relatime", fs: fstype, source: source, super: super})
	t.nextID++
	t.Mkdir(mp)
	return t
}

// Swap adds a line to /proc/swaps; typ is "partition" or "file".
func (t *Tree) Swap(filename, typ string, sizeKiB uint64) *Tree {
	t.swaps = append(t.swaps, fmt.Sprintf("%-40s%s\t%d\t0\t-2", escape(filename), typ, sizeKiB))
	return t
}

// escape applies the kernel's mangle of " \t\n\\" as octal escapes.
func escape(s string) string {
	var b strings.Builder
	for _, r := range s {
		switch r {
		case ' ', '\t', '\n', '\\':
			fmt.Fprintf(&b, "\\%03o", r)
		default:
			b.WriteRune(r)
		}
	}
	return b.String()
}

// Finish writes /proc/self/mountinfo and /proc/swaps.
func (t *Tree) Finish() error {
	var mi strings.Builder
	for _, m := range t.mounts {
		fmt.Fprintf(&mi, "%d %d %s %s %s %s - %s %s %s\n", m.id, m.parent, m.majmin, escape(m.root),
			escape(m.mp), m.opts, m.fs, escape(m.source), m.super)
	}
	t.File("/proc/self/mountinfo", mi.String(), 0o444)
	sw := "Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n"
	for _, l := range t.swaps {
		sw += l + "\n"
	}
	t.File("/proc/swaps", sw, 0o444)
	t.fail(KeepEmptyDirs(t.Dir))
	return t.err
}

// KeepName and KeepEmptyDirs: see rootfs; a captured tree and a
// generated one keep empty directories the same way.
const KeepName = rootfs.KeepName

// KeepEmptyDirs puts a KeepName file into every empty directory under dir.
func KeepEmptyDirs(dir string) error { return rootfs.KeepEmptyDirs(dir) }

// Names returns the device names defined so far, sorted.
func (t *Tree) Names() []string {
	var out []string
	for n := range t.real {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}
