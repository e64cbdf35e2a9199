package sysconf

import (
	"bytes"
	"encoding/binary"
	"io"
)

// ProbeSignature names what the first 68 KiB of a block device hold, the
// way blkid would for the types verify cares about: "luks", "swap",
// "ext4" (ext2/3/4), "xfs", "btrfs", "vfat", "LVM2_member", "qcow2",
// "partition-table", or "" when nothing is recognised. Only magic numbers
// are read; nothing else is returned.
func ProbeSignature(r io.ReaderAt) string {
	b := make([]byte, 65536+4096)
	n, _ := r.ReadAt(b, 0)
	b = b[:n]
	at := func(off int, magic []byte) bool {
		return len(b) >= off+len(magic) && bytes.Equal(b[off:off+len(magic)], magic)
	}
	switch {
	case at(0, []byte("LUKS\xba\xbe")):
		return "luks"
	case at(0, QCOW2Magic):
		return "qcow2"
	case at(0, []byte("XFSB")):
		return "xfs"
	case at(512, []byte("LABELONE")) && at(536, []byte("LVM2 001")):
		return "LVM2_member"
	case at(4086, []byte("SWAPSPACE2")) || at(4086, []byte("SWAP-SPACE")):
		return "swap" // mkswap's signature at the end of the first 4 KiB page
	case at(65536+64, []byte("_BHRfS_M")):
		return "btrfs"
	case len(b) >= 1082 && binary.LittleEndian.Uint16(b[1080:1082]) == 0xEF53:
		return "ext4" // s_magic at superblock offset 1024 + 56
	case at(510, []byte{0x55, 0xaa}) && (at(82, []byte("FAT32   ")) || at(54, []byte("FAT16   ")) || at(54, []byte("FAT12   "))):
		return "vfat" // a FAT boot sector (BS_FilSysType), e.g. the EFI system partition
	case at(510, []byte{0x55, 0xaa}):
		return "partition-table"
	}
	return ""
}
