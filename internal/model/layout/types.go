// Package layout defines cryptshift's layout files: the storage a host should
// have (disks, partitions, LVM volume groups and volumes, LUKS2 on each
// volume, filesystems and mounts, key policy, tmp policy), parsed from YAML
// with the position of every value so that validation can point at the exact
// place in the user's file.
package layout

import "github.com/cryptshift/cryptshift/luks"

// APIVersion is the only layout schema version this build understands.
const APIVersion = "cryptshift/v1"

// Kind is the document kind of a layout file.
const Kind = "Layout"

// Layout is a parsed layout file. Zero values mean "use the default"; call
// Normalize (done by Parse) to fill them in.
type Layout struct {
	APIVersion   string        `yaml:"apiVersion" json:"apiVersion"`
	Kind         string        `yaml:"kind" json:"kind"`
	Name         string        `yaml:"name" json:"name"`
	Description  string        `yaml:"description" json:"description,omitempty"`
	Disks        []Disk        `yaml:"disks" json:"disks"`
	VolumeGroups []VolumeGroup `yaml:"volumeGroups" json:"volumeGroups"`
	Volumes      []Volume      `yaml:"volumes" json:"volumes"`
	LUKS         LUKS          `yaml:"luks" json:"luks"`
	Keys         Keys          `yaml:"keys" json:"keys"`
	Tmp          []Tmp         `yaml:"tmp" json:"tmp,omitempty"`
	Discard      bool          `yaml:"discard" json:"discard"`
	Hibernation  bool          `yaml:"hibernation" json:"hibernation"`
}

// Disk is a physical disk: either a whole-disk PV (table: none) or a GPT
// with partitions.
type Disk struct {
	Name        string      `yaml:"name" json:"name"`
	Device      string      `yaml:"device" json:"device"`
	Table       string      `yaml:"table" json:"table"` // gpt | none
	VolumeGroup string      `yaml:"volumeGroup" json:"volumeGroup,omitempty"`
	Partitions  []Partition `yaml:"partitions" json:"partitions,omitempty"`
}

// Partition types a layout may use.
const (
	PartESP      = "esp"       // EFI system partition (vfat, unencrypted)
	PartBIOSBoot = "bios-boot" // GRUB core image on BIOS/GPT, no filesystem
	PartBoot     = "boot"      // /boot (kernel + initramfs, unencrypted)
	PartLVM      = "lvm"       // an LVM physical volume
)

// Partition is one GPT partition.
type Partition struct {
	Name         string     `yaml:"name" json:"name"`
	Size         Size       `yaml:"size" json:"size"`
	Type         string     `yaml:"type" json:"type"`
	VolumeGroup  string     `yaml:"volumeGroup" json:"volumeGroup,omitempty"`
	Filesystem   string     `yaml:"filesystem" json:"filesystem,omitempty"`
	Mount        string     `yaml:"mount" json:"mount,omitempty"`
	MountOptions []string   `yaml:"mountOptions" json:"mountOptions,omitempty"`
	Label        string     `yaml:"label" json:"label,omitempty"`
	Encryption   Encryption `yaml:"encryption" json:"encryption"`
}

// VolumeGroup is an LVM volume group; its PVs are the disks and partitions
// that name it.
type VolumeGroup struct {
	Name       string `yaml:"name" json:"name"`
	ExtentSize Size   `yaml:"extentSize" json:"extentSize"`
}

// Volume purposes.
const (
	PurposeFilesystem = "filesystem"
	PurposeSwap       = "swap"
	PurposeGuest      = "guest"
	PurposeRaw        = "raw"
)

// Volume is one logical volume and what it carries.
type Volume struct {
	Name         string     `yaml:"name" json:"name"`
	VolumeGroup  string     `yaml:"volumeGroup" json:"volumeGroup"`
	Size         Size       `yaml:"size" json:"size"`
	Purpose      string     `yaml:"purpose" json:"purpose"`
	Filesystem   string     `yaml:"filesystem" json:"filesystem,omitempty"`
	Mount        string     `yaml:"mount" json:"mount,omitempty"`
	MountOptions []string   `yaml:"mountOptions" json:"mountOptions,omitempty"`
	Label        string     `yaml:"label" json:"label,omitempty"`
	Guest        *Guest     `yaml:"guest" json:"guest,omitempty"`
	Encryption   Encryption `yaml:"encryption" json:"encryption"`
}

// Guest names the libvirt domain disk a guest volume is meant for.
type Guest struct {
	Domain string `yaml:"domain" json:"domain"`
	Disk   string `yaml:"disk" json:"disk,omitempty"`
}

// Encryption types.
const (
	EncLUKS2  = "luks2"  // LUKS2 container (the default)
	EncRandom = "random" // plain dm-crypt with a fresh random key each boot (swap)
	EncNone   = "none"   // unencrypted; needs a stated reason
)

// Key sources for a LUKS2 container's first keyslot.
const (
	KeyPassphrase = "passphrase"
	KeyFile       = "keyfile"
)

// Encryption says how one volume is encrypted. Unset LUKS parameters come
// from the layout's luks defaults.
type Encryption struct {
	Type    string `yaml:"type" json:"type"`
	Reason  string `yaml:"reason" json:"reason,omitempty"`
	Key     string `yaml:"key" json:"key,omitempty"`
	Name    string `yaml:"name" json:"name,omitempty"` // dm-crypt mapping name
	Label   string `yaml:"label" json:"label,omitempty"`
	Discard *bool  `yaml:"discard" json:"discard,omitempty"`
	LUKS    `yaml:",inline" json:",inline"`
}

// LUKS holds LUKS2 format parameters; at layout level they are the defaults.
type LUKS struct {
	Cipher     string `yaml:"cipher" json:"cipher,omitempty"`
	KeySize    int    `yaml:"keySize" json:"keySize,omitempty"`
	Hash       string `yaml:"hash" json:"hash,omitempty"`
	PBKDF      string `yaml:"pbkdf" json:"pbkdf,omitempty"`
	IterTimeMs int    `yaml:"iterTimeMs" json:"iterTimeMs,omitempty"`
	MemoryKiB  int    `yaml:"memoryKiB" json:"memoryKiB,omitempty"`
	Parallel   int    `yaml:"parallel" json:"parallel,omitempty"`
	// Iterations forces the PBKDF cost instead of benchmarking it
	// (--pbkdf-force-iterations); meant for tests on slow emulators.
	Iterations int `yaml:"iterations" json:"iterations,omitempty"`
	SectorSize int `yaml:"sectorSize" json:"sectorSize,omitempty"`
}

// Params is l as the luks door formats with it (label: the LUKS2 label).
// It is the one translation: the planner and migrate both use it, so a
// field added here (Iterations was once lost on migrate's copy) reaches
// every luksFormat.
func (l LUKS) Params(label string) luks.Params {
	return luks.Params{
		Cipher: l.Cipher, KeySize: l.KeySize, Hash: l.Hash, SectorSize: l.SectorSize, Label: label,
		KDF: luks.KDF{PBKDF: l.PBKDF, IterTimeMs: l.IterTimeMs, MemoryKiB: l.MemoryKiB, Parallel: l.Parallel, Iterations: l.Iterations},
	}
}

// LUKSParams is the volume's LUKS2 parameters, with its label.
func (e Encryption) LUKSParams() luks.Params { return e.LUKS.Params(e.Label) }

// Keys is the key-management policy.
type Keys struct {
	// Root is how the root volume is unlocked at boot: passphrase.
	Root string `yaml:"root" json:"root"`
	// Others is how every other LUKS2 volume is unlocked: keyfile (stored
	// under KeyFileDir on the encrypted root) or passphrase.
	Others          string `yaml:"others" json:"others"`
	KeyFileDir      string `yaml:"keyFileDir" json:"keyFileDir"`
	RecoveryKey     *bool  `yaml:"recoveryKey" json:"recoveryKey"`
	HeaderBackupDir string `yaml:"headerBackupDir" json:"headerBackupDir,omitempty"`
	// Unlock adds ways to open the root volume at boot besides the
	// passphrase typed on the console (which always remains).
	Unlock *Unlock `yaml:"unlock" json:"unlock,omitempty"`
}

// Unlock lists the extra unlock methods of the root volume. The
// passphrase keyslot and the recovery keyslot always remain.
type Unlock struct {
	// IP is the kernel's ip= parameter the initramfs configures the
	// network with for SSH and Tang: "dhcp" (the default) or the static
	// form CLIENT::GATEWAY:NETMASK:HOSTNAME:INTERFACE:off.
	IP string `yaml:"ip" json:"ip,omitempty"`
	// NetworkModules are the kernel modules of the network card, added to
	// the initramfs (e.g. virtio_net, e1000e, igb).
	NetworkModules []string `yaml:"networkModules" json:"networkModules,omitempty"`
	// SSH: Debian's dropbear-initramfs, for a headless server: the admin
	// logs into the initramfs and types the passphrase (cryptroot-unlock).
	SSH *SSHUnlock `yaml:"ssh" json:"ssh,omitempty"`
	// Tang: network-bound unlock; each server is bound to its own keyslot
	// with Clevis (any one that answers unlocks).
	Tang []TangServer `yaml:"tang" json:"tang,omitempty"`
	// TPM2: Clevis's tpm2 pin (initramfs-tools ignores systemd's
	// tpm2-device=), sealed to a PCR policy.
	TPM2 *TPM2Unlock `yaml:"tpm2" json:"tpm2,omitempty"`
}

// SSHUnlock configures dropbear in the initramfs.
type SSHUnlock struct {
	// AuthorizedKeys are the public keys (OpenSSH authorized_keys lines)
	// that may log into the initramfs.
	AuthorizedKeys []string `yaml:"authorizedKeys" json:"authorizedKeys"`
	// Port dropbear listens on (default 22).
	Port int `yaml:"port" json:"port,omitempty"`
}

// TangServer is a Tang server pinned by its signing key.
type TangServer struct {
	URL string `yaml:"url" json:"url"`
	// Thumbprint is the S256 thumbprint of the server's signing key
	// (tang-show-keys on the server).
	Thumbprint string `yaml:"thumbprint" json:"thumbprint"`
}

// TPM2Unlock is the PCR policy the key is sealed to.
type TPM2Unlock struct {
	PCRs    string `yaml:"pcrs" json:"pcrs"`                 // default "7"
	PCRBank string `yaml:"pcrBank" json:"pcrBank,omitempty"` // default sha256
}

// Tmp types.
const (
	TmpTmpfs  = "tmpfs"  // RAM-backed; safe only with encrypted swap
	TmpVolume = "volume" // on whichever encrypted volume holds the path
)

// Tmp is the policy for one temporary directory (/tmp, /var/tmp, /dev/shm).
type Tmp struct {
	Path    string   `yaml:"path" json:"path"`
	Type    string   `yaml:"type" json:"type"`
	Size    string   `yaml:"size" json:"size,omitempty"` // tmpfs size: 2GiB or 50% (of RAM)
	Options []string `yaml:"options" json:"options,omitempty"`
}
