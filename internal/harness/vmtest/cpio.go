package vmtest

import (
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// cpioWriter writes the "newc" (SVR4, no CRC) archive format, the one the
// kernel's initramfs unpacker reads (Documentation/driver-api/early-userspace/
// buffer-format.rst). Writing it here rather than with cpio(1) lets the kit
// carry device nodes such as /dev/console without root, and makes the
// archive byte-for-byte reproducible: fixed mtimes, owners and inode numbers.
type cpioWriter struct {
	w   io.Writer
	off int64
	ino uint32
}

const (
	cpioModeDir  = 0o040000
	cpioModeFile = 0o100000
	cpioModeLink = 0o120000
	cpioModeChr  = 0o020000
)

type cpioEntry struct {
	Name      string // no leading "/"
	Mode      uint32 // type bits | permissions
	Data      []byte // file contents or symlink target
	RdevMajor uint32
	RdevMinor uint32
}

func (c *cpioWriter) write(e cpioEntry) error {
	c.ino++
	nlink := uint32(1)
	if e.Mode&0o170000 == cpioModeDir {
		nlink = 2
	}
	name := e.Name + "\x00"
	hdr := fmt.Sprintf("070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X",
		c.ino, e.Mode, 0, 0, nlink, 0, len(e.Data), 0, 0, e.RdevMajor, e.RdevMinor, len(name), 0)
	if err := c.put([]byte(hdr + name)); err != nil {
		return err
	}
	if err := c.pad(); err != nil {
		return err
	}
	if err := c.put(e.Data); err != nil {
		return err
	}
	return c.pad()
}

func (c *cpioWriter) close() error {
	return c.write(cpioEntry{Name: "TRAILER!!!"})
}

func (c *cpioWriter) put(b []byte) error {
	n, err := c.w.Write(b)
	c.off += int64(n)
	return err
}

// pad aligns to 4 bytes, as newc requires after the name and after the data.
func (c *cpioWriter) pad() error {
	if r := c.off % 4; r != 0 {
		return c.put(make([]byte, 4-r))
	}
	return nil
}

// writeCPIO archives every file, directory and symlink under root (sorted,
// so the archive is reproducible), then the extra entries.
func writeCPIO(w io.Writer, root string, extra []cpioEntry) error {
	var paths []string
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p != root {
			paths = append(paths, p)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("cannot walk %s: %w", root, err)
	}
	sort.Strings(paths)
	cw := &cpioWriter{w: w}
	for _, p := range paths {
		rel := filepath.ToSlash(strings.TrimPrefix(p, root+string(filepath.Separator)))
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		perm := uint32(fi.Mode().Perm())
		var e cpioEntry
		switch {
		case fi.IsDir():
			e = cpioEntry{Name: rel, Mode: cpioModeDir | perm}
		case fi.Mode()&fs.ModeSymlink != 0:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			e = cpioEntry{Name: rel, Mode: cpioModeLink | 0o777, Data: []byte(target)}
		case fi.Mode().IsRegular():
			data, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			e = cpioEntry{Name: rel, Mode: cpioModeFile | perm, Data: data}
		default:
			return fmt.Errorf("cannot archive %s: not a file, directory or symlink", p)
		}
		if err := cw.write(e); err != nil {
			return err
		}
	}
	for _, e := range extra {
		if err := cw.write(e); err != nil {
			return err
		}
	}
	return cw.close()
}
