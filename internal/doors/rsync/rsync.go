// Package rsync is cryptshift's one door to rsync: the host move copies
// each filesystem of the running system into the new root with it.
package rsync

import (
	"context"
	"fmt"
	"strings"

	"github.com/cryptshift/cryptshift/internal/doors/execx"
)

// Copy is one rsync run: the tree at Src (a directory, one filesystem)
// into Dst.
type Copy struct {
	Src, Dst string
	// Excludes are rsync filter patterns anchored at Src ("/etc/fstab",
	// "/tmp/*"); excluded files in Dst are protected from Delete too.
	Excludes []string
	// Delete removes files from Dst that are gone from Src (the final
	// pass, so the new root holds what the source holds at the end).
	Delete bool
	// NoOwners copies into a filesystem without owners, modes, ACLs or
	// extended attributes (vfat: the ESP): times and contents only.
	NoOwners bool
}

// Args renders the command line: archive mode keeping hard links (-H),
// ACLs (-A), extended attributes (-X, which carry file capabilities and
// SELinux labels) and holes (-S); numeric ids (the new root has the same
// passwd, and a name lookup could map them wrongly); one filesystem (-x),
// so each source filesystem is copied by its own run and mount points
// become empty directories.
func (c Copy) Args() []string {
	args := []string{"-aHAXSx", "--numeric-ids"}
	if c.NoOwners {
		args = []string{"-rltDx", "--modify-window=1"}
	}
	if c.Delete {
		args = append(args, "--delete")
	}
	for _, e := range c.Excludes {
		args = append(args, "--exclude="+e)
	}
	return append(args, dir(c.Src), dir(c.Dst))
}

// dir ends a directory with "/": rsync copies its contents, not itself.
func dir(p string) string {
	if strings.HasSuffix(p, "/") {
		return p
	}
	return p + "/"
}

// Cmd is the rsync invocation.
func (c Copy) Cmd() execx.Cmd { return execx.Cmd{Tool: "rsync", Args: c.Args()} }

// Run runs the copy. rsync's exit status 24 ("some files vanished before
// they could be transferred") is normal on a live system (a temporary
// file deleted during the pass) and not an error: the final pass with the
// services stopped copies what is left.
func (c Copy) Run(ctx context.Context, run execx.Runner) error {
	res, err := run.Run(ctx, c.Cmd())
	if err != nil && res.ExitCode == 24 {
		return nil
	}
	if err != nil {
		return fmt.Errorf("cannot copy %s to %s: %w", c.Src, c.Dst, err)
	}
	return nil
}
