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
	"strings"
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

// HostPather is implemented by roots that live in this machine's directory
// tree, so that tools needing a real path (luks.ReadHeader) can open files.
type HostPather interface {
	HostPath(name string) string
}

// maxSymlinks is Linux's MAXSYMLINKS (include/linux/namei.h): path lookup
// gives up with ELOOP after 40 links.
const maxSymlinks = 40

// ErrLoop is returned when resolving a name follows more than 40 links.
var ErrLoop = errors.New("too many levels of symbolic links")

// Resolve follows every symlink in name inside the root and returns the
// resulting absolute path. Components that do not exist are kept as they
// are: /var/crash is where crash dumps would land even before it exists.
func Resolve(f FS, name string) (string, error) {
	name = Clean(name)
	links := 0
	done := "/"
	rest := strings.Split(strings.TrimPrefix(name, "/"), "/")
	for len(rest) > 0 {
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
			return Clean(path.Join(append([]string{next}, rest...)...)), nil
		}
		if fi.Mode()&fs.ModeSymlink == 0 {
			done = next
			continue
		}
		links++
		if links > maxSymlinks {
			return "", fmt.Errorf("cannot resolve %s: %w", name, ErrLoop)
		}
		target, err := f.Readlink(next)
		if err != nil {
			return "", fmt.Errorf("cannot resolve %s: %w", name, err)
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

// ReadFile resolves name and reads the whole file.
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
	return io.ReadAll(h)
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

// Dir is a root that is a directory of this machine ("/" for the live system).
type Dir string

func (d Dir) host(name string) string {
	return filepath.Join(string(d), filepath.FromSlash(Clean(name)))
}

// HostPath returns where name lives on this machine.
func (d Dir) HostPath(name string) string { return d.host(name) }

// Lstat implements FS.
func (d Dir) Lstat(name string) (fs.FileInfo, error) { return os.Lstat(d.host(name)) }

// Readlink implements FS.
func (d Dir) Readlink(name string) (string, error) { return os.Readlink(d.host(name)) }

// ReadDir implements FS.
func (d Dir) ReadDir(name string) ([]fs.DirEntry, error) { return os.ReadDir(d.host(name)) }

// Open implements FS.
func (d Dir) Open(name string) (File, error) { return os.Open(d.host(name)) }

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
