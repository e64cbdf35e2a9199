package layout

import (
	"fmt"
	"path"
	"regexp"
	"sort"
	"strings"
)

// Validate checks everything that can be checked without the machine: names,
// references, mounts, key placement, encryption parameters, swap and
// hibernation. Checks against real disks live in the planner.
func Validate(f *File, rep *Report) {
	l := f.Layout
	checkText(l, rep)
	checkFreeText(rep, "$.description", l.Description)
	if l.APIVersion != APIVersion {
		if l.APIVersion == "" {
			rep.Errorf("$.apiVersion", "add apiVersion: "+APIVersion, "apiVersion is missing")
		} else {
			rep.Errorf("$.apiVersion", "set apiVersion: "+APIVersion, "unsupported apiVersion %q", l.APIVersion)
		}
	}
	if l.Kind != Kind {
		rep.Errorf("$.kind", "set kind: "+Kind, "kind is %q, want %q", l.Kind, Kind)
	}
	if !simpleNameRe.MatchString(l.Name) {
		rep.Errorf("$.name", "use lowercase letters, digits and dashes, e.g. name: mail-host",
			"layout name %q must be 1-63 lowercase letters, digits or dashes", l.Name)
	}
	vgs := validateVGs(l, rep)
	mounts := map[string]string{} // mount point -> path of its first definer
	pvCount := map[string]int{}
	validateDisks(l, rep, vgs, mounts, pvCount)
	for name, i := range vgs {
		if pvCount[name] == 0 {
			rep.Errorf(fmt.Sprintf("$.volumeGroups[%d]", i),
				"set volumeGroup: "+name+" on a disk (table: none) or on an lvm partition",
				"volume group %q has no physical volume", name)
		}
	}
	validateVolumes(l, rep, vgs, mounts)
	validateKeys(l, rep)
	validateUnlock(l, rep)
	validateSwap(l, rep)
	validateTmp(l, rep, mounts)
	roots := 0
	for _, v := range l.Volumes {
		if v.Mount == "/" {
			roots++
		}
	}
	switch {
	case roots == 0:
		rep.Errorf("$.volumes", "add a volume with mount: /", "no volume is mounted at /; a layout needs exactly one root")
	case roots > 1:
		// reported as a duplicate mount point already
	}
}

var (
	simpleNameRe = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)
	diskNameRe   = regexp.MustCompile(`^[A-Za-z0-9_-]{1,32}$`)
	// LVM allows a-z A-Z 0-9 + _ . - (lvm(8) "VALID NAMES").
	lvmNameRe = regexp.MustCompile(`^[A-Za-z0-9+_.][A-Za-z0-9+_.-]*$`)
	// dm names may hold more, but crypttab splits fields on white space and
	// /dev/mapper/NAME must be a plain file name; keep to a safe alphabet,
	// and no leading dash: the name is a positional argument of cryptsetup.
	dmNameRe  = regexp.MustCompile(`^[A-Za-z0-9_.+][A-Za-z0-9_.+-]*$`)
	gptNameRe = regexp.MustCompile(`^[A-Za-z0-9_.-]{1,36}$`) // GPT names: 36 UTF-16 units
)

// lvmReservedLV lists substrings lvm(8) reserves in LV names.
var lvmReservedLV = []string{"_cdata", "_cmeta", "_corig", "_iorig", "_imeta", "_mimage", "_mlog", "_pmspare", "_rimage", "_rmeta", "_tdata", "_tmeta", "_vdata", "_vorigin", "_wcorig"}

func checkLVMName(rep *Report, p, kind, name string) bool {
	switch {
	case name == "":
		rep.Errorf(p, "give it a name", "%s name is missing", kind)
	case name == "." || name == ".." || !lvmNameRe.MatchString(name):
		rep.Errorf(p, "use only letters, digits and + _ . - and do not start with -",
			"%s name %q is not a valid LVM name", kind, name)
	case len(name) > 127: // lvm NAME_LEN is 128 including the terminating NUL
		rep.Errorf(p, "shorten it", "%s name %q is %d characters; LVM allows at most 127", kind, name, len(name))
	default:
		return true
	}
	return false
}

// dmEscape doubles dashes the way LVM does when it builds dm names (vg-lv).
func dmEscape(s string) string { return strings.ReplaceAll(s, "-", "--") }

func validateVGs(l *Layout, rep *Report) map[string]int {
	vgs := map[string]int{}
	if len(l.VolumeGroups) == 0 {
		rep.Errorf("$.volumeGroups", "add volumeGroups: [{name: vg0}]", "no volume group is defined")
	}
	for i, vg := range l.VolumeGroups {
		p := fmt.Sprintf("$.volumeGroups[%d]", i)
		if !checkLVMName(rep, p+".name", "volume group", vg.Name) {
			continue
		}
		if vg.Name == "mapper" || vg.Name == "disk" || vg.Name == "block" {
			rep.Errorf(p+".name", "choose another name, e.g. vg0", "volume group name %q clashes with /dev/%s", vg.Name, vg.Name)
		}
		if j, dup := vgs[vg.Name]; dup {
			rep.Errorf(p+".name", "rename one of them", "volume group %q is defined twice (also at $.volumeGroups[%d])", vg.Name, j)
			continue
		}
		vgs[vg.Name] = i
		es := vg.ExtentSize
		if es.Relative() || es.Bytes < 1024 || es.Bytes&(es.Bytes-1) != 0 {
			rep.Errorf(p+".extentSize", "use a power of two such as 4MiB",
				"extent size %q must be a power of two of at least 1KiB (vgcreate -s)", es.Raw)
		}
	}
	return vgs
}

func addMount(rep *Report, mounts map[string]string, mnt, p string) {
	if mnt == "" {
		return
	}
	if !path.IsAbs(mnt) || path.Clean(mnt) != mnt {
		rep.Errorf(p, "write an absolute path without trailing slash, e.g. /var", "mount point %s is not a clean absolute path", Short(mnt))
		return
	}
	if !checkComponents(rep, p, "mount point", mnt) {
		return
	}
	if prev, dup := mounts[mnt]; dup {
		rep.Errorf(p, "mount each path once", "mount point %q is also used at %s", mnt, prev)
		return
	}
	mounts[mnt] = p
}

func validateDisks(l *Layout, rep *Report, vgs map[string]int, mounts map[string]string, pvCount map[string]int) {
	if len(l.Disks) == 0 {
		rep.Errorf("$.disks", "add disks: [{name: disk0, device: /dev/sda}]", "no disk is defined")
	}
	names := map[string]int{}
	devices := map[string]int{}
	for i, d := range l.Disks {
		p := fmt.Sprintf("$.disks[%d]", i)
		if !diskNameRe.MatchString(d.Name) {
			rep.Errorf(p+".name", "use letters, digits, _ or -, at most 32", "disk name %q is missing or invalid", d.Name)
		} else if j, dup := names[d.Name]; dup {
			rep.Errorf(p+".name", "rename one of them", "disk name %q is used twice (also at $.disks[%d])", d.Name, j)
		} else {
			names[d.Name] = i
		}
		if !path.IsAbs(d.Device) {
			rep.Errorf(p+".device", "name the device by a stable path, e.g. /dev/disk/by-id/...", "device %s is not an absolute path", Short(d.Device))
		} else if !CheckDevicePath(rep, p+".device", d.Device) {
			// reported
		} else if j, dup := devices[d.Device]; dup {
			rep.Errorf(p+".device", "each disk must be a different device", "device %s is also used by $.disks[%d]", d.Device, j)
		} else {
			devices[d.Device] = i
		}
		switch d.Table {
		case "none":
			if _, ok := vgs[d.VolumeGroup]; !ok {
				refError(rep, p+".volumeGroup", d.VolumeGroup, l)
			} else {
				pvCount[d.VolumeGroup]++
			}
		case "gpt":
			if d.VolumeGroup != "" {
				rep.Errorf(p+".volumeGroup", "move volumeGroup onto the partition of type lvm",
					"a partitioned disk cannot itself be a physical volume")
			}
			if len(d.Partitions) == 0 {
				rep.Errorf(p+".partitions", "add partitions or set table: none", "table gpt needs at least one partition")
			}
		default:
			rep.Errorf(p+".table", "use table: gpt (with partitions) or table: none (whole disk as a PV)", "unknown table %q", d.Table)
		}
		pnames := map[string]bool{}
		for j, part := range d.Partitions {
			pp := fmt.Sprintf("%s.partitions[%d]", p, j)
			if !gptNameRe.MatchString(part.Name) {
				rep.Errorf(pp+".name", "use at most 36 letters, digits, _ . -", "partition name %q is missing or invalid (GPT names hold 36 characters)", part.Name)
			} else if pnames[part.Name] {
				rep.Errorf(pp+".name", "rename one of them", "partition name %q is used twice on disk %s", part.Name, d.Name)
			}
			pnames[part.Name] = true
			switch {
			case part.Size.IsZero():
				rep.Errorf(pp+".size", "add a size such as 512MiB, or 100%FREE for the rest of the disk", "partition size is missing")
			case part.Size.Of == "VG":
				rep.Errorf(pp+".size", "use an absolute size or 100%FREE", "a partition cannot be sized in percent of a volume group")
			case part.Size.Of == "FREE" && j != len(d.Partitions)-1:
				rep.Errorf(pp+".size", "give %FREE only to the last partition", "only the last partition may take a share of the free space")
			}
			switch part.Type {
			case PartLVM:
				if _, ok := vgs[part.VolumeGroup]; !ok {
					refError(rep, pp+".volumeGroup", part.VolumeGroup, l)
				} else {
					pvCount[part.VolumeGroup]++
				}
				if part.Mount != "" || part.Filesystem != "" {
					rep.Errorf(pp, "remove mount and filesystem; put them on a volume", "an lvm partition carries a physical volume, not a filesystem")
				}
				continue
			case PartESP, PartBoot, PartBIOSBoot, "linux":
			default:
				rep.Errorf(pp+".type", "use one of esp, boot, bios-boot, lvm, linux", "unknown partition type %q", part.Type)
				continue
			}
			if part.VolumeGroup != "" {
				rep.Errorf(pp+".volumeGroup", "set type: lvm or remove volumeGroup", "only an lvm partition can belong to a volume group")
			}
			switch part.Encryption.Type {
			case EncNone:
				if strings.TrimSpace(part.Encryption.Reason) == "" {
					rep.Errorf(pp+".encryption", "state why, e.g. encryption: {type: none, reason: \"firmware reads the ESP\"}",
						"partition %s is not encrypted and states no reason", part.Name)
				}
			default:
				rep.Errorf(pp+".encryption.type", "put the data on an encrypted LVM volume, or state encryption: {type: none, reason: ...}",
					"cryptshift encrypts LVM volumes; partition %s can only be unencrypted", part.Name)
			}
			if part.Type == PartBIOSBoot && (part.Mount != "" || part.Filesystem != "") {
				rep.Errorf(pp, "remove mount and filesystem", "a bios-boot partition holds GRUB's core image, not a filesystem")
			}
			if part.Filesystem != "" && part.Filesystem != "vfat" && part.Filesystem != "ext4" && part.Filesystem != "xfs" {
				rep.Errorf(pp+".filesystem", "use vfat, ext4 or xfs", "unsupported filesystem %q", part.Filesystem)
			}
			checkFSLabel(rep, pp+".label", part.Filesystem, part.Label)
			checkOptions(rep, pp+".mountOptions", "mount", part.MountOptions)
			checkFreeText(rep, pp+".encryption.reason", part.Encryption.Reason)
			if part.Type == PartESP && part.Filesystem != "vfat" {
				rep.Errorf(pp+".filesystem", "use filesystem: vfat", "the firmware reads only FAT on an EFI system partition")
			}
			if part.Mount == "/" {
				rep.Errorf(pp+".mount", "mount / on an encrypted volume", "the root filesystem cannot live on an unencrypted partition")
				continue
			}
			addMount(rep, mounts, part.Mount, pp+".mount")
		}
	}
}

func refError(rep *Report, p, name string, l *Layout) {
	var known []string
	for _, vg := range l.VolumeGroups {
		known = append(known, vg.Name)
	}
	if name == "" {
		rep.Errorf(p, "name one of: "+strings.Join(known, ", "), "volumeGroup is missing and the layout has more than one volume group")
		return
	}
	fix := "define it under volumeGroups"
	if s := closest(name, known); s != "" {
		fix = fmt.Sprintf("did you mean %q?", s)
	}
	rep.Errorf(p, fix, "volume group %q is not defined", name)
}

func validateVolumes(l *Layout, rep *Report, vgs map[string]int, mounts map[string]string) {
	if len(l.Volumes) == 0 {
		rep.Errorf("$.volumes", "add volumes, at least one with mount: /", "no volume is defined")
	}
	lvNames := map[string]int{}
	dmNames := map[string]string{}
	for i, v := range l.Volumes {
		p := fmt.Sprintf("$.volumes[%d]", i)
		if checkLVMName(rep, p+".name", "volume", v.Name) {
			for _, r := range lvmReservedLV {
				if strings.Contains(v.Name, r) {
					rep.Errorf(p+".name", "rename it", "volume name %q contains %q, which LVM reserves", v.Name, r)
				}
			}
			if strings.HasPrefix(v.Name, "snapshot") || strings.HasPrefix(v.Name, "pvmove") {
				rep.Errorf(p+".name", "rename it", "volume name %q starts with a prefix LVM reserves", v.Name)
			}
			key := v.VolumeGroup + "/" + v.Name
			if j, dup := lvNames[key]; dup {
				rep.Errorf(p+".name", "rename one of them", "volume %s is defined twice (also at $.volumes[%d])", key, j)
			}
			lvNames[key] = i
			// The LV's dm node is VG-LV with dashes doubled; DM_NAME_LEN is 128.
			if n := len(dmEscape(v.VolumeGroup) + "-" + dmEscape(v.Name)); n > 127 {
				rep.Errorf(p+".name", "shorten the volume or volume group name", "the device-mapper name of %s would be %d characters; at most 127 fit", key, n)
			}
		}
		if _, ok := vgs[v.VolumeGroup]; !ok {
			refError(rep, p+".volumeGroup", v.VolumeGroup, l)
		}
		if v.Size.IsZero() {
			rep.Errorf(p+".size", "add a size such as 20GiB, 40%VG or 100%FREE", "volume size is missing")
		}
		switch v.Purpose {
		case PurposeFilesystem:
			checkFSLabel(rep, p+".label", v.Filesystem, v.Label)
			if v.Filesystem != "ext4" && v.Filesystem != "xfs" {
				rep.Errorf(p+".filesystem", "use ext4 or xfs", "unsupported filesystem %q for a volume", v.Filesystem)
			}
			if v.Mount == "" {
				rep.Errorf(p+".mount", "add mount: /path, or use purpose: raw", "a filesystem volume needs a mount point")
			}
			addMount(rep, mounts, v.Mount, p+".mount")
		case PurposeSwap, PurposeGuest, PurposeRaw:
			if v.Mount != "" || v.Filesystem != "" {
				rep.Errorf(p, "remove mount and filesystem", "a %s volume has no filesystem or mount point", v.Purpose)
			}
			if v.Purpose == PurposeGuest && (v.Guest == nil || v.Guest.Domain == "") {
				rep.Errorf(p+".guest", "add guest: {domain: NAME, disk: vda}", "a guest volume must name its libvirt domain")
			}
		case "":
			rep.Errorf(p+".purpose", "set purpose: filesystem (with mount), swap, guest or raw", "the volume's purpose is missing")
		default:
			rep.Errorf(p+".purpose", "use filesystem, swap, guest or raw", "unknown purpose %q", v.Purpose)
		}
		checkOptions(rep, p+".mountOptions", "mount", v.MountOptions)
		if v.Guest != nil && v.Purpose != PurposeGuest {
			rep.Errorf(p+".guest", "remove guest or set purpose: guest", "only a guest volume names a domain")
		}
		validateEncryption(l, rep, p, v, dmNames)
	}
}

// Ciphers cryptshift plans; others need a conscious choice and get a warning.
var knownCiphers = map[string][]int{ // cipher -> allowed key sizes (bits)
	"aes-xts-plain64":      {256, 512},
	"serpent-xts-plain64":  {256, 512},
	"twofish-xts-plain64":  {256, 512},
	"aes-adiantum-plain64": {256},
	"aes-cbc-essiv:sha256": {128, 192, 256},
}

func validateEncryption(l *Layout, rep *Report, p string, v Volume, dmNames map[string]string) {
	e := v.Encryption
	ep := p + ".encryption"
	checkFreeText(rep, ep+".reason", e.Reason)
	switch e.Type {
	case EncNone:
		if strings.TrimSpace(e.Reason) == "" {
			rep.Errorf(ep, "encrypt it (remove encryption) or state why: encryption: {type: none, reason: ...}",
				"volume %s is not encrypted and states no reason", v.Name)
		}
		if v.Purpose == PurposeSwap {
			rep.Errorf(ep+".type", "use type: random (or luks2 for hibernation)", "swap holds pages of every process's memory; cryptshift does not plan plaintext swap")
		}
		if v.Mount == "/" {
			rep.Errorf(ep+".type", "encrypt the root volume", "the root filesystem holds the key files and must be encrypted")
		}
		return
	case EncRandom:
		if v.Purpose != PurposeSwap {
			rep.Errorf(ep+".type", "use type: luks2", "a random key is lost at every reboot; only swap can use it, not a %s volume", v.Purpose)
		}
	case EncLUKS2:
	case "luks1", "luks":
		rep.Errorf(ep+".type", "use type: luks2", "LUKS1 lacks argon2 and header checksums; cryptshift formats LUKS2 only")
		return
	default:
		rep.Errorf(ep+".type", "use luks2, random or none", "unknown encryption type %q", e.Type)
		return
	}
	if !dmNameRe.MatchString(e.Name) || e.Name == "." || e.Name == ".." {
		rep.Errorf(ep+".name", "use letters, digits and _ . + -", "mapping name %s is not a valid device-mapper name", Short(e.Name))
	} else if len(e.Name) > 127 { // DM_NAME_LEN is 128 including NUL
		rep.Errorf(ep+".name", "shorten it", "mapping name %q is longer than 127 characters", e.Name)
	} else if prev, dup := dmNames[e.Name]; dup {
		rep.Errorf(ep+".name", "give each volume its own encryption.name", "mapping name %q is also used by %s", e.Name, prev)
	} else {
		dmNames[e.Name] = p
	}
	sizes, known := knownCiphers[e.Cipher]
	if !known {
		if !regexp.MustCompile(`^[a-z0-9]+-[a-z0-9]+(-[a-z0-9:]+)?$`).MatchString(e.Cipher) {
			rep.Errorf(ep+".cipher", "use aes-xts-plain64", "cipher %q is not in cryptsetup's cipher-mode-iv form", e.Cipher)
		} else {
			rep.Warnf(ep+".cipher", "use aes-xts-plain64 unless you have a reason", "cipher %q is unusual; reviewers expect aes-xts-plain64", e.Cipher)
		}
	} else if !containsInt(sizes, e.KeySize) {
		rep.Errorf(ep+".keySize", fmt.Sprintf("use one of %v", sizes), "key size %d is not valid for %s", e.KeySize, e.Cipher)
	}
	if e.Cipher == "aes-xts-plain64" && e.KeySize == 256 {
		rep.Warnf(ep+".keySize", "use keySize: 512 (AES-256 in XTS mode)", "a 256-bit XTS key is AES-128; reviewers expect 512")
	}
	switch e.SectorSize {
	case 512, 1024, 2048, 4096:
	default:
		rep.Errorf(ep+".sectorSize", "use 4096 (or 512 for old kernels)", "sector size %d is not one of 512, 1024, 2048, 4096", e.SectorSize)
	}
	if e.Type == EncRandom {
		return
	}
	if len(e.Label) > 47 { // LUKS2_LABEL_L is 48 bytes including NUL
		rep.Errorf(ep+".label", "shorten it to at most 47 characters", "LUKS2 label %s is %d characters", Short(e.Label), len(e.Label))
	}
	// The hash names a kernel crypto API algorithm (luksFormat --hash).
	if !hashRe.MatchString(e.Hash) {
		rep.Errorf(ep+".hash", "use sha256 or sha512", "hash %s is not a hash algorithm name", Short(e.Hash))
	}
	switch e.PBKDF {
	case "argon2id":
	case "argon2i":
		rep.Warnf(ep+".pbkdf", "use argon2id", "argon2i is weaker against side channels than argon2id")
	case "pbkdf2":
		rep.Warnf(ep+".pbkdf", "use argon2id", "pbkdf2 is not memory-hard; GPUs guess passphrases far faster")
	default:
		rep.Errorf(ep+".pbkdf", "use argon2id", "unknown PBKDF %q", e.PBKDF)
	}
	if e.MemoryKiB < 0 || e.MemoryKiB > 4194304 { // cryptsetup's argon2 limit: 4 GiB
		rep.Errorf(ep+".memoryKiB", "use at most 4194304 (4 GiB)", "argon2 memory %d KiB is out of range", e.MemoryKiB)
	}
	if e.Parallel < 0 || e.Parallel > 4 { // cryptsetup caps --pbkdf-parallel at 4
		rep.Errorf(ep+".parallel", "use 1 to 4", "argon2 parallelism %d is out of range", e.Parallel)
	}
	if e.Iterations > 0 && e.Iterations < 4 && e.PBKDF != "pbkdf2" {
		rep.Errorf(ep+".iterations", "use at least 4", "argon2 needs at least 4 iterations")
	}
	if e.Iterations > 0 && e.PBKDF == "pbkdf2" && e.Iterations < 1000 {
		rep.Errorf(ep+".iterations", "use at least 1000 or leave it unset to benchmark", "pbkdf2 needs at least 1000 iterations")
	}
	switch e.Key {
	case KeyPassphrase, KeyFile:
	default:
		rep.Errorf(ep+".key", "use passphrase or keyfile", "unknown key source %q", e.Key)
	}
	if v.Mount == "/" && e.Key == KeyFile {
		rep.Errorf(ep+".key", "unlock the root with key: passphrase", "the root volume holds the key files; it cannot be unlocked by one")
	}
}

func containsInt(s []int, n int) bool {
	for _, x := range s {
		if x == n {
			return true
		}
	}
	return false
}

// mountOwner finds the volume or partition whose mount point is the longest
// prefix of p: where a file at p would be stored.
type owner struct {
	path      string // layout path of the volume or partition
	mount     string
	encrypted bool
	what      string
}

func owners(l *Layout) []owner {
	var out []owner
	for i, d := range l.Disks {
		for j, part := range d.Partitions {
			if part.Mount != "" {
				out = append(out, owner{fmt.Sprintf("$.disks[%d].partitions[%d]", i, j), part.Mount, false, "partition " + part.Name})
			}
		}
	}
	for i, v := range l.Volumes {
		if v.Mount != "" {
			out = append(out, owner{fmt.Sprintf("$.volumes[%d]", i), v.Mount, v.Encryption.Type == EncLUKS2, "volume " + v.Name})
		}
	}
	for i, t := range l.Tmp {
		if t.Type == TmpTmpfs {
			out = append(out, owner{fmt.Sprintf("$.tmp[%d]", i), t.Path, false, "tmpfs " + t.Path})
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return len(out[i].mount) > len(out[j].mount) })
	return out
}

// OwnerOf returns which mount holds path p.
func ownerOf(l *Layout, p string) (owner, bool) {
	for _, o := range owners(l) {
		if o.mount == "/" || p == o.mount || strings.HasPrefix(p, o.mount+"/") {
			return o, true
		}
	}
	return owner{}, false
}

func validateKeys(l *Layout, rep *Report) {
	k := l.Keys
	if k.Root != KeyPassphrase {
		rep.Errorf("$.keys.root", "use root: passphrase (enroll TPM2/FIDO2 later with systemd-cryptenroll)",
			"root key source %q is not supported", k.Root)
	}
	if k.Others != KeyFile && k.Others != KeyPassphrase {
		rep.Errorf("$.keys.others", "use keyfile or passphrase", "unknown key source %q", k.Others)
	}
	usesKeyFiles := false
	for _, v := range l.Volumes {
		if v.Encryption.Type == EncLUKS2 && v.Encryption.Key == KeyFile {
			usesKeyFiles = true
		}
	}
	if !path.IsAbs(k.KeyFileDir) || path.Clean(k.KeyFileDir) != k.KeyFileDir {
		rep.Errorf("$.keys.keyFileDir", "use an absolute path such as "+DefaultKeyFileDir, "key file directory %s is not a clean absolute path", Short(k.KeyFileDir))
	} else if !checkComponents(rep, "$.keys.keyFileDir", "key file directory", k.KeyFileDir) {
		// reported
	} else if strings.ContainsAny(k.KeyFileDir, " \\") {
		// systemd-cryptsetup-generator reads crypttab's fields with
		// sscanf("%ms"): no escape sequence can put a blank into the key
		// file field, and a backslash would be taken literally by systemd
		// but decoded by Debian's initramfs scripts.
		rep.Errorf("$.keys.keyFileDir", "use a path without blanks or backslashes, such as "+DefaultKeyFileDir,
			"key file directory %s contains a blank or a backslash; the key file paths go into crypttab, whose fields cannot hold them", Short(k.KeyFileDir))
	} else if usesKeyFiles {
		if o, ok := ownerOf(l, k.KeyFileDir); ok && !o.encrypted {
			rep.Errorf("$.keys.keyFileDir", "keep key files on the encrypted root, e.g. "+DefaultKeyFileDir,
				"key files in %s would be stored on %s, which is not encrypted (at %s)", k.KeyFileDir, o.what, o.path)
		} else if ok && o.mount != "/" {
			// At boot only the root is unlocked before the others; a key
			// file on another volume could not open anything in time.
			rep.Errorf("$.keys.keyFileDir", "keep key files on the root volume, e.g. "+DefaultKeyFileDir,
				"key files in %s would be stored on %s, which is itself unlocked after the root", k.KeyFileDir, o.what)
		}
	}
	if k.RecoveryKey != nil && !*k.RecoveryKey {
		rep.Warnf("$.keys.recoveryKey", "set recoveryKey: true",
			"without a recovery keyslot a forgotten passphrase or lost key file means the data is gone")
	}
	if k.HeaderBackupDir == "" {
		rep.Warnf("$.keys", "set keys.headerBackupDir to removable or offsite storage",
			"no LUKS header backups: a damaged header makes a volume unreadable for good")
	} else if !path.IsAbs(k.HeaderBackupDir) || path.Clean(k.HeaderBackupDir) != k.HeaderBackupDir {
		// Clean, so that it cannot climb out of the target root with "..".
		rep.Errorf("$.keys.headerBackupDir", "use a clean absolute path such as /root/luks-header-backups", "header backup directory %s is not a clean absolute path", Short(k.HeaderBackupDir))
	} else if !checkComponents(rep, "$.keys.headerBackupDir", "header backup directory", k.HeaderBackupDir) {
		// reported
	} else if o, ok := ownerOf(l, k.HeaderBackupDir); ok {
		if o.encrypted {
			rep.Warnf("$.keys.headerBackupDir", "copy the backups to offline storage as well",
				"header backups in %s live on %s: useless if that volume's own header is damaged", k.HeaderBackupDir, o.what)
		} else {
			rep.Warnf("$.keys.headerBackupDir", "keep header backups offline, not on plaintext disks",
				"header backups in %s would be stored unencrypted on %s; with an old passphrase they open the volume", k.HeaderBackupDir, o.what)
		}
	}
}

func validateSwap(l *Layout, rep *Report) {
	var swaps []int
	for i, v := range l.Volumes {
		if v.Purpose == PurposeSwap {
			swaps = append(swaps, i)
		}
	}
	if !l.Hibernation {
		return
	}
	if len(swaps) == 0 {
		rep.Errorf("$.hibernation", "add a swap volume of at least the RAM size, or set hibernation: false",
			"hibernation needs a swap volume to write the memory image to")
		return
	}
	for _, i := range swaps {
		e := l.Volumes[i].Encryption
		p := fmt.Sprintf("$.volumes[%d].encryption", i)
		if e.Type == EncRandom {
			rep.Errorf(p+".type", "use type: luks2 with key: passphrase, or set hibernation: false",
				"a random-key swap cannot be read back after power-off, so hibernation could never resume")
		}
		if e.Type == EncLUKS2 && e.Key == KeyFile {
			rep.Errorf(p+".key", "use key: passphrase",
				"the resume device is opened in the initramfs; its key file would have to sit on plaintext /boot")
		}
	}
}

func validateTmp(l *Layout, rep *Report, mounts map[string]string) {
	seen := map[string]bool{}
	for i, t := range l.Tmp {
		p := fmt.Sprintf("$.tmp[%d]", i)
		if !path.IsAbs(t.Path) || path.Clean(t.Path) != t.Path {
			rep.Errorf(p+".path", "use an absolute path such as /tmp", "tmp path %s is not a clean absolute path", Short(t.Path))
			continue
		}
		if !checkComponents(rep, p+".path", "tmp path", t.Path) {
			continue
		}
		checkOptions(rep, p+".options", "tmpfs", t.Options)
		if seen[t.Path] {
			rep.Errorf(p+".path", "list each path once", "tmp path %s is listed twice", t.Path)
			continue
		}
		seen[t.Path] = true
		switch t.Type {
		case TmpTmpfs:
			if t.Size == "" {
				rep.Errorf(p+".size", "add size: 2GiB or size: 25%", "a tmpfs needs a size limit, or it may take half the RAM")
			} else if !tmpfsSizeRe.MatchString(t.Size) {
				rep.Errorf(p+".size", "write an absolute size (2GiB) or a share of RAM (25%)", "tmpfs size %q is not valid", t.Size)
			} else if !strings.HasSuffix(t.Size, "%") {
				if _, err := ParseSize(t.Size); err != nil {
					rep.Errorf(p+".size", "write an absolute size (2GiB) or a share of RAM (25%)", "%v", err)
				}
			}
			if prev, dup := mounts[t.Path]; dup {
				rep.Errorf(p+".path", "choose tmpfs or a volume for "+t.Path, "%s is also a mount point at %s", t.Path, prev)
			}
		case TmpVolume:
			if t.Size != "" {
				rep.Errorf(p+".size", "remove size, or use type: tmpfs", "size applies only to tmpfs")
			}
			if o, ok := ownerOf(l, t.Path); ok && !o.encrypted {
				rep.Errorf(p+".type", "use type: tmpfs, or mount an encrypted volume there",
					"%s would be stored on %s, which is not encrypted", t.Path, o.what)
			}
		default:
			rep.Errorf(p+".type", "use tmpfs or volume", "unknown tmp type %q", t.Type)
		}
	}
}

var tmpfsSizeRe = regexp.MustCompile(`^([0-9]+(\.[0-9]+)?\s*[A-Za-z]*|[0-9]{1,3}%)$`)

// Filesystem label limits: ext4 s_volume_name is 16 bytes, XFS sb_fname 12,
// FAT's volume label 11.
var fsLabelMax = map[string]int{"ext4": 16, "xfs": 12, "vfat": 11}

func checkFSLabel(rep *Report, p, fs, label string) {
	if n, ok := fsLabelMax[fs]; ok && len(label) > n {
		rep.Errorf(p, fmt.Sprintf("shorten it to at most %d characters", n), "%s label %s is %d characters; %s allows %d", fs, Short(label), len(label), fs, n)
	}
}

var hashRe = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,31}$`)

// NAME_MAX: the longest file name a Linux filesystem takes.
const nameMax = 255

// checkComponents refuses a path with a component longer than NAME_MAX:
// mkdir and mount would fail on it halfway through an apply.
func checkComponents(rep *Report, p, what, s string) bool {
	for _, c := range strings.Split(s, "/") {
		if len(c) > nameMax {
			rep.Errorf(p, "shorten it", "%s %s has a component of %d bytes; a file name holds at most %d", what, Short(s), len(c), nameMax)
			return false
		}
	}
	return true
}

// CheckDevicePath checks a device path by what it becomes: an argument of
// wipefs, sgdisk, pvcreate and cryptsetup, and a name in messages. Device
// nodes and udev's by-id links never hold blanks (udev replaces them with
// underscores), so a blank is a mistake.
func CheckDevicePath(rep *Report, p, s string) bool {
	switch {
	case !path.IsAbs(s) || path.Clean(s) != s:
		rep.Errorf(p, "name the device by a clean absolute path, e.g. /dev/disk/by-id/...", "device %s is not a clean absolute path", Short(s))
	case strings.ContainsAny(s, " \\"):
		rep.Errorf(p, "name the device by its /dev path or a /dev/disk/by-id link", "device %s contains a blank or a backslash, which no device node has", Short(s))
	default:
		return checkComponents(rep, p, "device", s)
	}
	return false
}

// checkOptions checks mount or tmpfs options, which go into the options
// field of fstab, one comma-separated field without blanks.
func checkOptions(rep *Report, p, what string, opts []string) {
	for i, o := range opts {
		op := fmt.Sprintf("%s[%d]", p, i)
		switch {
		case o == "":
			rep.Errorf(op, "remove the empty option", "%s option %d is empty", what, i+1)
		case strings.ContainsAny(o, " ,\\"):
			rep.Errorf(op, "write one option per list item, without blanks or backslashes, e.g. [noatime, nodev]",
				"%s option %s contains a blank, a comma or a backslash; fstab's options are one comma-separated field", what, Short(o))
		}
	}
}

// checkFreeText bounds descriptions and reasons: they are shown in plans,
// step descriptions and notes, one line each.
func checkFreeText(rep *Report, p, s string) {
	if len(s) > MaxFreeText {
		rep.Errorf(p, "shorten it", "text %s is %d bytes long; at most %d are allowed here", Short(s), len(s), MaxFreeText)
	}
}
