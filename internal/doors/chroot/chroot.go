// Package chroot is the door to the tools cryptshift runs inside an
// installed system: update-initramfs, grub-install and update-grub. The
// system is the one at Root, entered with chroot(8), or the running one
// when Root is "/". Each operation is a typed value whose command line is
// rendered here and nowhere else, for plans and execution alike. (Binding
// /dev, /proc, /sys and /run into Root first is the caller's business.)
package chroot

import (
	"context"

	"github.com/cryptshift/cryptshift/internal/doors/execx"
)

// Op is a command run in the system at a root.
type Op interface{ Argv() []string }

// Cmd is op as the exec door runs it.
func Cmd(op Op) execx.Cmd {
	argv := op.Argv()
	return execx.Cmd{Tool: argv[0], Args: argv[1:]}
}

// Run runs op through the exec door.
func Run(ctx context.Context, run execx.Runner, op Op) error {
	_, err := run.Run(ctx, Cmd(op))
	return err
}

// in renders argv run in the system at root.
func in(root string, argv ...string) []string {
	if root == "/" {
		return argv
	}
	return append([]string{"chroot", root}, argv...)
}

// UpdateInitramfs regenerates the initramfs of every installed kernel of
// the system at Root.
type UpdateInitramfs struct {
	Root string `json:"root"`
}

func (u UpdateInitramfs) Argv() []string {
	return in(u.Root, "update-initramfs", "-u", "-k", "all")
}

// Tool is the path of the tool UpdateInitramfs runs, relative to Root: a
// freshly laid-out root has none until an OS is installed there.
func (UpdateInitramfs) Tool() string { return "usr/sbin/update-initramfs" }

// GrubInstallEFI installs GRUB for UEFI on the ESP mounted at ESP (a path
// inside Root) at the firmware's fallback path EFI/BOOT/BOOTX64.EFI
// (--removable), which boots without an NVRAM entry (--no-nvram).
type GrubInstallEFI struct {
	Root string `json:"root"`
	ESP  string `json:"esp"`
}

func (g GrubInstallEFI) Argv() []string {
	return in(g.Root, "grub-install", "--target=x86_64-efi", "--efi-directory="+g.ESP, "--boot-directory=/boot", "--removable", "--no-nvram")
}

// GrubInstallBIOS installs GRUB for BIOS into the bios-boot partition of
// Disk.
type GrubInstallBIOS struct {
	Root string `json:"root"`
	Disk string `json:"disk"`
}

func (g GrubInstallBIOS) Argv() []string {
	return in(g.Root, "grub-install", "--target=i386-pc", "--boot-directory=/boot", g.Disk)
}

// UpdateGrub writes the grub.cfg of the system at Root.
type UpdateGrub struct {
	Root string `json:"root"`
}

func (u UpdateGrub) Argv() []string { return in(u.Root, "update-grub") }
