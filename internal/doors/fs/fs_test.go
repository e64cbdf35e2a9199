package fs

import (
	"strings"
	"testing"
)

func TestArgv(t *testing.T) {
	for _, tt := range []struct {
		op   Op
		want string
	}{
		{Wipe{Device: "/dev/sdb"}, "wipefs --all /dev/sdb"},
		{Discard{Device: "/dev/vg0/old"}, "blkdiscard /dev/vg0/old"},
		{Discard{Device: "/dev/vg0/old", ZeroOut: true}, "blkdiscard --zeroout /dev/vg0/old"},
		{Mkfs{FS: Ext4, Device: "/dev/mapper/root_crypt", UUID: "u-1", Label: "root"}, "mkfs.ext4 -q -F -b 4096 -U u-1 -L root /dev/mapper/root_crypt"},
		{Mkfs{FS: Ext4, Device: "/dev/sda2", UUID: "u-1"}, "mkfs.ext4 -q -F -b 4096 -U u-1 /dev/sda2"},
		{Mkfs{FS: XFS, Device: "/dev/mapper/v", UUID: "u-2", Label: "mail"}, "mkfs.xfs -q -f -m uuid=u-2 -L mail /dev/mapper/v"},
		{Mkfs{FS: VFAT, Device: "/dev/sda1", UUID: "ABCD-1234", Label: "ESP"}, "mkfs.vfat -F 32 -i ABCD1234 -n ESP /dev/sda1"},
		{Mkswap{Device: "/dev/mapper/swap", UUID: "u-3", Label: "swap"}, "mkswap -U u-3 -L swap /dev/mapper/swap"},
		{Mkswap{Device: "/dev/mapper/swap_crypt"}, "mkswap /dev/mapper/swap_crypt"},
		{Mount{Device: "/dev/mapper/root_crypt", Target: "/target", FSType: "ext4"}, "mount --mkdir -t ext4 /dev/mapper/root_crypt /target"},
		{Umount{Target: "/target"}, "umount /target"},
		{Swapon{Device: "/dev/mapper/swap_crypt"}, "swapon /dev/mapper/swap_crypt"},
		{Swapoff{Device: "/dev/mapper/swap_crypt"}, "swapoff /dev/mapper/swap_crypt"},
	} {
		if got := strings.Join(tt.op.Argv(), " "); got != tt.want {
			t.Errorf("%T:\ngot  %s\nwant %s", tt.op, got, tt.want)
		}
	}
	if err := (Mkfs{FS: "btrfs"}).Check(); err == nil || !strings.Contains(err.Error(), "ext4, xfs and vfat") {
		t.Errorf("btrfs: %v", err)
	}
}
