package copier

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

// ioAlign is the alignment of offsets, lengths and memory for O_DIRECT I/O.
// Linux requires the logical block size of the device (512 or 4096 on every
// disk we meet; dm-crypt with --sector-size 4096 makes it 4096), so 4096
// satisfies both; a device reporting more raises it (see open).
const ioAlign = 4096

// dev is an open source or target. I/O at aligned offsets goes through fd
// (O_DIRECT when direct is set); unaligned pieces, and everything after the
// kernel refused O_DIRECT, go through bfd, a second descriptor without
// O_DIRECT on the same file.
type dev struct {
	name   string
	f, bf  *os.File
	fd     int
	bfd    int
	align  int64
	size   int64
	block  bool
	direct atomic.Bool
	st     unix.Stat_t
}

// open opens name for reading (target false) or writing and reading. A
// block-device target is opened O_EXCL: the kernel then refuses it while it
// is mounted or held by device mapper (an LV under an open dm-crypt mapping),
// which is exactly when writing to it would destroy something in use.
func open(name string, target, wantDirect bool) (*dev, error) {
	what := "source"
	flags := unix.O_RDONLY
	if target {
		what, flags = "target", unix.O_RDWR
	}
	d := &dev{name: name, align: ioAlign}
	if err := unix.Stat(name, &d.st); err != nil {
		return nil, fmt.Errorf("cannot open %s %s: %w", what, name, err)
	}
	switch d.st.Mode & unix.S_IFMT {
	case unix.S_IFBLK:
		d.block = true
	case unix.S_IFREG:
	default:
		return nil, fmt.Errorf("cannot open %s %s: not a regular file or block device", what, name)
	}
	excl := 0
	if target && d.block {
		excl = unix.O_EXCL
	}
	var err error
	if wantDirect {
		d.f, err = openFile(name, flags|excl|unix.O_DIRECT, 0)
		// tmpfs and some FUSE filesystems refuse O_DIRECT at open time
		// with EINVAL; the copy is still correct through the page cache.
		if err == nil {
			d.direct.Store(true)
		} else if !errors.Is(err, unix.EINVAL) {
			return nil, openError(what, name, err)
		}
	}
	if d.f == nil {
		if d.f, err = openFile(name, flags|excl, 0); err != nil {
			return nil, openError(what, name, err)
		}
	}
	// The second descriptor has no O_EXCL: the first one holds the claim,
	// and a second exclusive open of the same device would fail.
	if d.bf, err = openFile(name, flags, 0); err != nil {
		d.f.Close()
		return nil, openError(what, name, err)
	}
	d.fd, d.bfd = int(d.f.Fd()), int(d.bf.Fd())
	if d.size, err = unix.Seek(d.fd, 0, io.SeekEnd); err != nil {
		d.close()
		return nil, fmt.Errorf("cannot read size of %s %s: %w", what, name, err)
	}
	if d.block {
		if lbs, err := unix.IoctlGetInt(d.fd, unix.BLKSSZGET); err == nil && int64(lbs) > d.align {
			d.align = int64(lbs)
		}
	}
	return d, nil
}

func openError(what, name string, err error) error {
	if errors.Is(err, unix.EBUSY) {
		return fmt.Errorf("cannot open %s %s: device is in use (mounted, or held by device mapper or another program); close what holds it first: %w", what, name, err)
	}
	return fmt.Errorf("cannot open %s %s: %w", what, name, err)
}

func (d *dev) close() error {
	err1 := d.f.Close()
	err2 := d.bf.Close()
	return errors.Join(err1, err2)
}

// same reports whether d and e are the same file or the same block device
// (two device nodes, /dev/dm-3 and /dev/mapper/x, share st_rdev).
func (d *dev) same(e *dev) bool {
	if d.block && e.block {
		return d.st.Rdev == e.st.Rdev
	}
	return d.st.Dev == e.st.Dev && d.st.Ino == e.st.Ino
}

// sync makes everything written so far durable (for a block device this
// also flushes the disk's volatile cache).
func (d *dev) sync() error {
	if err := unix.Fdatasync(d.fd); err != nil {
		return fmt.Errorf("cannot sync %s: %w", d.name, err)
	}
	return nil
}

// dropCache writes back and evicts the page cache over [off, off+n), so that
// a buffered read-back comes from the device and not from the pages the
// copy just wrote: without O_DIRECT, that is what makes verification read
// the disk (through dm-crypt, decrypting) instead of our own memory. On
// tmpfs the pages are the storage and stay.
func (d *dev) dropCache(off, n int64) error {
	const wait = unix.SYNC_FILE_RANGE_WAIT_BEFORE | unix.SYNC_FILE_RANGE_WRITE | unix.SYNC_FILE_RANGE_WAIT_AFTER
	if err := unix.SyncFileRange(d.bfd, off, n, wait); err != nil {
		return fmt.Errorf("cannot write back %s at offset %d: %w", d.name, off, err)
	}
	if err := unix.Fadvise(d.bfd, off, n, unix.FADV_DONTNEED); err != nil {
		return fmt.Errorf("cannot drop cached pages of %s: %w", d.name, err)
	}
	return nil
}

func (d *dev) aligned(off int64, p []byte) bool {
	return d.direct.Load() && off%d.align == 0 && int64(len(p))%d.align == 0 &&
		uintptr(unsafe.Pointer(unsafe.SliceData(p)))%uintptr(d.align) == 0
}

// refused handles EINVAL from an O_DIRECT call on an aligned request: some
// filesystems accept O_DIRECT at open and refuse it per request. From then
// on all I/O on d is buffered; it stays correct, only slower. It answers
// true even when another request switched first: several writers can have
// O_DIRECT requests in flight when the first refusal comes back, and each
// of them must retry buffered (a genuine EINVAL then surfaces from that
// retry, so nothing loops).
func (d *dev) refused(err error) bool {
	if errors.Is(err, unix.EINVAL) {
		d.direct.Store(false)
		return true
	}
	return false
}

// readAt reads [off, off+n) and returns it as a slice of buf, which must
// hold n+d.align bytes and be aligned (see alloc). With O_DIRECT it reads
// the aligned window around the range; short reads past the end of the file
// are fine as long as the range itself is covered.
func (d *dev) readAt(buf []byte, off int64, n int) ([]byte, error) {
	if d.direct.Load() {
		start := off &^ (d.align - 1)
		end := (off + int64(n) + d.align - 1) &^ (d.align - 1)
		if w := buf[:end-start]; d.aligned(start, w) {
			_, err := d.readFull(d.fd, w, start, int(off+int64(n)-start))
			if err == nil {
				return buf[off-start : off-start+int64(n)], nil
			}
			if !d.refused(err) {
				return nil, d.ioError("read", off, err)
			}
		}
	}
	_, err := d.readFull(d.bfd, buf[:n], off, n)
	if err != nil {
		return nil, d.ioError("read", off, err)
	}
	return buf[:n], nil
}

// readFull reads into p at off until at least need bytes are there.
func (d *dev) readFull(fd int, p []byte, off int64, need int) (int, error) {
	got := 0
	for got < need {
		k, err := pread(fd, p[got:], off+int64(got))
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return got, err
		}
		if k == 0 {
			return got, io.ErrUnexpectedEOF
		}
		got += k
		if fd == d.fd && got < need && (off+int64(got))%d.align != 0 {
			// A short O_DIRECT read that ends unaligned can only be the
			// end of the file; read the rest without O_DIRECT.
			k2, err := d.readFull(d.bfd, p[got:need], off+int64(got), need-got)
			return got + k2, err
		}
	}
	return got, nil
}

// writeAt writes p at off. zero is an aligned buffer of zeros at least as
// long as the device alignment; when p is nil, n zero bytes are written from
// it, which lets zero runs start and end anywhere. Data (p != nil) always
// starts at an aligned offset because chunks do; only its last block may
// be partial, and that block goes through the buffered descriptor.
func (d *dev) writeAt(p []byte, off int64, n int, zero []byte) error {
	end := off + int64(n)
	for off < end {
		var piece []byte
		var fd int
		a := d.align
		switch {
		case off%a != 0 || end-off < a || !d.direct.Load():
			// Unaligned head or tail, or no O_DIRECT: buffered.
			lim := end
			if d.direct.Load() && off%a != 0 {
				lim = min(end, (off+a-1)&^(a-1))
			}
			fd = d.bfd
			piece = d.source(p, zero, off, lim)
		default:
			lim := off + (end-off)&^(a-1)
			fd = d.fd
			piece = d.source(p, zero, off, lim)
		}
		k, err := pwrite(fd, piece, off)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			if fd == d.fd && d.refused(err) {
				continue
			}
			return d.ioError("write", off, err)
		}
		if k == 0 {
			return d.ioError("write", off, io.ErrShortWrite)
		}
		off += int64(k)
		if p != nil {
			p = p[k:]
		}
	}
	return nil
}

// source returns the bytes to write at [off, lim): from p (whose first byte
// belongs at off) or from the zero buffer, at most len(zero) at a time.
func (d *dev) source(p, zero []byte, off, lim int64) []byte {
	if p != nil {
		return p[:lim-off]
	}
	return zero[:min(lim-off, int64(len(zero)))]
}

func (d *dev) ioError(verb string, off int64, err error) error {
	return fmt.Errorf("cannot %s %s at offset %d: %w", verb, d.name, off, err)
}

// alloc returns n bytes aligned to ioAlign. The Go heap does not move
// objects, so the alignment holds for the life of the slice; this keeps
// buffers garbage-collected instead of mmap'd and unmapped by hand.
func alloc(n int) []byte {
	b := make([]byte, n+maxAlign)
	a := int(uintptr(unsafe.Pointer(unsafe.SliceData(b))) % maxAlign)
	if a != 0 {
		a = maxAlign - a
	}
	return b[a : a+n : a+n]
}

// maxAlign is the largest device alignment buffers are prepared for;
// logical blocks larger than 64 KiB do not exist on Linux (the page size
// bounds them on x86).
const maxAlign = 64 << 10

// Seams for tests that make the kernel refuse O_DIRECT (set with setIO).
var (
	openFile = os.OpenFile
	pread    = unix.Pread
	pwrite   = unix.Pwrite
)

// setIO replaces the file open, pread and pwrite calls and returns the
// function that puts the previous ones back.
func setIO(open func(string, int, os.FileMode) (*os.File, error), pr, pw func(int, []byte, int64) (int, error)) (restore func()) {
	prevOpen, prevRead, prevWrite := openFile, pread, pwrite
	openFile, pread, pwrite = open, pr, pw
	return func() { openFile, pread, pwrite = prevOpen, prevRead, prevWrite }
}

// extents walks the data extents of a file with SEEK_DATA/SEEK_HOLE, forward
// only. Filesystems without real support report the whole file as data
// (the kernel's generic llseek does that, and so do block devices), which
// makes the copier read everything: correct, only slower.
type extents struct {
	fd       int
	size     int64
	cur      span // the current data extent; cur.end <= cur.off when none
	noMore   bool
	fallback bool
}

type span struct{ off, end int64 }

// data returns the data spans intersecting [off, end), clipped to it.
// Callers ask for increasing, non-overlapping ranges.
func (e *extents) data(off, end int64, out []span) ([]span, error) {
	out = out[:0]
	if e.fallback {
		return append(out, span{off, end}), nil
	}
	p := off
	for p < end {
		if p >= e.cur.end {
			if e.noMore {
				break
			}
			d, err := unix.Seek(e.fd, p, unix.SEEK_DATA)
			if errors.Is(err, unix.ENXIO) || (err == nil && d >= e.size) {
				e.noMore = true
				break
			}
			if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.EOPNOTSUPP) {
				// Very old kernels or odd filesystems: read everything.
				e.fallback = true
				return append(out[:0], span{off, end}), nil
			}
			if err != nil {
				return nil, err
			}
			h, err := unix.Seek(e.fd, d, unix.SEEK_HOLE)
			if err != nil {
				return nil, err
			}
			e.cur = span{d, min(h, e.size)}
		}
		if e.cur.off >= end {
			break
		}
		s, t := max(p, e.cur.off), min(end, e.cur.end)
		out = append(out, span{s, t})
		p = t
	}
	return out, nil
}
