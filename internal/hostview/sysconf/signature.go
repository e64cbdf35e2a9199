package sysconf

import (
	"io"

	"github.com/cryptshift/cryptshift/internal/doors/probe"
)

// ProbeSignature names what the first 68 KiB of a block device hold, the
// way blkid would for the types verify cares about: "luks", "swap",
// "ext4" (ext2/3/4), "xfs", "btrfs", "vfat", "LVM2_member",
// "linux_raid_member", "qcow2", "partition-table", or "" when nothing is
// recognised. It asks the one signature prober (internal/doors/probe) and
// keeps the names capture manifests have always recorded.
func ProbeSignature(r io.ReaderAt) string {
	res, err := probe.Probe(r)
	if err != nil || res == nil {
		return ""
	}
	switch res.Type {
	case "crypto_LUKS":
		return "luks"
	case "ext2", "ext3", "ext4":
		return "ext4"
	case "gpt", "dos":
		return "partition-table"
	case "unknown":
		return ""
	}
	return res.Type
}
