package verify

import (
	"bytes"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"sort"
	"strings"
	"syscall"

	diskfs "github.com/diskfs/go-diskfs"
	"github.com/diskfs/go-diskfs/disk"
	"github.com/diskfs/go-diskfs/filesystem"
	"github.com/diskfs/go-diskfs/partition/gpt"

	"github.com/cryptshift/cryptshift/internal/hostview/blockstack"
	"github.com/cryptshift/cryptshift/internal/hostview/rootfs"
	"github.com/cryptshift/cryptshift/internal/hostview/sysconf"
	"github.com/cryptshift/cryptshift/luks"
)

// guestImage is a guest's raw disk image read offline: its partitions, the
// filesystems fstab mounts from them (read with go-diskfs), and an offline
// answer to "where does this path land" built from fstab and crypttab.
type guestImage struct {
	path  string
	f     *os.File
	disk  *disk.Disk
	parts []imagePart
	root  *imagePart
	// mounts maps fstab mount points of readable partitions to their
	// filesystem; "/" is the root filesystem verify found etc/fstab on.
	mounts   map[string]filesystem.FileSystem
	fstab    []sysconf.FstabEntry
	crypttab []sysconf.CrypttabEntry
	lang     string // evidence language
}

func (g *guestImage) t(key string, args ...any) string { return tr(g.lang, key, args...) }

func (g *guestImage) line(file string, n int) string { return g.t("ev.line", file, n) }

// imagePart is one partition (or the whole disk when it has no table).
type imagePart struct {
	Index    int    // 1-based; 0 for an unpartitioned disk
	Start    int64  // bytes
	Size     int64  // bytes
	Sig      string // sysconf.ProbeSignature
	UUID     string // filesystem, swap or LUKS UUID
	Label    string
	PartUUID string
	fs       filesystem.FileSystem
}

func (p *imagePart) name() string {
	if p.Index == 0 {
		return "whole disk"
	}
	return fmt.Sprintf("partition %d", p.Index)
}

func (p *imagePart) describe() string {
	s := p.name()
	if p.Sig != "" {
		s += " (" + p.Sig
		if p.UUID != "" {
			s += " " + p.UUID
		}
		s += ")"
	}
	return s
}

// guard turns a panic inside go-diskfs (which parses partition tables and
// ext4 structures of an image that may come from a compromised guest) into
// an error.
func guard(what string, err *error) {
	if r := recover(); r != nil {
		*err = fmt.Errorf("cannot read %s: malformed image (the parser gave up: %v)", what, r)
	}
}

// openImage reads the partition table, probes every partition and finds
// the root filesystem (the ext4 one holding etc/fstab).
func openImage(p string) (g *guestImage, err error) {
	f, err := os.OpenFile(p, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, fmt.Errorf("cannot read image %s: %w", p, err)
	}
	if fi, err := f.Stat(); err != nil || !(fi.Mode().IsRegular() || fi.Mode()&fs.ModeDevice != 0 && fi.Mode()&fs.ModeCharDevice == 0) {
		f.Close()
		return nil, fmt.Errorf("cannot read image %s: not a regular file or block device", p)
	}
	defer func() {
		if err != nil {
			f.Close()
		}
	}()
	defer guard("image "+p, &err)
	head := make([]byte, 8)
	if n, _ := f.ReadAt(head, 0); n >= 4 && bytes.HasPrefix(head, sysconf.QCOW2Magic) {
		return nil, fmt.Errorf("cannot read image %s: it is qcow2; convert it first (qemu-img convert -O raw) or verify it on its host", p)
	}
	d, err := diskfs.Open(p, diskfs.WithOpenMode(diskfs.ReadOnly))
	if err != nil {
		return nil, fmt.Errorf("cannot read image %s: %w", p, err)
	}
	g = &guestImage{path: p, f: f, disk: d, mounts: map[string]filesystem.FileSystem{}}
	if t, err := d.GetPartitionTable(); err == nil {
		for _, pt := range t.GetPartitions() {
			if pt.GetSize() <= 0 {
				continue
			}
			ip := imagePart{Index: pt.GetIndex(), Start: pt.GetStart(), Size: pt.GetSize()}
			if gp, ok := pt.(*gpt.Partition); ok {
				ip.PartUUID = strings.ToLower(gp.GUID)
			} else {
				ip.PartUUID = strings.ToLower(pt.UUID())
			}
			g.parts = append(g.parts, ip)
		}
	} else {
		g.parts = append(g.parts, imagePart{Index: 0, Start: 0, Size: d.Size})
	}
	for i := range g.parts {
		g.probe(&g.parts[i])
	}
	for i := range g.parts {
		ip := &g.parts[i]
		if ip.Sig != "ext4" {
			continue
		}
		fsys, err := d.GetFilesystem(ip.Index)
		if err != nil {
			continue
		}
		ip.fs = fsys
		if _, err := fsys.Stat("etc/fstab"); err == nil && g.root == nil {
			g.root = ip
		}
	}
	if g.root == nil {
		g.mounts = nil
		return g, nil // nothing readable: only the partition check runs
	}
	g.mounts["/"] = g.root.fs
	if b, err := g.root.fs.ReadFile("etc/fstab"); err == nil {
		g.fstab, _ = sysconf.ParseFstab(bytes.NewReader(b))
	}
	if b, err := g.root.fs.ReadFile("etc/crypttab"); err == nil {
		g.crypttab, _ = sysconf.ParseCrypttab(bytes.NewReader(b))
	}
	// Mount the other plaintext filesystems fstab names, so /boot, /var ...
	// read as the guest would see them.
	for _, e := range g.fstab {
		if !strings.HasPrefix(e.File, "/") || e.File == "/" {
			continue
		}
		if ip := g.partForSpec(e.Spec); ip != nil && ip.fs != nil {
			g.mounts[path.Clean(e.File)] = ip.fs
		}
	}
	return g, nil
}

// probe reads a partition's signature and identifiers.
func (g *guestImage) probe(ip *imagePart) {
	r := io.NewSectionReader(g.f, ip.Start, ip.Size)
	ip.Sig = sysconf.ProbeSignature(r)
	b := make([]byte, 4096)
	n, _ := r.ReadAt(b, 0)
	b = b[:n]
	switch ip.Sig {
	case "ext4":
		// ext4 superblock at 1024: s_uuid at 0x68, s_volume_name at 0x78.
		if len(b) >= 1024+0x88 {
			ip.UUID = uuidString(b[1024+0x68 : 1024+0x78])
			ip.Label = strings.TrimRight(string(b[1024+0x78:1024+0x88]), "\x00")
		}
	case "swap":
		// mkswap's header: 1024 boot bytes, version, last_page, nr_badpages, uuid[16], volume_name[16].
		if len(b) >= 1024+44 {
			ip.UUID = uuidString(b[1024+12 : 1024+28])
			ip.Label = strings.TrimRight(string(b[1024+28:1024+44]), "\x00")
		}
	case "luks":
		if h, err := luks.Parse(r); err == nil {
			ip.UUID = h.UUID
			ip.Label = h.Label
		}
	}
}

func uuidString(b []byte) string {
	h := fmt.Sprintf("%x", b)
	if len(h) != 32 || strings.Trim(h, "0") == "" {
		return ""
	}
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}

// Close releases the image.
func (g *guestImage) Close() error {
	if g.disk != nil {
		g.disk.Close()
	}
	return g.f.Close()
}

// partForSpec finds the partition an fstab/crypttab device spec names.
func (g *guestImage) partForSpec(spec string) *imagePart {
	spec = strings.Trim(spec, `"`)
	for i := range g.parts {
		p := &g.parts[i]
		switch {
		case strings.HasPrefix(spec, "UUID="):
			if p.UUID != "" && strings.EqualFold(p.UUID, strings.TrimPrefix(spec, "UUID=")) {
				return p
			}
		case strings.HasPrefix(spec, "PARTUUID="):
			if p.PartUUID != "" && strings.EqualFold(p.PartUUID, strings.TrimPrefix(spec, "PARTUUID=")) {
				return p
			}
		case strings.HasPrefix(spec, "LABEL="):
			if p.Label != "" && p.Label == strings.TrimPrefix(spec, "LABEL=") {
				return p
			}
		case strings.HasPrefix(spec, "/dev/disk/by-uuid/"):
			if p.UUID != "" && strings.EqualFold(p.UUID, path.Base(spec)) {
				return p
			}
		case strings.HasPrefix(spec, "/dev/disk/by-partuuid/"):
			if p.PartUUID != "" && strings.EqualFold(p.PartUUID, path.Base(spec)) {
				return p
			}
		case strings.HasPrefix(spec, "/dev/"):
			// /dev/vda2, /dev/sda2, /dev/nvme0n1p2: the trailing number is
			// the partition of the guest's (only) disk.
			base := path.Base(spec)
			j := len(base)
			for j > 0 && base[j-1] >= '0' && base[j-1] <= '9' {
				j--
			}
			if j < len(base) && j > 0 && !strings.HasPrefix(base, "dm-") && !strings.HasPrefix(spec, "/dev/mapper/") && fmt.Sprint(p.Index) == base[j:] {
				return p
			}
		}
	}
	return nil
}

// fsFor returns the filesystem holding the absolute path name and the path
// inside it (go-diskfs wants paths without a leading "/").
func (g *guestImage) fsFor(name string) (filesystem.FileSystem, string, error) {
	if g.mounts == nil {
		return nil, "", fs.ErrNotExist
	}
	name = rootfs.Clean(name)
	best := ""
	for mp := range g.mounts {
		if (mp == "/" || name == mp || strings.HasPrefix(name, mp+"/")) && len(mp) > len(best) {
			best = mp
		}
	}
	rel := strings.TrimPrefix(strings.TrimPrefix(name, best), "/")
	if rel == "" {
		rel = "."
	}
	return g.mounts[best], rel, nil
}

// Lstat implements rootfs.FS.
func (g *guestImage) Lstat(name string) (fi fs.FileInfo, err error) {
	defer guard(name+" in the image", &err)
	f, rel, err := g.fsFor(name)
	if err != nil {
		return nil, err
	}
	if rel == "." {
		return f.Stat(".")
	}
	fi, err = f.Stat(rel)
	if err != nil {
		return nil, &fs.PathError{Op: "lstat", Path: name, Err: fs.ErrNotExist}
	}
	return fi, nil
}

// Readlink implements rootfs.FS.
func (g *guestImage) Readlink(name string) (_ string, err error) {
	defer guard(name+" in the image", &err)
	f, rel, err := g.fsFor(name)
	if err != nil {
		return "", err
	}
	type readlinker interface{ ReadLink(string) (string, error) }
	if rl, ok := f.(readlinker); ok {
		return rl.ReadLink(rel)
	}
	return "", fs.ErrInvalid
}

// ReadDir implements rootfs.FS.
func (g *guestImage) ReadDir(name string) (_ []fs.DirEntry, err error) {
	defer guard(name+" in the image", &err)
	f, rel, err := g.fsFor(name)
	if err != nil {
		return nil, err
	}
	ents, err := f.ReadDir(rel)
	if err != nil {
		return nil, &fs.PathError{Op: "readdir", Path: name, Err: fs.ErrNotExist}
	}
	out := ents[:0]
	for _, e := range ents {
		if e.Name() != "." && e.Name() != ".." {
			out = append(out, e)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name() < out[j].Name() })
	return out, nil
}

// maxImageFile bounds what is read from a guest filesystem into memory
// (an initramfs is the largest file verify reads).
const maxImageFile = 256 << 20

type memFile struct{ *bytes.Reader }

func (memFile) Close() error { return nil }

// Open implements rootfs.FS; go-diskfs files have no ReadAt, so the file is
// read into memory.
func (g *guestImage) Open(name string) (_ rootfs.File, err error) {
	defer guard(name+" in the image", &err)
	f, rel, err := g.fsFor(name)
	if err != nil {
		return nil, err
	}
	if fi, err := f.Stat(rel); err == nil && !fi.Mode().IsRegular() && !fi.IsDir() {
		return nil, &fs.PathError{Op: "open", Path: name, Err: rootfs.ErrNotRegular}
	}
	h, err := f.Open(rel)
	if err != nil {
		return nil, &fs.PathError{Op: "open", Path: name, Err: fs.ErrNotExist}
	}
	defer h.Close()
	b, err := io.ReadAll(io.LimitReader(h, maxImageFile+1))
	if err != nil {
		return nil, err
	}
	if len(b) > maxImageFile {
		return nil, fmt.Errorf("cannot read %s from the image: larger than %d bytes", name, maxImageFile)
	}
	return memFile{bytes.NewReader(b)}, nil
}

// Locate answers where a path of the guest lands, from fstab.
func (g *guestImage) Locate(p string) blockstack.Location {
	loc := blockstack.Location{Path: p}
	r, err := rootfs.Resolve(g, p)
	if err != nil {
		loc.Resolved, loc.Class, loc.Evidence = p, blockstack.Unknown, err.Error()
		return loc
	}
	loc.Resolved = r
	var best *sysconf.FstabEntry
	for i := range g.fstab {
		e := &g.fstab[i]
		mp := path.Clean(e.File)
		if !strings.HasPrefix(e.File, "/") || e.VFSType == "swap" {
			continue
		}
		if (mp == "/" || r == mp || strings.HasPrefix(r, mp+"/")) && (best == nil || len(mp) >= len(path.Clean(best.File))) {
			best = e
		}
	}
	// systemd mounts tmpfs on /run and /dev/shm at every boot (API file
	// systems, not listed in fstab).
	for _, api := range []string{"/run", "/dev/shm"} {
		if r == api || strings.HasPrefix(r, api+"/") {
			loc.Class, loc.Evidence = blockstack.RAM, api+": tmpfs (systemd API filesystem)"
			return loc
		}
	}
	if (best == nil || best.File == "/") && (r == "/tmp" || strings.HasPrefix(r, "/tmp/")) && g.tmpMount() {
		loc.Class, loc.Evidence = blockstack.RAM, "systemd tmp.mount (tmpfs)"
		return loc
	}
	if best == nil && g.root == nil {
		loc.Class, loc.Evidence = blockstack.Unknown, g.t("ev.image.noroot")
		return loc
	}
	if best == nil {
		loc.Class = blockstack.Plaintext
		loc.Evidence = "/ (no fstab entry) → image " + g.root.describe()
		loc.Plain = []string{g.root.name()}
		return loc
	}
	head := g.line("fstab", best.Line) + fmt.Sprintf(": %s %s %s", best.Spec, best.File, best.VFSType)
	if ramFSType(best.VFSType) {
		loc.Class, loc.Evidence = blockstack.RAM, head
		return loc
	}
	if blockstack.IsNetworkFS(best.VFSType) {
		loc.Class, loc.Evidence = blockstack.Unknown, head
		return loc
	}
	inner := g.LocateSpec(best.Spec)
	inner.Path, inner.Resolved = p, r
	inner.Evidence = head + " → " + inner.Evidence
	return inner
}

// tmpMount reports whether systemd mounts a tmpfs on /tmp: tmp.mount
// enabled in local-fs.target.wants and not masked (Debian 13's default).
func (g *guestImage) tmpMount() bool {
	if t, err := g.Readlink("/etc/systemd/system/tmp.mount"); err == nil && t == "/dev/null" {
		return false
	}
	for _, p := range []string{"/etc/systemd/system/local-fs.target.wants/tmp.mount", "/usr/lib/systemd/system/local-fs.target.wants/tmp.mount", "/lib/systemd/system/local-fs.target.wants/tmp.mount"} {
		if _, err := g.Lstat(p); err == nil {
			return true
		}
	}
	return false
}

// LocateSpec classifies a device spec of the guest.
func (g *guestImage) LocateSpec(spec string) blockstack.Location {
	loc := blockstack.Location{Path: spec}
	name := ""
	switch {
	case strings.HasPrefix(spec, "/dev/mapper/"):
		name = strings.TrimPrefix(spec, "/dev/mapper/")
	case strings.HasPrefix(spec, "/dev/dm-"):
		loc.Class, loc.Evidence = blockstack.Unknown, spec+": "+g.t("ev.image.dmname")
		return loc
	}
	if name != "" {
		for _, c := range g.crypttab {
			if c.Name != name {
				continue
			}
			ev := g.line("crypttab", c.Line) + fmt.Sprintf(": %s %s", c.Name, c.Device)
			if ip := g.partForSpec(c.Device); ip != nil {
				ev += " → image " + ip.describe()
			}
			if c.RandomKey() {
				ev += " (" + g.t("ev.image.randomkey") + ")"
			}
			loc.Class, loc.Crypt, loc.Evidence = blockstack.Encrypted, []string{name}, ev
			return loc
		}
	}
	if name != "" || (strings.HasPrefix(spec, "/dev/") && strings.Count(spec, "/") == 3) {
		// An LVM volume (/dev/mapper/VG-LV or /dev/VG/LV) not in crypttab.
		for i := range g.parts {
			if g.parts[i].Sig == "LVM2_member" {
				loc.Class, loc.Plain = blockstack.Plaintext, []string{g.parts[i].name()}
				loc.Evidence = spec + ": " + g.t("ev.image.lvmplain", g.parts[i].describe())
				return loc
			}
		}
		loc.Class, loc.Evidence = blockstack.Unknown, spec+": "+g.t("ev.image.lvmhidden")
		return loc
	}
	if ip := g.partForSpec(spec); ip != nil {
		if ip.Sig == "luks" {
			loc.Class, loc.Evidence = blockstack.Encrypted, spec+" → image "+ip.describe()
			return loc
		}
		loc.Class, loc.Plain, loc.Evidence = blockstack.Plaintext, []string{ip.name()}, spec+" → image "+ip.describe()
		return loc
	}
	loc.Class, loc.Evidence = blockstack.Unknown, spec+": "+g.t("ev.image.notfound")
	return loc
}

// checkImagePartitions describes every partition of a guest image.
func checkImagePartitions(e *env) {
	const id = "image.partitions"
	g := e.image
	if g.root == nil {
		for i := range g.parts {
			ip := &g.parts[i]
			st := Warn
			if ip.Sig == "luks" {
				st = Pass
			}
			e.add(id, st, ip.name(), ip.describe(), e.t("ev.image.noroot"))
		}
		if len(g.parts) == 0 {
			e.skip(id, g.path, e.t("ev.image.noroot"))
		}
		return
	}
	used := map[int]string{}
	for _, f := range g.fstab {
		if ip := g.partForSpec(f.Spec); ip != nil {
			used[ip.Index] = f.File
		}
	}
	for _, c := range g.crypttab {
		if ip := g.partForSpec(c.Device); ip != nil {
			used[ip.Index] = "crypttab " + c.Name
		}
	}
	for i := range g.parts {
		ip := &g.parts[i]
		ev := []string{ip.describe()}
		if u, ok := used[ip.Index]; ok {
			ev = append(ev, "used as "+u)
		}
		switch {
		case ip.Sig == "luks":
			e.add(id, Pass, ip.name(), ev...)
		case used[ip.Index] == "/boot" || used[ip.Index] == "/boot/efi" || ip.Sig == "":
			e.add(id, Pass, ip.name(), append(ev, e.t("ev.image.boot"))...)
		default:
			e.add(id, Warn, ip.name(), append(ev, e.t("ev.image.plain"))...)
		}
	}
}
