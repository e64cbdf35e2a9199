// Package plan is the data a planner produces and apply consumes: ordered
// steps, each with the exact command line it runs, which secrets it reads
// from which file descriptor (by name, never by value), whether it destroys
// data, and the crypttab and fstab entries the layout needs.
//
// A plan is pure data. Printing it runs nothing; apply walks the same steps.
// The JSON form is a stable, documented contract (docs/plan-schema.md).
package plan

import (
	"github.com/cryptshift/cryptshift/internal/model/layout"
)

// APIVersion and Kind identify plan documents.
const (
	APIVersion = "cryptshift/v1"
	Kind       = "Plan"
)

// Plan is an ordered list of steps that takes a host from its inventory to
// its layout.
type Plan struct {
	APIVersion   string            `json:"apiVersion"`
	Kind         string            `json:"kind"`
	Layout       string            `json:"layout"` // layout name
	Host         string            `json:"host,omitempty"`
	Root         string            `json:"root"` // where the layout's / is mounted while applying
	AllowDestroy bool              `json:"allowDestroy"`
	Steps        []Step            `json:"steps"`
	Crypttab     []CrypttabEntry   `json:"crypttab"`
	Fstab        []FstabEntry      `json:"fstab"`
	Secrets      []Secret          `json:"secrets"`
	Warnings     []layout.Problem  `json:"warnings"`
	Notes        []string          `json:"notes"`
	Spec         *layout.Layout    `json:"spec"`                // the normalized layout, for drift checks
	Devices      map[string]string `json:"devices,omitempty"`   // layout disk name -> device actually used
	DiskIDs      map[string]DiskID `json:"diskIDs,omitempty"`   // layout disk name -> what the inventory knew of it
	Inventory    string            `json:"inventory,omitempty"` // sha256 of the canonical inventory planned against
}

// DiskID is what tells a planned disk from another besides its /dev name
// (which the kernel hands out in probe order): its size, serial and udev
// by-id links, as the inventory saw them. apply refuses to start when the
// device named in the plan is not this disk.
type DiskID struct {
	Size   int64    `json:"size"`
	Serial string   `json:"serial,omitempty"`
	WWID   string   `json:"wwid,omitempty"`
	ByID   []string `json:"byID,omitempty"`
}

// Step is one action. Params are its typed parameters; Command is
// rendered from them and is exactly what runs: an external tool, or
// "cryptshift step ..." for the few actions cryptshift does itself
// (partitioning through go-diskfs, generating key files, editing
// crypttab/fstab), so a reviewer can run the script form by hand. Undo
// and UndoParams are the same for the operation that reverses the step.
//
// Migrate's steps are plan steps too; those that are Go calls (libvirt)
// or long copies have no Params and show a descriptive Command.
type Step struct {
	ID          string      `json:"id"`
	Action      string      `json:"action"`
	Target      string      `json:"target"`
	Description string      `json:"description"`
	Command     []string    `json:"command"`
	Params      *Params     `json:"params,omitempty"`
	Input       string      `json:"input,omitempty"`   // non-secret standard input (e.g. a crypttab block)
	Secrets     []SecretRef `json:"secrets,omitempty"` // secret inputs by name and descriptor
	Destructive bool        `json:"destructive"`
	Destroys    string      `json:"destroys,omitempty"` // what is on the target now, for destructive steps
	Undo        []string    `json:"undo,omitempty"`     // command that reverses the step, if any
	UndoParams  *Params     `json:"undoParams,omitempty"`
}

// SecretRef says that a step reads a named secret on a file descriptor
// (0 = stdin, 3 = first extra descriptor). The value is never in a plan.
type SecretRef struct {
	FD     int    `json:"fd"`
	Secret string `json:"secret"`
}

// Secret names a secret the plan needs and where apply gets it.
type Secret struct {
	Name   string `json:"name"`
	Source string `json:"source"`
	Use    string `json:"use"`
}

// Secret names.
const (
	SecretPassphrase  = "passphrase"
	SecretRecoveryKey = "recovery-key"
)

// CrypttabEntry is one /etc/crypttab line.
type CrypttabEntry struct {
	Name    string `json:"name"`
	Device  string `json:"device"`
	KeyFile string `json:"keyFile"`
	Options string `json:"options"`
	Line    string `json:"line"`
}

// FstabEntry is one /etc/fstab line.
type FstabEntry struct {
	Spec    string `json:"spec"`
	File    string `json:"file"`
	Type    string `json:"type"`
	Options string `json:"options"`
	Dump    int    `json:"dump"`
	Pass    int    `json:"pass"`
	Line    string `json:"line"`
}

// Actions.
const (
	ActWipe          = "wipe"
	ActPartition     = "partition"
	ActMkfs          = "mkfs"
	ActPVCreate      = "pvcreate"
	ActVGCreate      = "vgcreate"
	ActVGExtend      = "vgextend"
	ActLVCreate      = "lvcreate"
	ActLVExtend      = "lvextend"
	ActLVRemove      = "lvremove"
	ActLUKSFormat    = "luksFormat"
	ActAddRecovery   = "addRecoveryKey"
	ActClevisBind    = "clevisBind"
	ActHeaderBackup  = "luksHeaderBackup"
	ActOpen          = "open"
	ActOpenPlain     = "openPlain"
	ActCryptResize   = "cryptResize"
	ActResizeFS      = "resizefs"
	ActMkswap        = "mkswap"
	ActSwapon        = "swapon"
	ActMount         = "mount"
	ActMkdir         = "mkdir"
	ActKeyFile       = "keyfile"
	ActWriteCrypttab = "writeCrypttab"
	ActWriteFstab    = "writeFstab"
	ActInitramfs     = "initramfs"
)

// Destructive lists the steps that destroy data, in order.
func (p *Plan) Destructive() []Step {
	var out []Step
	for _, s := range p.Steps {
		if s.Destructive {
			out = append(out, s)
		}
	}
	return out
}

// Step finds a step by id.
func (p *Plan) Step(id string) *Step {
	for i := range p.Steps {
		if p.Steps[i].ID == id {
			return &p.Steps[i]
		}
	}
	return nil
}

// BlockMarkers are the first and last lines of the block a layout owns in
// crypttab and fstab.
func BlockMarkers(layoutName string) (begin, end string) {
	return "# BEGIN cryptshift layout " + layoutName, "# END cryptshift layout " + layoutName
}
