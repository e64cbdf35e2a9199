// Package files is the door for the files cryptshift writes on the host:
// atomically (a crash leaves the old file or the new one, never half of
// either), the marked blocks cryptshift owns
// in crypttab and fstab, and zeroed device regions.
package files

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// AtomicWrite replaces (or creates) path with data and mode: a temporary
// file in the same directory, synced, renamed into place, and the
// directory synced.
func AtomicWrite(path string, data []byte, mode os.FileMode) error {
	return place(path, data, mode, os.Rename)
}

// CreateAtomic writes data to path, which must not exist yet, with mode:
// the data goes to a temporary file in the same directory, is synced, and
// is then linked to path (link(2) fails if path exists, so nothing is
// ever overwritten), and the directory is synced. A crash leaves no file
// or the whole one, never a part (a recovery key cut in half would be
// worse than none: it looks like a key and opens nothing).
func CreateAtomic(path string, data []byte, mode os.FileMode) error {
	return place(path, data, mode, os.Link)
}

// place writes data to a synced temporary file next to path, puts it in
// place with put (rename or link) and syncs the directory.
func place(path string, data []byte, mode os.FileMode, put func(tmp, path string) error) error {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("cannot write %s: %w", path, err)
	}
	defer os.Remove(tmp.Name())
	err = tmp.Chmod(mode)
	if err == nil {
		_, err = tmp.Write(data)
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = put(tmp.Name(), path)
	}
	if err != nil {
		return fmt.Errorf("cannot write %s: %w", path, err)
	}
	return syncDir(dir)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("cannot sync %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("cannot sync %s: %w", dir, err)
	}
	return nil
}

// Backup suffixes: the original file, or a marker saying there was none.
const (
	origSuffix   = ".cryptshift-orig"
	absentSuffix = ".cryptshift-absent"
)

// WriteBlock puts a marked block (first line "# BEGIN ...", last line
// "# END ...") into file, replacing an earlier copy of the same block or
// appending it. The first time, it keeps the original file (or a marker
// that there was none) next to it, for Restore.
func WriteBlock(file, block string) error {
	lines := strings.Split(strings.TrimRight(block, "\n"), "\n")
	if len(lines) < 2 || !strings.HasPrefix(lines[0], "# BEGIN ") || !strings.HasPrefix(lines[len(lines)-1], "# END ") {
		return fmt.Errorf("cannot write %s: the block is not marked with # BEGIN/# END lines", file)
	}
	begin, end := lines[0], lines[len(lines)-1]
	old, err := os.ReadFile(file)
	existed := err == nil
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("cannot read %s: %w", file, err)
	}
	if err := os.MkdirAll(filepath.Dir(file), 0o755); err != nil {
		return fmt.Errorf("cannot create %s: %w", filepath.Dir(file), err)
	}
	_, origErr := os.Stat(file + origSuffix)
	_, absentErr := os.Stat(file + absentSuffix)
	if origErr != nil && absentErr != nil { // no backup yet: this is the first edit
		if existed {
			if err := AtomicWrite(file+origSuffix, old, 0o600); err != nil {
				return err
			}
		} else if err := AtomicWrite(file+absentSuffix, nil, 0o600); err != nil {
			return err
		}
	}
	var out bytes.Buffer
	rest := string(old)
	if i := strings.Index(rest, begin+"\n"); i >= 0 {
		j := strings.Index(rest[i:], end+"\n")
		if j < 0 {
			return fmt.Errorf("cannot update %s: it has %q but not %q; fix the file by hand", file, begin, end)
		}
		out.WriteString(rest[:i])
		out.WriteString(block)
		out.WriteString(rest[i+j+len(end)+1:])
	} else {
		out.WriteString(rest)
		if rest != "" && !strings.HasSuffix(rest, "\n") {
			out.WriteByte('\n')
		}
		out.WriteString(block)
	}
	mode := os.FileMode(0o644)
	if st, err := os.Stat(file); err == nil {
		mode = st.Mode().Perm()
	}
	return AtomicWrite(file, out.Bytes(), mode)
}

// RemoveBlock takes a marked block (WriteBlock's format) out of a file.
// Restore alone would put back the file as it was before cryptshift first
// edited it, which also drops every block written since (a migration's
// crypttab entries after an apply's, say). So the block is cut out; only
// when what remains is exactly the saved original (nothing else was added
// since) does Restore run, which also removes the backup it kept.
func RemoveBlock(file, begin, end string) error {
	old, err := os.ReadFile(file)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("cannot read %s: %w", file, err)
	}
	s := string(old)
	i := strings.Index(s, begin+"\n")
	if i < 0 {
		return nil // removed before a crash, or never written
	}
	j := strings.Index(s[i:], end+"\n")
	if j < 0 {
		return fmt.Errorf("cannot remove the block %q from %s: its end line %q is missing; fix the file by hand", begin, file, end)
	}
	rest := s[:i] + s[i+j+len(end)+1:]
	// WriteBlock separates a block from a file without a final newline
	// with one; take that back too.
	if orig, err := os.ReadFile(file + origSuffix); err == nil {
		if rest == string(orig) || (strings.TrimSuffix(rest, "\n") == string(orig) && !bytes.HasSuffix(orig, []byte("\n"))) {
			return Restore(file)
		}
	} else if _, err := os.Stat(file + absentSuffix); err == nil && rest == "" {
		return Restore(file)
	}
	mode := os.FileMode(0o644)
	if st, err := os.Stat(file); err == nil {
		mode = st.Mode().Perm()
	}
	return AtomicWrite(file, []byte(rest), mode)
}

// Restore undoes WriteBlock: it puts the original file back, or removes
// the file if there was none.
func Restore(file string) error {
	if _, err := os.Stat(file + origSuffix); err == nil {
		if err := os.Rename(file+origSuffix, file); err != nil {
			return fmt.Errorf("cannot restore %s: %w", file, err)
		}
		return nil
	}
	if _, err := os.Stat(file + absentSuffix); err == nil {
		if err := os.Remove(file); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("cannot restore %s: %w", file, err)
		}
		return os.Remove(file + absentSuffix)
	}
	return nil // never edited
}

// Zero writes zeros over the first head and last tail bytes of a device:
// the undo of writing a partition table (primary and backup GPT) or an LVM
// label and metadata area onto a device that was blank. For a block device
// it then has the kernel re-read the (now absent) partition table.
func Zero(device string, head, tail int64) error {
	f, err := os.OpenFile(device, os.O_WRONLY, 0)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil // the device is gone: nothing of ours is on it
		}
		return fmt.Errorf("cannot open %s: %w", device, err)
	}
	defer f.Close()
	size, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		return fmt.Errorf("cannot size %s: %w", device, err)
	}
	zero := make([]byte, 1<<20)
	write := func(off, n int64) error {
		for n > 0 {
			c := min(n, int64(len(zero)))
			if _, err := f.WriteAt(zero[:c], off); err != nil {
				return fmt.Errorf("cannot clear %s: %w", device, err)
			}
			off, n = off+c, n-c
		}
		return nil
	}
	if err := write(0, min(head, size)); err != nil {
		return err
	}
	if tail > 0 {
		if err := write(max(size-tail, 0), min(tail, size)); err != nil {
			return err
		}
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("cannot sync %s: %w", device, err)
	}
	if st, err := f.Stat(); err == nil && st.Mode()&os.ModeDevice != 0 {
		// BLKRRPART; EINVAL for devices without partitions is fine.
		_ = unix.IoctlSetInt(int(f.Fd()), unix.BLKRRPART, 0)
	}
	return nil
}

// Remove removes the file at Path if it is there, as rm -f does: Argv
// renders it for plans, Run does it (cryptshift does not run rm).
type Remove struct {
	Path string `json:"path"`
}

func (r Remove) Argv() []string { return []string{"rm", "-f", r.Path} }

// Run removes the file; a file that is not there is no error.
func (r Remove) Run() error {
	if err := os.Remove(r.Path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("cannot remove %s: %w", r.Path, err)
	}
	return nil
}
