// Package inventory describes the block storage that exists on a host:
// disks and their partition tables, what signature each device carries
// (filesystem, LUKS header, LVM PV), LVM PVs/VGs/LVs, dm-crypt mappings,
// mounts, swaps, and the state of the target root that a layout will write
// crypttab/fstab and key files into. An inventory is secret-free JSON:
// "cryptshift inventory -o json" writes it, "plan --inventory FILE" reads it.
package inventory

import "github.com/cryptshift/cryptshift/luks"

// APIVersion and Kind identify inventory documents.
const (
	APIVersion = "cryptshift/v1"
	Kind       = "Inventory"
)

// Inventory is everything the planner needs to know about a host.
type Inventory struct {
	APIVersion string   `json:"apiVersion"`
	Kind       string   `json:"kind"`
	Host       string   `json:"host,omitempty"`
	Devices    []Device `json:"devices"`
	PVs        []PV     `json:"pvs"`
	VGs        []VG     `json:"vgs"`
	LVs        []LV     `json:"lvs"`
	Mounts     []Mount  `json:"mounts"`
	Swaps      []Swap   `json:"swaps"`
	Target     *Target  `json:"target,omitempty"`
	// TPM2 says whether the host has a TPM 2.0 (a keys.unlock.tpm2 binding
	// needs one): true or false as found in /sys/class/tpm and /dev;
	// absent in inventories made before it was recorded (unknown: apply
	// checks before it changes anything).
	TPM2 *bool `json:"tpm2,omitempty"`
}

// Device kinds.
const (
	KindDisk  = "disk"
	KindPart  = "part"
	KindLVM   = "lvm"
	KindCrypt = "crypt"
	KindLoop  = "loop"
	KindDM    = "dm" // other device-mapper targets
)

// Device is one block device.
type Device struct {
	Path               string   `json:"path"`
	Aliases            []string `json:"aliases,omitempty"` // e.g. /dev/disk/by-id/... symlinks
	Kind               string   `json:"kind"`
	Size               int64    `json:"size"`
	LogicalSectorSize  int      `json:"logicalSectorSize,omitempty"`
	PhysicalSectorSize int      `json:"physicalSectorSize,omitempty"`
	Serial             string   `json:"serial,omitempty"`
	WWID               string   `json:"wwid,omitempty"` // world-wide ID (sysfs wwid); "" unknown
	Model              string   `json:"model,omitempty"`
	Rotational         bool     `json:"rotational,omitempty"`
	ReadOnly           bool     `json:"readOnly,omitempty"`
	Parent             string   `json:"parent,omitempty"` // partition: its disk; crypt/lvm: the device below
	PartitionNumber    int      `json:"partitionNumber,omitempty"`
	DMName             string   `json:"dmName,omitempty"`
	DMUUID             string   `json:"dmUUID,omitempty"`
	Table              *Table   `json:"table,omitempty"`
	Content            *Content `json:"content,omitempty"` // nil: no signature found
	// Blank says how the device was found to hold nothing (probe.BlankMethod:
	// which regions were read); empty when it was not probed that way. An
	// existing LV is formatted without --allow-destroy only when its
	// inventory says it is blank.
	Blank string `json:"blank,omitempty"`
}

// Table is a partition table.
type Table struct {
	Type       string      `json:"type"` // gpt | dos
	UUID       string      `json:"uuid,omitempty"`
	Partitions []Partition `json:"partitions"`
}

// Partition is one entry of a partition table. Offsets are bytes.
type Partition struct {
	Number int    `json:"number"`
	Start  int64  `json:"start"`
	Size   int64  `json:"size"`
	Type   string `json:"type"` // GPT type GUID (upper case) or MBR type byte as hex
	Name   string `json:"name,omitempty"`
	UUID   string `json:"uuid,omitempty"`
}

// Content is what a device's first bytes say it holds.
type Content struct {
	Type    string       `json:"type"` // ext4, xfs, vfat, swap, crypto_LUKS, LVM2_member, btrfs, gpt, dos, other
	UUID    string       `json:"uuid,omitempty"`
	Label   string       `json:"label,omitempty"`
	Version string       `json:"version,omitempty"`
	LUKS    *luks.Header `json:"luks,omitempty"`
	Note    string       `json:"note,omitempty"` // why a device is "unreadable"
}

// PV is an LVM physical volume.
type PV struct {
	Device string `json:"device"`
	VG     string `json:"vg,omitempty"`
	UUID   string `json:"uuid,omitempty"`
	Size   int64  `json:"size"`
	Free   int64  `json:"free"`
}

// VG is an LVM volume group.
type VG struct {
	Name        string `json:"name"`
	UUID        string `json:"uuid,omitempty"`
	Size        int64  `json:"size"`
	Free        int64  `json:"free"`
	ExtentSize  int64  `json:"extentSize"`
	ExtentCount int64  `json:"extentCount"`
	FreeCount   int64  `json:"freeCount"`
}

// LV is an LVM logical volume.
type LV struct {
	VG     string `json:"vg"`
	Name   string `json:"name"`
	Path   string `json:"path"`
	UUID   string `json:"uuid,omitempty"`
	Size   int64  `json:"size"`
	Active bool   `json:"active"`
	Origin string `json:"origin,omitempty"` // set for snapshots
}

// Mount is one entry of the mount table.
type Mount struct {
	Source  string `json:"source"`
	Target  string `json:"target"`
	FSType  string `json:"fstype"`
	Options string `json:"options,omitempty"`
}

// Swap is one active swap area.
type Swap struct {
	Path string `json:"path"`
	Type string `json:"type"` // partition | file
	Size int64  `json:"size"`
}

// Target is the state of the directory the layout's root is mounted on
// (e.g. /target): what apply would write there already, by content for
// crypttab/fstab (no secrets) and by metadata only for key files and header
// backups. File paths are as the new system sees them (/etc/...), without
// the Root prefix.
type Target struct {
	Root     string `json:"root"`
	Crypttab string `json:"crypttab,omitempty"`
	Fstab    string `json:"fstab,omitempty"`
	Files    []File `json:"files,omitempty"`
}

// File is a key file's or header backup's metadata; its bytes are never read
// into an inventory.
type File struct {
	Path string `json:"path"`
	Mode uint32 `json:"mode"`
	Size int64  `json:"size"`
}
