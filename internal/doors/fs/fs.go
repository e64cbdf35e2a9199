// Package fs is the door to the filesystem and block tools cryptshift
// runs: mkfs, mkswap, mount, umount, swapon, swapoff, wipefs and blkdiscard. Each operation is a
// typed value whose command line is rendered here and nowhere else, for
// plans, scripts and execution alike.
package fs

import (
	"context"
	"fmt"
	"strings"

	"github.com/cryptshift/cryptshift/internal/doors/execx"
)

// Op is a filesystem tool invocation.
type Op interface{ Argv() []string }

// Run runs op through the exec door.
func Run(ctx context.Context, run execx.Runner, op Op) error {
	argv := op.Argv()
	_, err := run.Run(ctx, execx.Cmd{Tool: argv[0], Args: argv[1:]})
	return err
}

// Wipe erases every signature wipefs knows on Device (the data stays).
type Wipe struct {
	Device string `json:"device"`
}

func (w Wipe) Argv() []string { return []string{"wipefs", "--all", w.Device} }

// Discard discards every block of Device (blkdiscard), or with ZeroOut
// writes zeros over them, for a device that takes no discards. blkdiscard
// opens the device O_EXCL: it refuses one that is mounted or held by
// another device, so nothing in use is discarded.
type Discard struct {
	Device  string `json:"device"`
	ZeroOut bool   `json:"zeroout,omitempty"`
}

func (d Discard) Argv() []string {
	if d.ZeroOut {
		return []string{"blkdiscard", "--zeroout", d.Device}
	}
	return []string{"blkdiscard", d.Device}
}

// Filesystems Mkfs makes.
const (
	Ext4 = "ext4"
	XFS  = "xfs"
	VFAT = "vfat"
)

// Mkfs makes a filesystem with a chosen UUID, so that fstab can name it
// before it exists and a resumed apply recognises its own. For vfat the
// UUID is the volume serial as blkid and fstab show it ("ABCD-1234").
type Mkfs struct {
	FS     string `json:"fs"`
	Device string `json:"device"`
	UUID   string `json:"uuid"`
	Label  string `json:"label,omitempty"`
}

func (m Mkfs) Argv() []string {
	switch m.FS {
	case VFAT:
		return []string{"mkfs.vfat", "-F", "32", "-i", strings.ReplaceAll(m.UUID, "-", ""), "-n", m.Label, m.Device}
	case XFS:
		// -f: the planner has already established that the device is
		// blank or approved for wiping; it lets a resumed apply redo a
		// mkfs that a crash interrupted.
		args := []string{"mkfs.xfs", "-q", "-f", "-m", "uuid=" + m.UUID}
		if m.Label != "" {
			args = append(args, "-L", m.Label)
		}
		return append(args, m.Device)
	default:
		// -b 4096 keeps the block size at least the 4096-byte LUKS2 sector
		// even on small volumes, where mke2fs would otherwise pick 1024.
		// -F, as -f above.
		args := []string{"mkfs.ext4", "-q", "-F", "-b", "4096", "-U", m.UUID}
		if m.Label != "" {
			args = append(args, "-L", m.Label)
		}
		return append(args, m.Device)
	}
}

// Check refuses a filesystem type this door cannot make.
func (m Mkfs) Check() error {
	switch m.FS {
	case Ext4, XFS, VFAT:
		return nil
	}
	return fmt.Errorf("cannot make a %q filesystem: cryptshift makes ext4, xfs and vfat", m.FS)
}

// Mkswap makes a swap area; without a UUID mkswap picks one (a random-key
// swap is made anew at every boot).
type Mkswap struct {
	Device string `json:"device"`
	UUID   string `json:"uuid,omitempty"`
	Label  string `json:"label,omitempty"`
}

func (m Mkswap) Argv() []string {
	args := []string{"mkswap"}
	if m.UUID != "" {
		args = append(args, "-U", m.UUID)
	}
	if m.Label != "" {
		args = append(args, "-L", m.Label)
	}
	return append(args, m.Device)
}

// Mount mounts Device on Target, making the directory if needed.
type Mount struct {
	Device string `json:"device"`
	Target string `json:"target"`
	FSType string `json:"fstype"`
}

func (m Mount) Argv() []string {
	return []string{"mount", "--mkdir", "-t", m.FSType, m.Device, m.Target}
}

// Umount unmounts Target.
type Umount struct {
	Target string `json:"target"`
}

func (u Umount) Argv() []string { return []string{"umount", u.Target} }

// Swapon turns swap on Device on.
type Swapon struct {
	Device string `json:"device"`
}

func (s Swapon) Argv() []string { return []string{"swapon", s.Device} }

// Swapoff turns swap on Device off.
type Swapoff struct {
	Device string `json:"device"`
}

func (s Swapoff) Argv() []string { return []string{"swapoff", s.Device} }
