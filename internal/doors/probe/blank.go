package probe

import (
	"encoding/binary"
	"fmt"
	"io"
	"sort"
)

// A device whose first bytes are zero is not necessarily blank: a LUKS2
// header whose primary copy was wiped still has its secondary copy (and
// cryptsetup can restore the primary from it), a GPT keeps a backup at the
// end, md RAID 0.90 and 1.0 keep their superblock at the end, ext2/3/4 and
// btrfs keep backup superblocks deep inside, and a disk that once held a
// filesystem holds data everywhere. Blank reads those regions and a sample
// of the body before it calls a device blank.

// BlankMethod says what Blank reads; an inventory records it for every
// device it found blank, so a plan can tell a proven blank device from one
// that merely has no signature at its start.
const BlankMethod = "first and last MiB, LUKS2 secondary headers, md, GPT backup, ext and btrfs backup superblocks, 64 samples of the body"

// BodySamples is how many 4 KiB blocks, spread evenly over the device,
// Blank reads besides the regions where metadata lives.
const BodySamples = 64

const (
	kib = 1 << 10
	mib = 1 << 20
	// HeadSize and TailSize are read whole: the LUKS2 binary headers and
	// JSON areas, LVM's label and metadata area (before pe_start, 1 MiB),
	// md 1.1/1.2 superblocks; at the end md 0.90/1.0 superblocks and the
	// backup GPT.
	HeadSize = mib
	TailSize = mib
)

// luks2SecondaryOffsets are where a LUKS2 secondary header may start: right
// after the primary, whose size is one of these (cryptsetup's
// LUKS2_HDR_OFFSETS: 16 KiB to 4 MiB).
var luks2SecondaryOffsets = []int64{16 * kib, 32 * kib, 64 * kib, 128 * kib, 256 * kib, 512 * kib, 1 * mib, 2 * mib, 4 * mib}

// Backup superblocks beyond the head: ext2/3/4 block group 1 for 1, 2 and
// 4 KiB blocks (blocks 8193, 16384 and 32768), and the btrfs mirrors at
// 64 MiB and 256 GiB.
var (
	extBackupOffsets   = []int64{8193 * kib, 16384 * 2 * kib, 32768 * 4 * kib}
	btrfsMirrorOffsets = []int64{64 * mib, 256 << 30}
)

type region struct {
	off, n int64
}

// Blank decides whether a device of size bytes holds nothing. It returns
// nil when every region it reads is zero; otherwise a Result of Type
// "unknown" whose Note says what it found where (a recognised leftover
// signature first, else the first non-zero byte). A device blank by this
// test may still hold data between the samples; it holds no metadata any
// tool would find.
func Blank(r io.ReaderAt, size int64) (*Result, error) {
	if size <= 0 {
		return nil, nil
	}
	var regions []region
	add := func(off, n int64) {
		if off < 0 {
			n += off
			off = 0
		}
		if off >= size || n <= 0 {
			return
		}
		regions = append(regions, region{off, min(n, size-off)})
	}
	add(0, HeadSize)
	add(size-TailSize, TailSize)
	for _, o := range luks2SecondaryOffsets {
		add(o, 4*kib)
	}
	for _, o := range extBackupOffsets {
		add(o, kib)
	}
	for _, o := range btrfsMirrorOffsets {
		add(o, 4*kib)
	}
	for i := int64(0); i < BodySamples; i++ {
		add(alignDown(size/BodySamples*i, 4*kib), 4*kib)
	}
	sort.Slice(regions, func(i, j int) bool { return regions[i].off < regions[j].off })

	firstData := int64(-1)
	for _, rg := range regions {
		b := make([]byte, rg.n)
		n, err := r.ReadAt(b, rg.off)
		if n < len(b) && err != nil && err != io.EOF {
			return nil, fmt.Errorf("cannot read offset %d: %w", rg.off, err)
		}
		b = b[:n]
		if allZero(b) {
			continue
		}
		if what := identify(rg.off, b, size); what != "" {
			return &Result{Type: "unknown", Note: what}, nil
		}
		if firstData < 0 {
			firstData = rg.off + int64(firstNonZero(b))
		}
	}
	if firstData >= 0 {
		return &Result{Type: "unknown", Note: fmt.Sprintf("no signature at its start, but data at byte %d", firstData)}, nil
	}
	return nil, nil
}

// identify names a leftover signature inside a region read at off.
func identify(off int64, b []byte, size int64) string {
	at := func(abs int64, magic string) bool {
		i := abs - off
		return i >= 0 && i+int64(len(magic)) <= int64(len(b)) && string(b[i:i+int64(len(magic))]) == magic
	}
	for _, o := range luks2SecondaryOffsets {
		if at(o, "SKUL\xba\xbe") {
			return fmt.Sprintf("a LUKS2 secondary header at byte %d (the primary header is gone, but cryptsetup can restore it from this copy)", o)
		}
	}
	for _, o := range []int64{0, 4 * kib, mdV10Offset(size), mdV090Offset(size)} {
		if o >= 0 && at(o, mdMagic) {
			return fmt.Sprintf("an md RAID superblock at byte %d", o)
		}
	}
	for _, ss := range []int64{512, 4096} {
		if at(size-ss, "EFI PART") {
			return fmt.Sprintf("a backup GPT header in the last %d-byte sector (the primary table is gone)", ss)
		}
	}
	for _, o := range extBackupOffsets {
		i := o + 0x38 - off
		if i >= 0 && i+2 <= int64(len(b)) && binary.LittleEndian.Uint16(b[i:]) == 0xEF53 {
			return fmt.Sprintf("an ext2/3/4 backup superblock at byte %d", o)
		}
	}
	for _, o := range btrfsMirrorOffsets {
		if at(o+64, "_BHRfS_M") {
			return fmt.Sprintf("a btrfs superblock copy at byte %d", o)
		}
	}
	return ""
}

// mdMagic is MD_SB_MAGIC (0xa92b4efc) as both superblock formats store it
// (little-endian on x86 for 0.90, always for 1.x).
const mdMagic = "\xfc\x4e\x2b\xa9"

// mdV090Offset: 0.90 superblocks sit in the last 64 KiB-aligned 64 KiB.
func mdV090Offset(size int64) int64 { return alignDown(size, 64*kib) - 64*kib }

// mdV10Offset: 1.0 superblocks sit 8 KiB before the end, 4 KiB aligned.
func mdV10Offset(size int64) int64 { return alignDown(size-8*kib, 4*kib) }

func alignDown(n, a int64) int64 { return n / a * a }

func firstNonZero(b []byte) int {
	for i, c := range b {
		if c != 0 {
			return i
		}
	}
	return -1
}
