package blockstack

import (
	"fmt"
	"path"
	"sort"
	"strings"

	"github.com/cryptshift/cryptshift/internal/hostview/rootfs"
)

// Class says how data written to a place is stored.
type Class string

// Classes, from best to worst.
const (
	Encrypted Class = "encrypted" // every path down to the disks passes a crypt node
	RAM       Class = "ram"       // memory only (tmpfs, ramfs, zram): safe unless swapped to plaintext
	Unknown   Class = "unknown"   // cannot tell (network filesystem, missing evidence)
	Plaintext Class = "plaintext" // at least one path reaches a disk without a crypt node
)

func rank(c Class) int {
	switch c {
	case Encrypted:
		return 0
	case RAM:
		return 1
	case Unknown:
		return 2
	default:
		return 3
	}
}

// Worst returns the worse of two classes.
func Worst(a, b Class) Class {
	if rank(b) > rank(a) {
		return b
	}
	return a
}

// Node is one device in a storage chain, with the devices it is built on.
type Node struct {
	Device *Device `json:"-"`
	Label  string  `json:"label"` // e.g. "vg0-root (dm-2, LVM)"
	Class  Class   `json:"class"`
	Note   string  `json:"note,omitempty"`
	Lower  []*Node `json:"lower,omitempty"`
}

// String renders the chain top-down: "a → b → c", branches in brackets.
// A device reached twice (a shared lower device in a diamond of stacks)
// is spelled out once and then named "(see above)", so the text grows with
// the number of devices, not the number of paths.
func (n *Node) String() string {
	return n.render(map[*Node]bool{})
}

func (n *Node) render(seen map[*Node]bool) string {
	if n == nil {
		return ""
	}
	s := n.Label
	if n.Note != "" {
		s += " " + n.Note
	}
	if len(n.Lower) > 0 && seen[n] {
		return s + " (see above)"
	}
	seen[n] = true
	switch len(n.Lower) {
	case 0:
		return s
	case 1:
		return s + " → " + n.Lower[0].render(seen)
	}
	parts := make([]string, len(n.Lower))
	for i, l := range n.Lower {
		parts[i] = l.render(seen)
	}
	return s + " → [" + strings.Join(parts, " | ") + "]"
}

// Location answers where data written to a path is stored.
type Location struct {
	Path     string   `json:"path"`               // as asked
	Resolved string   `json:"resolved"`           // after symlinks inside the root
	Mount    *Mount   `json:"mount,omitempty"`    // the mount that holds it
	Class    Class    `json:"class"`              // the verdict
	Reason   string   `json:"reason"`             // one line: why this class
	Crypt    []string `json:"crypt,omitempty"`    // crypt nodes protecting it (kernel names)
	Chain    *Node    `json:"chain,omitempty"`    // the device stack below the mount
	Plain    []string `json:"plain,omitempty"`    // plaintext devices reached (kernel names)
	Hops     []string `json:"hops,omitempty"`     // files followed (loop backing files, overlay upper dirs)
	Device   *Device  `json:"-"`                  // the top device, nil for tmpfs and friends
	Evidence string   `json:"evidence,omitempty"` // rendered chain
}

// ramFS are filesystems that keep their data in memory only; their pages
// can still be swapped out (tmpfs) which is why RAM is not Encrypted.
// rootfs is the initramfs' ramfs/tmpfs, visible as "/" in a chroot or a
// system that never pivoted.
var ramFS = map[string]bool{"tmpfs": true, "ramfs": true, "devtmpfs": true, "hugetlbfs": true, "rootfs": true}

// networkFS store data on another machine; encryption at rest is that
// machine's business and cannot be seen from here.
var networkFS = map[string]bool{
	"nfs": true, "nfs4": true, "cifs": true, "smb3": true, "9p": true, "virtiofs": true,
	"ceph": true, "glusterfs": true, "fuse.sshfs": true, "fuse.glusterfs": true, "afs": true,
}

// passthroughFUSE are FUSE filesystems that store each file unchanged in
// the source directories mountinfo names (bindfs passes its source as
// fsname; mergerfs, mhddfs and unionfs-fuse join branches with ":").
var passthroughFUSE = map[string]bool{
	"fuse.bindfs": true, "fuse.mergerfs": true, "fuse.mhddfs": true, "fuse.unionfs": true, "fuse.unionfs-fuse": true,
	"fuse.rofs": true, "fuse.ciopfs": true, "fuse.disorderfs": true,
}

// IsNetworkFS reports whether a filesystem type stores data on another
// machine.
func IsNetworkFS(fstype string) bool { return networkFS[fstype] }

// MountFor returns the mount that holds the resolved absolute path p: the
// longest mount point that is a prefix of p; for mounts stacked on the same
// point, the last one mounted (later lines of mountinfo hide earlier ones).
func (s *System) MountFor(p string) *Mount {
	p = rootfs.Clean(p)
	var best *Mount
	for i := range s.Mounts {
		m := &s.Mounts[i]
		mp := m.MountPoint
		if !(mp == "/" || p == mp || strings.HasPrefix(p, mp+"/")) {
			continue
		}
		if best == nil || len(mp) >= len(best.MountPoint) {
			best = m
		}
	}
	return best
}

// Locate resolves p inside the root, finds its mount and classifies the
// storage under it.
func (s *System) Locate(p string) Location {
	return s.locate(p, map[string]bool{})
}

func (s *System) locate(p string, seen map[string]bool) Location {
	loc := Location{Path: p}
	r, err := rootfs.Resolve(s.fs, p)
	if err != nil {
		loc.Resolved, loc.Class, loc.Reason = p, Unknown, err.Error()
		return loc
	}
	loc.Resolved = r
	if !s.HaveMounts() {
		loc.Class, loc.Reason = Unknown, "no mountinfo under the root"
		return loc
	}
	m := s.MountFor(r)
	if m == nil {
		loc.Class, loc.Reason = Unknown, "no mount covers "+r
		return loc
	}
	loc.Mount = m
	mdesc := describeMount(m)
	key := m.MountPoint + "\x00" + m.MajMin()
	if seen[key] {
		loc.Class, loc.Reason = Unknown, "storage loop through "+m.MountPoint
		return loc
	}
	seen[key] = true
	defer delete(seen, key)
	switch {
	case ramFS[m.FSType]:
		loc.Class, loc.Reason = RAM, m.FSType+" (memory)"
		loc.Evidence = mdesc
		return loc
	case m.FSType == "overlay":
		// Writes land in upperdir; lowerdirs are read-only.
		up, ok := m.Option("upperdir")
		if !ok {
			loc.Class, loc.Reason, loc.Evidence = Unknown, "overlay without upperdir", mdesc
			return loc
		}
		inner := s.locate(up, seen)
		loc.Class, loc.Reason, loc.Crypt, loc.Chain, loc.Plain, loc.Device = inner.Class, inner.Reason, inner.Crypt, inner.Chain, inner.Plain, inner.Device
		loc.Hops = append([]string{"overlay upperdir " + up}, inner.Hops...)
		if inner.Mount == nil || inner.Mount.ID == m.ID {
			// The upper layer lies outside this root (an overlay set up
			// before a chroot, a container's root): nothing to follow.
			loc.Class, loc.Reason = Unknown, "overlay upper layer "+up+" is outside this root"
			loc.Evidence = mdesc + " → upperdir " + up + " (outside this root)"
			return loc
		}
		loc.Evidence = mdesc + " → upperdir " + inner.Evidence
		return loc
	case passthroughFUSE[m.FSType] && strings.HasPrefix(m.Source, "/"):
		// A pass-through FUSE filesystem stores every file in its source
		// directory(ies) as it is: judge where those are.
		loc.Class = Encrypted
		var evs []string
		for _, src := range strings.Split(m.Source, ":") {
			if !strings.HasPrefix(src, "/") {
				continue
			}
			inner := s.locate(src, seen)
			if inner.Mount != nil && inner.Mount.ID == m.ID {
				inner.Class, inner.Evidence = Unknown, src+" (the FUSE mount itself)"
			}
			loc.Class = Worst(loc.Class, inner.Class)
			loc.Crypt = append(loc.Crypt, inner.Crypt...)
			loc.Plain = append(loc.Plain, inner.Plain...)
			loc.Hops = append(append(loc.Hops, m.FSType+" source "+src), inner.Hops...)
			if loc.Chain == nil {
				loc.Chain, loc.Device = inner.Chain, inner.Device
			}
			evs = append(evs, inner.Evidence)
		}
		loc.Reason = m.FSType + " passes files through to " + m.Source
		loc.Evidence = mdesc + " → source " + strings.Join(evs, " | ")
		return loc
	case networkFS[m.FSType]:
		loc.Class, loc.Reason, loc.Evidence = Unknown, "network filesystem "+m.FSType+" from "+m.Source+": encryption at rest is the server's", mdesc
		return loc
	}
	d := s.byMajMin[m.MajMin()]
	if d == nil && m.Major == 0 {
		// btrfs and others report an anonymous 0:N device; the source names the device.
		d = s.DeviceByPath(m.Source)
	}
	if d == nil {
		if m.Major == 0 {
			loc.Class, loc.Reason, loc.Evidence = Unknown, m.FSType+" is not on a block device this tool can see", mdesc
		} else {
			loc.Class, loc.Reason, loc.Evidence = Unknown, "device "+m.MajMin()+" not in /sys/class/block", mdesc
		}
		return loc
	}
	loc.Device = d
	n := s.classify(d, seen, &loc)
	loc.Chain = n
	loc.Class = n.Class
	loc.Reason = reason(n, &loc)
	loc.Evidence = mdesc + " → " + n.String()
	return loc
}

// Classify walks the stack below dev and returns it as a chain.
func (s *System) Classify(dev *Device) Location {
	loc := Location{Device: dev}
	n := s.classify(dev, map[string]bool{}, &loc)
	loc.Chain, loc.Class = n, n.Class
	loc.Reason = reason(n, &loc)
	loc.Evidence = n.String()
	return loc
}

func reason(n *Node, loc *Location) string {
	switch n.Class {
	case Encrypted:
		return "encrypted by " + strings.Join(loc.Crypt, ", ")
	case Plaintext:
		return "plaintext on " + strings.Join(loc.Plain, ", ")
	case RAM:
		return "memory (" + n.Label + ")"
	}
	if n.Note != "" {
		return strings.Trim(n.Note, "()")
	}
	return "cannot tell how " + n.Label + " stores data"
}

func describeMount(m *Mount) string {
	s := m.MountPoint + ": " + m.FSType
	if m.Source != m.FSType && m.Source != "" { // "tmpfs tmpfs" says the same twice
		s += " " + m.Source
	}
	if m.Major != 0 {
		s += " [" + m.MajMin() + "]"
	}
	if m.Root != "/" && m.Root != "" {
		s += " [bind " + m.Root + "]"
	}
	return s
}

// Label describes a device for evidence: "vg0-root (dm-2, LVM)".
func (d *Device) Label() string {
	switch {
	case d.CryptType() != "":
		return fmt.Sprintf("%s (%s, %s)", d.DMName, d.Name, d.CryptType())
	case d.IsLVM():
		role := "LVM"
		if r := d.LVMRole(); r != "" {
			role = "LVM " + r
		}
		return fmt.Sprintf("%s (%s, %s)", d.DMName, d.Name, role)
	case d.Kind == KindDM:
		return fmt.Sprintf("%s (%s, dm)", d.DMName, d.Name)
	case d.Kind == KindPart:
		return fmt.Sprintf("%s (%s part %d)", d.Name, d.Parent, d.Partition)
	default:
		return fmt.Sprintf("%s (%s)", d.Name, d.Kind)
	}
}

// classified is the memoised answer for one device: its chain and what it
// adds to a Location (crypt nodes, plaintext devices, files followed).
type classified struct {
	node               *Node
	crypt, plain, hops []string
}

// classify answers for one device, once: a shared lower device (the PV
// under many LVs, a diamond of stacked devices) is walked a single time,
// so the cost grows with the number of devices, not of paths through them.
func (s *System) classify(d *Device, seen map[string]bool, loc *Location) *Node {
	if c, ok := s.memo[d.Name]; ok {
		merge(loc, c)
		return c.node
	}
	if seen["dev:"+d.Name] {
		return &Node{Device: d, Label: d.Label(), Class: Unknown, Note: "(device loop)"}
	}
	seen["dev:"+d.Name] = true
	defer delete(seen, "dev:"+d.Name)
	var own Location
	n := s.classifyOnce(d, seen, &own)
	c := &classified{node: n, crypt: own.Crypt, plain: own.Plain, hops: own.Hops}
	if s.memo == nil {
		s.memo = map[string]*classified{}
	}
	s.memo[d.Name] = c
	merge(loc, c)
	return n
}

func merge(loc *Location, c *classified) {
	for _, x := range c.crypt {
		loc.Crypt = appendUnique(loc.Crypt, x)
	}
	for _, x := range c.plain {
		loc.Plain = appendUnique(loc.Plain, x)
	}
	for _, x := range c.hops {
		loc.Hops = appendUnique(loc.Hops, x)
	}
}

func (s *System) classifyOnce(d *Device, seen map[string]bool, loc *Location) *Node {
	n := &Node{Device: d, Label: d.Label()}
	if d.CryptType() != "" && d.Encrypts() {
		n.Class = Encrypted
		loc.Crypt = appendUnique(loc.Crypt, d.Name)
		// Below a crypt node lies ciphertext; walk it only as evidence.
		var scratch Location
		for _, l := range d.Lower() {
			if ld := s.byName[l]; ld != nil {
				n.Lower = append(n.Lower, s.classify(ld, seen, &scratch))
			}
		}
		return n
	}
	if d.CryptType() != "" {
		// A dm-crypt mapping whose cipher is cipher_null stores every
		// sector as it is: it counts as the device below it.
		n.Note = "(" + d.Cipher + ": no encryption)"
	}
	switch d.Kind {
	case KindZram:
		n.Class = RAM
		if d.ZramBackingDev != "" {
			// zram writeback (Documentation/admin-guide/blockdev/zram.rst)
			// writes idle or incompressible pages to backing_dev as they are.
			n.Note = "(writeback " + d.ZramBackingDev + ")"
			if bd := s.DeviceByPath(d.ZramBackingDev); bd != nil {
				l := s.classify(bd, seen, loc)
				n.Lower = []*Node{l}
				n.Class = Worst(RAM, l.Class)
			} else {
				n.Class = Unknown
			}
		}
		return n
	case KindRAM:
		n.Class = RAM
		return n
	case KindLoop:
		if d.LoopBackingFile == "" {
			n.Class, n.Note = Unknown, "(no backing file)"
			return n
		}
		n.Note = "(file " + d.LoopBackingFile + ")"
		inner := s.locate(d.LoopBackingFile, seen)
		loc.Hops = append(loc.Hops, "loop "+d.Name+" backing file "+d.LoopBackingFile)
		loc.Hops = append(loc.Hops, inner.Hops...)
		for _, c := range inner.Crypt {
			loc.Crypt = appendUnique(loc.Crypt, c)
		}
		for _, p := range inner.Plain {
			loc.Plain = appendUnique(loc.Plain, p)
		}
		n.Class = inner.Class
		if inner.Chain != nil {
			n.Lower = []*Node{inner.Chain}
		} else {
			n.Lower = []*Node{{Label: inner.Evidence, Class: inner.Class}}
		}
		return n
	}
	lower := d.Lower()
	if len(lower) == 0 {
		if d.Kind == KindDM || d.Kind == KindMD {
			n.Class, n.Note = Unknown, "(no slaves)"
			return n
		}
		n.Class = Plaintext
		loc.Plain = appendUnique(loc.Plain, d.Name)
		return n
	}
	n.Class = Encrypted
	for _, l := range lower {
		ld := s.byName[l]
		if ld == nil {
			n.Lower = append(n.Lower, &Node{Label: l + " (not in sysfs)", Class: Unknown})
			n.Class = Worst(n.Class, Unknown)
			continue
		}
		ln := s.classify(ld, seen, loc)
		n.Lower = append(n.Lower, ln)
		n.Class = Worst(n.Class, ln.Class)
	}
	return n
}

// CryptNodes returns every encrypting dm device, sorted by name.
func (s *System) CryptNodes() []*Device {
	var out []*Device
	for _, d := range s.Devices {
		if d.CryptType() != "" {
			out = append(out, d)
		}
	}
	return out
}

// Users returns what uses a device directly: its mount points, "swap",
// and its holders' names, sorted.
func (s *System) Users(d *Device) []string {
	var out []string
	out = append(out, d.Mounts...)
	if d.Swap {
		out = append(out, "[swap]")
	}
	out = append(out, d.Holders...)
	for _, o := range s.Devices {
		if o.Kind == KindPart && o.Parent == d.Name {
			out = append(out, o.Name)
		}
	}
	sort.Strings(out)
	return out
}

// Roots returns the devices nothing is built on (no holders, no
// partitions, no loop device using them is tracked): the tops of stacks.
func (s *System) Roots() []*Device {
	hasUpper := map[string]bool{}
	for _, d := range s.Devices {
		for _, l := range d.Lower() {
			hasUpper[l] = true
		}
	}
	var out []*Device
	for _, d := range s.Devices {
		if !hasUpper[d.Name] {
			out = append(out, d)
		}
	}
	return out
}

// Disks returns the bottoms of stacks: devices built on nothing.
func (s *System) Disks() []*Device {
	var out []*Device
	for _, d := range s.Devices {
		if len(d.Lower()) == 0 {
			out = append(out, d)
		}
	}
	return out
}

// Uppers returns the devices built directly on d: partitions and holders.
func (s *System) Uppers(d *Device) []*Device {
	var out []*Device
	for _, o := range s.Devices {
		for _, l := range o.Lower() {
			if l == d.Name {
				out = append(out, o)
			}
		}
	}
	return out
}

// relPath returns p relative to the mount point of m, as a path inside
// the mounted filesystem (taking bind mounts' root into account).
func relPath(m *Mount, p string) string {
	rel := strings.TrimPrefix(p, m.MountPoint)
	return path.Join("/", m.Root, rel)
}

// PathInFS returns where p lives inside its filesystem: for a bind mount
// of /srv/mail on /var/mail, /var/mail/x is /srv/mail/x on the device.
func (s *System) PathInFS(p string) string {
	r, err := rootfs.Resolve(s.fs, p)
	if err != nil {
		return p
	}
	m := s.MountFor(r)
	if m == nil {
		return r
	}
	return relPath(m, r)
}
