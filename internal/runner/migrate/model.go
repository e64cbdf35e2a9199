// Package migrate moves every disk of a libvirt guest onto encrypted
// storage: plan, copy, verify, switch, and only then retire the plaintext
// source. Offline (the guest is shut off) or live (it keeps running).
//
// Everything migrate will do is first a plan: an ordered list of steps with
// the exact qemu-img command lines and libvirt calls (printed by --dry-run,
// which touches nothing). Running the plan writes a journal: a header record
// that identifies it as a migrate journal and holds the plan's inputs, then
// a record when each step starts and ends and each per-disk state
//
//	planned → target-created → snapshot → copied → verified → switched → source-retired
//
// is reached, all fsync'd. After a crash --resume rebuilds the same steps
// from the header and continues; every step checks its postcondition (the
// domain's live disk chain, the block job on the disk, the target's
// existence) before acting, so repeating a half-done step is safe.
// Rollback reads the same journal and puts the guest back on its original
// disks with all its data.
//
// Secrets: on a pool: target each disk's key is a random 256-bit value held
// by libvirt as a secret; cryptshift passes it to qemu-img on a pipe. On a
// vg: target it is a random key file on the encrypted root (cryptsetup
// gets it on stdin), and a recovery key sits in a second keyslot
// (cryptsetup gets it on fd 3); the overlays of a live migration are keyed
// by libvirt secrets as on a pool. No key is ever written to argv, logs,
// the journal or the plan.
package migrate

import (
	"fmt"
	"strings"

	"github.com/cryptshift/cryptshift/internal/doors/qemuimg"
	"github.com/cryptshift/cryptshift/luks"
)

// Modes and engines.
const (
	ModeOffline = "offline"
	ModeLive    = "live"

	// EngineSnapshot: external snapshot onto an encrypted overlay, copy of
	// the frozen base, shallow block copy and active commit. The guest never
	// pauses.
	EngineSnapshot = "snapshot"
	// EngineMirror: one full block copy (qemu mirror) onto the target; the
	// guest is paused while source and target are compared, then pivoted.
	EngineMirror = "mirror"
)

// Per-disk states, in order. A disk's state is the last one the journal
// records for it.
const (
	StatePlanned       = "planned"
	StateTargetCreated = "target-created"
	StateSnapshot      = "snapshot"
	StateCopied        = "copied"
	StateVerified      = "verified"
	StateSwitched      = "switched"
	StateRetired       = "source-retired"
)

// States lists the per-disk states in order.
var States = []string{StatePlanned, StateTargetCreated, StateSnapshot, StateCopied, StateVerified, StateSwitched, StateRetired}

func stateIndex(s string) int {
	for i, x := range States {
		if x == s {
			return i
		}
	}
	return -1
}

// JournalKind is the "kind" of a migrate journal's header record; the
// rollback verb dispatches on it.
const JournalKind = "migrate"

// journalVersion changes when the header's meaning changes.
const journalVersion = 1

// Layer is one image of a disk's backing chain.
type Layer struct {
	Path   string `json:"path"`
	Format string `json:"format"` // raw or qcow2
	Type   string `json:"type"`   // file or block
	// LV is "VG/LV" when the layer is an LVM logical volume: retiring it
	// discards and removes the LV.
	LV string `json:"lv,omitempty"`
}

// Disk is one disk to migrate: where it is, where it goes, and the
// temporary images live mode needs. It is part of the journal header, so it
// holds no secret (only the libvirt secret's UUID).
type Disk struct {
	Target      string  `json:"target"`      // guest device: vda
	Chain       []Layer `json:"chain"`       // source backing chain, top first
	VirtualSize int64   `json:"virtualSize"` // bytes the guest sees
	Allocated   int64   `json:"allocated"`   // bytes allocated in the source chain (progress, estimates)
	// OrigXML is the disk's element in the persistent definition before the
	// migration; rollback puts it back.
	OrigXML string `json:"origXML"`

	TargetPath string `json:"targetPath"` // the encrypted image
	// TargetFormat is a pool: target's image format: luks (a raw LUKS
	// image of the full virtual size) or qcow2 (qcow2 with
	// encrypt.format=luks, holding only the data). Empty in vg: disks and
	// in journals written before it existed: luks.
	TargetFormat string `json:"targetFormat,omitempty"`
	// TargetDirect: the pool's filesystem takes O_DIRECT, so the copy
	// writes the target and the verification reads it bypassing the page
	// cache (the verification decrypts what is on the disk, and the
	// host's cache keeps its own data).
	TargetDirect bool   `json:"targetDirect,omitempty"`
	TargetVolume string `json:"targetVolume"` // its name in the pool
	SecretUUID   string `json:"secretUUID"`   // the libvirt secret holding its key
	// Live mode (snapshot engine): the encrypted overlay that collects the
	// guest's writes while the base is copied.
	OverlayPath string `json:"overlayPath,omitempty"`
	// Live rollback of a disk the guest already runs on the target: the
	// encrypted overlay that freezes the target while it is copied back.
	BackOverlayPath string `json:"backOverlayPath,omitempty"`

	// vg: targets. TargetPath is the dm-crypt mapping /dev/mapper/Mapping
	// on the LV VG/LV, formatted with LUKSUUID (recorded here, before the
	// format, so that a resumed run recognises its own header) and a data
	// offset of DataOffset bytes, chosen so that the mapping is exactly
	// VirtualSize bytes. KeyFile opens it; crypttab names it.
	LV         string `json:"lv,omitempty"`
	LVSize     int64  `json:"lvSize,omitempty"`
	LUKSUUID   string `json:"luksUUID,omitempty"`
	DataOffset int64  `json:"dataOffset,omitempty"`
	Mapping    string `json:"mapping,omitempty"`
	KeyFile    string `json:"keyFile,omitempty"`
}

// targetImageFormat is how qemu opens a pool: target: luks or qcow2.
func (d Disk) targetImageFormat() string {
	if d.TargetFormat == qemuimg.QCOW2 {
		return qemuimg.QCOW2
	}
	return qemuimg.LUKS
}

// Top is the image the guest writes to before the migration.
func (d Disk) Top() Layer { return d.Chain[0] }

// Skipped is a disk left alone, with the reason shown to the user.
type Skipped struct {
	Target string `json:"target"`
	Reason string `json:"reason"`
}

// Header is the first journal record: everything needed to rebuild the
// plan on resume and to roll back, and nothing secret.
type Header struct {
	Kind       string `json:"kind"` // JournalKind
	Version    int    `json:"version"`
	Domain     string `json:"domain"`
	DomainUUID string `json:"domainUUID"`
	Connect    string `json:"connect"`
	To         string `json:"to"` // pool:NAME or vg:NAME
	Mode       string `json:"mode"`
	Engine     string `json:"engine,omitempty"`
	IterTimeMS int    `json:"iterTimeMS,omitempty"`
	// TargetFormat is --target-format: raw, qcow2, or "" (each pool: disk
	// keeps its source's format); Disk.TargetFormat is the choice made.
	TargetFormat string    `json:"targetFormat,omitempty"`
	RetireSource bool      `json:"retireSource"`
	Shutdown     bool      `json:"shutdown"` // offline: cryptshift shuts the guest down and starts it again
	ForceOff     bool      `json:"forceOff,omitempty"`
	Persistent   bool      `json:"persistent"`
	WasRunning   bool      `json:"wasRunning"`
	OrigXMLPath  string    `json:"origXMLPath"`  // the saved definition (no secrets)
	VG           *VGConfig `json:"vg,omitempty"` // vg: targets
	Disks        []Disk    `json:"disks"`
	Skipped      []Skipped `json:"skipped,omitempty"`
}

// VGConfig is what a migration to vg:NAME needs besides its disks; part
// of the journal header, so resume and rollback use the same values.
type VGConfig struct {
	KeyDir     string `json:"keyDir"`
	Crypttab   string `json:"crypttab"`
	OverlayDir string `json:"overlayDir,omitempty"` // live mode, snapshot engine
	// RecoveryKeyFile is where the admin had the recovery key written (a
	// path, never the key); resume reads it back from there.
	RecoveryKeyFile string      `json:"recoveryKeyFile,omitempty"`
	LVMConfig       string      `json:"lvmConfig,omitempty"`
	LUKS            luks.Params `json:"luks"` // apply's defaults unless a test lowers the PBKDF cost
}

// parseTo splits --to into kind and name.
func parseTo(to string) (kind, name string, err error) {
	kind, name, ok := strings.Cut(to, ":")
	if !ok || name == "" || (kind != "pool" && kind != "vg") {
		return "", "", fmt.Errorf("cannot parse --to %q: want pool:NAME (a libvirt storage pool) or vg:NAME (an LVM volume group)", to)
	}
	return kind, name, nil
}
