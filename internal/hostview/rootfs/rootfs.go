// Package rootfs reads a Linux root filesystem that is not necessarily the
// one this process runs on: the live root "/", a tree captured by
// `cryptshift capture`, or a guest's filesystem inside a disk image.
//
// Symbolic links are resolved inside the root, the way chroot(2) would see
// them: an absolute target such as /run/foo means ROOT/run/foo, never the
// host's /run/foo. A captured tree holds the host's absolute links verbatim,
// so following them with the operating system would silently read this
// machine instead of the captured one.
package rootfs

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// FS is a read-only view of a root filesystem. Names are absolute,
// slash-separated paths inside the root ("/etc/fstab"). The methods do not
// follow a symlink in the last element; Resolve does.
type FS interface {
	Lstat(name string) (fs.FileInfo, error)
	Readlink(name string) (string, error)
	ReadDir(name string) ([]fs.DirEntry, error)
	Open(name string) (File, error)
}

// File is an open regular file.
type File interface {
	io.Reader
	io.ReaderAt
	io.Closer
}

// maxSymlinks is Linux's MAXSYMLINKS (include/linux/namei.h): path lookup
// gives up with ELOOP after 40 links.
const maxSymlinks = 40

// maxComponents bounds the components one Resolve walks (each symlink adds
// its target's): a path the kernel accepts (PATH_MAX 4096, 40 links) never
// needs more.
const maxComponents = 40 * 4096

// MaxFileSize caps what ReadFile reads: the largest file verify reads as a
// whole is mountinfo on a host with thousands of mounts (a few MiB). An 8
// GiB sparse "fstab" is refused, not read.
const MaxFileSize = 16 << 20

// Errors for what a hostile tree may hold; each says what was refused.
var (
	ErrLoop       = errors.New("too many levels of symbolic links")
	ErrTooLarge   = fmt.Errorf("larger than %d MiB: refused", MaxFileSize>>20)
	ErrNotRegular = errors.New("not a regular file (a FIFO, socket or device node where a file belongs): refused, not opened")
	ErrDevice     = errors.New("device nodes are read only on the live root /: refused")
	ErrDotDot     = errors.New("\"..\" after a missing component: the kernel would fail this lookup")
)

// Refuser is implemented by roots that want to hear about every refusal
// (verify lists them in its report): Resolve and ReadFile call it.
type Refuser interface {
	Refuse(name string, err error)
}

func refuse(f FS, name string, err error) error {
	if r, ok := f.(Refuser); ok {
		r.Refuse(name, err)
	}
	return err
}

// Refused reports whether err is one of the refusals above (as opposed to
// a file that is simply absent or unreadable).
func Refused(err error) bool {
	for _, e := range []error{ErrLoop, ErrTooLarge, ErrNotRegular, ErrDevice, ErrDotDot} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// Resolve follows every symlink in name inside the root and returns the
// resulting absolute path. ".." is applied to the path resolved so far, as
// the kernel does (a/link/.. is the parent of link's target, not a), and
// never climbs above the root. Components that do not exist are kept as
// they are: /var/crash is where crash dumps would land even before it
// exists; a ".." after a missing component is refused, as the kernel's
// lookup would fail there (ENOENT) rather than cancel the two out.
func Resolve(f FS, name string) (string, error) {
	links, steps := 0, 0
	done := "/"
	rest := strings.Split(name, "/")
	for len(rest) > 0 {
		if steps++; steps > maxComponents {
			return "", refuse(f, Clean(name), fmt.Errorf("cannot resolve %s: %w", Clean(name), ErrLoop))
		}
		c := rest[0]
		rest = rest[1:]
		switch c {
		case "", ".":
			continue
		case "..":
			done = path.Dir(done)
			continue
		}
		next := path.Join(done, c)
		fi, err := f.Lstat(next)
		if err != nil {
			// Missing: keep the remaining components literally.
			tail := []string{next}
			for _, r := range rest {
				switch r {
				case "", ".":
				case "..":
					return "", refuse(f, Clean(name), fmt.Errorf("cannot resolve %s: %w", Clean(name), ErrDotDot))
				default:
					tail = append(tail, r)
				}
			}
			return path.Join(tail...), nil
		}
		if fi.Mode()&fs.ModeSymlink == 0 {
			done = next
			continue
		}
		links++
		if links > maxSymlinks {
			return "", refuse(f, Clean(name), fmt.Errorf("cannot resolve %s: %w", Clean(name), ErrLoop))
		}
		target, err := f.Readlink(next)
		if err != nil {
			return "", fmt.Errorf("cannot resolve %s: %w", Clean(name), err)
		}
		if strings.HasPrefix(target, "/") {
			done = "/"
		}
		rest = append(strings.Split(target, "/"), rest...)
	}
	return done, nil
}

// Clean returns the absolute, cleaned form of name.
func Clean(name string) string { return path.Clean("/" + name) }

// ReadFile resolves name and reads the whole file, at most MaxFileSize
// bytes; only regular files are read.
func ReadFile(f FS, name string) ([]byte, error) {
	r, err := Resolve(f, name)
	if err != nil {
		return nil, err
	}
	h, err := f.Open(r)
	if err != nil {
		return nil, err
	}
	defer h.Close()
	b, err := io.ReadAll(io.LimitReader(h, MaxFileSize+1))
	if err != nil {
		return nil, err
	}
	if len(b) > MaxFileSize {
		return nil, refuse(f, r, &fs.PathError{Op: "read", Path: r, Err: ErrTooLarge})
	}
	return b, nil
}

// Stat resolves name and describes the file it leads to.
func Stat(f FS, name string) (fs.FileInfo, error) {
	r, err := Resolve(f, name)
	if err != nil {
		return nil, err
	}
	return f.Lstat(r)
}

// ReadDir resolves name and lists the directory, sorted by name.
func ReadDir(f FS, name string) ([]fs.DirEntry, error) {
	r, err := Resolve(f, name)
	if err != nil {
		return nil, err
	}
	return f.ReadDir(r)
}

// Exists reports whether name leads to an existing file.
func Exists(f FS, name string) bool {
	_, err := Stat(f, name)
	return err == nil
}

// DeviceOpener is implemented by roots that may open block device nodes:
// only the live root "/" does (a captured tree never holds device nodes;
// one planted in a tree could name this machine's own disks).
type DeviceOpener interface {
	OpenDevice(name string) (File, error)
}

// OpenDevice opens the block device (or, in a captured tree, the regular
// stub standing for it) that name resolves to.
func OpenDevice(f FS, name string) (File, error) {
	r, err := Resolve(f, name)
	if err != nil {
		return nil, err
	}
	if d, ok := f.(DeviceOpener); ok {
		return d.OpenDevice(r)
	}
	return f.Open(r)
}

// Dir is a root that is a directory of this machine ("/" for the live
// system). Every access goes through os.Root, so the kernel keeps it
// inside the directory even if the tree changes under verify (a symlink
// swapped in after Resolve looked): names are expected to be resolved by
// Resolve, and an absolute or escaping link met by the kernel is an error.
type Dir string

func (d Dir) root() (*os.Root, error) { return os.OpenRoot(string(d)) }

func rel(name string) string {
	r := strings.TrimPrefix(Clean(name), "/")
	if r == "" {
		return "."
	}
	return r
}

// Live reports whether the root is this machine's own "/".
func (d Dir) Live() bool { return filepath.Clean(string(d)) == "/" }

// Lstat implements FS.
func (d Dir) Lstat(name string) (fs.FileInfo, error) {
	r, err := d.root()
	if err != nil {
		return nil, err
	}
	defer r.Close()
	return r.Lstat(rel(name))
}

// Readlink implements FS.
func (d Dir) Readlink(name string) (string, error) {
	r, err := d.root()
	if err != nil {
		return "", err
	}
	defer r.Close()
	return r.Readlink(rel(name))
}

// ReadDir implements FS.
func (d Dir) ReadDir(name string) ([]fs.DirEntry, error) {
	r, err := d.root()
	if err != nil {
		return nil, err
	}
	defer r.Close()
	f, err := r.OpenFile(rel(name), os.O_RDONLY|syscall.O_NONBLOCK|syscall.O_DIRECTORY|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	ents, err := f.ReadDir(-1)
	sort.Slice(ents, func(i, j int) bool { return ents[i].Name() < ents[j].Name() })
	return ents, err
}

// Open implements FS: only regular files are opened, and never in a way
// that blocks (O_NONBLOCK: a FIFO planted where a file belongs returns at
// once and is refused).
func (d Dir) Open(name string) (File, error) { return d.open(name, false) }

// OpenDevice implements DeviceOpener: block devices, on the live root only.
func (d Dir) OpenDevice(name string) (File, error) { return d.open(name, d.Live()) }

// open refuses what is not a regular file (or, when blockOK, a block
// device) before anything is opened for reading: opening a character
// device runs its driver (a /dev/watchdog node planted in a captured tree
// arms the machine's watchdog, a tty becomes the controlling terminal). It
// first opens the name with O_PATH, which pins the inode without opening
// the file itself (no driver open, no FIFO rendezvous), checks that
// inode's type, and only then opens that same inode for reading through
// /proc/self/fd: a file swapped in after the check is never the one read.
func (d Dir) open(name string, blockOK bool) (File, error) {
	r, err := d.root()
	if err != nil {
		return nil, err
	}
	defer r.Close()
	p, err := r.OpenFile(rel(name), unix.O_PATH|unix.O_NOFOLLOW, 0)
	if err != nil {
		return nil, err
	}
	defer p.Close()
	var st unix.Stat_t
	if err := unix.Fstat(int(p.Fd()), &st); err != nil {
		return nil, &fs.PathError{Op: "stat", Path: name, Err: err}
	}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFREG:
	case unix.S_IFBLK:
		if !blockOK {
			return nil, &fs.PathError{Op: "open", Path: name, Err: ErrDevice}
		}
	default:
		return nil, &fs.PathError{Op: "open", Path: name, Err: ErrNotRegular}
	}
	f, err := openPinned(p, name)
	if err != nil {
		return nil, err
	}
	return f, nil
}

// openPinned opens the inode an O_PATH descriptor holds for reading.
// The /proc/self/fd link is followed by the kernel to that inode, not
// looked up by name again.
func openPinned(p *os.File, name string) (*os.File, error) {
	fd, err := unix.Open(fmt.Sprintf("/proc/self/fd/%d", p.Fd()), unix.O_RDONLY|unix.O_NONBLOCK|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &fs.PathError{Op: "open", Path: name, Err: err}
	}
	return os.NewFile(uintptr(fd), name), nil
}

// OSFile returns the *os.File behind a File opened from a Dir, for tools
// that need a real file (luks.go opens by path: /proc/self/fd/N).
func OSFile(f File) (*os.File, bool) {
	o, ok := f.(*os.File)
	return o, ok
}

// KeepName is the file put into otherwise empty directories of a captured
// tree: version control keeps no empty directories, and a missing
// /var/crash means something else than an empty one.
const KeepName = ".keep"

// KeepEmptyDirs puts a KeepName file into every empty directory under dir.
func KeepEmptyDirs(dir string) error {
	return filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil || !d.IsDir() {
			return err
		}
		ents, err := os.ReadDir(p)
		if err != nil {
			return err
		}
		if len(ents) == 0 {
			return os.WriteFile(filepath.Join(p, KeepName), nil, 0o644)
		}
		return nil
	})
}
