package verify

import (
	"slices"
	"testing"
)

// TestCheckOrder pins the one list of check families and their order (the
// order init() registration used to take from file names): a new check is
// added here on purpose, and a reordering shows up in review.
func TestCheckOrder(t *testing.T) {
	want := []string{
		"core-pattern", "systemd-coredump", "crash-dir", "kdump",
		"crypttab-keys", "initramfs-keys", "header-backups",
		"libvirt",
		"luks", "crypttab-ciphers",
		"lvm-snapshots", "lvm-leftovers", "lvm-metadata",
		"postfix", "dovecot", "filters",
		"mounts", "disk-leftovers",
		"swap-active", "zram", "swap-fstab", "swap-crypttab", "resume",
		"tmp", "logs", "shm",
		"image-partitions",
	}
	var got []string
	for _, c := range checks {
		got = append(got, c.name)
		if c.run == nil {
			t.Errorf("check %s has no function", c.name)
		}
	}
	if !slices.Equal(got, want) {
		t.Errorf("check order:\n got %q\nwant %q", got, want)
	}
}
