package migrate

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/cryptshift/cryptshift/apply"
)

// removeBlock takes a marked block (apply.WriteBlock's format) out of a
// file. apply.Restore alone would put back the file as it was before
// cryptshift first edited it, which also drops every block written since,
// such as the crypttab entries of `cryptshift apply` or of another
// migration. So the block is cut out; only when what remains is exactly
// the saved original (nothing else was added since) does apply.Restore
// run, which also removes the backup it kept.
func removeBlock(file, begin, end string) error {
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
	if orig, err := os.ReadFile(file + ".cryptshift-orig"); err == nil {
		if rest == string(orig) || (strings.TrimSuffix(rest, "\n") == string(orig) && !bytes.HasSuffix(orig, []byte("\n"))) {
			return apply.Restore(file)
		}
	} else if _, err := os.Stat(file + ".cryptshift-absent"); err == nil && rest == "" {
		return apply.Restore(file)
	}
	return writeAtomic(file, []byte(rest))
}

// writeAtomic replaces a file's content keeping its mode: a temporary file
// in the same directory, synced, renamed over it, and the directory synced,
// so a crash leaves the old or the new file, never half of one.
func writeAtomic(file string, data []byte) error {
	st, err := os.Stat(file)
	if err != nil {
		return fmt.Errorf("cannot write %s: %w", file, err)
	}
	dir := filepath.Dir(file)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(file)+".tmp*")
	if err != nil {
		return fmt.Errorf("cannot write %s: %w", file, err)
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(st.Mode().Perm()); err != nil {
		tmp.Close()
		return fmt.Errorf("cannot write %s: %w", file, err)
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("cannot write %s: %w", file, err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("cannot write %s: %w", file, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("cannot write %s: %w", file, err)
	}
	if err := os.Rename(tmp.Name(), file); err != nil {
		return fmt.Errorf("cannot write %s: %w", file, err)
	}
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("cannot sync %s: %w", dir, err)
	}
	defer d.Close()
	return d.Sync()
}
