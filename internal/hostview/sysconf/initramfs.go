package sysconf

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"
)

// InitramfsEntry is one member of an initramfs archive: its name and type,
// never its contents.
type InitramfsEntry struct {
	Name string `json:"name"`
	Mode uint32 `json:"mode"`
	Size int64  `json:"size"`
}

// maxInitramfsMembers bounds what ListInitramfs accepts, so that a
// damaged archive cannot make verify loop (Debian initramfs images hold a
// few thousand members).
const maxInitramfsMembers = 200000

// Bounds on reading an initramfs from a possibly hostile host: Debian 12
// images are 30-80 MiB compressed and under 300 MiB unpacked. Beyond
// MaxInitramfsBytes (counted over compressed input and unpacked output
// alike) reading stops with an error; decompressors get at most 64 MiB of
// window (zstd; xz's dictionary is what the stream declares, and its
// memory is only touched as output is written, so the output cap bounds it).
const (
	MaxInitramfsBytes = 512 << 20
	maxZstdWindow     = 64 << 20
)

// ErrInitramfsBomb is returned when an image unpacks to more than
// MaxInitramfsBytes or nests compressed data inside compressed data (the
// kernel unpacks one level only: init/initramfs.c unpack_to_rootfs).
var ErrInitramfsBomb = fmt.Errorf("initramfs larger than %d MiB unpacked or compressed twice: refused", MaxInitramfsBytes>>20)

// ListInitramfs lists the members of an initramfs image: one or more cpio
// "newc" archives (Documentation/driver-api/early-userspace/buffer-format.rst),
// each optionally compressed with gzip, zstd or xz, concatenated the way
// Debian's initramfs-tools prepends an uncompressed early microcode archive.
func ListInitramfs(r io.Reader) ([]InitramfsEntry, error) {
	return listInitramfs(&capped{r: r, left: MaxInitramfsBytes}, nil, 0, nil)
}

// maxKeptMember bounds a member ReadInitramfs returns: the files it is
// for (cryptroot/crypttab, conf/conf.d/*) are a few hundred bytes.
const maxKeptMember = 1 << 20

// ReadInitramfs is ListInitramfs that also returns the contents of the
// named members (regular files up to 1 MiB; others are listed only).
func ReadInitramfs(r io.Reader, names ...string) ([]InitramfsEntry, map[string][]byte, error) {
	keep := map[string][]byte{}
	for _, n := range names {
		keep[strings.TrimPrefix(n, "/")] = nil
	}
	out, err := listInitramfs(&capped{r: r, left: MaxInitramfsBytes}, nil, 0, keep)
	got := map[string][]byte{}
	for n, b := range keep {
		if b != nil {
			got[n] = b
		}
	}
	return out, got, err
}

// capped fails reads past its budget instead of returning EOF, so a
// truncated listing is never mistaken for a complete one.
type capped struct {
	r    io.Reader
	left int64
}

func (c *capped) Read(p []byte) (int, error) {
	if c.left <= 0 {
		return 0, ErrInitramfsBomb
	}
	if int64(len(p)) > c.left {
		p = p[:c.left]
	}
	n, err := c.r.Read(p)
	c.left -= int64(n)
	return n, err
}

func listInitramfs(r io.Reader, out []InitramfsEntry, depth int, keep map[string][]byte) ([]InitramfsEntry, error) {
	br := bufio.NewReaderSize(r, 1<<16)
	for {
		if err := skipZeros(br); err != nil {
			if errors.Is(err, io.EOF) {
				return out, nil
			}
			return out, err
		}
		magic, err := br.Peek(6)
		if err != nil {
			return out, nil
		}
		compressed := bytes.HasPrefix(magic, []byte{0x1f, 0x8b}) || bytes.HasPrefix(magic, []byte{0x28, 0xb5, 0x2f, 0xfd}) ||
			bytes.HasPrefix(magic, []byte{0xfd, '7', 'z', 'X', 'Z', 0})
		if compressed && depth > 0 {
			return out, fmt.Errorf("cannot read initramfs: %w", ErrInitramfsBomb)
		}
		switch {
		case bytes.HasPrefix(magic, []byte("07070")):
			if out, err = listCpio(br, out, keep); err != nil {
				return out, err
			}
		case bytes.HasPrefix(magic, []byte{0x1f, 0x8b}):
			zr, err := gzip.NewReader(br)
			if err != nil {
				return out, fmt.Errorf("cannot read gzip initramfs: %w", err)
			}
			return listAll(zr, out, depth, keep)
		case bytes.HasPrefix(magic, []byte{0x28, 0xb5, 0x2f, 0xfd}):
			zr, err := zstd.NewReader(br, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxWindow(maxZstdWindow),
				zstd.WithDecoderMaxMemory(MaxInitramfsBytes))
			if err != nil {
				return out, fmt.Errorf("cannot read zstd initramfs: %w", err)
			}
			defer zr.Close()
			return listAll(zr, out, depth, keep)
		case bytes.HasPrefix(magic, []byte{0xfd, '7', 'z', 'X', 'Z', 0}):
			zr, err := xz.NewReader(br)
			if err != nil {
				return out, fmt.Errorf("cannot read xz initramfs: %w", err)
			}
			return listAll(zr, out, depth, keep)
		default:
			return out, fmt.Errorf("cannot read initramfs: unsupported format (magic % x); gzip, zstd and xz are supported", magic)
		}
	}
}

func listAll(r io.Reader, out []InitramfsEntry, depth int, keep map[string][]byte) ([]InitramfsEntry, error) {
	return listInitramfs(&capped{r: r, left: MaxInitramfsBytes}, out, depth+1, keep)
}

// skipZeros skips the NUL padding between concatenated archives.
func skipZeros(br *bufio.Reader) error {
	for {
		b, err := br.ReadByte()
		if err != nil {
			return err
		}
		if b != 0 {
			return br.UnreadByte()
		}
	}
}

func listCpio(br *bufio.Reader, out []InitramfsEntry, keep map[string][]byte) ([]InitramfsEntry, error) {
	hdr := make([]byte, 110)
	for len(out) < maxInitramfsMembers {
		if _, err := io.ReadFull(br, hdr); err != nil {
			return out, fmt.Errorf("cannot read cpio header: %w", err)
		}
		if string(hdr[:5]) != "07070" {
			return out, fmt.Errorf("cannot read cpio header: bad magic %q", hdr[:6])
		}
		field := func(i int) (uint64, error) { return strconv.ParseUint(string(hdr[6+8*i:14+8*i]), 16, 32) }
		mode, err1 := field(1)
		size, err2 := field(6)
		nameSize, err3 := field(11)
		if err := errors.Join(err1, err2, err3); err != nil {
			return out, fmt.Errorf("cannot read cpio header: %w", err)
		}
		if nameSize == 0 || nameSize > 4096 { // PATH_MAX
			return out, fmt.Errorf("cannot read cpio header: name size %d", nameSize)
		}
		name := make([]byte, nameSize)
		if _, err := io.ReadFull(br, name); err != nil {
			return out, fmt.Errorf("cannot read cpio name: %w", err)
		}
		// Header plus name, then data, are each padded to 4 bytes.
		if _, err := br.Discard(int(pad4(110 + nameSize))); err != nil {
			return out, err
		}
		n := strings.TrimRight(string(name), "\x00")
		if n == "TRAILER!!!" {
			return out, nil
		}
		member := strings.TrimPrefix(n, "./")
		var dst io.Writer = io.Discard
		var buf bytes.Buffer
		if _, want := keep[member]; want && mode&0o170000 == 0o100000 && size <= maxKeptMember {
			dst = &buf
		}
		if _, err := io.CopyN(dst, br, int64(size)); err != nil {
			return out, fmt.Errorf("cannot skip cpio member %s: %w", n, err)
		}
		if dst == &buf {
			keep[member] = append([]byte{}, buf.Bytes()...)
		}
		if _, err := br.Discard(int(pad4(size))); err != nil {
			return out, err
		}
		out = append(out, InitramfsEntry{Name: strings.TrimPrefix(n, "./"), Mode: uint32(mode), Size: int64(size)})
	}
	return out, fmt.Errorf("cannot read initramfs: more than %d members", maxInitramfsMembers)
}

func pad4(n uint64) uint64 { return (4 - n%4) % 4 }

// IsKeyFileMember reports whether an initramfs member looks like LUKS key
// material: cryptsetup-initramfs copies key files matching KEYFILE_PATTERN
// to cryptroot/keyfiles/ (Debian cryptsetup README.initramfs); dracut's
// install_items and users' hooks often carry *.key / *.keyfile names.
func IsKeyFileMember(name string) bool {
	n := strings.TrimPrefix(name, "/")
	if strings.HasPrefix(n, "cryptroot/keyfiles/") && n != "cryptroot/keyfiles/" {
		return true
	}
	base := n[strings.LastIndexByte(n, '/')+1:]
	return strings.HasSuffix(base, ".key") || strings.HasSuffix(base, ".keyfile") || strings.HasSuffix(base, ".lek")
}
