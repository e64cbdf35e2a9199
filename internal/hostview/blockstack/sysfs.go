// Package blockstack reads a Linux system's block device stack through a
// root (the live "/", or a tree captured by `cryptshift capture`): every
// block device from /sys/class/block with its kind, size, sector sizes,
// partitions, device-mapper name and UUID, loop backing file, zram writeback
// device, slaves and holders; the mounts from mountinfo and the active swap
// areas. Locate then answers, for any path, which device it lands on and
// whether that device is encrypted, RAM or plaintext, keeping the whole
// chain from the mount down to the disks as evidence.
//
// The same code reads a live system and a captured tree: all reads go
// through rootfs.FS, so a capture replays the host it came from.
package blockstack

import (
	"errors"
	"io/fs"
	"path"
	"sort"
	"strconv"
	"strings"

	"github.com/cryptshift/cryptshift/internal/hostview/rootfs"
)

// Kind is the kind of a block device.
type Kind string

// Device kinds, named after lsblk's TYPE column where one exists.
const (
	KindDisk Kind = "disk" // a whole disk (sd*, vd*, nvme*n*, ...)
	KindPart Kind = "part" // a partition of a disk
	KindDM   Kind = "dm"   // a device-mapper device (LVM LV, dm-crypt, ...)
	KindLoop Kind = "loop" // a loop device
	KindZram Kind = "zram" // a compressed RAM disk
	KindMD   Kind = "md"   // a software RAID array
	KindRAM  Kind = "ram"  // brd RAM disk (/dev/ramN)
)

// Device is one block device as sysfs describes it.
type Device struct {
	Name               string   `json:"name"`   // kernel name: sda1, dm-3, loop0
	MajMin             string   `json:"majMin"` // "253:3"
	Kind               Kind     `json:"kind"`
	Size               uint64   `json:"size"` // bytes
	LogicalSectorSize  int      `json:"logicalSectorSize,omitempty"`
	PhysicalSectorSize int      `json:"physicalSectorSize,omitempty"`
	ReadOnly           bool     `json:"readOnly,omitempty"`
	Rotational         bool     `json:"rotational,omitempty"`
	DiscardMaxBytes    uint64   `json:"discardMaxBytes,omitempty"` // >0: the device accepts discards
	Parent             string   `json:"parent,omitempty"`          // partitions: the disk they belong to
	Partition          int      `json:"partition,omitempty"`       // partitions: their number
	Start              uint64   `json:"start,omitempty"`           // partitions: offset on the disk, bytes
	Slaves             []string `json:"slaves,omitempty"`          // devices this one is built on
	Holders            []string `json:"holders,omitempty"`         // devices built on this one
	DMName             string   `json:"dmName,omitempty"`
	DMUUID             string   `json:"dmUUID,omitempty"`
	WWID               string   `json:"wwid,omitempty"`   // disks: the device's world-wide ID, see DiskIDs
	Serial             string   `json:"serial,omitempty"` // disks: the serial number the device reports
	LoopBackingFile    string   `json:"loopBackingFile,omitempty"`
	LoopOffset         uint64   `json:"loopOffset,omitempty"`
	LoopDeleted        bool     `json:"loopDeleted,omitempty"` // the backing file was unlinked
	ZramBackingDev     string   `json:"zramBackingDev,omitempty"`
	Mounts             []string `json:"mounts,omitempty"` // mount points, from mountinfo
	Swap               bool     `json:"swap,omitempty"`   // an active swap area
	// Cipher is a crypt node's cipher as the kernel runs it (dm table) or
	// its header or crypttab names it, with where that came from; "" when
	// unknown. See SetCipher.
	Cipher       string `json:"cipher,omitempty"`
	CipherSource string `json:"cipherSource,omitempty"`
}

// NullCipher reports whether a cipher spec is dm-crypt's cipher_null,
// which copies every sector as it is ("cipher_null-ecb", "capi:ecb(cipher_null)").
func NullCipher(spec string) bool {
	s := strings.ToLower(spec)
	return strings.Contains(s, "cipher_null") || s == "null" || strings.HasPrefix(s, "null-")
}

// Encrypts reports whether a crypt node really encrypts: its cipher is not
// cipher_null (an unknown cipher is taken to encrypt; the report says the
// cipher could not be read).
func (d *Device) Encrypts() bool { return d.CryptType() != "" && !NullCipher(d.Cipher) }

// SetCipher records the cipher of the crypt node named name (kernel name)
// and forgets earlier answers, which may have counted it as encrypting.
func (s *System) SetCipher(name, cipher, source string) {
	if d := s.byName[name]; d != nil {
		d.Cipher, d.CipherSource = cipher, source
		s.memo = nil
	}
}

// Lower returns the devices this one stores its data on: a partition's
// disk, or the slaves of a dm/md device.
func (d *Device) Lower() []string {
	if d.Kind == KindPart && d.Parent != "" {
		return []string{d.Parent}
	}
	return d.Slaves
}

// DMUUID prefixes (cryptsetup lib/libdevmapper.c dm_prepare_uuid writes
// "CRYPT-<TYPE>-<uuid without dashes>-<name>"; LVM writes "LVM-<vg><lv>").
const (
	prefixCrypt = "CRYPT-"
	prefixLVM   = "LVM-"
)

// cryptEncrypting lists the cryptsetup device types that encrypt data. VERITY
// (hash tree), INTEGRITY (checksums only) and SUBDEV (the integrity device
// under an authenticated LUKS2 volume) are dm devices created by cryptsetup
// that do not encrypt anything.
var cryptEncrypting = []string{"LUKS1", "LUKS2", "PLAIN", "LOOPAES", "TCRYPT", "BITLK", "FVAULT2"}

// CryptType returns the cryptsetup type of a dm-crypt node ("LUKS2",
// "PLAIN", ...) or "" when the device does not encrypt.
func (d *Device) CryptType() string {
	if d.Kind != KindDM || !strings.HasPrefix(d.DMUUID, prefixCrypt) {
		return ""
	}
	rest := strings.TrimPrefix(d.DMUUID, prefixCrypt)
	for _, t := range cryptEncrypting {
		if strings.HasPrefix(rest, t+"-") {
			return t
		}
	}
	return ""
}

// CryptUUID returns the LUKS UUID (without dashes, as in the dm UUID) of a
// LUKS crypt node, or "".
func (d *Device) CryptUUID() string {
	t := d.CryptType()
	if t != "LUKS1" && t != "LUKS2" {
		return ""
	}
	rest := strings.TrimPrefix(d.DMUUID, prefixCrypt+t+"-")
	u, _, _ := strings.Cut(rest, "-")
	return u
}

// IsLVM reports whether the device is an LVM logical volume (or one of
// its internal devices).
func (d *Device) IsLVM() bool { return d.Kind == KindDM && strings.HasPrefix(d.DMUUID, prefixLVM) }

// LVMRole returns "" for an ordinary LV, or LVM's dm UUID suffix for its
// internal devices: "cow" (snapshot exception store), "real" (origin under
// snapshots), "pool", "tdata", "tmeta", ... (lib/activate/dev_manager.c).
func (d *Device) LVMRole() string {
	if !d.IsLVM() {
		return ""
	}
	// "LVM-" + 32 chars VG UUID + 32 chars LV UUID, then "-suffix".
	rest := strings.TrimPrefix(d.DMUUID, prefixLVM)
	if len(rest) > 64 && rest[64] == '-' {
		return rest[65:]
	}
	return ""
}

// System is everything blockstack read from one root.
type System struct {
	Devices []*Device `json:"devices"` // sorted by name
	Mounts  []Mount   `json:"mounts"`
	Swaps   []Swap    `json:"swaps"`
	// Missing names the sources that could not be read (e.g.
	// "/proc/swaps: file does not exist"); checks depending on them SKIP.
	Missing []string `json:"missing,omitempty"`

	fs       rootfs.FS
	memo     map[string]*classified // Classify's answers per device
	byName   map[string]*Device
	byMajMin map[string]*Device
	byDMName map[string]*Device
}

// FS returns the root the system was read from.
func (s *System) FS() rootfs.FS { return s.fs }

// Device returns the device with the kernel name, or nil.
func (s *System) Device(name string) *Device { return s.byName[name] }

// DeviceByMajMin returns the device with "MAJOR:MINOR", or nil.
func (s *System) DeviceByMajMin(mm string) *Device { return s.byMajMin[mm] }

// DeviceByDMName returns the device-mapper device with that name, or nil.
func (s *System) DeviceByDMName(name string) *Device { return s.byDMName[name] }

// HaveSysfs reports whether /sys/class/block was readable.
func (s *System) HaveSysfs() bool { return !s.missing("/sys/class/block") }

// HaveMounts reports whether a mountinfo file was readable.
func (s *System) HaveMounts() bool { return !s.missing("mountinfo") }

// HaveSwaps reports whether /proc/swaps was readable.
func (s *System) HaveSwaps() bool { return !s.missing("/proc/swaps") }

// HostTreeGaps names what the tree lacks of every Linux host: a mount
// table with "/", the swap table and the block devices under /sys. A tree
// with gaps is not a host tree (a mistyped --root, a half copy): no
// verdict on it can rest on evidence. Empty means it is one.
func (s *System) HostTreeGaps() []string {
	var gaps []string
	if !s.HaveMounts() {
		gaps = append(gaps, "proc/self/mountinfo")
	} else if m := s.MountFor("/"); m == nil || m.MountPoint != "/" {
		gaps = append(gaps, "a mount on / in proc/self/mountinfo")
	}
	if !s.HaveSwaps() {
		gaps = append(gaps, "proc/swaps")
	}
	if !s.HaveSysfs() {
		gaps = append(gaps, "sys/class/block")
	}
	return gaps
}

func (s *System) missing(what string) bool {
	for _, m := range s.Missing {
		if strings.Contains(m, what) {
			return true
		}
	}
	return false
}

// Scan reads the block devices, mounts and swaps of the system under root.
// Sources that are absent are listed in Missing rather than failing, so a
// partial capture still yields every answer it can.
func Scan(root rootfs.FS) (*System, error) {
	s := &System{fs: root}
	if err := s.scanSysfs(); err != nil {
		return nil, err
	}
	s.scanMounts()
	s.scanSwaps()
	s.index()
	for _, m := range s.Mounts {
		if d := s.byMajMin[m.MajMin()]; d != nil {
			d.Mounts = appendUnique(d.Mounts, m.MountPoint)
		}
	}
	for _, sw := range s.Swaps {
		if d := s.DeviceByPath(sw.Filename); d != nil && sw.Type == "partition" {
			d.Swap = true
		}
	}
	return s, nil
}

const classBlock = "/sys/class/block"

func (s *System) scanSysfs() error {
	entries, err := rootfs.ReadDir(s.fs, classBlock)
	if err != nil {
		s.Missing = append(s.Missing, classBlock+": "+errText(err))
		return nil
	}
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".") {
			continue
		}
		d, err := s.readDevice(e.Name())
		if err != nil {
			s.Missing = append(s.Missing, path.Join(classBlock, e.Name())+": "+errText(err))
			continue
		}
		s.Devices = append(s.Devices, d)
	}
	sort.Slice(s.Devices, func(i, j int) bool { return s.Devices[i].Name < s.Devices[j].Name })
	return nil
}

func errText(err error) string {
	if errors.Is(err, fs.ErrNotExist) {
		return "file does not exist"
	}
	return err.Error()
}

func (s *System) readDevice(name string) (*Device, error) {
	dir, err := rootfs.Resolve(s.fs, path.Join(classBlock, name))
	if err != nil {
		return nil, err
	}
	read := func(rel string) string {
		b, err := rootfs.ReadFile(s.fs, path.Join(dir, rel))
		if err != nil {
			return ""
		}
		return strings.TrimSpace(string(b))
	}
	d := &Device{Name: name, MajMin: read("dev")}
	if d.MajMin == "" {
		return nil, errors.New("no dev attribute")
	}
	// /sys/block/*/size is always in 512-byte units (block/genhd.c), whatever the logical sector size.
	d.Size = atou(read("size")) * 512
	d.ReadOnly = read("ro") == "1"
	if p := read("partition"); p != "" {
		d.Kind = KindPart
		d.Partition = int(atou(p))
		d.Start = atou(read("start")) * 512
		// A partition's sysfs directory sits inside its disk's.
		d.Parent = path.Base(path.Dir(dir))
	}
	if v := read("dm/name"); v != "" || strings.HasPrefix(name, "dm-") {
		d.Kind = KindDM
		d.DMName = v
		d.DMUUID = read("dm/uuid")
	}
	switch {
	case d.Kind != "":
	case strings.HasPrefix(name, "loop"):
		d.Kind = KindLoop
	case strings.HasPrefix(name, "zram"):
		d.Kind = KindZram
	case strings.HasPrefix(name, "md"):
		d.Kind = KindMD
	case strings.HasPrefix(name, "ram"):
		d.Kind = KindRAM
	default:
		d.Kind = KindDisk
	}
	if d.Kind == KindDisk {
		d.WWID, d.Serial = DiskIDs(read)
	}
	if d.Kind == KindLoop {
		// The kernel appends " (deleted)" when the backing file was unlinked (d_path).
		bf := read("loop/backing_file")
		if strings.HasSuffix(bf, " (deleted)") {
			bf = strings.TrimSuffix(bf, " (deleted)")
			d.LoopDeleted = true
		}
		d.LoopBackingFile = bf
		d.LoopOffset = atou(read("loop/offset"))
	}
	if d.Kind == KindZram {
		// backing_dev reads "none" when writeback is not configured
		// (drivers/block/zram/zram_drv.c backing_dev_show).
		if b := read("backing_dev"); b != "" && b != "none" {
			d.ZramBackingDev = b
		}
	}
	qdir := "queue"
	if d.Kind == KindPart {
		qdir = "../queue" // partitions have no queue of their own
	}
	d.LogicalSectorSize = int(atou(read(qdir + "/logical_block_size")))
	d.PhysicalSectorSize = int(atou(read(qdir + "/physical_block_size")))
	d.Rotational = read(qdir+"/rotational") == "1"
	d.DiscardMaxBytes = atou(read(qdir + "/discard_max_bytes"))
	d.Slaves = s.listDir(path.Join(dir, "slaves"))
	d.Holders = s.listDir(path.Join(dir, "holders"))
	return d, nil
}

// DiskIDs reads a disk's WWID and serial number through read, which
// returns the trimmed content of an attribute relative to the disk's
// /sys/class/block directory ("" when absent). SCSI and SATA disks put
// them under device/ (scsi_sysfs.c wwid, vpd pages); NVMe namespaces and
// virtio disks carry them on the disk itself (nvme "wwid", virtio_blk
// "serial"). "" means unknown, never "no such disk".
func DiskIDs(read func(rel string) string) (wwid, serial string) {
	wwid = read("device/wwid")
	if wwid == "" {
		wwid = read("wwid")
	}
	serial = read("device/serial")
	if serial == "" {
		serial = read("serial")
	}
	return wwid, serial
}

func (s *System) listDir(p string) []string {
	ents, err := rootfs.ReadDir(s.fs, p)
	if err != nil {
		return nil
	}
	var out []string
	for _, e := range ents {
		// Kernel device names never start with "."; captured trees keep
		// empty directories alive with a ".keep" file.
		if !strings.HasPrefix(e.Name(), ".") {
			out = append(out, e.Name())
		}
	}
	sort.Strings(out)
	return out
}

func atou(s string) uint64 {
	v, _ := strconv.ParseUint(strings.TrimSpace(s), 10, 64)
	return v
}

// Mountinfo sources, best first. Mount points in /proc/PID/mountinfo are
// relative to that process's root (proc(5)), so this process's own view is
// the one that matches the paths verify resolves, also in a chroot (a
// rescue system, the VM test tier), where PID 1's view would name every
// mount from outside the chroot. PID 1 is the fallback for trees that
// only hold its file.
var mountinfoPaths = []string{"/proc/self/mountinfo", "/proc/1/mountinfo"}

func (s *System) scanMounts() {
	for _, p := range mountinfoPaths {
		b, err := rootfs.ReadFile(s.fs, p)
		if err != nil {
			continue
		}
		ms, err := ParseMountInfo(strings.NewReader(string(b)))
		if err != nil {
			s.Missing = append(s.Missing, p+" (mountinfo): "+err.Error())
			return
		}
		s.Mounts = ms
		return
	}
	s.Missing = append(s.Missing, "/proc/self/mountinfo (mountinfo): file does not exist")
}

func (s *System) scanSwaps() {
	b, err := rootfs.ReadFile(s.fs, "/proc/swaps")
	if err != nil {
		s.Missing = append(s.Missing, "/proc/swaps: "+errText(err))
		return
	}
	sw, err := ParseSwaps(strings.NewReader(string(b)))
	if err != nil {
		s.Missing = append(s.Missing, "/proc/swaps: "+err.Error())
		return
	}
	s.Swaps = sw
}

func (s *System) index() {
	s.byName = map[string]*Device{}
	s.byMajMin = map[string]*Device{}
	s.byDMName = map[string]*Device{}
	for _, d := range s.Devices {
		s.byName[d.Name] = d
		s.byMajMin[d.MajMin] = d
		if d.DMName != "" {
			s.byDMName[d.DMName] = d
		}
	}
}

func appendUnique(list []string, v string) []string {
	for _, x := range list {
		if x == v {
			return list
		}
	}
	return append(list, v)
}

// DMName joins VG and LV names as device-mapper does (LVM
// lib/misc/lvm-string.c build_dm_name doubles each dash).
func DMName(vg, lv string) string {
	return strings.ReplaceAll(vg, "-", "--") + "-" + strings.ReplaceAll(lv, "-", "--")
}

// DeviceByPath finds the device a /dev path names: /dev/sda1, /dev/dm-3,
// /dev/mapper/NAME, /dev/VG/LV, or any symlink under /dev that the root
// holds (/dev/disk/by-uuid/..., which `capture` records).
func (s *System) DeviceByPath(p string) *Device {
	if p == "" {
		return nil
	}
	if r, err := rootfs.Resolve(s.fs, p); err == nil {
		p = r
	}
	if !strings.HasPrefix(p, "/dev/") {
		return nil
	}
	rest := strings.TrimPrefix(p, "/dev/")
	if d := s.byName[rest]; d != nil {
		return d
	}
	if name, ok := strings.CutPrefix(rest, "mapper/"); ok {
		return s.byDMName[name]
	}
	// /dev/VG/LV: device-mapper names double each dash in VG and LV names
	// and join them with one dash (LVM lib/misc/lvm-string.c build_dm_name).
	if vg, lv, ok := strings.Cut(rest, "/"); ok && !strings.Contains(lv, "/") {
		return s.byDMName[strings.ReplaceAll(vg, "-", "--")+"-"+strings.ReplaceAll(lv, "-", "--")]
	}
	return nil
}
