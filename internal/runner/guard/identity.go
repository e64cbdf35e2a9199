package guard

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/cryptshift/cryptshift/internal/hostview/blockstack"
)

// Identity is what tells one disk from another besides its /dev name,
// which the kernel hands out in probe order: after a reboot or a re-plug
// /dev/sdb may be another disk. It is read from sysfs and udev's
// /dev/disk/by-id links; a loop device is known by its backing file.
type Identity struct {
	Path    string   `json:"path"`
	Size    int64    `json:"size"` // bytes
	WWID    string   `json:"wwid,omitempty"`
	Serial  string   `json:"serial,omitempty"`
	Backing string   `json:"backing,omitempty"` // loop devices
	ByID    []string `json:"byID,omitempty"`    // /dev/disk/by-id links to it
}

// Identify reads the identity of the block device at path (a /dev name or
// a udev link); root is where /dev and /sys are read ("/" live).
func Identify(root, path string) (Identity, error) {
	id := Identity{Path: path}
	real, err := filepath.EvalSymlinks(filepath.Join(root, path))
	if err != nil {
		return id, fmt.Errorf("cannot find %s: %w", path, err)
	}
	name := filepath.Base(real)
	sys := filepath.Join(root, "sys/class/block", name)
	read := func(p string) string {
		b, err := os.ReadFile(filepath.Join(sys, p))
		if err != nil {
			return ""
		}
		return strings.TrimSpace(string(b))
	}
	sectors, err := strconv.ParseInt(read("size"), 10, 64)
	if err != nil {
		return id, fmt.Errorf("cannot read the size of %s (%s): %w", path, name, err)
	}
	id.Size = sectors * 512 // sysfs counts 512-byte sectors whatever the device's
	id.WWID, id.Serial = blockstack.DiskIDs(read)
	id.Backing = read("loop/backing_file")
	byID := filepath.Join(root, "dev/disk/by-id")
	ents, _ := os.ReadDir(byID)
	for _, e := range ents {
		if t, err := filepath.EvalSymlinks(filepath.Join(byID, e.Name())); err == nil && t == real {
			id.ByID = append(id.ByID, "/dev/disk/by-id/"+e.Name())
		}
	}
	sort.Strings(id.ByID)
	return id, nil
}

// Same returns nil when now is the disk was: the same size, and every
// identifier both know (WWID, serial, loop backing file, by-id links)
// agrees.
func (was Identity) Same(now Identity) error {
	var diffs []string
	if was.Size != now.Size {
		diffs = append(diffs, fmt.Sprintf("size %d bytes, was %d", now.Size, was.Size))
	}
	for _, f := range []struct{ what, a, b string }{{"WWID", was.WWID, now.WWID}, {"serial", was.Serial, now.Serial}, {"backing file", was.Backing, now.Backing}} {
		if f.a != "" && f.b != "" && f.a != f.b {
			diffs = append(diffs, fmt.Sprintf("%s %s, was %s", f.what, f.b, f.a))
		}
	}
	if len(was.ByID) > 0 && len(now.ByID) > 0 && !slices.ContainsFunc(was.ByID, func(l string) bool { return slices.Contains(now.ByID, l) }) {
		diffs = append(diffs, fmt.Sprintf("known as %s, was %s", strings.Join(now.ByID, ", "), strings.Join(was.ByID, ", ")))
	}
	if len(diffs) > 0 {
		return fmt.Errorf("%s is not the disk it was: %s", now.Path, strings.Join(diffs, "; "))
	}
	return nil
}

// String names a disk for people.
func (id Identity) String() string {
	var parts []string
	for _, p := range []string{id.WWID, id.Serial, id.Backing} {
		if p != "" {
			parts = append(parts, p)
		}
	}
	if len(id.ByID) > 0 {
		parts = append(parts, id.ByID[0])
	}
	return fmt.Sprintf("%s (%d bytes; %s)", id.Path, id.Size, strings.Join(parts, ", "))
}
