// Package planner turns a layout and an inventory into a plan: the ordered
// steps that take the host from what exists to what the layout describes.
// Planning is pure: it reads only its inputs and never touches a device.
//
// Re-planning a layout that is already in place yields no steps. A step that
// would overwrite existing data (a partition table, a filesystem, a LUKS
// header, a PV in use, a shrinking volume) is marked destructive and names
// what is there; Plan refuses such a plan unless AllowDestroy is set.
package planner

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"github.com/cryptshift/cryptshift/internal/textfmt"
	"path"
	"sort"
	"strings"

	"github.com/cryptshift/cryptshift/internal/model/inventory"
	"github.com/cryptshift/cryptshift/internal/model/layout"
	"github.com/cryptshift/cryptshift/internal/model/plan"
)

// DefaultRoot is where the layout's root filesystem is mounted while
// applying, as debian-installer and curtin do.
const DefaultRoot = "/target"

// Options tune a planning run.
type Options struct {
	Root         string            // target root; DefaultRoot when empty
	AllowDestroy bool              // permit destructive steps
	Devices      map[string]string // layout disk name -> device path override
}

// RefusedError lists the destructive steps of a plan made without
// AllowDestroy.
type RefusedError struct {
	Steps []plan.Step
}

func (e *RefusedError) Error() string {
	var b strings.Builder
	b.WriteString("refusing to destroy data without --allow-destroy:")
	for _, s := range e.Steps {
		fmt.Fprintf(&b, "\n  %s: %s (step %s)", s.Target, s.Destroys, s.ID)
	}
	b.WriteString("\nreview these devices; rerun with --allow-destroy only if their contents may be lost")
	return b.String()
}

// planner carries the state of one planning run.
type planner struct {
	f    *layout.File
	l    *layout.Layout
	inv  *inventory.Inventory
	opt  Options
	rep  *layout.Report
	ids  idSource
	root string

	steps    []plan.Step
	notes    []string
	crypttab []plan.CrypttabEntry
	fstab    []plan.FstabEntry
	devices  map[string]string // disk name -> device path used

	vgs  map[string]*vgState
	vols []*volState
	// keyFileKDF: some keyslot is opened by a key file (and gets
	// luks.KeyFileKDF); the plan says why.
	keyFileKDF bool
	// partitions outside LVM, in layout order, and their mounts by device
	parts      []*partState
	partMounts map[string]mountSpec
}

// Plan computes the plan. The report holds every problem found (layout
// positions included); when it has errors the plan is nil. A plan with
// destructive steps and no AllowDestroy comes back together with a
// *RefusedError.
func Plan(f *layout.File, inv *inventory.Inventory, opt Options) (*plan.Plan, *layout.Report, error) {
	root := opt.Root
	if root == "" {
		root = DefaultRoot
	}
	root = path.Clean(root)
	p := &planner{
		f: f, l: f.Layout, inv: inv, opt: opt, rep: f.NewReport(), root: root,
		devices: map[string]string{}, vgs: map[string]*vgState{}, partMounts: map[string]mountSpec{},
	}
	// Structural validation ran in layout.Parse; carry its warnings along.
	p.rep.Problems = append(p.rep.Problems, f.Warnings...)
	// A spec that did not come through Parse (the one a plan file carries,
	// for apply --plan) is validated here: its errors count, its warnings
	// were shown when the plan was made.
	check := f.NewReport()
	layout.Validate(f, check)
	p.rep.Problems = append(p.rep.Problems, check.Errors()...)
	if what, at, bad := layout.BadChar(opt.Root); bad {
		p.rep.Errorf("$", "use an absolute --target such as /target", "target root %s contains %s at byte %d", layout.Short(opt.Root), what, at)
	} else if !path.IsAbs(root) {
		p.rep.Errorf("$", "use an absolute --target such as /target", "target root %s is not absolute", layout.Short(opt.Root))
	}
	checkDeviceOverrides(p.l, p.opt.Devices, p.rep)
	p.seed()
	p.planDisks()
	p.planVGs()
	p.planLVs()
	if p.rep.HasErrors() {
		p.rep.Sort()
		return nil, p.rep, p.rep
	}
	p.planVolumes()
	p.planFiles()
	p.rep.Sort()
	if p.rep.HasErrors() {
		return nil, p.rep, p.rep
	}
	pl := p.result()
	if d := pl.Destructive(); len(d) > 0 && !opt.AllowDestroy {
		return pl, p.rep, &RefusedError{Steps: d}
	}
	return pl, p.rep, nil
}

// checkDeviceOverrides refuses --device NAME=PATH for a NAME the layout
// does not have: the override would be silently ignored, and the layout's
// own device path used instead.
func checkDeviceOverrides(l *layout.Layout, devices map[string]string, rep *layout.Report) {
	var names []string
	known := map[string]bool{}
	for _, d := range l.Disks {
		names = append(names, d.Name)
		known[d.Name] = true
	}
	for _, name := range sortedKeys(devices) {
		dev := devices[name]
		flag := layout.Short(name + "=" + dev)
		if !known[name] {
			fix := "name one of the layout's disks: " + strings.Join(names, ", ")
			if len(names) == 0 {
				fix = "the layout has no disks"
			}
			rep.Errorf("$.disks", fix, "--device %s names no disk of this layout", flag)
			continue
		}
		sub := layout.NewReport("", nil)
		if what, at, bad := layout.BadChar(dev); bad {
			rep.Errorf("$.disks", "give the device's /dev path", "--device %s: the path contains %s at byte %d", flag, what, at)
		} else if !layout.CheckDevicePath(sub, "", dev) {
			rep.Errorf("$.disks", sub.Problems[0].Fix, "--device %s: %s", flag, sub.Problems[0].Message)
		}
	}
}

func (p *planner) seed() {
	parts := []string{"cryptshift/v1", p.l.Name}
	for _, d := range p.l.Disks {
		dev := p.device(d)
		if dev == nil {
			parts = append(parts, d.Name, d.Device)
			continue
		}
		parts = append(parts, d.Name, dev.Path, dev.Serial, fmt.Sprint(dev.Size))
	}
	p.ids = newIDSource(parts...)
}

// device resolves a layout disk to its inventory device, honouring overrides.
func (p *planner) device(d layout.Disk) *inventory.Device {
	dev := d.Device
	if o, ok := p.opt.Devices[d.Name]; ok {
		dev = o
	}
	return p.inv.Device(dev)
}

// add appends a step made of its typed parameters (its command lines are
// rendered from them); ids are "action:target", unique within a plan.
func (p *planner) add(s plan.Step, params, undo *plan.Params) {
	if s.ID == "" {
		s.ID = s.Action + ":" + s.Target
	}
	s = plan.NewStep(s, params, undo)
	for _, prev := range p.steps {
		if prev.ID == s.ID {
			panic("planner: duplicate step id " + s.ID)
		}
	}
	p.steps = append(p.steps, s)
}

func (p *planner) note(format string, a ...any) { p.notes = append(p.notes, fmt.Sprintf(format, a...)) }

// onRoot maps a path of the new system to where it is while applying.
func (p *planner) onRoot(q string) string { return path.Join(p.root, q) }

func (p *planner) result() *plan.Plan {
	pl := &plan.Plan{
		APIVersion:   plan.APIVersion,
		Kind:         plan.Kind,
		Layout:       p.l.Name,
		Host:         p.inv.Host,
		Root:         p.root,
		AllowDestroy: p.opt.AllowDestroy,
		Steps:        p.steps,
		Crypttab:     p.crypttab,
		Fstab:        p.fstab,
		Warnings:     p.rep.Warnings(),
		Notes:        p.notes,
		Spec:         p.l,
		Devices:      p.devices,
		DiskIDs:      p.diskIDs(),
		Inventory:    Fingerprint(p.inv),
	}
	if pl.Steps == nil {
		pl.Steps = []plan.Step{}
	}
	if pl.Crypttab == nil {
		pl.Crypttab = []plan.CrypttabEntry{}
	}
	if pl.Fstab == nil {
		pl.Fstab = []plan.FstabEntry{}
	}
	if pl.Warnings == nil {
		pl.Warnings = []layout.Problem{}
	}
	if pl.Notes == nil {
		pl.Notes = []string{}
	}
	uses := map[string][]string{}
	for _, s := range pl.Steps {
		for _, r := range s.Secrets {
			uses[r.Secret] = append(uses[r.Secret], s.ID)
		}
	}
	pl.Secrets = []plan.Secret{}
	if u := uses[plan.SecretPassphrase]; len(u) > 0 {
		pl.Secrets = append(pl.Secrets, plan.Secret{
			Name: plan.SecretPassphrase, Source: "apply --passphrase-file FILE, --passphrase-fd N, or a prompt without echo",
			Use: "keyslot 0 of the passphrase volumes; read by " + textfmt.Plural(len(u), "step", "steps"),
		})
	}
	if u := uses[plan.SecretRecoveryKey]; len(u) > 0 {
		pl.Secrets = append(pl.Secrets, plan.Secret{
			Name: plan.SecretRecoveryKey, Source: "generated by apply from the kernel's CSPRNG; shown once or written to --recovery-key-file",
			Use: "recovery keyslot of every LUKS2 volume; read by " + textfmt.Plural(len(u), "step", "steps"),
		})
	}
	return pl
}

// diskIDs records what the inventory knows of each planned disk.
func (p *planner) diskIDs() map[string]plan.DiskID {
	out := map[string]plan.DiskID{}
	for _, d := range p.l.Disks {
		dev := p.device(d)
		if dev == nil {
			continue
		}
		id := plan.DiskID{Size: dev.Size, Serial: dev.Serial, WWID: dev.WWID}
		for _, a := range dev.Aliases {
			if strings.HasPrefix(a, "/dev/disk/by-id/") {
				id.ByID = append(id.ByID, a)
			}
		}
		out[d.Name] = id
	}
	return out
}

// Fingerprint is a digest of the canonical inventory, recorded in a plan so
// that a reviewer can tell which system state it was made against.
func Fingerprint(inv *inventory.Inventory) string {
	b, err := inv.Marshal()
	if err != nil {
		return ""
	}
	h := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(h[:])
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
