package migrate

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"libvirt.org/go/libvirtxml"

	"github.com/cryptshift/cryptshift/internal/doors/files"
	"github.com/cryptshift/cryptshift/internal/doors/qemuimg"
	"github.com/cryptshift/cryptshift/internal/doors/secrets"
	"github.com/cryptshift/cryptshift/internal/hostview/blockstack"
	"github.com/cryptshift/cryptshift/internal/hostview/rootfs"
	"github.com/cryptshift/cryptshift/internal/model/layout"
	"github.com/cryptshift/cryptshift/internal/model/plan"
	"github.com/cryptshift/cryptshift/internal/runner/guard"
	"github.com/cryptshift/cryptshift/libvirt"
	"github.com/cryptshift/cryptshift/luks"
	"github.com/cryptshift/cryptshift/lvm"
)

// vgTarget puts each disk on its own LV in a volume group, formatted as
// LUKS2 with apply's key rules: a random key file on the encrypted root
// opens it (at boot through crypttab) and a recovery key sits in a second
// keyslot. The host's kernel decrypts (dm-crypt); the guest gets the open
// mapping /dev/mapper/NAME as a raw block disk, so qemu never sees a key.
//
// Every object it creates is named in the journal header before it exists
// (LV, LUKS UUID, mapping, key file), and every step checks for it first,
// so a step repeated after a crash recognises its own work. Rollback
// removes only what a step of this journal began to create.
type vgTarget struct {
	name string
	rt   *runtime
	h    *Header // set by Prepare
	vg   lvm.VG
}

// Defaults of vg: targets.
const (
	DefaultCrypttab   = "/etc/crypttab"
	DefaultOverlayDir = "/var/lib/cryptshift/overlays"
	// keyFileBytes: apply's key files are 4096 random bytes
	// (planner.KeyFileBytes), far beyond any brute force.
	keyFileBytes = 4096
	// luks2DefaultOffset is the data offset cryptsetup 2.x gives a LUKS2
	// header by default (16 KiB binary+JSON metadata twice, the rest of
	// 16 MiB for keyslots); cryptshift asks for at least this much.
	luks2DefaultOffset = 16 << 20
	// luksAlign: cryptsetup wants --offset in whole 4096-byte units, and
	// 4096-byte encryption sectors need the data size in whole sectors.
	luksAlign = 4096
)

func (v *vgTarget) Spec() string { return "vg:" + v.name }

func (v *vgTarget) cfg() *VGConfig { return v.h.VG }

func (v *vgTarget) lvm() lvm.LVM { return lvm.LVM{Run: v.rt.run, Config: v.cfg().LVMConfig} }

func (v *vgTarget) cs() luks.Cryptsetup { return luks.Cryptsetup{Run: v.rt.run} }

// lvPath is the LV's device node as LVM names it.
func (v *vgTarget) lvPath(d *Disk) string { return "/dev/" + v.name + "/" + d.LV }

// params are the LUKS2 parameters of a disk's header, and the KDF of its
// first keyslot: the key file's, which needs no slow KDF (as apply's
// key-file keyslots, luks.KeyFileKDF).
func (v *vgTarget) params(d *Disk) luks.Params {
	p := v.cfg().LUKS
	p.UUID, p.Offset = d.LUKSUUID, d.DataOffset/512
	p.KDF = luks.KeyFileKDF(p.KDF)
	return p
}

// recoveryKDF is the KDF of the recovery keyslot: the configured slow one
// (people write the recovery key down; part of it may leak).
func (v *vgTarget) recoveryKDF() luks.KDF { return v.cfg().LUKS.KDF }

func vgConfig(o *Options) *VGConfig {
	c := &VGConfig{KeyDir: o.KeyDir, Crypttab: o.Crypttab, RecoveryKeyFile: o.RecoveryKeyFile, LVMConfig: o.LVMConfig}
	if c.KeyDir == "" {
		c.KeyDir = layout.DefaultKeyFileDir
	}
	if c.Crypttab == "" {
		c.Crypttab = DefaultCrypttab
	}
	if o.Mode == ModeLive {
		c.OverlayDir = o.OverlayDir
		if c.OverlayDir == "" {
			c.OverlayDir = DefaultOverlayDir
		}
	}
	d := layout.DefaultLUKS
	c.LUKS = d.Params("")
	if o.PBKDFIterations > 0 {
		c.LUKS.Iterations, c.LUKS.IterTimeMs = o.PBKDFIterations, 0
	}
	if o.PBKDFMemoryKiB > 0 {
		c.LUKS.MemoryKiB = o.PBKDFMemoryKiB
	}
	if o.PBKDFParallel > 0 {
		c.LUKS.Parallel = o.PBKDFParallel
	}
	return c
}

func (v *vgTarget) Prepare(ctx context.Context, h *Header) []string {
	if h.VG == nil {
		return []string{"the journal has no vg: settings (it was not written by a vg: migration)"}
	}
	v.h = h
	vgs, err := v.lvm().VGs(ctx)
	if err != nil {
		return []string{fmt.Sprintf("cannot list volume groups: %v", err)}
	}
	var names []string
	for _, g := range vgs {
		if g.Name == v.name {
			v.vg = g
			if g.ExtentSize <= 0 {
				return []string{fmt.Sprintf("volume group %q reports no extent size", v.name)}
			}
			return nil
		}
		names = append(names, g.Name)
	}
	return []string{fmt.Sprintf("cannot find volume group %q (volume groups: [%s]); create it with vgcreate, or name another with --to vg:NAME", v.name, strings.Join(names, " "))}
}

// lvName makes an LV name from a domain and device name: LVM allows
// a-z A-Z 0-9 + _ . - in names (lvm(8) "VALID NAMES"), not starting with
// a dash; anything else becomes an underscore.
func lvName(domain, dev string) string {
	var b strings.Builder
	for _, r := range domain + "-" + dev {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', strings.ContainsRune("+_.-", r):
			b.WriteRune(r)
		default:
			b.WriteByte('_')
		}
	}
	s := b.String()
	if strings.HasPrefix(s, "-") {
		s = "_" + s[1:]
	}
	return s
}

// derivedUUID makes a UUID from another: the LUKS UUID of a disk comes
// from its secret UUID (random, in the journal header), so the plan, the
// crypttab line and a resumed run all know it before the header exists.
func derivedUUID(kind, from string) string {
	b := sha256.Sum256([]byte("cryptshift " + kind + "\x00" + from))
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

func roundUp(n, unit int64) int64 { return (n + unit - 1) / unit * unit }

func (v *vgTarget) Assign(h *Header, d *Disk) error {
	base := lvName(h.Domain, d.Target)
	d.LV = base
	d.Mapping = base + "_crypt"
	d.TargetPath = "/dev/mapper/" + d.Mapping
	d.TargetVolume = v.name + "/" + base
	d.KeyFile = filepath.Join(h.VG.KeyDir, d.Mapping+".key")
	d.LUKSUUID = derivedUUID("luks2", d.SecretUUID)
	if d.VirtualSize%luksAlign != 0 {
		return fmt.Errorf("disk %s: its virtual size %d is not a multiple of %d bytes, which a LUKS2 mapping with 4096-byte sectors of exactly that size needs; grow it to the next 4 KiB (qemu-img resize, then the guest's partition table) or use --to pool:NAME", d.Target, d.VirtualSize, luksAlign)
	}
	// The LV holds the header and exactly the virtual size of data: the
	// guest sees the disk size it had, and block copies (which need equal
	// sizes) can pivot onto the mapping. Rounding up to whole extents
	// goes into the data offset; luksFormat zeroes the whole area before
	// it, so no old bytes of the LV survive there.
	unit := max(v.vg.ExtentSize, luksAlign) // both powers of two
	d.LVSize = roundUp(d.VirtualSize+luks2DefaultOffset, unit)
	d.DataOffset = d.LVSize - d.VirtualSize
	if h.Mode == ModeLive {
		d.BackOverlayPath = filepath.Join(h.VG.OverlayDir, base+".back-overlay.qcow2")
		if h.Engine == EngineSnapshot {
			d.OverlayPath = filepath.Join(h.VG.OverlayDir, base+".overlay.qcow2")
		}
	}
	return nil
}

// host is where this process opens a device path (the test seam Root).
func (v *vgTarget) host(p string) string { return v.rt.hostPath(p) }

func (v *vgTarget) scan() (*blockstack.System, error) {
	sys, err := blockstack.Scan(rootfs.Dir(v.rt.root))
	if err != nil {
		return nil, fmt.Errorf("cannot read the block devices: %w", err)
	}
	return sys, nil
}

func (v *vgTarget) Check(ctx context.Context, h *Header) []string {
	var problems []string
	lvs, err := v.lvm().LVs(ctx)
	if err != nil {
		return []string{fmt.Sprintf("cannot list logical volumes: %v", err)}
	}
	sys, err := v.scan()
	if err != nil {
		return []string{err.Error()}
	}
	var need int64
	for i := range h.Disks {
		d := &h.Disks[i]
		need += d.LVSize
		for _, lv := range lvs {
			if lv.VG == v.name && lv.Name == d.LV {
				problems = append(problems, fmt.Sprintf("disk %s: logical volume %s/%s already exists; cryptshift never overwrites a volume it did not create; remove it, or resume the migration that made it with --resume", d.Target, v.name, d.LV))
			}
		}
		if sys.DeviceByDMName(d.Mapping) != nil {
			problems = append(problems, fmt.Sprintf("disk %s: a device-mapper device %s is already open; close it (cryptsetup close %s) or resume the migration that opened it with --resume", d.Target, d.Mapping, d.Mapping))
		}
		for _, f := range []string{d.KeyFile, d.OverlayPath, d.BackOverlayPath} {
			if f == "" {
				continue
			}
			if _, err := os.Lstat(f); err == nil {
				problems = append(problems, fmt.Sprintf("disk %s: %s already exists; cryptshift never overwrites a file it did not create; remove it, or resume the migration that made it with --resume", d.Target, f))
			}
		}
	}
	if b, err := os.ReadFile(h.VG.Crypttab); err == nil && strings.Contains(string(b), crypttabBegin(h.Domain)+"\n") {
		problems = append(problems, fmt.Sprintf("%s already has a block %q from an earlier migration of %s; roll that migration back (cryptshift rollback JOURNAL) or remove the block", h.VG.Crypttab, crypttabBegin(h.Domain), h.Domain))
	}
	if free := v.vg.FreeCount * v.vg.ExtentSize; need > free {
		problems = append(problems, fmt.Sprintf("volume group %q is too small: the encrypted disks need %s (virtual sizes plus LUKS2 headers, rounded up to whole %s extents), the volume group has %s free: %s missing; add a physical volume (vgextend) or free space in it",
			v.name, human(need), human(v.vg.ExtentSize), human(free), human(need-free)))
	}
	// The key files unlock the disks: on plaintext storage they would undo
	// the encryption; in RAM they would be gone at the next boot.
	problems = append(problems, mustBeEncrypted(sys, h.VG.KeyDir, "key directory", "choose one on encrypted storage with --key-dir")...)
	if h.Mode == ModeLive {
		// The guest's writes during the migration land in the overlays:
		// qemu encrypts them, and they must not leave even their layout on
		// plaintext storage.
		problems = append(problems, mustBeEncrypted(sys, h.VG.OverlayDir, "overlay directory", "choose one on encrypted storage with --overlay-dir")...)
	}
	return problems
}

// mustBeEncrypted refuses a directory that holds keys (or what they
// protect) unless its storage is traced to dm-crypt: the check apply makes
// before it writes a key file (guard.Check), with migrate's words. It
// serves vg: key and overlay directories and the libvirt secret store of
// pool: targets.
func mustBeEncrypted(sys *blockstack.System, dir, what, fix string) []string {
	if err := guard.Check(sys, dir); err != nil {
		return []string{fmt.Sprintf("the %s %v; %s", what, err, fix)}
	}
	return nil
}

// Describe names a disk's target in plans.
func (v *vgTarget) Describe(d *Disk) string {
	return d.TargetPath + " (dm-crypt LUKS2 on " + v.lvPath(d) + ")"
}

func (v *vgTarget) CreateSteps(h *Header, d *Disk) []*Step {
	lvPath := v.lvPath(d)
	// The same typed operations as apply's steps (lvm.LVCreate, luks.Format,
	// ...), rendered once for the plan and run through the same doors.
	create := v.lvCreate(d)
	lv := &Step{Step: plan.NewStep(plan.Step{ID: d.Target + ".lv", Action: "create-lv", Target: lvPath,
		Description: fmt.Sprintf("create logical volume %s of %s (the %s disk plus a %s LUKS2 header) in volume group %s", lvPath, human(d.LVSize), human(d.VirtualSize), human(d.DataOffset), v.name)},
		&plan.Params{LVCreate: &create}, &plan.Params{LVRemove: &lvm.LVRemove{VG: v.name, Name: d.LV}}), Disk: d.Target}
	lv.Run = func(ctx context.Context) error { return v.ensureLV(ctx, d) }

	key := &Step{Step: plan.NewStep(plan.Step{ID: d.Target + ".keyfile", Action: "create-keyfile", Target: d.KeyFile,
		Description: fmt.Sprintf("generate a %d-byte random key file %s (mode 0400, directory 0700, on the encrypted root); it opens %s at boot", keyFileBytes, d.KeyFile, d.TargetPath)},
		&plan.Params{KeyFile: &plan.KeyFile{Path: d.KeyFile, Bytes: keyFileBytes}}, &plan.Params{Remove: &plan.Remove{Path: d.KeyFile}}), Disk: d.Target}
	// Atomic, and kept when an interrupted run made it already: a keyslot
	// may have been made from it.
	key.Run = func(ctx context.Context) error { return secrets.KeyFile(d.KeyFile, keyFileBytes) }

	p := v.params(d)
	// The key file's bytes go to cryptsetup on stdin: the secret is named
	// by the file's path.
	keyRef := luks.Key{Secret: d.KeyFile}
	format := &Step{Step: plan.NewStep(plan.Step{ID: d.Target + ".format", Action: "luks-format", Target: lvPath,
		Description: fmt.Sprintf("format %s as LUKS2 (%s, %d-bit key, %s, %d-byte sectors, UUID %s, data at %s), unlocked by the key file",
			lvPath, p.Cipher, p.KeySize, p.PBKDF, p.SectorSize, d.LUKSUUID, human(d.DataOffset))},
		&plan.Params{LUKSFormat: &luks.Format{Device: lvPath, Params: p, Key: keyRef}},
		// Rollback zeroes the header area before the LV is removed.
		&plan.Params{Zero: &plan.Zero{Device: lvPath, Head: d.DataOffset}}), Disk: d.Target}
	format.Run = func(ctx context.Context) error { return v.ensureFormatted(ctx, d) }

	rec := &Step{Step: plan.NewStep(plan.Step{ID: d.Target + ".recovery", Action: "add-recovery-key", Target: lvPath,
		Description: fmt.Sprintf("add the recovery key to a second keyslot of %s", lvPath)},
		&plan.Params{LUKSAddKey: &luks.AddKey{Device: lvPath, KDF: v.recoveryKDF(), Key: keyRef, NewKey: luks.Key{Secret: plan.SecretRecoveryKey}}}, nil), Disk: d.Target}
	rec.Run = func(ctx context.Context) error { return v.ensureRecovery(ctx, d) }

	open := &Step{Step: plan.NewStep(plan.Step{ID: d.Target + ".open", Action: "open", Target: d.TargetPath,
		Description: fmt.Sprintf("open %s as %s (%s, exactly the size of the disk)", lvPath, d.TargetPath, human(d.VirtualSize))},
		&plan.Params{LUKSOpen: &luks.Open{Device: lvPath, Name: d.Mapping, Key: keyRef}}, &plan.Params{Close: &luks.Close{Name: d.Mapping}}),
		Disk: d.Target, State: StateTargetCreated}
	open.Run = func(ctx context.Context) error { return v.ensureOpen(ctx, d) }

	steps := []*Step{lv, key, format, rec, open}
	if h.Mode == ModeLive {
		steps = append([]*Step{v.overlayKeyStep(h, d)}, steps...)
	}
	return steps
}

// findLV returns the disk's LV, or nil.
func (v *vgTarget) findLV(ctx context.Context, d *Disk) (*lvm.LV, error) {
	lvs, err := v.lvm().LVs(ctx)
	if err != nil {
		return nil, fmt.Errorf("cannot list logical volumes: %w", err)
	}
	for i := range lvs {
		if lvs[i].VG == v.name && lvs[i].Name == d.LV {
			return &lvs[i], nil
		}
	}
	return nil, nil
}

// lvCreate is the LV of a disk: exactly the extents that hold its LUKS2
// header and its data.
func (v *vgTarget) lvCreate(d *Disk) lvm.LVCreate {
	return lvm.LVCreate{VG: v.name, Name: d.LV, Extents: d.LVSize / v.vg.ExtentSize}
}

func (v *vgTarget) ensureLV(ctx context.Context, d *Disk) error {
	lv, err := v.findLV(ctx, d)
	if err != nil {
		return err
	}
	if lv == nil {
		// Check refused an LV of this name that existed before the
		// journal; one that exists now was made by this step.
		if err := v.lvm().Do(ctx, v.lvCreate(d)); err != nil {
			return fmt.Errorf("cannot create logical volume %s/%s: %w", v.name, d.LV, err)
		}
		if lv, err = v.findLV(ctx, d); err != nil {
			return err
		}
		if lv == nil {
			return fmt.Errorf("cannot find logical volume %s/%s after creating it", v.name, d.LV)
		}
	}
	if lv.Size != d.LVSize {
		return fmt.Errorf("cannot use logical volume %s/%s: it has %d bytes, the plan %d; remove it (lvremove %s/%s) and resume", v.name, d.LV, lv.Size, d.LVSize, v.name, d.LV)
	}
	if !lv.Active {
		if err := v.lvm().Do(ctx, lvm.LVActivate{VG: v.name, Name: d.LV}); err != nil {
			return fmt.Errorf("cannot activate logical volume %s/%s: %w", v.name, d.LV, err)
		}
	}
	return nil
}

// diskKey reads a disk's key file (the key goes to cryptsetup on stdin).
func (v *vgTarget) diskKey(d *Disk) ([]byte, error) {
	k, err := os.ReadFile(d.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("cannot read key file of %s: %w", d.Target, err)
	}
	if len(k) != keyFileBytes {
		return nil, fmt.Errorf("cannot use key file %s: it has %d bytes, not %d", d.KeyFile, len(k), keyFileBytes)
	}
	return k, nil
}

func (v *vgTarget) ensureFormatted(ctx context.Context, d *Disk) error {
	lvPath := v.lvPath(d)
	p := v.params(d)
	hdr, err := luks.ReadHeader(v.host(lvPath))
	switch {
	case err == nil && hdr.UUID == d.LUKSUUID:
		return v.checkHeader(hdr, d, 1) // formatted before a crash
	case err == nil:
		return fmt.Errorf("cannot format %s: it carries another LUKS header (UUID %s, not the planned %s), which this migration did not write; roll back with cryptshift rollback", lvPath, hdr.UUID, d.LUKSUUID)
	}
	// No header, or a half-written one from a crash during the format:
	// the LV is this migration's own, made by its create-lv step.
	key, err := v.diskKey(d)
	if err != nil {
		return err
	}
	if err := v.cs().Format(ctx, p, lvPath, key); err != nil {
		return fmt.Errorf("cannot format %s: %w", lvPath, err)
	}
	if hdr, err = luks.ReadHeader(v.host(lvPath)); err != nil {
		return err
	}
	return v.checkHeader(hdr, d, 1)
}

// checkHeader compares a disk's header with the plan: its volume
// parameters, the key file's keyslot (the first) and, when asked for, the
// recovery keyslot (the second), each against its own KDF.
func (v *vgTarget) checkHeader(hdr *luks.Header, d *Disk, slots int) error {
	p := v.params(d)
	if err := luks.CheckVolume(hdr, p); err != nil {
		return err
	}
	if len(hdr.Keyslots) < slots {
		return fmt.Errorf("LUKS header of %s has %d keyslot(s), want at least %d", v.lvPath(d), len(hdr.Keyslots), slots)
	}
	if err := luks.CheckKeyslot(hdr, hdr.Keyslots[0].ID, p.KDF); err != nil {
		return err
	}
	if slots >= 2 {
		return luks.CheckKeyslot(hdr, hdr.Keyslots[1].ID, v.recoveryKDF())
	}
	return nil
}

func (v *vgTarget) ensureRecovery(ctx context.Context, d *Disk) error {
	lvPath := v.lvPath(d)
	hdr, err := luks.ReadHeader(v.host(lvPath))
	if err != nil {
		return err
	}
	rk, err := v.rt.recoveryKey(true)
	if err != nil {
		return err
	}
	if len(hdr.Keyslots) >= 2 {
		// Added before a crash (this migration adds one keyslot after the
		// key file's): the key given now must be the one in it.
		if err := v.cs().TestKey(ctx, lvPath, rk); err != nil {
			return fmt.Errorf("cannot confirm the recovery keyslot of %s: the recovery key given does not open it; give the recovery key shown (or written to --recovery-key-file) when this migration started: %w", lvPath, err)
		}
		return nil
	}
	key, err := v.diskKey(d)
	if err != nil {
		return err
	}
	if err := v.cs().AddKey(ctx, v.recoveryKDF(), lvPath, key, rk); err != nil {
		return fmt.Errorf("cannot add the recovery key to %s: %w", lvPath, err)
	}
	if hdr, err = luks.ReadHeader(v.host(lvPath)); err != nil {
		return err
	}
	return v.checkHeader(hdr, d, 2)
}

// mapping returns the disk's open mapping, or nil; an open mapping of that
// name that is not the disk's LUKS2 header on its LV is an error.
func (v *vgTarget) mapping(d *Disk) (*blockstack.Device, error) {
	sys, err := v.scan()
	if err != nil {
		return nil, err
	}
	m := sys.DeviceByDMName(d.Mapping)
	if m == nil {
		return nil, nil
	}
	lv := sys.DeviceByPath(v.lvPath(d))
	if m.CryptType() != "LUKS2" || m.CryptUUID() != strings.ReplaceAll(d.LUKSUUID, "-", "") || lv == nil || len(m.Slaves) != 1 || m.Slaves[0] != lv.Name {
		return m, fmt.Errorf("%s is open, but not as the LUKS2 volume %s of %s (dm uuid %q); close it (cryptsetup close %s) and resume, or roll back", d.TargetPath, d.LUKSUUID, v.lvPath(d), m.DMUUID, d.Mapping)
	}
	return m, nil
}

func (v *vgTarget) ensureOpen(ctx context.Context, d *Disk) error {
	m, err := v.mapping(d)
	if err != nil {
		return err
	}
	if m == nil {
		key, err := v.diskKey(d)
		if err != nil {
			return err
		}
		if err := v.cs().Open(ctx, v.lvPath(d), d.Mapping, key); err != nil {
			return fmt.Errorf("cannot open %s as %s: %w", v.lvPath(d), d.TargetPath, err)
		}
		if m, err = v.mapping(d); err != nil {
			return err
		}
		if m == nil {
			return fmt.Errorf("cannot find %s after opening it", d.TargetPath)
		}
	}
	if int64(m.Size) != d.VirtualSize {
		return fmt.Errorf("%s has %d bytes, not the %d of disk %s", d.TargetPath, m.Size, d.VirtualSize, d.Target)
	}
	return nil
}

// Crypttab block markers: one block per domain, like apply's per layout.
func crypttabBegin(domain string) string { return "# BEGIN cryptshift migrate " + domain }
func crypttabEnd(domain string) string   { return "# END cryptshift migrate " + domain }

// crypttabBlock lists every disk's mapping: NAME UUID=... KEYFILE luks,
// the form apply writes. systemd-cryptsetup-generator turns each line
// into a unit ordered before cryptsetup.target, which sysinit.target
// pulls in; libvirtd (and so the guests it autostarts) comes after
// sysinit.target, and Debian's cryptdisks init script likewise runs in
// rcS, before libvirtd. The key file is read from the root filesystem,
// which is mounted by then; discard stays off (MISSION.md).
func crypttabBlock(h *Header) string {
	var b strings.Builder
	b.WriteString(crypttabBegin(h.Domain) + "\n")
	b.WriteString("# <name> <device> <key file> <options>\n")
	for _, d := range h.Disks {
		fmt.Fprintf(&b, "%s UUID=%s %s luks\n", d.Mapping, d.LUKSUUID, d.KeyFile)
	}
	b.WriteString(crypttabEnd(h.Domain) + "\n")
	return b.String()
}

// BootSteps: the crypttab block that opens every mapping at boot.
func (v *vgTarget) BootSteps(h *Header) []*Step {
	f := h.VG.Crypttab
	s := &Step{Step: plan.Step{ID: "domain.crypttab", Action: "write-crypttab", Target: f,
		Description: fmt.Sprintf("write %d crypttab entr(y/ies) into %s (a marked block, so the mappings open at boot before libvirtd starts the guest; a backup of the old file is kept)", len(h.Disks), f),
		Command:     []string{"cryptshift", "step", "write-block", "--file", f},
		Input:       crypttabBlock(h),
		Undo:        []string{"cryptshift:remove-block", "--file", f, "--block", crypttabBegin(h.Domain)}},
		Disks: diskNames(h)}
	s.Run = func(ctx context.Context) error { return files.WriteBlock(f, crypttabBlock(h)) }
	return []*Step{s}
}

func (v *vgTarget) Image(ctx context.Context, d *Disk) (qemuimg.Image, error) {
	// Copies, compares and a rollback's copy back read the mapping: open
	// it when it is not (a rollback after a reboot without crypttab).
	if err := v.ensureOpen(ctx, d); err != nil {
		return qemuimg.Image{}, err
	}
	return qemuimg.Image{Path: v.host(d.TargetPath), Format: qemuimg.Raw}, nil
}

func (v *vgTarget) GuestDisk(d *Disk) (string, *libvirtxml.DomainDiskSource) {
	return qemuimg.Raw, &libvirtxml.DomainDiskSource{Block: &libvirtxml.DomainDiskSourceBlock{Dev: d.TargetPath}}
}

// Live mode: the overlays are qcow2 files that qemu encrypts
// (encrypt.format=luks) with a random key in a libvirt secret, as for
// pool: targets, kept in an overlay directory on encrypted storage. The
// secret exists while an overlay may: it is defined before the first and
// removed with the last.

func (v *vgTarget) overlayKeyStep(h *Header, d *Disk) *Step {
	s := &Step{Step: plan.Step{ID: d.Target + ".overlay-key", Action: "define-secret", Target: "secret " + d.SecretUUID,
		Description: fmt.Sprintf("define libvirt secret %s and store a new random 256-bit key in it: the key of the encrypted overlays of %s while the guest runs on them", d.SecretUUID, d.Target),
		Command:     libvirt.Argv(libvirt.DefineSecret{UUID: d.SecretUUID, Volume: v.secretUsage(d)}, libvirt.SetSecretValue{UUID: d.SecretUUID}),
		Secrets:     []plan.SecretRef{{FD: 0, Secret: d.Target + "-overlay-key"}},
		Undo:        libvirt.UndefineSecret{UUID: d.SecretUUID}.Argv()}, Disk: d.Target}
	s.Run = func(ctx context.Context) error { return v.ensureSecret(h, d) }
	return s
}

// secretUsage is the usage id of a disk's overlay secret (libvirt wants one
// per secret; the overlays of a disk share the secret).
func (v *vgTarget) secretUsage(d *Disk) string {
	return filepath.Join(v.cfg().OverlayDir, lvName(v.h.Domain, d.Target)+".overlays")
}

func (v *vgTarget) ensureSecret(h *Header, d *Disk) error {
	hv := v.rt.hv
	exists, err := hv.SecretExists(d.SecretUUID)
	if err != nil {
		return err
	}
	if !exists {
		// private='no': cryptshift reads the key back after a crash.
		s := &libvirtxml.Secret{Ephemeral: "no", Private: "no", UUID: d.SecretUUID,
			Description: fmt.Sprintf("cryptshift: key of the overlays of disk %s of domain %s during its migration", d.Target, h.Domain),
			Usage:       &libvirtxml.SecretUsage{Type: "volume", Volume: v.secretUsage(d)}}
		if err := hv.DefineSecret(s); err != nil {
			return err
		}
	}
	has, err := hv.HasSecretValue(d.SecretUUID)
	if err != nil || has {
		return err
	}
	key, err := v.rt.randomKey()
	if err != nil {
		return err
	}
	if err := hv.SetSecretValue(d.SecretUUID, key); err != nil {
		return err
	}
	v.rt.keys[d.SecretUUID] = key
	return nil
}

func (v *vgTarget) OverlayStep(h *Header, d *Disk, id, path string, backing Layer) *Step {
	bpath, bformat := backing.Path, backing.Format
	if bformat == qemuimg.LUKS { // the target itself (live rollback)
		bpath, bformat = d.TargetPath, qemuimg.Raw
	}
	opts := qemuimg.CreateOptions{Path: path, Format: qemuimg.QCOW2, Size: d.VirtualSize, Secret: placeholderKey,
		IterTimeMS: h.IterTimeMS, BackingPath: bpath, BackingFormat: bformat}
	s := &Step{Step: plan.Step{ID: id, Action: "create-overlay", Target: path,
		Description: fmt.Sprintf("create the encrypted qcow2 overlay %s on top of %s (key in libvirt secret %s; the directory is on encrypted storage)", path, bpath, d.SecretUUID),
		Command:     qemuimg.CreateCmd(opts).Argv(),
		Secrets:     []plan.SecretRef{{FD: 3, Secret: d.Target + "-overlay-key"}},
		Undo:        files.Remove{Path: path}.Argv()}, Disk: d.Target}
	s.Run = func(ctx context.Context) error {
		if err := v.ensureSecret(h, d); err != nil {
			return err
		}
		key, err := v.rt.key(d.SecretUUID)
		if err != nil {
			return err
		}
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			return fmt.Errorf("cannot create overlay directory %s: %w", filepath.Dir(path), err)
		}
		if err := removeIfExists(path); err != nil {
			return err
		}
		o := opts
		o.Secret = key
		if err := v.rt.img.Create(ctx, o); err != nil {
			return err
		}
		return os.Chmod(path, 0o600)
	}
	return s
}

func (v *vgTarget) OverlaySource(d *Disk, path string) *libvirtxml.DomainDiskSource {
	return &libvirtxml.DomainDiskSource{
		File: &libvirtxml.DomainDiskSourceFile{File: path},
		Encryption: &libvirtxml.DomainDiskEncryption{Format: "luks",
			Secrets: []libvirtxml.DomainDiskSecret{{Type: "passphrase", UUID: d.SecretUUID}}},
	}
}

func (v *vgTarget) OverlayImage(ctx context.Context, d *Disk, path string, backing *qemuimg.Image) (qemuimg.Image, error) {
	key, err := v.rt.key(d.SecretUUID)
	if err != nil {
		return qemuimg.Image{}, err
	}
	return qemuimg.Image{Path: path, Format: qemuimg.QCOW2, Secret: key, Backing: backing}, nil
}

// RemoveOverlay deletes an overlay; with the last overlay of the disk gone
// its key goes too.
func (v *vgTarget) RemoveOverlay(ctx context.Context, d *Disk, path string) error {
	if err := removeIfExists(path); err != nil {
		return err
	}
	for _, f := range []string{d.OverlayPath, d.BackOverlayPath} {
		if f == "" {
			continue
		}
		if _, err := os.Lstat(f); err == nil {
			return nil
		}
	}
	return v.removeSecret(d)
}

func (v *vgTarget) removeSecret(d *Disk) error {
	exists, err := v.rt.hv.SecretExists(d.SecretUUID)
	if err != nil || !exists {
		return err
	}
	if err := v.rt.hv.UndefineSecret(d.SecretUUID); err != nil {
		return err
	}
	delete(v.rt.keys, d.SecretUUID)
	return nil
}

// Remove undoes what this migration's steps began for one disk (rollback):
// overlays and their key, the mapping, the LUKS header and the LV, the key
// file, the crypttab block. Each only if its step began (the journal) and
// it is still the object that step made.
func (v *vgTarget) Remove(ctx context.Context, d *Disk) error {
	for _, f := range []string{d.OverlayPath, d.BackOverlayPath} {
		if f != "" {
			if err := removeIfExists(f); err != nil {
				return err
			}
		}
	}
	if v.h.Mode == ModeLive {
		if err := v.removeSecret(d); err != nil {
			return err
		}
	}
	began := v.rt.begun
	m, err := v.mapping(d)
	switch {
	case err != nil && began(d.Target+".open"):
		return err // open, but not as ours: leave it to the admin
	case err == nil && m != nil:
		if err := v.cs().Close(ctx, d.Mapping); err != nil {
			return fmt.Errorf("cannot close %s: %w", d.TargetPath, err)
		}
	}
	if began(d.Target + ".lv") {
		lv, err := v.findLV(ctx, d)
		if err != nil {
			return err
		}
		if lv != nil {
			if err := v.wipeHeader(d); err != nil {
				return err
			}
			if err := v.lvm().Do(ctx, lvm.LVRemove{VG: v.name, Name: d.LV}); err != nil {
				return fmt.Errorf("cannot remove logical volume %s/%s: %w", v.name, d.LV, err)
			}
		}
	}
	if began(d.Target + ".keyfile") {
		if err := removeIfExists(d.KeyFile); err != nil {
			return err
		}
	}
	if began("domain.crypttab") {
		return files.RemoveBlock(v.cfg().Crypttab, crypttabBegin(v.h.Domain), crypttabEnd(v.h.Domain))
	}
	return nil
}

// wipeHeader zeroes the LUKS2 header area of the disk's LV before it is
// removed: LVM does not clear freed extents, and the header's recovery
// keyslot would otherwise still open the ciphertext left in them.
func (v *vgTarget) wipeHeader(d *Disk) error {
	p := v.host(v.lvPath(d))
	hdr, err := luks.ReadHeader(p)
	switch {
	case errors.Is(err, luks.ErrNotLUKS):
		return nil
	case err == nil && hdr.UUID != d.LUKSUUID:
		return fmt.Errorf("cannot remove %s: it carries a LUKS header (UUID %s) this migration did not write", v.lvPath(d), hdr.UUID)
	}
	// A half-written header of ours (a crash during the format) is
	// zeroed as well.
	return files.Zero(p, d.DataOffset, 0)
}

func (v *vgTarget) Finish(ctx context.Context) error { return nil }

func (v *vgTarget) Notes(h *Header) []string {
	c := h.VG
	p := c.LUKS
	rk := "shown once when the migration starts: write it down and keep it offline"
	if c.RecoveryKeyFile != "" {
		rk = "written to " + c.RecoveryKeyFile + " (mode 0400): keep it offline"
	}
	notes := []string{
		fmt.Sprintf("vg:%s: each disk becomes an LV with LUKS2 (%s, %d-bit key, %d-byte sectors, discard off), opened as /dev/mapper/NAME and given to the guest as a raw block disk of its old size",
			v.name, p.Cipher, p.KeySize, p.SectorSize),
		fmt.Sprintf("the key file's keyslot uses %s: its 4096 random bytes, not the KDF, are what an attacker would have to guess, and the cheap KDF keeps every boot fast; the recovery keyslot uses %s", luks.KeyFileKDF(p.KDF), p.KDF),
		fmt.Sprintf("each disk's key is a %d-byte random key file in %s (checked to be on encrypted storage); %s opens the mappings at boot, before libvirtd starts guests", keyFileBytes, c.KeyDir, c.Crypttab),
		"a recovery key in a second keyslot opens every new volume; it is " + rk,
	}
	if h.Mode == ModeLive {
		notes = append(notes, fmt.Sprintf("live mode: the guest's writes during the migration go to qcow2 overlays in %s (checked to be on encrypted storage) that qemu also encrypts, with a random key per disk in a libvirt secret; overlays and secrets are removed after the switch", c.OverlayDir))
	}
	return notes
}
