package libvirt

import (
	"fmt"
	"sort"

	"libvirt.org/go/libvirtxml"
)

// Disk is one disk of a domain as its definition describes it.
type Disk struct {
	Target string // guest device name: vda, sdb
	Bus    string
	Device string // disk, cdrom, floppy, lun
	Type   string // file, block, volume, network, ...
	// Path is the image file or block device; for a volume disk it is empty
	// until ResolveVolumes fills it in from the pool.
	Path      string
	Pool      string // volume disks
	Volume    string // volume disks
	Format    string // driver type: raw, qcow2, ...
	ReadOnly  bool
	Shareable bool
	Encrypted string // encryption format already on the disk (luks), or ""
	// Skip says why cryptshift leaves this disk alone (a CD-ROM, a
	// read-only disk); Refuse says why it cannot migrate the domain at all
	// while this disk is attached. Both empty: the disk is migrated.
	Skip   string
	Refuse string
	// XML is the disk's element, kept to put it back on rollback.
	XML libvirtxml.DomainDisk
}

// Disks lists a domain's disks in definition order and classifies each:
// migrate, skip (with the reason printed to the user) or refuse.
func Disks(dom *libvirtxml.Domain) []Disk {
	if dom == nil || dom.Devices == nil {
		return nil
	}
	var out []Disk
	for _, x := range dom.Devices.Disks {
		d := Disk{Device: x.Device, XML: x}
		if d.Device == "" {
			d.Device = "disk"
		}
		if x.Target != nil {
			d.Target, d.Bus = x.Target.Dev, x.Target.Bus
		}
		if x.Driver != nil {
			d.Format = x.Driver.Type
		}
		d.ReadOnly = x.ReadOnly != nil
		d.Shareable = x.Shareable != nil
		if x.Encryption != nil {
			d.Encrypted = orDefault(x.Encryption.Format, "qcow")
		}
		if s := x.Source; s != nil {
			if s.Encryption != nil {
				d.Encrypted = orDefault(s.Encryption.Format, "qcow")
			}
			switch {
			case s.File != nil:
				d.Type, d.Path = "file", s.File.File
			case s.Block != nil:
				d.Type, d.Path = "block", s.Block.Dev
			case s.Volume != nil:
				d.Type, d.Pool, d.Volume = "volume", s.Volume.Pool, s.Volume.Volume
			case s.Network != nil:
				d.Type = "network"
			case s.Dir != nil:
				d.Type = "dir"
			case s.NVME != nil:
				d.Type = "nvme"
			default:
				d.Type = "other"
			}
		}
		classify(&d)
		out = append(out, d)
	}
	return out
}

func classify(d *Disk) {
	switch {
	case d.Device == "cdrom" || d.Device == "floppy":
		d.Skip = fmt.Sprintf("a %s holds removable, read-only media, not guest data", d.Device)
	case d.ReadOnly:
		d.Skip = "read-only: the guest cannot write mail to it; encrypt it separately if it holds sensitive data"
	case d.Type == "" || (d.Path == "" && d.Type != "volume" && d.Type != "network"):
		d.Skip = "no medium attached"
	case d.Shareable:
		d.Refuse = "it is shareable: other guests may write it at the same time, and a copy taken under one guest would lose their writes; detach it or migrate it by hand"
	case d.Device == "lun":
		d.Refuse = "it is a SCSI LUN passed through to the guest; its content is not an image cryptshift can copy"
	case d.Type == "network":
		d.Refuse = "it is a network disk (rbd, iscsi, nbd, ...); cryptshift copies local files, block devices and pool volumes only"
	case d.Type != "file" && d.Type != "block" && d.Type != "volume":
		d.Refuse = fmt.Sprintf("its source type %q is not supported; cryptshift copies local files, block devices and pool volumes only", d.Type)
	case d.Encrypted != "":
		d.Skip = fmt.Sprintf("already encrypted by qemu (%s)", d.Encrypted)
	case d.Format != "" && d.Format != "raw" && d.Format != "qcow2":
		d.Refuse = fmt.Sprintf("its format %q is not supported; convert it to raw or qcow2 first", d.Format)
	}
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// Migratable returns the disks to migrate, sorted by target name so plans
// are stable.
func Migratable(disks []Disk) []Disk {
	var out []Disk
	for _, d := range disks {
		if d.Skip == "" && d.Refuse == "" {
			out = append(out, d)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Target < out[j].Target })
	return out
}

// ResolveVolumes fills in the path (and, when the definition does not say,
// the format) of volume disks from their pools.
func (c *Conn) ResolveVolumes(disks []Disk) error {
	for i := range disks {
		d := &disks[i]
		if d.Type != "volume" || d.Skip != "" || d.Refuse != "" {
			continue
		}
		v, err := c.Volume(d.Pool, d.Volume)
		if err != nil {
			return fmt.Errorf("cannot resolve disk %s: %w", d.Target, err)
		}
		d.Path = v.Path
		if d.Format == "" {
			d.Format = v.Format
		}
	}
	return nil
}

// FindDisk returns the element of the disk with this target name.
func FindDisk(dom *libvirtxml.Domain, target string) *libvirtxml.DomainDisk {
	if dom == nil || dom.Devices == nil {
		return nil
	}
	for i := range dom.Devices.Disks {
		x := &dom.Devices.Disks[i]
		if x.Target != nil && x.Target.Dev == target {
			return x
		}
	}
	return nil
}

// SourcePath returns the file or block device a disk element points at.
func SourcePath(x *libvirtxml.DomainDisk) string {
	if x == nil || x.Source == nil {
		return ""
	}
	switch {
	case x.Source.File != nil:
		return x.Source.File.File
	case x.Source.Block != nil:
		return x.Source.Block.Dev
	}
	return ""
}

// Chain returns the paths of a disk element's backing chain as libvirt
// records it, top first (the live definition records the whole chain).
func Chain(x *libvirtxml.DomainDisk) []string {
	if x == nil {
		return nil
	}
	out := []string{SourcePath(x)}
	for b := x.BackingStore; b != nil && b.Source != nil; b = b.BackingStore {
		switch {
		case b.Source.File != nil:
			out = append(out, b.Source.File.File)
		case b.Source.Block != nil:
			out = append(out, b.Source.Block.Dev)
		default:
			return out
		}
	}
	return out
}
