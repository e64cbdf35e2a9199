package verify

import (
	"bytes"
	"encoding/xml"
	"path"
	"sort"
	"strings"

	"libvirt.org/go/libvirtxml"

	"github.com/cryptshift/cryptshift/internal/hostview/rootfs"
	"github.com/cryptshift/cryptshift/internal/hostview/sysconf"
	"github.com/cryptshift/cryptshift/luks"
)

// guestDisk is one disk of one libvirt domain.
type guestDisk struct {
	Domain string
	Target string
	Source layer   // the top image or device
	Chain  []layer // backing layers below the top, from the live XML or qcow2 headers
}

// layer is one image or device in a disk's chain.
type layer struct {
	Kind      string // file, block, network, volume
	Path      string // file or device path; pool/volume for volumes
	Format    string // raw, qcow2, luks (from XML or header)
	Encrypted string // why qemu itself encrypts it ("" if not)
	Note      string // e.g. "data file of ..."
}

// domainInfo is what verify needs from a domain definition.
type domainInfo struct {
	Name     string
	File     string
	Disks    []guestDisk
	DumpCore string // <memory dumpCore=...>
	FileRAM  bool   // <memoryBacking><source type='file'/>
}

// readDomains reads persistent definitions (/etc/libvirt/qemu/*.xml) and
// the running state (/run/libvirt/qemu/*.xml, a <domstatus> wrapping the
// live <domain>, which includes the backing chain qemu really uses).
// The running state wins for a domain that has both.
func (e *env) readDomains() ([]domainInfo, []string) {
	byName := map[string]domainInfo{}
	var problems []string
	for _, dir := range []string{"/etc/libvirt/qemu", "/run/libvirt/qemu"} {
		ents, err := rootfs.ReadDir(e.fs, dir)
		if err != nil {
			continue
		}
		for _, ent := range ents {
			if ent.IsDir() || !strings.HasSuffix(ent.Name(), ".xml") {
				continue
			}
			p := path.Join(dir, ent.Name())
			b, err := rootfs.ReadFile(e.fs, p)
			if err != nil {
				problems = append(problems, e.t("ev.unreadable", p, err))
				continue
			}
			doc := string(b)
			if strings.Contains(doc, "<domstatus") {
				var st struct {
					Inner struct {
						XML string `xml:",innerxml"`
					} `xml:"domain"`
				}
				if err := xml.Unmarshal(b, &st); err != nil {
					problems = append(problems, e.t("ev.unreadable", p, err))
					continue
				}
				doc = "<domain type='kvm'>" + st.Inner.XML + "</domain>"
			}
			var d libvirtxml.Domain
			if err := d.Unmarshal(doc); err != nil {
				problems = append(problems, e.t("ev.unreadable", p, err))
				continue
			}
			byName[d.Name] = e.domainInfo(&d, p)
		}
	}
	names := make([]string, 0, len(byName))
	for n := range byName {
		names = append(names, n)
	}
	sort.Strings(names)
	out := make([]domainInfo, len(names))
	for i, n := range names {
		out[i] = byName[n]
	}
	return out, problems
}

func (e *env) domainInfo(d *libvirtxml.Domain, file string) domainInfo {
	di := domainInfo{Name: d.Name, File: file}
	if d.Memory != nil {
		di.DumpCore = d.Memory.DumpCore
	}
	if d.MemoryBacking != nil && d.MemoryBacking.MemorySource != nil && d.MemoryBacking.MemorySource.Type == "file" {
		di.FileRAM = true
	}
	if d.Devices == nil {
		return di
	}
	for _, dk := range d.Devices.Disks {
		// CD-ROMs and floppies carry installation media, not guest data.
		if dk.Device == "cdrom" || dk.Device == "floppy" || dk.Source == nil {
			continue
		}
		g := guestDisk{Domain: d.Name}
		if dk.Target != nil {
			g.Target = dk.Target.Dev
		}
		format := ""
		if dk.Driver != nil {
			format = dk.Driver.Type
		}
		g.Source = e.sourceLayer(dk.Source, format)
		if g.Source.Encrypted == "" && dk.Encryption != nil && dk.Encryption.Format != "" { // pre-5.x placement
			g.Source.Encrypted = "<encryption format='" + dk.Encryption.Format + "'>"
		}
		// The chain ends with an empty <backingStore/> (formatdomain: "an
		// empty element means no backing image").
		for bs := dk.BackingStore; bs != nil && bs.Source != nil; bs = bs.BackingStore {
			f := ""
			if bs.Format != nil {
				f = bs.Format.Type
			}
			l := e.sourceLayer(bs.Source, f)
			if l.Kind == "other" {
				break
			}
			g.Chain = append(g.Chain, l)
		}
		if dk.Source.DataStore != nil && dk.Source.DataStore.Source != nil {
			l := e.sourceLayer(dk.Source.DataStore.Source, "raw")
			l.Note = "data-file"
			g.Chain = append(g.Chain, l)
		}
		if len(g.Chain) == 0 {
			g.Chain = e.headerChain(g.Source)
		}
		di.Disks = append(di.Disks, g)
	}
	return di
}

func (e *env) sourceLayer(s *libvirtxml.DomainDiskSource, format string) layer {
	l := layer{Format: format}
	switch {
	case s.File != nil:
		l.Kind, l.Path = "file", s.File.File
	case s.Block != nil:
		l.Kind, l.Path = "block", s.Block.Dev
	case s.Volume != nil:
		l.Kind, l.Path = "volume", s.Volume.Pool+"/"+s.Volume.Volume
		if p := e.poolPath(s.Volume.Pool); p != "" {
			l.Kind, l.Path = "file", path.Join(p, s.Volume.Volume)
		}
	case s.Network != nil:
		l.Kind, l.Path = "network", s.Network.Protocol+"://"+s.Network.Name
	default:
		l.Kind = "other"
	}
	if s.Encryption != nil && s.Encryption.Format != "" {
		l.Encrypted = "<encryption format='" + s.Encryption.Format + "'>"
	}
	return l
}

// maxChain bounds backing chains read from headers (qemu has no limit;
// a loop in a broken chain must not hang verify).
const maxChain = 64

// headerChain follows qcow2 backing-file names (relative names resolve
// against the directory of the image that names them, as qemu does). A
// chain that comes back to an image already in it (qemu refuses to open
// it) or is longer than maxChain ends there, with a "problem" layer
// saying so.
func (e *env) headerChain(top layer) []layer {
	var out []layer
	cur := top
	seen := map[string]bool{}
	for i := 0; cur.Kind == "file"; i++ {
		r := e.resolved(cur.Path)
		if seen[r] {
			return append(out, layer{Kind: "problem", Path: cur.Path, Note: e.t("ev.libvirt.chainloop", cur.Path)})
		}
		seen[r] = true
		if i == maxChain {
			return append(out, layer{Kind: "problem", Path: cur.Path, Note: e.t("ev.libvirt.chainlong", maxChain)})
		}
		img := e.probeImage(cur.Path)
		if img.qcow == nil {
			break
		}
		if img.qcow.DataFile != "" {
			out = append(out, layer{Kind: "file", Path: resolveBacking(cur.Path, img.qcow.DataFile), Format: "raw", Note: "data-file"})
		}
		if img.qcow.BackingFile == "" {
			break
		}
		next := layer{Kind: "file", Path: resolveBacking(cur.Path, img.qcow.BackingFile), Format: img.qcow.BackingFormat}
		if strings.HasPrefix(img.qcow.BackingFile, "/dev/") {
			next.Kind = "block"
		}
		out = append(out, next)
		cur = next
	}
	return out
}

// resolveBacking names the backing file the way qemu opens it
// (block.c bdrv_get_full_backing_filename, path_combine): an absolute name
// or a protocol URL as it is, a relative one appended to the image's
// directory as written, without cleaning "..": the kernel then follows
// symlinks before "..", which Resolve does too.
func resolveBacking(image, name string) string {
	if strings.HasPrefix(name, "/") || strings.Contains(name, "://") {
		return name
	}
	return image[:strings.LastIndexByte(image, '/')+1] + name
}

// resolved is where a path really leads inside the root (for comparing
// the files guests use with the files in pools).
func (e *env) resolved(p string) string {
	if r, err := rootfs.Resolve(e.fs, p); err == nil {
		return r
	}
	return rootfs.Clean(p)
}

// imageInfo is what the first bytes of an image file say.
type imageInfo struct {
	exists bool
	format string // qcow2, luks, raw
	size   int64
	qcow   *sysconf.QCOW2
	err    error
}

// probeImage reads an image's header through the root. In a captured tree
// the file holds only its first bytes; the manifest gives the real size.
func (e *env) probeImage(p string) imageInfo {
	r, err := rootfs.Resolve(e.fs, p)
	if err != nil {
		return imageInfo{err: err}
	}
	fi, err := e.fs.Lstat(r)
	if err != nil {
		return imageInfo{err: err}
	}
	info := imageInfo{exists: true, size: fi.Size(), format: "raw"}
	if e.manifest != nil {
		if f, ok := e.manifest.Files[r]; ok {
			info.size = f.Size
		}
	}
	if !fi.Mode().IsRegular() {
		info.format = "device"
		return info
	}
	fh, err := e.fs.Open(r)
	if err != nil {
		info.err = err
		return info
	}
	defer fh.Close()
	head := make([]byte, 8)
	n, _ := fh.ReadAt(head, 0)
	head = head[:n]
	switch {
	case bytes.HasPrefix(head, sysconf.QCOW2Magic):
		info.format = "qcow2"
		q, err := sysconf.ParseQCOW2(fh)
		if err != nil {
			info.err = err
		}
		info.qcow = q
	case luks.IsLUKS(head):
		info.format = "luks"
	}
	return info
}

// poolPath returns the target directory of a storage pool, or "".
func (e *env) poolPath(name string) string {
	for _, p := range e.pools() {
		if p.Name == name {
			return p.Path
		}
	}
	return ""
}

type pool struct {
	Name, Type, Path, File string
	VG                     string // logical pools
}

// defaultPoolPath is where virt-install and virt-manager put images when
// no pool is defined (libvirt's "default" pool).
const defaultPoolPath = "/var/lib/libvirt/images"

// pools reads /etc/libvirt/storage/*.xml; the default image directory is
// always included because tools write there even without a pool.
func (e *env) pools() []pool {
	var out []pool
	seenDefault := false
	if ents, err := rootfs.ReadDir(e.fs, "/etc/libvirt/storage"); err == nil {
		for _, ent := range ents {
			if !strings.HasSuffix(ent.Name(), ".xml") {
				continue
			}
			p := path.Join("/etc/libvirt/storage", ent.Name())
			b, err := rootfs.ReadFile(e.fs, p)
			if err != nil {
				continue
			}
			var sp libvirtxml.StoragePool
			if err := sp.Unmarshal(string(b)); err != nil {
				continue
			}
			pl := pool{Name: sp.Name, Type: sp.Type, File: p}
			if sp.Target != nil {
				pl.Path = path.Clean(sp.Target.Path)
			}
			if sp.Type == "logical" && sp.Source != nil && sp.Source.Name != "" {
				pl.VG = sp.Source.Name
			}
			if pl.Path == defaultPoolPath {
				seenDefault = true
			}
			out = append(out, pl)
		}
	}
	if !seenDefault {
		out = append(out, pool{Name: "(default)", Type: "dir", Path: defaultPoolPath})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Path < out[j].Path })
	return out
}
