package layout

// Defaults a security reviewer expects (MISSION.md): LUKS2, aes-xts-plain64
// with a 512-bit key (two 256-bit AES keys), argon2id, 4096-byte sectors,
// a recovery keyslot, discard off.
var DefaultLUKS = LUKS{
	Cipher:     "aes-xts-plain64",
	KeySize:    512,
	Hash:       "sha256",
	PBKDF:      "argon2id",
	IterTimeMs: 2000,
	MemoryKiB:  1048576, // cryptsetup caps this at half the RAM when it benchmarks
	Parallel:   4,
	SectorSize: 4096,
}

// DefaultKeyFileDir is where key files live on the encrypted root; systemd
// (>= 245) looks there for NAME.key when crypttab names no key file.
const DefaultKeyFileDir = "/etc/cryptsetup-keys.d"

// DefaultExtentSize is LVM's default physical extent size.
const DefaultExtentSize = 4 << 20

// Normalize fills every unset value with its default. It is idempotent.
func (l *Layout) Normalize() {
	if l.LUKS.Cipher == "" {
		l.LUKS.Cipher = DefaultLUKS.Cipher
	}
	if l.LUKS.KeySize == 0 {
		l.LUKS.KeySize = DefaultLUKS.KeySize
	}
	if l.LUKS.Hash == "" {
		l.LUKS.Hash = DefaultLUKS.Hash
	}
	if l.LUKS.PBKDF == "" {
		l.LUKS.PBKDF = DefaultLUKS.PBKDF
	}
	if l.LUKS.IterTimeMs == 0 && l.LUKS.Iterations == 0 {
		l.LUKS.IterTimeMs = DefaultLUKS.IterTimeMs
	}
	if l.LUKS.MemoryKiB == 0 && l.LUKS.PBKDF != "pbkdf2" {
		l.LUKS.MemoryKiB = DefaultLUKS.MemoryKiB
	}
	if l.LUKS.Parallel == 0 && l.LUKS.PBKDF != "pbkdf2" {
		l.LUKS.Parallel = DefaultLUKS.Parallel
	}
	if l.LUKS.SectorSize == 0 {
		l.LUKS.SectorSize = DefaultLUKS.SectorSize
	}
	if l.Keys.Root == "" {
		l.Keys.Root = KeyPassphrase
	}
	if l.Keys.Others == "" {
		l.Keys.Others = KeyFile
	}
	if l.Keys.KeyFileDir == "" {
		l.Keys.KeyFileDir = DefaultKeyFileDir
	}
	if l.Keys.RecoveryKey == nil {
		t := true
		l.Keys.RecoveryKey = &t
	}
	onlyVG := ""
	if len(l.VolumeGroups) == 1 {
		onlyVG = l.VolumeGroups[0].Name
	}
	for i := range l.VolumeGroups {
		if l.VolumeGroups[i].ExtentSize.IsZero() {
			l.VolumeGroups[i].ExtentSize = Size{Raw: "4MiB", Bytes: DefaultExtentSize}
		}
	}
	for i := range l.Disks {
		d := &l.Disks[i]
		if d.Table == "" {
			if len(d.Partitions) > 0 {
				d.Table = "gpt"
			} else {
				d.Table = "none"
			}
		}
		if d.Table == "none" && d.VolumeGroup == "" {
			d.VolumeGroup = onlyVG
		}
		for j := range d.Partitions {
			p := &d.Partitions[j]
			switch p.Type {
			case PartESP:
				if p.Filesystem == "" {
					p.Filesystem = "vfat"
				}
				if p.Mount == "" {
					p.Mount = "/boot/efi"
				}
			case PartBoot:
				if p.Filesystem == "" {
					p.Filesystem = "ext4"
				}
				if p.Mount == "" {
					p.Mount = "/boot"
				}
			case PartLVM:
				if p.VolumeGroup == "" {
					p.VolumeGroup = onlyVG
				}
			}
			if p.Type != PartLVM && p.Encryption.Type == "" {
				// cryptshift encrypts LVM volumes; a plain partition is
				// unencrypted by construction and must say why (validated).
				p.Encryption.Type = EncNone
			}
		}
	}
	for i := range l.Volumes {
		v := &l.Volumes[i]
		if v.VolumeGroup == "" {
			v.VolumeGroup = onlyVG
		}
		if v.Purpose == "" {
			switch {
			case v.Guest != nil:
				v.Purpose = PurposeGuest
			case v.Filesystem == "swap":
				v.Purpose = PurposeSwap
				v.Filesystem = ""
			case v.Mount != "" || v.Filesystem != "":
				v.Purpose = PurposeFilesystem
			}
		}
		if v.Purpose == PurposeFilesystem && v.Filesystem == "" {
			v.Filesystem = "ext4"
		}
		e := &v.Encryption
		if e.Type == "" {
			e.Type = EncLUKS2
			if v.Purpose == PurposeSwap && !l.Hibernation {
				e.Type = EncRandom
			}
		}
		if e.Type == EncNone {
			continue
		}
		if e.Name == "" {
			e.Name = v.Name + "_crypt"
		}
		if e.Discard == nil {
			d := l.Discard
			e.Discard = &d
		}
		if e.Cipher == "" {
			e.Cipher = l.LUKS.Cipher
		}
		if e.KeySize == 0 {
			e.KeySize = l.LUKS.KeySize
		}
		if e.SectorSize == 0 {
			e.SectorSize = l.LUKS.SectorSize
		}
		if e.Type == EncRandom {
			continue // plain dm-crypt: no header, no PBKDF, no key source
		}
		if e.Key == "" {
			e.Key = l.Keys.Others
			if v.Mount == "/" {
				e.Key = l.Keys.Root
			}
		}
		if e.Label == "" {
			e.Label = v.Name
		}
		if e.Hash == "" {
			e.Hash = l.LUKS.Hash
		}
		if e.PBKDF == "" {
			e.PBKDF = l.LUKS.PBKDF
		}
		if e.IterTimeMs == 0 && e.Iterations == 0 {
			e.IterTimeMs = l.LUKS.IterTimeMs
			e.Iterations = l.LUKS.Iterations
		}
		if e.PBKDF != "pbkdf2" {
			if e.MemoryKiB == 0 {
				e.MemoryKiB = l.LUKS.MemoryKiB
			}
			if e.Parallel == 0 {
				e.Parallel = l.LUKS.Parallel
			}
		}
	}
	for i := range l.Tmp {
		t := &l.Tmp[i]
		if t.Type == "" {
			t.Type = TmpVolume
			if t.Size != "" {
				t.Type = TmpTmpfs
			}
		}
	}
}
