// Package guard holds the checks a runner makes before it puts key
// material somewhere: apply's key files, migrate's key files and overlays
// (and the host move's). They read the host through internal/hostview.
package guard

import (
	"fmt"
	"os"
	"path"
	"path/filepath"
	"slices"

	"github.com/cryptshift/cryptshift/internal/hostview/blockstack"
	"github.com/cryptshift/cryptshift/internal/hostview/rootfs"
)

// EncryptedDir returns nil when dir is on encrypted storage as this
// process sees it (its mount and every device under it traced down to a
// dm-crypt mapping), else an error that says what dir is on. With
// mappings, dir must moreover be on one of those dm-crypt mappings
// (/dev/mapper/NAME): the volumes a plan encrypted, not any encrypted
// storage that happens to be mounted there. root is where /proc, /sys and
// /dev are read ("/" on a live system). A directory that does not exist
// yet is judged by its nearest existing parent, where it would be made.
func EncryptedDir(root, dir string, mappings ...string) error {
	sys, err := blockstack.Scan(rootfs.Dir(root))
	if err != nil {
		return fmt.Errorf("cannot tell where %s is stored: %w", dir, err)
	}
	at := path.Clean(dir)
	for at != "/" {
		if _, err := os.Stat(filepath.Join(root, at)); err == nil {
			break
		}
		at = path.Dir(at)
	}
	return Check(sys, at, mappings...)
}

// Check is EncryptedDir on a block stack the caller has read already.
func Check(sys *blockstack.System, dir string, mappings ...string) error {
	loc := sys.Locate(dir)
	if loc.Class != blockstack.Encrypted {
		return fmt.Errorf("%s is on %s storage (%s)", dir, loc.Class, loc.Reason)
	}
	if len(mappings) == 0 {
		return nil
	}
	for _, m := range mappings {
		d := sys.DeviceByPath(m)
		if d == nil {
			continue
		}
		if slices.Contains(loc.Crypt, d.Name) {
			return nil
		}
	}
	return fmt.Errorf("%s is on encrypted storage (%s), but not on %v, which the plan encrypted for it", dir, loc.Reason, mappings)
}
