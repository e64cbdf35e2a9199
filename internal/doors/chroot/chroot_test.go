package chroot

import (
	"context"
	"strings"
	"testing"

	"github.com/cryptshift/cryptshift/internal/doors/execx"
)

func TestArgv(t *testing.T) {
	for _, tt := range []struct {
		op   Op
		want string
	}{
		{UpdateInitramfs{Root: "/target"}, "chroot /target update-initramfs -u -k all"},
		{UpdateInitramfs{Root: "/"}, "update-initramfs -u -k all"},
		{GrubInstallEFI{Root: "/target", ESP: "/boot/efi"}, "chroot /target grub-install --target=x86_64-efi --efi-directory=/boot/efi --boot-directory=/boot --removable --no-nvram"},
		{GrubInstallBIOS{Root: "/target", Disk: "/dev/sda"}, "chroot /target grub-install --target=i386-pc --boot-directory=/boot /dev/sda"},
		{UpdateGrub{Root: "/target"}, "chroot /target update-grub"},
		{UpdateGrub{Root: "/"}, "update-grub"},
	} {
		if got := strings.Join(tt.op.Argv(), " "); got != tt.want {
			t.Errorf("%T:\ngot  %s\nwant %s", tt.op, got, tt.want)
		}
	}
}

func TestRunAndCmd(t *testing.T) {
	r := &execx.Recorder{}
	op := UpdateInitramfs{Root: "/target"}
	if err := Run(context.Background(), r, op); err != nil {
		t.Fatal(err)
	}
	if got, want := strings.Join(r.Lines(), "\n"), "chroot /target update-initramfs -u -k all"; got != want {
		t.Errorf("ran %q, want %q", got, want)
	}
	if got, want := Cmd(op).String(), "chroot /target update-initramfs -u -k all"; got != want {
		t.Errorf("Cmd: got %q, want %q", got, want)
	}
}
