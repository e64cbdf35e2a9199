package planner

import (
	"fmt"
	"path"
	"sort"
	"strings"

	"github.com/cryptshift/cryptshift/internal/doors/fs"
	"github.com/cryptshift/cryptshift/internal/model/inventory"
	"github.com/cryptshift/cryptshift/internal/model/layout"
	"github.com/cryptshift/cryptshift/internal/model/plan"
	"github.com/cryptshift/cryptshift/luks"
	"github.com/cryptshift/cryptshift/lvm"
)

type volState struct {
	lp       string
	v        layout.Volume
	vg       *vgState
	lvPath   string
	extents  int64
	created  bool // the LV is (re)created by this plan
	grown    bool
	dev      *inventory.Device // the existing LV's device, if any
	luksUUID string
	format   bool // luksFormat is planned
	mapping  string
	isOpen   bool
	fsUUID   string
	keyFile  string // path on the new system
}

type mountSpec struct {
	layoutPath string
	device     string // what is mounted (partition, LV or mapping)
	fsUUID     string
	fstype     string
	mount      string
	options    []string
}

func (p *planner) planLVs() {
	for _, vg := range p.l.VolumeGroups {
		vs := p.vgs[vg.Name]
		if vs == nil || vs.extentSize <= 0 {
			continue
		}
		inLayout := map[string]bool{}
		for _, v := range p.l.Volumes {
			if v.VolumeGroup == vg.Name {
				inLayout[v.Name] = true
			}
		}
		// Sizes are computed as if the layout's volumes were created in
		// order on this VG, with only foreign volumes already there, so a
		// re-plan of an applied layout computes the very sizes it created.
		virtualFree := vs.totalExt
		if vs.existing != nil {
			for _, lv := range p.inv.LVsOf(vg.Name) {
				if !inLayout[lv.Name] {
					virtualFree -= lv.Size / vs.extentSize
				}
			}
		}
		actualFree := vs.freeExt
		for i, v := range p.l.Volumes {
			if v.VolumeGroup != vg.Name {
				continue
			}
			st := &volState{lp: fmt.Sprintf("$.volumes[%d]", i), v: v, vg: vs, lvPath: "/dev/" + vg.Name + "/" + v.Name}
			p.vols = append(p.vols, st)
			var want int64
			switch {
			case !v.Size.Relative():
				want = (v.Size.Bytes + vs.extentSize - 1) / vs.extentSize
			case v.Size.Of == "VG":
				want = int64(float64(vs.totalExt) * v.Size.Percent / 100)
			default:
				want = int64(float64(virtualFree) * v.Size.Percent / 100)
			}
			if want <= 0 {
				p.rep.Errorf(st.lp+".size", "use a larger size", "volume %s (%s) rounds to zero %s extents", v.Name, v.Size.Raw, layout.FormatBytes(vs.extentSize))
				continue
			}
			if want > virtualFree {
				p.rep.Errorf(st.lp+".size", "shrink the volumes or add a disk to "+vg.Name,
					"volume %s needs %s but only %s of volume group %s (%s) is left; %s missing",
					v.Name, layout.FormatBytes(want*vs.extentSize), layout.FormatBytes(virtualFree*vs.extentSize),
					vg.Name, layout.FormatBytes(vs.totalExt*vs.extentSize), layout.FormatBytes((want-virtualFree)*vs.extentSize))
				virtualFree = 0
				continue
			}
			virtualFree -= want
			st.extents = want
			lv := p.inv.LV(vg.Name, v.Name)
			if lv != nil {
				st.dev = p.inv.Device(lv.Path)
			}
			switch {
			case lv == nil:
				p.lvcreate(st)
				actualFree -= want
			case lv.Size/vs.extentSize == want:
			case lv.Size/vs.extentSize < want:
				grow := want - lv.Size/vs.extentSize
				if grow > actualFree {
					p.rep.Errorf(st.lp+".size", "free space in "+vg.Name, "growing %s needs %d more extents; %s has %d free", v.Name, grow, vg.Name, actualFree)
					continue
				}
				actualFree -= grow
				st.grown = true
				p.add(plan.Step{
					Action: plan.ActLVExtend, Target: st.lvPath,
					Description: fmt.Sprintf("grow %s from %s to %s", st.lvPath, layout.FormatBytes(lv.Size), layout.FormatBytes(want*vs.extentSize)),
				}, &plan.Params{LVExtend: &lvm.LVExtend{VG: vg.Name, Name: v.Name, Extents: want}}, nil)
			default:
				if st.dev != nil {
					if why := p.inUse(st.dev.Path); why != "" {
						p.rep.Errorf(st.lp+".size", "free the volume first", "cannot shrink %s: %s", st.lvPath, why)
						continue
					}
				}
				what := "its contents"
				if c := p.content(st.dev); c != nil {
					what = contentText(p.inv, st.dev.Path, c)
				}
				p.add(plan.Step{
					Action: plan.ActLVRemove, Target: st.lvPath,
					Description: fmt.Sprintf("remove %s (%s) to recreate it at %s: cryptshift does not shrink in place",
						st.lvPath, layout.FormatBytes(lv.Size), layout.FormatBytes(want*vs.extentSize)),
					Destructive: true,
					Destroys:    fmt.Sprintf("volume %s of %s holding %s (shrinking to %s)", st.lvPath, layout.FormatBytes(lv.Size), what, layout.FormatBytes(want*vs.extentSize)),
				}, &plan.Params{LVRemove: &lvm.LVRemove{VG: vg.Name, Name: v.Name}}, nil)
				actualFree += lv.Size/vs.extentSize - want
				st.dev = nil
				p.lvcreate(st)
			}
		}
	}
}

func (p *planner) lvcreate(st *volState) {
	st.created = true
	vg, name := st.vg.vg.Name, st.v.Name
	// Exact extents, computed above, so the plan's accounting is LVM's.
	p.add(plan.Step{
		Action: plan.ActLVCreate, Target: st.lvPath,
		Description: fmt.Sprintf("create volume %s of %s", st.lvPath, layout.FormatBytes(st.extents*st.vg.extentSize)),
	}, &plan.Params{LVCreate: &lvm.LVCreate{VG: vg, Name: name, Extents: st.extents}}, &plan.Params{LVRemove: &lvm.LVRemove{VG: vg, Name: name}})
}

// luksMatches reports whether an existing header carries the planned
// parameters; cipher, key size, sector size and version cannot change
// without reformatting (cryptsetup reencrypt is out of scope).
func luksMatches(c *inventory.Content, e layout.Encryption) (bool, string) {
	if !isUUID(c.UUID) {
		// The UUID goes into crypttab: a header whose UUID is not one
		// (any bytes, on a prepared disk) is not kept.
		return false, fmt.Sprintf("a UUID %s that is not a UUID", layout.Short(c.UUID))
	}
	if c.LUKS == nil {
		return c.Version == "2", ""
	}
	h := c.LUKS
	switch {
	case h.Version != 2:
		return false, fmt.Sprintf("LUKS%d, not LUKS2", h.Version)
	case h.Cipher != e.Cipher:
		return false, fmt.Sprintf("cipher %s, not %s", h.Cipher, e.Cipher)
	case h.KeySize != e.KeySize:
		return false, fmt.Sprintf("%d-bit key, not %d", h.KeySize, e.KeySize)
	case h.SectorSize != e.SectorSize:
		return false, fmt.Sprintf("%d-byte sectors, not %d", h.SectorSize, e.SectorSize)
	}
	return true, ""
}

func (p *planner) planVolumes() {
	var root *volState
	var others []*volState
	for _, st := range p.vols {
		if st.v.Mount == "/" {
			root = st
		} else {
			others = append(others, st)
		}
	}
	// The root comes first: it is mounted on the target root, and the
	// other volumes' key files live on it.
	if root != nil {
		p.planVolume(root)
		p.emitMount(p.volMount(root))
		if p.root == "/" && root.format {
			p.rep.Errorf(root.lp, "apply with --target /target (or another empty directory)",
				"a new root volume cannot be mounted over the running system's /")
		}
	}
	for _, st := range others {
		if st.v.Encryption.Type == layout.EncLUKS2 && st.v.Encryption.Key == layout.KeyFile {
			p.planKeyFile(st)
		}
	}
	for _, st := range others {
		p.planVolume(st)
	}
	p.planHeaderBackups()
	var mounts []mountSpec
	for _, ps := range p.parts {
		if ps.part.Mount != "" {
			mounts = append(mounts, p.partMounts[ps.device])
		}
	}
	for _, st := range others {
		if st.v.Purpose == layout.PurposeFilesystem {
			mounts = append(mounts, p.volMount(st))
		}
	}
	sort.SliceStable(mounts, func(i, j int) bool {
		di, dj := strings.Count(mounts[i].mount, "/"), strings.Count(mounts[j].mount, "/")
		if di != dj {
			return di < dj
		}
		return mounts[i].mount < mounts[j].mount
	})
	for _, m := range mounts {
		p.emitMount(m)
	}
	for _, st := range p.vols {
		if st.v.Purpose == layout.PurposeSwap {
			p.planSwapon(st)
		}
	}
}

func (p *planner) volMount(st *volState) mountSpec {
	dev := st.lvPath
	if st.v.Encryption.Type != layout.EncNone {
		dev = st.mapping
	}
	return mountSpec{layoutPath: st.lp, device: dev, fsUUID: st.fsUUID, fstype: st.v.Filesystem, mount: st.v.Mount, options: st.v.MountOptions}
}

func (p *planner) planVolume(st *volState) {
	v, e := st.v, st.v.Encryption
	if e.Type == layout.EncNone {
		p.planPlainVolume(st)
		return
	}
	st.mapping = "/dev/mapper/" + e.Name
	if e.Type == layout.EncRandom {
		p.planRandomSwap(st)
		return
	}
	// Is there a header to keep?
	switch c := p.content(st.dev); {
	case st.created || c == nil:
		st.format = true
	case c.Type == "crypto_LUKS":
		if ok, why := luksMatches(c, e); ok {
			st.luksUUID = c.UUID
		} else {
			if !p.wipeFor(st, "its LUKS header has "+why) {
				return
			}
			st.format = true
		}
	default:
		if !p.wipeFor(st, "") {
			return
		}
		st.format = true
	}
	key := luks.Key{Secret: plan.SecretPassphrase}
	if e.Key == layout.KeyFile {
		if st.keyFile == "" {
			st.keyFile = path.Join(p.l.Keys.KeyFileDir, e.Name+".key")
		}
		key = luks.Key{File: p.onRoot(st.keyFile)}
	}
	// Each keyslot gets the KDF its key needs: a passphrase (and the
	// recovery key, which people write down) the layout's slow argon2id;
	// a key file of random bytes the least argon2id (luks.KeyFileKDF).
	params := e.LUKSParams()
	passKDF := params.KDF
	if e.Key == layout.KeyFile {
		params.KDF = luks.KeyFileKDF(passKDF)
		p.keyFileKDF = true
	}
	if st.format {
		st.luksUUID = p.ids.uuid("luks", st.vg.vg.Name+"/"+v.Name)
		params.UUID = st.luksUUID
		p.add(plan.Step{
			Action: plan.ActLUKSFormat, Target: st.lvPath,
			Description: fmt.Sprintf("format %s as LUKS2 (%s, %d-bit key, %d-byte sectors), unlocked by %s (keyslot KDF: %s)",
				st.lvPath, e.Cipher, e.KeySize, e.SectorSize, keyDesc(e, st.keyFile), params.KDF),
		}, &plan.Params{LUKSFormat: &luks.Format{Device: st.lvPath, Params: params, Key: key}},
			&plan.Params{Wipe: &fs.Wipe{Device: st.lvPath}})
	}
	recovery := *p.l.Keys.RecoveryKey && (st.format || st.dev.Content.LUKS == nil || len(st.dev.Content.LUKS.Keyslots) < 2)
	if recovery {
		p.add(plan.Step{
			Action: plan.ActAddRecovery, Target: st.lvPath,
			Description: fmt.Sprintf("add the recovery key to a second keyslot of %s (keyslot KDF: %s)", st.lvPath, passKDF),
		}, &plan.Params{LUKSAddKey: &luks.AddKey{Device: st.lvPath, KDF: passKDF, Key: key, NewKey: luks.Key{Secret: plan.SecretRecoveryKey}}}, nil)
	}
	if v.Mount == "/" && e.Key == layout.KeyPassphrase {
		p.planBindings(st, recovery)
	}
	if m := p.inv.Mapping(e.Name); m != nil {
		if st.dev != nil && (m.Parent == st.dev.Path || m.Parent == st.lvPath) && !st.format {
			st.isOpen = true
		} else {
			p.rep.Errorf(st.lp+".encryption.name", "close it (cryptsetup close "+e.Name+") or choose another encryption.name",
				"mapping %s is already open on %s", e.Name, m.Parent)
			return
		}
	}
	if !st.isOpen {
		p.add(plan.Step{
			Action: plan.ActOpen, Target: st.mapping,
			Description: fmt.Sprintf("open %s as %s", st.lvPath, st.mapping),
		}, &plan.Params{LUKSOpen: &luks.Open{Device: st.lvPath, Name: e.Name, Key: key, Discard: *e.Discard}},
			&plan.Params{Close: &luks.Close{Name: e.Name}})
	}
	if st.grown && st.isOpen {
		p.add(plan.Step{
			Action: plan.ActCryptResize, Target: st.mapping,
			Description: fmt.Sprintf("grow the open mapping %s to the new volume size", st.mapping),
		}, &plan.Params{CryptResize: &luks.Resize{Name: e.Name, Key: key}}, nil)
	}
	p.planContent(st, st.mapping)
	p.crypttab = append(p.crypttab, crypttabEntry(e.Name, "UUID="+st.luksUUID, keyTabField(st), luksOptions(st)))
}

// wipeFor handles an existing LV whose content must go before formatting.
func (p *planner) wipeFor(st *volState, why string) bool {
	ok := p.wipe(st.lp, st.dev)
	if ok && why != "" {
		p.steps[len(p.steps)-1].Destroys += " (" + why + ")"
	}
	return ok
}

// planContent plans what goes inside an open volume: a filesystem or swap.
func (p *planner) planContent(st *volState, dev string) {
	v := st.v
	if v.Purpose != layout.PurposeFilesystem && !(v.Purpose == layout.PurposeSwap) {
		return
	}
	want := v.Filesystem
	if v.Purpose == layout.PurposeSwap {
		want = "swap"
	}
	name := st.vg.vg.Name + "/" + v.Name
	if !st.format && !st.isOpen && v.Encryption.Type == layout.EncLUKS2 {
		// The container exists and is closed: its contents are invisible
		// to an inventory, and cryptshift leaves them as they are. A header
		// with the planned UUID was made by cryptshift, so the filesystem
		// inside carries the planned UUID too (that is what keeps fstab
		// stable across a reboot and re-plan).
		if st.luksUUID == p.ids.uuid("luks", name) {
			kind := "fs"
			if want == "swap" {
				kind = "swap"
			}
			st.fsUUID = p.ids.uuid(kind, name)
		} else {
			p.note("%s: the LUKS2 container exists and is closed; its %s is not visible to the inventory and is left as it is", st.lvPath, want)
		}
		return
	}
	var existing *inventory.Content
	if !st.format && !st.created {
		existing = p.content(p.inv.Device(dev))
	}
	if existing != nil && existing.Type == want && isUUID(existing.UUID) {
		st.fsUUID = existing.UUID
		return
	}
	if existing != nil {
		if !p.wipe(st.lp, p.inv.Device(dev)) {
			return
		}
	}
	if want == "swap" {
		st.fsUUID = p.ids.uuid("swap", name)
		p.add(plan.Step{
			Action: plan.ActMkswap, Target: dev,
			Description: fmt.Sprintf("make %s a swap area", dev),
		}, &plan.Params{Mkswap: &fs.Mkswap{Device: dev, UUID: st.fsUUID, Label: v.Label}}, nil)
		return
	}
	st.fsUUID = p.ids.uuid("fs", name)
	p.add(plan.Step{
		Action: plan.ActMkfs, Target: dev,
		Description: fmt.Sprintf("create %s filesystem on %s", article(want), dev),
	}, &plan.Params{Mkfs: &fs.Mkfs{FS: want, Device: dev, UUID: st.fsUUID, Label: v.Label}}, nil)
}

func (p *planner) planPlainVolume(st *volState) {
	// Unencrypted with a stated reason (validated): the filesystem sits on
	// the LV itself.
	if st.v.Purpose != layout.PurposeFilesystem {
		return
	}
	p.note("%s is not encrypted: %s", st.lvPath, st.v.Encryption.Reason)
	p.planContent(st, st.lvPath)
}

func (p *planner) planRandomSwap(st *volState) {
	e := st.v.Encryption
	m := p.inv.Mapping(e.Name)
	if m != nil {
		if st.dev != nil && m.Parent == st.dev.Path && !st.created {
			st.isOpen = true
		} else {
			p.rep.Errorf(st.lp+".encryption.name", "close it or choose another encryption.name", "mapping %s is already open on %s", e.Name, m.Parent)
			return
		}
	}
	if !st.isOpen {
		if c := p.content(st.dev); !st.created && c != nil && c.Type != "swap" {
			// A random key turns whatever is on the LV into noise.
			if !p.wipe(st.lp, st.dev) {
				return
			}
		}
		p.add(plan.Step{
			Action: plan.ActOpenPlain, Target: st.mapping,
			Description: fmt.Sprintf("open %s as %s with a fresh random key (plain dm-crypt; nothing survives a reboot)", st.lvPath, st.mapping),
		}, &plan.Params{PlainOpen: &luks.OpenPlain{Device: st.lvPath, Name: e.Name, Cipher: e.Cipher, KeySize: e.KeySize, SectorSize: e.SectorSize, Discard: *e.Discard}},
			&plan.Params{Close: &luks.Close{Name: e.Name}})
	}
	var content *inventory.Content
	if st.isOpen {
		if d := p.inv.Device(st.mapping); d != nil {
			content = d.Content
		}
	}
	if content == nil || content.Type != "swap" {
		p.add(plan.Step{
			Action: plan.ActMkswap, Target: st.mapping,
			Description: fmt.Sprintf("make %s a swap area", st.mapping),
		}, &plan.Params{Mkswap: &fs.Mkswap{Device: st.mapping}}, nil)
	}
	opts := fmt.Sprintf("swap,cipher=%s,size=%d,sector-size=%d", e.Cipher, e.KeySize, e.SectorSize)
	if *e.Discard {
		opts += ",discard"
	}
	// /dev/VG/LV is stable across boots, unlike /dev/sdX: a random-key
	// swap has no UUID to name it by, and the wrong device would be
	// overwritten by mkswap at boot.
	p.crypttab = append(p.crypttab, crypttabEntry(e.Name, st.lvPath, "/dev/urandom", opts))
}

func (p *planner) planSwapon(st *volState) {
	dev := st.mapping
	if st.v.Encryption.Type == layout.EncNone {
		return
	}
	if !p.inv.SwapOn(dev) && (st.isOpen || st.format || st.v.Encryption.Type == layout.EncRandom) {
		p.add(plan.Step{
			Action: plan.ActSwapon, Target: dev,
			Description: fmt.Sprintf("enable swap on %s", dev),
		}, &plan.Params{Swapon: &fs.Swapon{Device: dev}}, &plan.Params{Swapoff: &fs.Swapoff{Device: dev}})
	}
	spec := dev
	if st.v.Encryption.Type == layout.EncLUKS2 && st.fsUUID != "" {
		spec = "UUID=" + st.fsUUID
	}
	p.fstab = append(p.fstab, fstabEntry(spec, "none", "swap", []string{"sw"}, 0))
}

func (p *planner) emitMount(m mountSpec) {
	if m.mount == "" {
		return
	}
	target := p.onRoot(m.mount)
	if cur := p.inv.MountAt(target); cur != nil {
		d := p.inv.Device(m.device)
		if cur.Source == m.device || (d != nil && (cur.Source == d.Path || contains(d.Aliases, cur.Source))) {
			p.addFstab(m)
			return
		}
		p.rep.Errorf(m.layoutPath, "unmount it, or apply with another --target", "%s is already mounted at %s", cur.Source, target)
		return
	}
	p.add(plan.Step{
		Action: plan.ActMount, Target: target,
		Description: fmt.Sprintf("mount %s on %s", m.device, target),
	}, &plan.Params{Mount: &fs.Mount{Device: m.device, Target: target, FSType: m.fstype}}, &plan.Params{Umount: &fs.Umount{Target: target}})
	p.addFstab(m)
}

func (p *planner) addFstab(m mountSpec) {
	spec := m.device
	if m.fsUUID != "" {
		spec = "UUID=" + m.fsUUID
	}
	pass := 2
	if m.mount == "/" {
		pass = 1
	}
	p.fstab = append(p.fstab, fstabEntry(spec, m.mount, m.fstype, m.options, pass))
}

func contains(s []string, x string) bool {
	for _, y := range s {
		if y == x {
			return true
		}
	}
	return false
}

func keyDesc(e layout.Encryption, keyFile string) string {
	if e.Key == layout.KeyFile {
		return "key file " + keyFile
	}
	return "the passphrase"
}

func keyTabField(st *volState) string {
	if st.v.Encryption.Key == layout.KeyFile {
		return st.keyFile
	}
	return "none"
}

func luksOptions(st *volState) string {
	opts := []string{"luks"}
	if *st.v.Encryption.Discard {
		opts = append(opts, "discard")
	}
	if st.v.Purpose == layout.PurposeSwap {
		// The resume device must be unlocked in the initramfs (Debian's
		// cryptsetup-initramfs honours this option).
		opts = append(opts, "initramfs")
	}
	return strings.Join(opts, ",")
}
