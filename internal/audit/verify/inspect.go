package verify

import (
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"

	"github.com/cryptshift/cryptshift/internal/audit/manifest"
	"github.com/cryptshift/cryptshift/internal/hostview/blockstack"
	"github.com/cryptshift/cryptshift/internal/hostview/rootfs"
)

// StackNode is one device (or a mount, swap area or guest disk on top of
// one) in the storage tree that `cryptshift inspect` prints.
type StackNode struct {
	Label    string       `json:"label"`
	Kind     string       `json:"kind"` // disk, part, dm, loop, zram, md, ram, mount, swap, guest
	Class    string       `json:"class,omitempty"`
	Size     uint64       `json:"size,omitempty"`
	Children []*StackNode `json:"children,omitempty"`
	Seen     bool         `json:"seen,omitempty"` // already shown under another parent
}

// Inspect reads the root and returns the storage stack from the disks up.
func Inspect(root string) ([]*StackNode, error) {
	if root == "" {
		root = "/"
	}
	f := rootfs.Dir(root)
	sys, err := blockstack.Scan(f)
	if err != nil {
		return nil, fmt.Errorf("cannot inspect %s: %w", root, err)
	}
	if !sys.HaveSysfs() {
		return nil, fmt.Errorf("cannot inspect %s: no /sys/class/block under it", root)
	}
	m, _, _ := manifest.ReadManifest(f)
	e := &env{fs: f, sys: sys, manifest: m, lang: "en"}
	e.load()
	guests := map[string][]string{}
	doms, _ := e.readDomains()
	for _, d := range doms {
		for _, g := range d.Disks {
			for _, l := range append([]layer{g.Source}, g.Chain...) {
				if l.Kind == "block" {
					if dev := sys.DeviceByPath(l.Path); dev != nil {
						guests[dev.Name] = append(guests[dev.Name], d.Name+"/"+g.Target)
					}
				}
			}
		}
	}
	shown := map[string]bool{}
	var build func(d *blockstack.Device) *StackNode
	build = func(d *blockstack.Device) *StackNode {
		n := &StackNode{Label: e.deviceLabel(d), Kind: string(d.Kind), Size: d.Size, Class: string(sys.Classify(d).Class)}
		if shown[d.Name] {
			n.Seen = true
			return n
		}
		shown[d.Name] = true
		for _, mp := range d.Mounts {
			n.Children = append(n.Children, &StackNode{Label: mp + " (" + fsType(sys, mp) + ")", Kind: "mount", Class: n.Class})
		}
		if d.Swap {
			n.Children = append(n.Children, &StackNode{Label: "[swap]", Kind: "swap", Class: n.Class})
		}
		for _, g := range guests[d.Name] {
			n.Children = append(n.Children, &StackNode{Label: "guest " + g, Kind: "guest", Class: n.Class})
		}
		for _, u := range sys.Uppers(d) {
			n.Children = append(n.Children, build(u))
		}
		return n
	}
	var out []*StackNode
	for _, d := range sys.Disks() {
		if d.Size == 0 && (d.Kind == blockstack.KindLoop || d.Kind == blockstack.KindZram) {
			continue // an unbound loop device or an unconfigured zram device
		}
		out = append(out, build(d))
	}
	// Swap files and loop-backed stacks hang off files, not devices.
	for _, sw := range sys.Swaps {
		if sw.Type == "file" {
			loc := sys.Locate(sw.Filename)
			out = append(out, &StackNode{Label: "[swap file] " + sw.Filename + " on " + loc.Evidence, Kind: "swap", Class: string(loc.Class)})
		}
	}
	return out, nil
}

func fsType(sys *blockstack.System, mp string) string {
	for _, m := range sys.Mounts {
		if m.MountPoint == mp {
			return m.FSType
		}
	}
	return "?"
}

// deviceLabel names a device with what it is in LVM/LUKS terms.
func (e *env) deviceLabel(d *blockstack.Device) string {
	s := d.Label() + " " + humanSize(int64(d.Size))
	var notes []string
	if vgs := e.pvOf(d); len(vgs) > 0 {
		notes = append(notes, "PV of "+strings.Join(vgs, ", "))
	}
	if d.Kind == blockstack.KindLoop && d.LoopBackingFile != "" {
		notes = append(notes, "file "+d.LoopBackingFile)
	}
	if d.Kind == blockstack.KindZram && d.ZramBackingDev != "" {
		notes = append(notes, "writeback "+d.ZramBackingDev)
	}
	if len(notes) > 0 {
		s += " [" + strings.Join(notes, "; ") + "]"
	}
	return s
}

// pvOf returns the VGs whose LVs use d as a physical volume.
func (e *env) pvOf(d *blockstack.Device) []string {
	if d.IsLVM() {
		return nil // LVM's own stacking (snapshot origin, thin pool), not a PV
	}
	var vgs []string
	for _, u := range e.sys.Uppers(d) {
		if u.IsLVM() {
			vgs = append(vgs, vgName(u.DMName))
		}
	}
	sort.Strings(vgs)
	return dedup(vgs)
}

// vgName splits "vg--name-lv" at the first single dash (LVM doubles the
// dashes inside names).
func vgName(dm string) string {
	for i := 0; i < len(dm); i++ {
		if dm[i] == '-' {
			if i+1 < len(dm) && dm[i+1] == '-' {
				i++
				continue
			}
			return strings.ReplaceAll(dm[:i], "--", "-")
		}
	}
	return dm
}

// RenderTree prints the stack as an indented tree (text) or JSON.
func RenderTree(w io.Writer, nodes []*StackNode, format string) error {
	switch format {
	case "json":
		b, err := json.MarshalIndent(nodes, "", "  ")
		if err != nil {
			return err
		}
		_, err = w.Write(append(b, '\n'))
		return err
	case "text", "":
	default:
		return fmt.Errorf("cannot render tree: unknown format %q (want text or json)", format)
	}
	var b strings.Builder
	var walk func(n *StackNode, prefix string, last bool, top bool)
	walk = func(n *StackNode, prefix string, last, top bool) {
		branch, next := "├─ ", "│  "
		if last {
			branch, next = "└─ ", "   "
		}
		if top {
			branch, next = "", ""
		}
		mark := ""
		switch {
		case n.Seen:
			mark = "  (shown above)"
		case len(n.Children) == 0 && n.Kind != "mount" && n.Kind != "swap" && n.Kind != "guest":
			mark = "  (unused, " + n.Class + ")"
		case (n.Kind == "mount" || n.Kind == "swap" || n.Kind == "guest") && n.Class == string(blockstack.Plaintext):
			mark = "  <-- PLAINTEXT"
		case (n.Kind == "mount" || n.Kind == "swap" || n.Kind == "guest") && n.Class == string(blockstack.Encrypted):
			mark = "  (encrypted)"
		}
		fmt.Fprintf(&b, "%s%s%s%s\n", prefix, branch, Clean(n.Label), mark)
		for i, c := range n.Children {
			walk(c, prefix+next, i == len(n.Children)-1, false)
		}
	}
	for _, n := range nodes {
		walk(n, "", true, true)
	}
	_, err := io.WriteString(w, b.String())
	return err
}
