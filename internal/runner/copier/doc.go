// Package copier copies a plaintext guest disk (a raw image file or a block
// device) onto its target (a raw file, a block device or a dm-crypt mapping
// such as /dev/mapper/x), hashing the source in the same pass, and re-reads
// targets to verify them. migrate uses it for every disk it can read and
// write itself; qcow2 chains and qemu-encrypted volumes go through qemu-img
// or block jobs instead.
//
// # API
//
//	res, err := copier.Copy(ctx, "/var/lib/libvirt/images/mail.raw", "/dev/mapper/mail-vda",
//		copier.Options{Verify: true, OnCheckpoint: journalIt, Checkpoint: fromJournal,
//			Progress: copier.Report(reporter)})
//	// res.SHA256 == `sha256sum mail.raw`; res.Verified: the target read back equal.
//	sum, err := copier.Hash(ctx, "/dev/mapper/mail-vda", res.Size, copier.HashOptions{})
//
// Copy needs an existing target at least as large as the source; it never
// creates, truncates or resizes anything. It returns an error, with
// Result.Checkpoint saying how far it durably got, unless every byte was
// written, synced (and, with Verify, read back and matched).
//
// # What is read and what is written
//
// The source is walked with SEEK_DATA/SEEK_HOLE: holes are not read. Where
// the kernel does not know holes (block devices, filesystems without
// support) the generic llseek reports everything as data, so the copier
// reads everything; that is correct, only slower. Allocated data is checked
// for all-zero 4 KiB blocks, which only feeds the statistics: every block is
// written anyway.
//
// Every block of the target is written, zeros where the source has holes or
// zero blocks, and by default the target's bytes beyond the source size too
// (Options.KeepTail keeps them). A fresh LV can hold old plaintext from the
// disk's past, and the guest must read zeros where the source had zeros;
// on a dm-crypt target, zeros written through the mapping become ciphertext
// on the disk, which is the point. No shortcut is used for zeros:
//
//   - discard (BLKDISCARD, fallocate PUNCH_HOLE) promises nothing about what
//     is read back, and on dm-crypt it is off by default (it reveals which
//     blocks are in use) or passes plaintext zeros below the encryption,
//     which decrypt to garbage;
//   - fallocate ZERO_RANGE on a file target only marks extents unwritten:
//     reads return zeros, the old bytes stay on the disk;
//   - BLKZEROOUT must return zeros on reads, but dm-crypt does not take
//     WRITE_ZEROES requests (a zeroed lower device would decrypt to
//     garbage), so on a mapping the kernel falls back to writing zero pages
//     through it: the same device writes as ours, through a second code
//     path to test, and on a plain device it may end as an unmap, leaving
//     old blocks on flash.
//
// So zero runs are written with ordinary writes from one shared, aligned
// zero buffer: one code path for files, devices and mappings, verified like
// data. They cost device bandwidth and no CPU for copying.
//
// # Hashing
//
// Result.SHA256 is the SHA-256 of the whole source with holes as zeros,
// exactly what `sha256sum SOURCE` prints, so an auditor can reproduce it
// with standard tools. Holes are hashed from the zero buffer without being
// read. SHA-256 is sequential: one core hashes the whole virtual size, about
// 1.8 GB/s with the SHA extensions (Go uses them), which bounds a copy from
// above on fast disks.
//
// # Verification
//
// With Options.Verify, each chunk is read back from the target once its
// write completed, with O_DIRECT: through dm-crypt, decrypting what is on
// the disk, not from the page cache (without O_DIRECT the chunk is written
// back and evicted from the cache first). What is read back must equal, byte
// for byte, what SHA-256 absorbed for that chunk: the source buffer, which
// the chunk owns from the read until this check, for data; zeros for holes,
// zero blocks and the tail. A 64-bit hash of each data buffer taken right
// after SHA-256 absorbed it must also match the bytes read back, which
// catches a buffer changed between hashing and writing (the write and the
// comparison would both see the change). Verified therefore means: the
// target's first Size bytes read back equal the source bytes hashed into
// Result.SHA256, so `sha256sum TARGET` (over Size bytes) prints it too, and
// the zeroed tail read back as zeros. The copy stops at the first chunk
// that reads back wrong and names its byte range.
//
// Hashing the read-back a second time with SHA-256 would prove nothing more
// and cost what bounds the copy: SHA-256 runs at about 1.8 GB/s on one core
// and did not run faster on both cores of the development VM at once.
// Verifying behind the writes rather than after the copy also overlaps the
// re-read with the copy; written chunks may wait for their read-back (up to
// 256 of them, holding no buffer unless they carry data), so that writes
// stream through data runs and the read-back catches up in zero runs. Hash
// re-reads and hashes a target on its own with the same pipeline: after a
// resume by another process, for the verify command, or for an auditor.
//
// # Pipeline
//
// One goroutine plans chunks in order (extent walk); Readers goroutines read
// them into a pool of Depth aligned buffers; one goroutine hashes in order;
// Writers goroutines write out of order; with Verify, Readers goroutines read
// back and one goroutine hashes the read-back in order; the caller's
// goroutine accounts, reports progress and writes checkpoints. Defaults
// (4 MiB chunks, 8 source buffers, 2 readers, 4 writers) are explained on
// Options with the measurements that chose them. Buffers are
// taken in sequence order by a single goroutine, which rules out the
// deadlock of a worker waiting for a buffer that later chunks hold.
//
// I/O uses O_DIRECT where the kernel accepts it and falls back to buffered
// I/O per file when it refuses (EINVAL at open, or per request); unaligned
// pieces (the last partial block of an image whose size is not a multiple
// of 4 KiB) always go through a second, buffered descriptor. O_DIRECT keeps
// a multi-gigabyte copy from evicting the host's page cache (the running
// guests' cache on a hypervisor) and makes the read-back honest. A block
// device target is opened O_EXCL: the kernel refuses it while it is mounted
// or held by device mapper.
//
// # Resuming
//
// A Checkpoint is the offset up to which the target is written, synced and
// (with Verify) verified, plus the marshalled SHA-256 state at that offset.
// Checkpoints are taken at chunk boundaries, multiples of 4096 and so of
// the 64-byte SHA-256 block, where Go's marshalled state holds only the
// chaining value and the length, never source bytes: a checkpoint is safe
// in a journal on plaintext storage. Beyond the source end (zeroing the
// tail) it holds the finished digest instead. Copy with Options.Checkpoint
// continues there and ends with the same digest; the chunk size may differ.
// Cancelling the context stops the copy after the I/O under way, syncs, and
// returns the checkpoint with an error wrapping the context's.
//
// # Sizes
//
// The target must be at least the source size. Exactly the source size is
// copied and hashed; the rest of the target is zeroed unless KeepTail (a
// guest given the whole device would otherwise see old bytes past its
// disk's end).
package copier
