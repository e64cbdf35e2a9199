package guard

import (
	"strings"
	"testing"

	"github.com/cryptshift/cryptshift/internal/hostview/blockstack/blockstacktest"
)

// A host as apply sees it after a reboot and a careless resume: the
// plaintext disk's root is mounted, the encrypted root (root_crypt) is
// not mounted on /target; a second encrypted volume (var_crypt) is.
func testRoot(t *testing.T, targetMounted bool) string {
	t.Helper()
	dir := t.TempDir()
	tr := blockstacktest.New(dir)
	tr.Disk("sda", "8:0", 20<<30).Part("sda", 1, "8:1", 1<<30, 1<<20).Part("sda", 2, "8:2", 18<<30, 2<<30)
	tr.Crypt("dm-0", "253:0", "LUKS2", "root_crypt", 10<<30, "sda2")
	tr.Crypt("dm-1", "253:1", "LUKS2", "var_crypt", 8<<30, "sda2")
	tr.Mount("/", "ext4", "/dev/sda1", "8:1", "rw")
	if targetMounted {
		tr.Mount("/target", "ext4", "/dev/mapper/root_crypt", "253:0", "rw")
	}
	tr.Mount("/target/var", "ext4", "/dev/mapper/var_crypt", "253:1", "rw")
	tr.Mkdir("/target/etc/cryptsetup-keys.d").Mkdir("/target/var/keys")
	tr.DevLink("/dev/mapper/root_crypt", "dm-0").DevLink("/dev/mapper/var_crypt", "dm-1")
	if err := tr.Finish(); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestEncryptedDir(t *testing.T) {
	for _, tt := range []struct {
		name     string
		mounted  bool
		dir      string
		mappings []string
		want     string
	}{
		{"on the planned root", true, "/target/etc/cryptsetup-keys.d", []string{"/dev/mapper/root_crypt"}, ""},
		{"encrypted, no volume named", true, "/target/etc/cryptsetup-keys.d", nil, ""},
		{"not made yet", true, "/target/etc/cryptsetup-keys.d/new/deeper", []string{"/dev/mapper/root_crypt"}, ""},
		// The hole: after a reboot the target is not mounted and the key
		// directory is a plain directory on the plaintext root.
		{"target not mounted", false, "/target/etc/cryptsetup-keys.d", []string{"/dev/mapper/root_crypt"}, "/target/etc/cryptsetup-keys.d is on plaintext storage"},
		{"another encrypted volume", true, "/target/var/keys", []string{"/dev/mapper/root_crypt"}, "is on encrypted storage ("},
	} {
		t.Run(tt.name, func(t *testing.T) {
			root := testRoot(t, tt.mounted)
			err := EncryptedDir(root, tt.dir, tt.mappings...)
			if (tt.want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tt.want)) {
				t.Fatalf("got %v, want %q", err, tt.want)
			}
			if tt.name == "another encrypted volume" && !strings.Contains(err.Error(), "but not on [/dev/mapper/root_crypt]") {
				t.Errorf("got %v", err)
			}
		})
	}
}

// A disk is told from another by its identifiers, not its /dev name: the
// kernel names disks in probe order, so after a reboot /dev/sdb may be
// the disk that was /dev/sdc.
func TestIdentity(t *testing.T) {
	root := t.TempDir()
	tr := blockstacktest.New(root)
	tr.Disk("sdb", "8:16", 100<<30).Disk("sdc", "8:32", 100<<30)
	tr.Loop("loop0", "7:0", "/var/tmp/disk0.img", 2<<30)
	tr.File("/sys/class/block/sdb/device/serial", "WD-111\n", 0o644)
	tr.DevLink("/dev/disk/by-id/ata-WD-111", "sdb")
	if err := tr.Finish(); err != nil {
		t.Fatal(err)
	}
	sdb, err := Identify(root, "/dev/sdb")
	if err != nil {
		t.Fatal(err)
	}
	if sdb.Size != 100<<30 || sdb.Serial != "WD-111" || strings.Join(sdb.ByID, " ") != "/dev/disk/by-id/ata-WD-111" {
		t.Errorf("sdb: %+v", sdb)
	}
	if err := sdb.Same(sdb); err != nil {
		t.Error(err)
	}
	// The same name for another disk of the same size: its by-id links
	// (and serial) differ.
	other := sdb
	other.ByID, other.Serial = []string{"/dev/disk/by-id/ata-WD-222"}, "WD-222"
	if err := sdb.Same(other); err == nil || !strings.Contains(err.Error(), "is not the disk it was") || !strings.Contains(err.Error(), "known as /dev/disk/by-id/ata-WD-222, was /dev/disk/by-id/ata-WD-111") {
		t.Errorf("another disk: %v", err)
	}
	loop, err := Identify(root, "/dev/loop0")
	if err != nil || loop.Backing != "/var/tmp/disk0.img" || loop.Size != 2<<30 {
		t.Fatalf("loop0: %+v %v", loop, err)
	}
	moved := loop
	moved.Backing = "/var/tmp/disk1.img"
	if err := loop.Same(moved); err == nil || !strings.Contains(err.Error(), "backing file /var/tmp/disk1.img, was /var/tmp/disk0.img") {
		t.Errorf("another loop file: %v", err)
	}
	smaller := loop
	smaller.Size = 1 << 30
	if err := loop.Same(smaller); err == nil || !strings.Contains(err.Error(), "size 1073741824 bytes, was 2147483648") {
		t.Errorf("another size: %v", err)
	}
	if _, err := Identify(root, "/dev/sdz"); err == nil {
		t.Error("a missing device has an identity")
	}
}
