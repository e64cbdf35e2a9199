package migrate

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
	"libvirt.org/go/libvirtxml"

	"github.com/cryptshift/cryptshift/internal/doors/files"
	"github.com/cryptshift/cryptshift/internal/doors/qemuimg"
	"github.com/cryptshift/cryptshift/internal/doors/secrets"
	"github.com/cryptshift/cryptshift/internal/hostview/blockstack"
	"github.com/cryptshift/cryptshift/internal/hostview/rootfs"
	"github.com/cryptshift/cryptshift/internal/model/plan"
	"github.com/cryptshift/cryptshift/libvirt"
)

// Target is where the encrypted disks go: pool:NAME (a libvirt storage pool;
// qemu encrypts, the key is a libvirt secret), implemented here, or vg:NAME
// (an LV per disk with LUKS2, opened as a dm-crypt mapping; vg.go).
//
// Contract: Assign is pure; Check only reads; every step's Run is
// idempotent (it may be repeated after a crash at any point in it).
type Target interface {
	// Spec is the --to value, e.g. "pool:encrypted".
	Spec() string
	// Prepare looks the target up (pool or VG) before anything else; a
	// problem here is reported with the other validation problems.
	Prepare(ctx context.Context, h *Header) []string
	// Assign names a disk's target-side objects (paths, volume, secret)
	// deterministically from the domain and device names.
	Assign(h *Header, d *Disk) error
	// Check reports every reason the target cannot take these disks, most
	// importantly how much space is missing.
	Check(ctx context.Context, h *Header) []string
	// CreateSteps make the encrypted container of one disk and its key.
	CreateSteps(h *Header, d *Disk) []*Step
	// BootSteps run after every disk's CreateSteps: what makes the
	// targets available at boot (vg: crypttab); may be none.
	BootSteps(h *Header) []*Step
	// Describe names a disk's target in plans.
	Describe(d *Disk) string
	// OverlayStep makes an encrypted qcow2 overlay at path on top of
	// backing (live mode): the guest's writes during the migration land
	// only on encrypted storage.
	// A backing layer in luks format is the target itself.
	OverlayStep(h *Header, d *Disk, id, path string, backing Layer) *Step
	// Image is how qemu-img opens the decrypted target.
	Image(ctx context.Context, d *Disk) (qemuimg.Image, error)
	// GuestDisk is how the guest sees the target: driver format and source
	// (with <encryption> when qemu decrypts).
	GuestDisk(d *Disk) (format string, src *libvirtxml.DomainDiskSource)
	// OverlaySource is the libvirt source of an overlay made by OverlayStep.
	OverlaySource(d *Disk, path string) *libvirtxml.DomainDiskSource
	// OverlayImage is how qemu-img opens an overlay made by OverlayStep
	// (without following its backing file unless backing is given).
	OverlayImage(ctx context.Context, d *Disk, path string, backing *qemuimg.Image) (qemuimg.Image, error)
	// RemoveOverlay deletes an overlay; a missing one is fine.
	RemoveOverlay(ctx context.Context, d *Disk, path string) error
	// Remove deletes a disk's target and its key (rollback).
	Remove(ctx context.Context, d *Disk) error
	// Finish runs once after the disks are switched (a pool refresh).
	Finish(ctx context.Context) error
	// Notes are facts about the target the user must know (where keys
	// live, which LUKS version qemu can read).
	Notes(h *Header) []string
}

// LibvirtSecretStore is where a system libvirtd (or virtsecretd) keeps
// secret values.
const LibvirtSecretStore = "/etc/libvirt/secrets"

// LibvirtStorageState is a system libvirtd's storage state directory:
// when it creates an encrypted volume it writes the volume's key there
// (mode 0600) for qemu-img create, and removes it when qemu-img is done.
const LibvirtStorageState = "/run/libvirt/storage"

// luksHeaderBytes is the room qemu's LUKS1 header with its 8 keyslots takes
// in front of the payload (a 512-bit aes-xts key: payload offset 2068480
// bytes, rounded up to 2 MiB).
const luksHeaderBytes = 2 << 20

// overlayReserve is the room a fresh encrypted qcow2 overlay takes (LUKS
// header plus qcow2 metadata) before the guest writes to it; the guest's
// writes during a live migration come on top.
const overlayReserve = 3 << 20

func newTarget(spec string, rt *runtime) (Target, error) {
	kind, name, err := parseTo(spec)
	if err != nil {
		return nil, err
	}
	switch kind {
	case "pool":
		return &poolTarget{name: name, rt: rt}, nil
	default:
		return &vgTarget{name: name, rt: rt}, nil
	}
}

// poolTarget encrypts with qemu's own LUKS driver into a file in a libvirt
// storage pool. The key is a random 256-bit value stored as a libvirt
// secret, so libvirtd hands it to qemu at every start and nobody types it.
type poolTarget struct {
	name   string
	rt     *runtime
	path   string // the pool's directory
	direct bool   // its filesystem takes O_DIRECT
}

func (p *poolTarget) Spec() string { return "pool:" + p.name }

// File-backed pool types: the target and overlays are image files in the
// pool's directory. Other pool types (logical, disk, iscsi, ...) would need
// qcow2 overlays on block volumes; vg: covers LVM.
var filePoolTypes = map[string]bool{"dir": true, "fs": true, "netfs": true}

func (p *poolTarget) Prepare(ctx context.Context, h *Header) []string {
	pool, err := p.rt.hv.Pool(p.name)
	if err != nil {
		return []string{err.Error()}
	}
	var problems []string
	if !pool.Active {
		problems = append(problems, fmt.Sprintf("storage pool %q is not active; start it with virsh pool-start %s", p.name, p.name))
	}
	if !filePoolTypes[pool.Type] {
		problems = append(problems, fmt.Sprintf("storage pool %q is of type %s; pool: targets need a directory-backed pool (dir, fs, netfs); for LVM use --to vg:NAME", p.name, pool.Type))
	}
	if pool.Path == "" {
		problems = append(problems, fmt.Sprintf("storage pool %q has no target path", p.name))
	}
	p.path = pool.Path
	p.direct = pool.Path != "" && p.rt.directIO(pool.Path)
	return problems
}

// directIOFilesystems are the filesystems (statfs f_type, linux/magic.h)
// whose O_DIRECT support cryptshift relies on: qemu refuses to open an
// image with cache.direct=on where the filesystem lacks it (tmpfs before
// Linux 6.6, some FUSE filesystems), so any other filesystem keeps the
// page cache.
var directIOFilesystems = map[int64]bool{
	0xEF53:     true, // ext2, ext3, ext4
	0x58465342: true, // xfs
	0x9123683E: true, // btrfs
	0x6969:     true, // nfs
}

// directIOFS reports whether the filesystem holding dir takes O_DIRECT.
func directIOFS(dir string) bool {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return false
	}
	return directIOFilesystems[int64(st.Type)]
}

func (p *poolTarget) Assign(h *Header, d *Disk) error {
	base := h.Domain + "-" + d.Target
	d.TargetFormat = qemuimg.LUKS
	if h.TargetFormat == TargetFormatQCOW2 || (h.TargetFormat == "" && d.Top().Format == qemuimg.QCOW2) {
		d.TargetFormat = qemuimg.QCOW2
	}
	d.TargetVolume = base + "." + d.TargetFormat
	d.TargetPath = filepath.Join(p.path, d.TargetVolume)
	d.TargetDirect = p.direct
	if h.Mode == ModeLive {
		d.BackOverlayPath = filepath.Join(p.path, base+".back-overlay.qcow2")
		if h.Engine == EngineSnapshot {
			d.OverlayPath = filepath.Join(p.path, base+".overlay.qcow2")
		}
	}
	return nil
}

func (p *poolTarget) Check(ctx context.Context, h *Header) []string {
	var problems []string
	var need int64
	for _, d := range h.Disks {
		for _, f := range []string{d.TargetPath, d.OverlayPath, d.BackOverlayPath} {
			if f == "" {
				continue
			}
			if _, err := os.Lstat(f); err == nil {
				problems = append(problems, fmt.Sprintf("disk %s: %s already exists; cryptshift never overwrites a file it did not create; remove it, or resume the migration that made it with --resume", d.Target, f))
			}
		}
		need += poolNeed(&d)
		if h.Mode == ModeLive && h.Engine == EngineSnapshot {
			need += overlayReserve
		}
	}
	// libvirtd keeps every secret's value in its secret store, base64 in
	// a file: the disks' keys are only as safe as that directory's
	// storage, as vg: targets' key files are.
	if !p.rt.allowPlaintextSecretStore {
		sys, err := blockstack.Scan(rootfs.Dir(p.rt.root))
		if err != nil {
			problems = append(problems, fmt.Sprintf("cannot tell whether the libvirt secret store %s is on encrypted storage: %v", LibvirtSecretStore, err))
		} else {
			problems = append(problems, mustBeEncrypted(sys, LibvirtSecretStore, "libvirt secret store", "libvirtd would keep the disks' keys there in the clear; keep /etc on the encrypted root, use --to vg:NAME, or accept it with --allow-plaintext-secret-store")...)
			if p.anyLibvirtCreates(h) {
				// Memory (a tmpfs /run, as systemd mounts it) or encrypted.
				if loc := sys.Locate(LibvirtStorageState); loc.Class != blockstack.Encrypted && loc.Class != blockstack.RAM {
					problems = append(problems, fmt.Sprintf("libvirt's storage state directory %s is on %s storage (%s): libvirtd writes each new volume's key there for qemu-img create, for seconds; mount /run as a tmpfs, give --iter-time (qemu-img then creates the targets itself, the key on a pipe), or accept it with --allow-plaintext-secret-store", LibvirtStorageState, loc.Class, loc.Reason))
				}
			}
		}
	}
	// libvirt's figure is only as fresh as the last refresh.
	if err := p.rt.hv.RefreshPool(p.name); err != nil {
		problems = append(problems, err.Error())
		return problems
	}
	pool, err := p.rt.hv.Pool(p.name)
	if err != nil {
		return append(problems, err.Error())
	}
	if avail := int64(pool.Available); need > avail {
		problems = append(problems, fmt.Sprintf("storage pool %q is too small: the encrypted disks need %s (%s%s), the pool has %s available: %s missing; free space in the pool or choose a larger one",
			p.name, human(need), needNote(h), liveNote(h), human(avail), human(need-avail)))
	}
	return problems
}

// dataMargin is the share added to a qcow2 target's data in the space
// check: the source's allocation is counted in whole filesystem blocks and
// clusters, and a compressed source cluster is stored uncompressed.
const dataMargin = 10 // percent

// qcow2Metadata bounds the metadata of a qcow2 image of virtual size v
// with 64 KiB clusters: an 8-byte L2 entry per cluster (v/8192), a 2-byte
// refcount per cluster of the file (at most v/32768), plus header, L1
// table and refcount table (1 MiB is generous).
func qcow2Metadata(v int64) int64 { return v/8192 + v/32768 + 1<<20 }

// poolNeed is the room a disk's pool: target takes: a raw LUKS image
// allocates its full virtual size; an encrypted qcow2 only the data
// (Disk.Allocated: the source chain's allocated bytes) plus dataMargin,
// metadata and the LUKS header.
func poolNeed(d *Disk) int64 {
	if d.targetImageFormat() == qemuimg.QCOW2 {
		return d.Allocated + d.Allocated*dataMargin/100 + qcow2Metadata(d.VirtualSize) + luksHeaderBytes
	}
	return d.VirtualSize + luksHeaderBytes
}

func needNote(h *Header) string {
	var raw, q bool
	for _, d := range h.Disks {
		if d.targetImageFormat() == qemuimg.QCOW2 {
			q = true
		} else {
			raw = true
		}
	}
	var parts []string
	if raw {
		parts = append(parts, "raw LUKS targets: virtual sizes plus LUKS headers")
	}
	if q {
		parts = append(parts, fmt.Sprintf("qcow2 targets: the data allocated in the sources plus %d %%, qcow2 metadata and LUKS headers", dataMargin))
	}
	return strings.Join(parts, "; ")
}

func liveNote(h *Header) string {
	if h.Mode == ModeLive && h.Engine == EngineSnapshot {
		return " and the overlays that collect the guest's writes meanwhile"
	}
	return ""
}

func (p *poolTarget) BootSteps(h *Header) []*Step { return nil }

func (p *poolTarget) Describe(d *Disk) string {
	if d.targetImageFormat() == qemuimg.QCOW2 {
		return d.TargetPath + " (qcow2, luks-encrypted, secret " + d.SecretUUID + ")"
	}
	return d.TargetPath + " (luks, secret " + d.SecretUUID + ")"
}

func (p *poolTarget) CreateSteps(h *Header, d *Disk) []*Step {
	key := &Step{Step: plan.Step{
		ID: d.Target + ".key", Action: "define-secret", Target: "secret " + d.SecretUUID,
		Description: fmt.Sprintf("define libvirt secret %s (usage volume %s) and store a new random 256-bit key in it; libvirtd gives it to qemu at every start", d.SecretUUID, d.TargetPath),
		Command:     libvirt.Argv(libvirt.DefineSecret{UUID: d.SecretUUID, Volume: d.TargetPath}, libvirt.SetSecretValue{UUID: d.SecretUUID}),
		Secrets:     []plan.SecretRef{{FD: 0, Secret: d.Target + "-key"}},
	}, Disk: d.Target}
	key.Run = func(ctx context.Context) error { return p.defineKey(ctx, h, d) }

	desc := fmt.Sprintf("create the LUKS-encrypted image %s (%s, qemu's LUKS1 format, every block allocated) in pool %s", d.TargetPath, human(d.VirtualSize), p.name)
	if d.targetImageFormat() == qemuimg.QCOW2 {
		desc = fmt.Sprintf("create the encrypted qcow2 image %s (%s virtual, LUKS1 inside qcow2, no backing file; it grows with the data) in pool %s", d.TargetPath, human(d.VirtualSize), p.name)
	}
	var create *Step
	if p.libvirtCreates(h, d) {
		create = p.createVolumeStep(d, desc)
	} else {
		create = p.createImageStep(h, d, desc)
	}
	create.Disk, create.State = d.Target, StateTargetCreated
	return []*Step{key, create}
}

// libvirtCreates reports whether libvirt creates a disk's target
// (createVolumeStep): libvirt's volume XML has no LUKS iteration time, so
// --iter-time needs qemu-img create; and libvirt passes the size to
// qemu-img in KiB, rounded up, so a virtual size that is not a whole
// number of KiB would grow.
func (p *poolTarget) libvirtCreates(h *Header, d *Disk) bool {
	return h.IterTimeMS == 0 && d.VirtualSize%1024 == 0
}

func (p *poolTarget) anyLibvirtCreates(h *Header) bool {
	for i := range h.Disks {
		if p.libvirtCreates(h, &h.Disks[i]) {
			return true
		}
	}
	return false
}

// volume is the storage volume XML of a disk's target.
func (p *poolTarget) volume(d *Disk) *libvirtxml.StorageVolume {
	format := qemuimg.Raw // libvirt's raw format with LUKS encryption is qemu's luks format
	if d.targetImageFormat() == qemuimg.QCOW2 {
		format = qemuimg.QCOW2
	}
	return libvirt.NewEncryptedVolume(d.TargetVolume, format, uint64(d.VirtualSize), d.SecretUUID)
}

// createVolumeStep has libvirt create the target as a storage volume
// (StorageVolCreateXML): libvirtd runs qemu-img create with qemu's default
// LUKS parameters and the key from the disk's secret, which it passes in
// a file of its own (0600, in /run/libvirt/storage, removed when qemu-img
// is done; docs/pool-targets.md).
func (p *poolTarget) createVolumeStep(d *Disk, desc string) *Step {
	op := libvirt.CreateVolume{Pool: p.name, Vol: p.volume(d)}
	undo := libvirt.DeleteVolume{Pool: p.name, Name: d.TargetVolume}
	s := &Step{Step: plan.Step{
		ID: d.Target + ".target", Action: "create-target", Target: d.TargetPath,
		Description: desc + "; libvirt creates it as a storage volume (qemu-img create with qemu's default LUKS parameters and the key of secret " + d.SecretUUID + ")",
		Command:     op.Argv(),
		Undo:        undo.Argv(),
	}}
	s.Run = func(ctx context.Context) error {
		// A volume or a file here is a half-made target from a crash (Check
		// refused any file that existed before the journal did); libvirt
		// refuses to create over either.
		if err := p.rt.hv.DeleteVolume(undo.Pool, undo.Name); err != nil {
			return err
		}
		if err := removeIfExists(d.TargetPath); err != nil {
			return err
		}
		v, err := p.rt.hv.CreateVolume(op.Pool, op.Vol)
		if err != nil {
			return err
		}
		if v.Path != d.TargetPath || v.Capacity != uint64(d.VirtualSize) {
			return fmt.Errorf("cannot use volume %s in pool %s: libvirt made %s of %d bytes, the plan wants %s of %d bytes; remove it and resume", d.TargetVolume, p.name, v.Path, v.Capacity, d.TargetPath, d.VirtualSize)
		}
		if err := p.checkVolume(d, v); err != nil {
			return err
		}
		// Not readable by others: it is ciphertext, but its header tells
		// an attacker what to brute-force (the XML asks for 0600).
		st, err := os.Stat(d.TargetPath)
		if err != nil {
			return fmt.Errorf("cannot check the new volume %s: %w", d.TargetPath, err)
		}
		if st.Mode().Perm()&0o077 != 0 {
			return fmt.Errorf("cannot use volume %s: libvirt made it with mode %v, readable by others; remove it and resume", d.TargetPath, st.Mode().Perm())
		}
		return nil
	}
	return s
}

// createImageStep creates the target with qemu-img, the key on a pipe,
// for what libvirt cannot express (libvirtCreates); a pool refresh makes
// it a volume.
func (p *poolTarget) createImageStep(h *Header, d *Disk, desc string) *Step {
	opts := qemuimg.CreateOptions{Path: d.TargetPath, Format: d.targetImageFormat(), Size: d.VirtualSize, Secret: placeholderKey, IterTimeMS: h.IterTimeMS}
	s := &Step{Step: plan.Step{
		ID: d.Target + ".target", Action: "create-target", Target: d.TargetPath,
		Description: desc + "; qemu-img creates it (libvirt's volume XML cannot set --iter-time or a size that is not a whole number of KiB) and libvirt describes it as a volume",
		Command:     qemuimg.CreateCmd(opts).Argv(),
		Secrets:     []plan.SecretRef{{FD: 3, Secret: d.Target + "-key"}},
		Undo:        files.Remove{Path: d.TargetPath}.Argv(),
	}}
	s.Run = func(ctx context.Context) error {
		key, err := p.rt.key(d.SecretUUID)
		if err != nil {
			return err
		}
		// A file here is a half-made target from a crash (Check refused any
		// file that existed before the journal did).
		if err := removeIfExists(d.TargetPath); err != nil {
			return err
		}
		o := opts
		o.Secret = key
		if err := p.rt.img.Create(ctx, o); err != nil {
			return err
		}
		// Not readable by others: it is ciphertext, but its header tells
		// an attacker what to brute-force.
		if err := os.Chmod(d.TargetPath, 0o600); err != nil {
			return fmt.Errorf("cannot restrict permissions of %s: %w", d.TargetPath, err)
		}
		if err := p.rt.hv.RefreshPool(p.name); err != nil {
			return err
		}
		v, err := p.rt.hv.Volume(p.name, d.TargetVolume)
		if err != nil {
			return err
		}
		return p.checkVolume(d, v)
	}
	return s
}

// checkVolume checks that libvirt's storage driver sees the new target
// as the volume the plan promised: in the pool, encrypted with LUKS, in the
// planned format. The guest definition then names a volume libvirt itself
// describes, not just a file.
func (p *poolTarget) checkVolume(d *Disk, v libvirt.Volume) error {
	if v.Encryption != "luks" {
		return fmt.Errorf("cannot use volume %s in pool %s: libvirt does not see it as LUKS-encrypted (encryption %q); remove it and resume", d.TargetVolume, p.name, v.Encryption)
	}
	if d.targetImageFormat() == qemuimg.QCOW2 && v.Format != qemuimg.QCOW2 {
		return fmt.Errorf("cannot use volume %s in pool %s: libvirt sees format %q, not qcow2; remove it and resume", d.TargetVolume, p.name, v.Format)
	}
	return nil
}

// placeholderKey stands in for a key in command lines built for plans; the
// bytes go on a pipe, so only the descriptor number shows.
var placeholderKey = []byte("<key>")

func (p *poolTarget) defineKey(ctx context.Context, h *Header, d *Disk) error {
	exists, err := p.rt.hv.SecretExists(d.SecretUUID)
	if err != nil {
		return err
	}
	if !exists {
		// private='no': cryptshift must read the key back to run qemu-img on
		// the target after a crash (resume, verify, rollback). libvirtd
		// keeps secret values under /etc/libvirt/secrets, which must live
		// on the encrypted root.
		s := &libvirtxml.Secret{Ephemeral: "no", Private: "no", UUID: d.SecretUUID,
			Description: fmt.Sprintf("cryptshift: key of %s (disk %s of domain %s)", d.TargetPath, d.Target, h.Domain),
			Usage:       &libvirtxml.SecretUsage{Type: "volume", Volume: d.TargetPath}}
		if err := p.rt.hv.DefineSecret(s); err != nil {
			return err
		}
	}
	has, err := p.rt.hv.HasSecretValue(d.SecretUUID)
	if err != nil {
		return err
	}
	if has {
		return nil // a crash after storing the value: keep it
	}
	key, err := p.rt.newKey()
	if err != nil {
		return err
	}
	if err := p.rt.hv.SetSecretValue(d.SecretUUID, key); err != nil {
		return err
	}
	p.rt.keys[d.SecretUUID] = key
	return nil
}

func (p *poolTarget) OverlayStep(h *Header, d *Disk, id, path string, backing Layer) *Step {
	opts := qemuimg.CreateOptions{Path: path, Format: qemuimg.QCOW2, Size: d.VirtualSize, Secret: placeholderKey,
		IterTimeMS: h.IterTimeMS, BackingPath: backing.Path, BackingFormat: backing.Format}
	s := &Step{Step: plan.Step{
		ID: id, Action: "create-overlay", Target: path,
		Description: fmt.Sprintf("create the encrypted qcow2 overlay %s on top of %s (same key as the target)", path, backing.Path),
		Command:     qemuimg.CreateCmd(opts).Argv(),
		Secrets:     []plan.SecretRef{{FD: 3, Secret: d.Target + "-key"}},
		Undo:        files.Remove{Path: path}.Argv(),
	}, Disk: d.Target}
	s.Run = func(ctx context.Context) error {
		key, err := p.rt.key(d.SecretUUID)
		if err != nil {
			return err
		}
		if err := removeIfExists(path); err != nil {
			return err
		}
		o := opts
		o.Secret = key
		if err := p.rt.img.Create(ctx, o); err != nil {
			return err
		}
		return os.Chmod(path, 0o600)
	}
	return s
}

func (p *poolTarget) Image(ctx context.Context, d *Disk) (qemuimg.Image, error) {
	key, err := p.rt.key(d.SecretUUID)
	if err != nil {
		return qemuimg.Image{}, err
	}
	return qemuimg.Image{Path: d.TargetPath, Format: d.targetImageFormat(), Secret: key}, nil
}

func (p *poolTarget) encryption(d *Disk) *libvirtxml.DomainDiskEncryption {
	return &libvirtxml.DomainDiskEncryption{Format: "luks",
		Secrets: []libvirtxml.DomainDiskSecret{{Type: "passphrase", UUID: d.SecretUUID}}}
}

func (p *poolTarget) GuestDisk(d *Disk) (string, *libvirtxml.DomainDiskSource) {
	format := qemuimg.Raw // qemu's luks driver below libvirt's raw format
	if d.targetImageFormat() == qemuimg.QCOW2 {
		format = qemuimg.QCOW2
	}
	return format, &libvirtxml.DomainDiskSource{
		File:       &libvirtxml.DomainDiskSourceFile{File: d.TargetPath},
		Encryption: p.encryption(d),
	}
}

func (p *poolTarget) OverlaySource(d *Disk, path string) *libvirtxml.DomainDiskSource {
	return &libvirtxml.DomainDiskSource{
		File:       &libvirtxml.DomainDiskSourceFile{File: path},
		Encryption: p.encryption(d),
	}
}

func (p *poolTarget) OverlayImage(ctx context.Context, d *Disk, path string, backing *qemuimg.Image) (qemuimg.Image, error) {
	key, err := p.rt.key(d.SecretUUID)
	if err != nil {
		return qemuimg.Image{}, err
	}
	return qemuimg.Image{Path: path, Format: qemuimg.QCOW2, Secret: key, Backing: backing}, nil
}

func (p *poolTarget) RemoveOverlay(ctx context.Context, d *Disk, path string) error {
	return removeIfExists(path)
}

func (p *poolTarget) Remove(ctx context.Context, d *Disk) error {
	// Through libvirt first, so that the pool forgets the volume at once.
	// Should libvirt fail (an inactive pool, say), removing the file is
	// what matters: the next pool refresh (Finish) forgets it then.
	_ = p.rt.hv.DeleteVolume(p.name, d.TargetVolume)
	for _, f := range []string{d.OverlayPath, d.BackOverlayPath, d.TargetPath} {
		if f != "" {
			if err := removeIfExists(f); err != nil {
				return err
			}
		}
	}
	if err := p.rt.hv.UndefineSecret(d.SecretUUID); err != nil {
		return err
	}
	delete(p.rt.keys, d.SecretUUID)
	return nil
}

func (p *poolTarget) Finish(ctx context.Context) error { return p.rt.hv.RefreshPool(p.name) }

func (p *poolTarget) Notes(h *Header) []string {
	notes := []string{
		fmt.Sprintf("pool:%s: qemu encrypts with LUKS1 (aes-xts-plain64, 512-bit key, PBKDF2): qemu 7.2's luks driver reads LUKS1 only", p.name),
		"each disk's key is a random 256-bit value in a libvirt secret; libvirtd keeps secret values in /etc/libvirt/secrets, so /etc must be on the encrypted root",
	}
	var raw, q []string
	for _, d := range h.Disks {
		if d.targetImageFormat() == qemuimg.QCOW2 {
			q = append(q, d.Target)
		} else {
			raw = append(raw, d.Target)
		}
	}
	if len(q) > 0 {
		notes = append(notes, fmt.Sprintf("target format qcow2 (%s): the image holds only the data (time and space follow the data; backing chains are flattened into it, no plaintext base stays a backing file), "+
			"but qcow2's allocation tables are not encrypted: whoever reads the file sees which parts of the disk hold data, as with discard on dm-crypt. --target-format raw hides it at the cost of the full virtual size",
			strings.Join(q, ", ")))
	}
	if len(raw) > 0 {
		notes = append(notes, fmt.Sprintf("target format raw LUKS (%s): every block is encrypted and written, so the image reveals nothing about which parts hold data, and takes the full virtual size. --target-format qcow2 stores only the data", strings.Join(raw, ", ")))
	}
	return notes
}

func removeIfExists(path string) error { return files.Remove{Path: path}.Run() }

// newKey returns the key for a new target: the --passphrase-file content,
// or a random key.
func (rt *runtime) newKey() ([]byte, error) {
	if rt.passphrase != nil {
		return rt.passphrase, nil
	}
	return rt.randomKey()
}

// randomKey returns 32 random bytes as base64 (qemu's secret objects and
// libvirt's secret store both take text; 44 characters carry the full 256
// bits), in locked memory; the runtime wipes it when it ends.
func (rt *runtime) randomKey() ([]byte, error) { return secrets.NewKey() }

// human formats a byte count in binary units, e.g. "1.5 GiB".
func human(n int64) string {
	const unit = 1024
	if n < unit {
		return strconv.FormatInt(n, 10) + " B"
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
