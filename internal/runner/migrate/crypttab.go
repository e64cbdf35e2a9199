package migrate

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/cryptshift/cryptshift/internal/runner/apply"
)

// removeBlock takes a marked block out of a file, keeping every other
// block (see apply.RemoveBlock).
func removeBlock(file, begin, end string) error { return apply.RemoveBlock(file, begin, end) }

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
