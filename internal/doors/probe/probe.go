// Package probe identifies what a block device or image holds from its
// first bytes, the way blkid does for the types cryptshift plans with:
// LUKS, LVM PVs, md RAID members, ext2/3/4, XFS, btrfs, FAT, swap, qcow2
// images, GPT and MBR partition tables. It reads magic numbers, UUIDs and labels only.
// Blank decides whether a device without a signature at its start is
// really blank.
package probe

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"io"
	"strings"
)

// Result is what a device's first bytes say it holds.
type Result struct {
	Type    string // ext4, ext3, ext2, xfs, btrfs, vfat, swap, crypto_LUKS, LVM2_member, linux_raid_member, qcow2, gpt, dos, unknown
	UUID    string
	Label   string
	Version string
	Note    string // what Blank found where, for a device without a signature at its start
}

// ReadSize is how much Probe reads: btrfs keeps its superblock at 64 KiB.
const ReadSize = 65536 + 4096

// Probe reads the start of r. It returns nil for a blank device (all zero
// bytes), and Type "unknown" for data it cannot name: a device holding
// unnamed data is not free space.
func Probe(r io.ReaderAt) (*Result, error) {
	b := make([]byte, ReadSize)
	n, err := r.ReadAt(b, 0)
	if n == 0 && err != nil && err != io.EOF {
		return nil, fmt.Errorf("cannot read signature: %w", err)
	}
	return Bytes(b[:n]), nil
}

// Bytes identifies a prefix of a device already read into memory.
func Bytes(b []byte) *Result {
	at := func(off int, magic string) bool {
		return len(b) >= off+len(magic) && string(b[off:off+len(magic)]) == magic
	}
	switch {
	case at(0, "LUKS\xba\xbe") && len(b) >= 208:
		r := &Result{Type: "crypto_LUKS", UUID: cstr(b[168:208]), Version: fmt.Sprint(binary.BigEndian.Uint16(b[6:8]))}
		if r.Version == "2" {
			r.Label = cstr(b[24:72])
		}
		return r
	case at(0, "QFI\xfb") && len(b) >= 8:
		// A qcow2 image written straight onto a device or file (qemu's
		// docs/interop/qcow2.txt: magic, then the big-endian version).
		return &Result{Type: "qcow2", Version: fmt.Sprint(binary.BigEndian.Uint32(b[4:8]))}
	case at(0, "XFSB") && len(b) >= 120:
		return &Result{Type: "xfs", UUID: uuidString(b[32:48]), Label: cstr(b[108:120])}
	}
	// An LVM label may sit in any of the first four sectors (pvcreate puts
	// it in the second); the PV UUID is 32 characters after "LVM2 001".
	for s := 0; s < 4; s++ {
		o := s * 512
		if at(o, "LABELONE") && at(o+24, "LVM2 001") && len(b) >= o+64 {
			return &Result{Type: "LVM2_member", UUID: lvmUUID(string(b[o+32 : o+64])), Version: "LVM2 001"}
		}
	}
	// md RAID 1.1 and 1.2 superblocks sit at 0 and 4 KiB (mdadm(8)).
	for _, o := range []int{0, 4096} {
		if at(o, mdMagic) && len(b) >= o+32 {
			return &Result{Type: "linux_raid_member", UUID: uuidString(b[o+16 : o+32]), Version: fmt.Sprint(binary.LittleEndian.Uint32(b[o+4:]))}
		}
	}
	switch {
	case at(4086, "SWAPSPACE2") || at(4086, "SWAP-SPACE"):
		// mkswap(8) for 4 KiB pages: uuid at 0x40c, label at 0x41c.
		return &Result{Type: "swap", UUID: uuidString(b[0x40c:0x41c]), Label: cstr(b[0x41c:0x42c]), Version: "1"}
	case at(65536+64, "_BHRfS_M") && len(b) >= 65536+0x12b+256:
		return &Result{Type: "btrfs", UUID: uuidString(b[65536+32 : 65536+48]), Label: cstr(b[65536+0x12b : 65536+0x12b+256])}
	case len(b) >= 1024+0x88 && binary.LittleEndian.Uint16(b[1024+0x38:]) == 0xEF53:
		sb := b[1024:]
		compat := binary.LittleEndian.Uint32(sb[0x5c:])
		incompat := binary.LittleEndian.Uint32(sb[0x60:])
		typ := "ext2"
		if compat&0x4 != 0 { // HAS_JOURNAL
			typ = "ext3"
		}
		if incompat&(0x40|0x80|0x200) != 0 { // EXTENTS, 64BIT, FLEX_BG
			typ = "ext4"
		}
		return &Result{Type: typ, UUID: uuidString(sb[0x68:0x78]), Label: cstr(sb[0x78:0x88]), Version: "1.0"}
	case at(512, "EFI PART") || at(4096, "EFI PART"):
		return &Result{Type: "gpt"}
	}
	if len(b) >= 512 && b[510] == 0x55 && b[511] == 0xaa {
		if at(82, "FAT32   ") {
			return &Result{Type: "vfat", UUID: fatSerial(b[67:71]), Label: fatLabel(b[71:82]), Version: "FAT32"}
		}
		if at(54, "FAT12   ") || at(54, "FAT16   ") {
			return &Result{Type: "vfat", UUID: fatSerial(b[39:43]), Label: fatLabel(b[43:54]), Version: strings.TrimSpace(string(b[54:62]))}
		}
		for i := 0; i < 4; i++ { // an MBR with at least one partition entry
			e := b[446+16*i : 446+16*(i+1)]
			if e[4] != 0 {
				return &Result{Type: "dos"}
			}
		}
	}
	if !allZero(b) {
		return &Result{Type: "unknown"}
	}
	return nil
}

func allZero(b []byte) bool {
	for len(b) > 0 {
		n := min(len(b), 4096)
		if !bytes.Equal(b[:n], zero4k[:n]) {
			return false
		}
		b = b[n:]
	}
	return true
}

var zero4k = make([]byte, 4096)

func cstr(b []byte) string {
	if i := bytes.IndexByte(b, 0); i >= 0 {
		b = b[:i]
	}
	return strings.TrimSpace(string(b))
}

func uuidString(b []byte) string {
	if allZero(b) {
		return ""
	}
	h := hex.EncodeToString(b)
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}

// lvmUUID formats a PV UUID as LVM prints it: 6-4-4-4-4-4-6.
func lvmUUID(s string) string {
	if len(s) != 32 {
		return s
	}
	return s[0:6] + "-" + s[6:10] + "-" + s[10:14] + "-" + s[14:18] + "-" + s[18:22] + "-" + s[22:26] + "-" + s[26:32]
}

func fatSerial(b []byte) string {
	v := binary.LittleEndian.Uint32(b)
	return fmt.Sprintf("%04X-%04X", v>>16, v&0xffff)
}

func fatLabel(b []byte) string {
	l := strings.TrimSpace(string(b))
	if l == "NO NAME" {
		return ""
	}
	return l
}
