package migrate

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"libvirt.org/go/libvirtxml"

	"github.com/cryptshift/cryptshift/internal/doors/qemuimg"
	"github.com/cryptshift/cryptshift/internal/exitcode"
	"github.com/cryptshift/cryptshift/libvirt"
	"github.com/cryptshift/cryptshift/lvm"
)

// inspect reads the domain, its disks and their backing chains and the
// target, and returns the header of the migration, or every reason it
// cannot be done. It changes nothing.
func (rt *runtime) inspect(ctx context.Context, o *Options) (*Header, error) {
	dom, err := rt.hv.Domain(o.Domain)
	if err != nil {
		return nil, exitcode.With(exitcode.Invalid, err)
	}
	h := &Header{Kind: JournalKind, Version: journalVersion, Domain: dom.Name, DomainUUID: dom.UUID,
		Connect: o.Connect, To: o.To, Mode: o.Mode, IterTimeMS: o.IterTimeMS, TargetFormat: o.TargetFormat, RetireSource: o.RetireSource,
		Shutdown: o.Shutdown, ForceOff: o.ForceOff, Persistent: dom.Persistent,
		WasRunning:  dom.State == libvirt.Running || dom.State == libvirt.Paused,
		OrigXMLPath: strings.TrimSuffix(o.JournalPath, ".journal") + ".orig.xml"}
	if o.Mode == ModeLive {
		h.Engine = o.Engine
	}
	if kind, _, _ := parseTo(o.To); kind == "vg" {
		h.VG = vgConfig(o)
	}
	var problems []string
	switch {
	case o.Mode == ModeOffline && !dom.Persistent:
		problems = append(problems, fmt.Sprintf("domain %s is transient: it has no definition to switch and would vanish when shut down; migrate it live (--mode live) or define it first", dom.Name))
	case o.Mode == ModeOffline && dom.State != libvirt.ShutOff && !o.Shutdown:
		problems = append(problems, fmt.Sprintf("domain %s is %s: an offline migration needs it shut off; shut it down first, pass --shutdown to let cryptshift do it (and start it again afterwards), or use --mode live", dom.Name, dom.State))
	case o.Mode == ModeLive && dom.State != libvirt.Running:
		problems = append(problems, fmt.Sprintf("domain %s is %s: a live migration needs it running; use --mode offline", dom.Name, dom.State))
	}

	// The running definition says what is attached now; the persistent one
	// is what rollback restores.
	current, err := rt.hv.DomainXML(dom.Name, libvirt.XMLFlags{Inactive: dom.State == libvirt.ShutOff})
	if err != nil {
		return nil, err
	}
	persistent := current
	if dom.Persistent && dom.State != libvirt.ShutOff {
		if persistent, err = rt.hv.DomainXML(dom.Name, libvirt.XMLFlags{Inactive: true}); err != nil {
			return nil, err
		}
	}
	disks := libvirt.Disks(current)
	if err := rt.hv.ResolveVolumes(disks); err != nil {
		problems = append(problems, err.Error())
	}
	for _, d := range disks {
		switch {
		case d.Refuse != "":
			problems = append(problems, fmt.Sprintf("disk %s (%s): %s", d.Target, orNone(d.Path), d.Refuse))
		case d.Skip != "":
			h.Skipped = append(h.Skipped, Skipped{Target: d.Target, Reason: d.Skip})
		}
	}
	for _, d := range libvirt.Migratable(disks) {
		md, ps := rt.inspectDisk(ctx, h, d, persistent)
		problems = append(problems, ps...)
		if md != nil {
			h.Disks = append(h.Disks, *md)
		}
	}
	if len(h.Disks) == 0 && len(problems) == 0 {
		problems = append(problems, fmt.Sprintf("domain %s has no disk to migrate", dom.Name))
	}

	t, err := newTarget(o.To, rt)
	if err != nil {
		return nil, usage(err)
	}
	rt.t = t
	if ps := t.Prepare(ctx, h); len(ps) > 0 {
		problems = append(problems, ps...)
	} else {
		for i := range h.Disks {
			d := &h.Disks[i]
			if d.SecretUUID, err = newUUID(o.Rand); err != nil {
				return nil, err
			}
			if err := t.Assign(h, d); err != nil {
				problems = append(problems, err.Error())
			}
		}
		problems = append(problems, t.Check(ctx, h)...)
	}
	if len(problems) > 0 {
		return nil, exitcode.With(exitcode.Invalid, problemsError(dom.Name, problems))
	}
	return h, nil
}

func problemsError(domain string, problems []string) error {
	if len(problems) == 1 {
		return fmt.Errorf("cannot migrate domain %s: %s", domain, problems[0])
	}
	return fmt.Errorf("cannot migrate domain %s: %d problems:\n  - %s", domain, len(problems), strings.Join(problems, "\n  - "))
}

func orNone(s string) string {
	if s == "" {
		return "no source"
	}
	return s
}

// inspectDisk reads a disk's backing chain and checks that cryptshift can
// copy it.
func (rt *runtime) inspectDisk(ctx context.Context, h *Header, d libvirt.Disk, persistent *libvirtxml.Domain) (*Disk, []string) {
	var problems []string
	format := d.Format
	if format == "" {
		// libvirt's own default for a disk without a driver type; never
		// probe a guest-written image (a raw image can fake any header).
		format = qemuimg.Raw
	}
	chain, err := rt.img.InfoChain(ctx, d.Path, format)
	if err != nil {
		return nil, []string{fmt.Sprintf("disk %s: %v", d.Target, err)}
	}
	md := &Disk{Target: d.Target, VirtualSize: chain[0].VirtualSize}
	for i, l := range chain {
		path := d.Path
		if i > 0 {
			// qemu-img names a backing file as resolved from its overlay.
			path = absolute(l.Filename, md.Chain[i-1].Path)
		}
		if l.Format != qemuimg.Raw && l.Format != qemuimg.QCOW2 {
			problems = append(problems, fmt.Sprintf("disk %s: %s is in %s format; cryptshift copies raw and qcow2 chains only", d.Target, path, l.Format))
		}
		if l.Encrypted {
			problems = append(problems, fmt.Sprintf("disk %s: %s is already encrypted", d.Target, path))
		}
		layer := Layer{Path: filepath.Clean(path), Format: l.Format, Type: "file"}
		if st, err := os.Stat(path); err == nil && st.Mode()&os.ModeDevice != 0 {
			layer.Type = "block"
			layer.LV = rt.lvOf(ctx, h, layer.Path)
		}
		md.Chain = append(md.Chain, layer)
		md.Allocated += l.ActualSize
	}
	x := libvirt.FindDisk(persistent, d.Target)
	if x == nil {
		return nil, append(problems, fmt.Sprintf("disk %s is attached to the running guest only (hot-plugged): add it to the persistent definition first (virsh attach-disk --config), so that the switch can keep it", d.Target))
	}
	doc, err := x.Marshal()
	if err != nil {
		return nil, append(problems, fmt.Sprintf("cannot encode disk %s: %v", d.Target, err))
	}
	md.OrigXML = doc
	return md, problems
}

// lvOf returns "VG/LV" when the block device at path is an LVM logical
// volume (retiring it then means discarding and removing the LV), else "".
func (rt *runtime) lvOf(ctx context.Context, h *Header, path string) string {
	cfg := ""
	if h.VG != nil {
		cfg = h.VG.LVMConfig
	}
	lvs, err := lvm.LVM{Run: rt.run, Config: cfg}.LVs(ctx)
	if err != nil {
		return "" // no LVM here: not an LV
	}
	same := func(a, b string) bool {
		if a == "" || b == "" {
			return false
		}
		if a == b {
			return true
		}
		ra, errA := filepath.EvalSymlinks(a)
		rb, errB := filepath.EvalSymlinks(b)
		return errA == nil && errB == nil && ra == rb
	}
	for _, lv := range lvs {
		if same(path, lv.Path) || same(path, lv.DMPath) {
			return lv.VG + "/" + lv.Name
		}
	}
	return ""
}

func newUUID(r io.Reader) (string, error) {
	var b [16]byte
	if _, err := io.ReadFull(r, b[:]); err != nil {
		return "", fmt.Errorf("cannot generate a secret UUID: %w", err)
	}
	b[6] = b[6]&0x0f | 0x40 // version 4
	b[8] = b[8]&0x3f | 0x80 // RFC 4122 variant
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16]), nil
}
