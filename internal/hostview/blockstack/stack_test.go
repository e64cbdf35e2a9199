package blockstack_test

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/cryptshift/cryptshift/internal/hostview/blockstack"
	"github.com/cryptshift/cryptshift/internal/hostview/blockstack/blockstacktest"
	"github.com/cryptshift/cryptshift/internal/hostview/rootfs"
)

const G = 1 << 30

type want struct {
	path  string
	class blockstack.Class
	crypt []string // kernel names of crypt nodes
	plain []string
	in    string // substring of the evidence
}

func TestLocate(t *testing.T) {
	tests := []struct {
		name  string
		build func(*blockstacktest.Tree)
		want  []want
	}{
		{
			name: "LUKS on LVM: one container per LV",
			build: func(b *blockstacktest.Tree) {
				b.Disk("sda", "8:0", 40*G).Part("sda", 1, "8:1", G, 1<<20).Part("sda", 2, "8:2", 39*G, G)
				b.LV("dm-0", "253:0", "vg0", "root", 10*G, "sda2")
				b.LV("dm-1", "253:1", "vg0", "swap", 2*G, "sda2")
				b.Crypt("dm-2", "253:2", "LUKS2", "root_crypt", 10*G, "dm-0")
				b.Crypt("dm-3", "253:3", "PLAIN", "swap_crypt", 2*G, "dm-1")
				b.Mount("/", "ext4", "/dev/mapper/root_crypt", "253:2", "")
				b.Mount("/boot", "ext4", "/dev/sda1", "8:1", "")
				b.Swap("/dev/dm-3", "partition", 2<<20)
			},
			want: []want{
				{path: "/var/spool/postfix", class: blockstack.Encrypted, crypt: []string{"dm-2"}, in: "/: ext4 /dev/mapper/root_crypt [253:2] → root_crypt (dm-2, LUKS2) → vg0-root (dm-0, LVM) → sda2 (sda part 2) → sda (disk)"},
				{path: "/boot/initrd.img", class: blockstack.Plaintext, plain: []string{"sda"}},
			},
		},
		{
			name: "LVM on LUKS: swap LV inside an encrypted PV (Lynis #1419 calls this unencrypted)",
			build: func(b *blockstacktest.Tree) {
				b.Disk("nvme0n1", "259:0", 100*G).Part("nvme0n1", 3, "259:3", 99*G, G)
				b.Crypt("dm-0", "253:0", "LUKS2", "nvme0n1p3_crypt", 99*G, "nvme0n1p3")
				b.LV("dm-1", "253:1", "vg0", "root", 50*G, "dm-0")
				b.LV("dm-2", "253:2", "vg0", "swap", 8*G, "dm-0")
				b.Mount("/", "ext4", "/dev/mapper/vg0-root", "253:1", "")
				b.Swap("/dev/dm-2", "partition", 8<<20)
			},
			want: []want{
				{path: "/dev/vg0/swap", class: blockstack.Encrypted, crypt: []string{"dm-0"}},
				{path: "/home", class: blockstack.Encrypted, crypt: []string{"dm-0"}, in: "nvme0n1p3 (nvme0n1 part 3)"},
			},
		},
		{
			name: "LV spanning an encrypted and a plaintext PV is plaintext",
			build: func(b *blockstacktest.Tree) {
				b.Disk("sda", "8:0", 10*G).Disk("sdb", "8:16", 10*G)
				b.Crypt("dm-0", "253:0", "LUKS2", "sda_crypt", 10*G, "sda")
				b.LV("dm-1", "253:1", "vg0", "data", 15*G, "dm-0", "sdb")
				b.Mount("/", "ext4", "/dev/mapper/vg0-data", "253:1", "")
			},
			want: []want{{path: "/x", class: blockstack.Plaintext, crypt: []string{"dm-0"}, plain: []string{"sdb"}, in: "→ [sda_crypt"}},
		},
		{
			name: "swap file on a loop device, tmpfs, bind mount and overlay",
			build: func(b *blockstacktest.Tree) {
				b.Disk("vda", "254:0", 20*G)
				b.Disk("vdb", "254:16", 20*G)
				b.Crypt("dm-0", "253:0", "LUKS2", "data", 20*G, "vdb")
				b.Mount("/", "ext4", "/dev/vda", "254:0", "")
				b.Mount("/srv", "ext4", "/dev/mapper/data", "253:0", "")
				b.BindMount("/var/mail", "/mail", "ext4", "/dev/mapper/data", "253:0", "")
				b.Mount("/tmp", "tmpfs", "tmpfs", "0:40", "rw,size=1g")
				b.Mount("/var/lib/containers/x", "overlay", "overlay", "0:41", "rw,lowerdir=/usr,upperdir=/srv/ov/up,workdir=/srv/ov/work")
				b.Loop("loop0", "7:0", "/srv/images/disk.img", G)
				b.Loop("loop1", "7:1", "/var/lib/plain.img", G)
				b.Symlink("/var/spool/mail", "../mail")
			},
			want: []want{
				{path: "/dev/loop0", class: blockstack.Plaintext, plain: []string{"vda"}}, // the device node lives on /
				{path: "/var/spool/mail/bob", class: blockstack.Encrypted, crypt: []string{"dm-0"}, in: "[bind /mail]"},
				{path: "/tmp/x", class: blockstack.RAM},
				{path: "/var/lib/containers/x/etc", class: blockstack.Encrypted, crypt: []string{"dm-0"}, in: "upperdir /srv: ext4"},
			},
		},
		{
			name: "zram with writeback to a plaintext partition",
			build: func(b *blockstacktest.Tree) {
				b.Disk("sda", "8:0", 10*G).Part("sda", 5, "8:5", G, G)
				b.Zram("zram0", "252:0", 4*G, "/dev/sda5")
				b.Zram("zram1", "252:1", 4*G, "")
				b.Mount("/", "ext4", "/dev/sda", "8:0", "")
				b.Mount("/var/cache/z", "ext4", "/dev/zram1", "252:1", "")
			},
			want: []want{{path: "/var/cache/z/a", class: blockstack.RAM}},
		},
		{
			name: "network and anonymous-device filesystems",
			build: func(b *blockstacktest.Tree) {
				b.Disk("sda", "8:0", 10*G)
				b.Crypt("dm-0", "253:0", "LUKS2", "btr", 10*G, "sda")
				b.Mount("/", "btrfs", "/dev/mapper/btr", "0:33", "rw,subvol=/@")
				b.Mount("/mnt/nfs", "nfs4", "server:/export", "0:50", "rw")
			},
			want: []want{
				{path: "/etc", class: blockstack.Encrypted, crypt: []string{"dm-0"}},
				{path: "/mnt/nfs/a", class: blockstack.Unknown, in: "/mnt/nfs: nfs4 server:/export"},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			b := blockstacktest.New(dir)
			tt.build(b)
			if err := b.Finish(); err != nil {
				t.Fatal(err)
			}
			s, err := blockstack.Scan(rootfs.Dir(dir))
			if err != nil {
				t.Fatal(err)
			}
			if len(s.Missing) > 0 {
				t.Fatalf("missing: %v", s.Missing)
			}
			for _, w := range tt.want {
				l := s.Locate(w.path)
				if l.Class != w.class {
					t.Errorf("%s: got class %s (%s), want %s", w.path, l.Class, l.Evidence, w.class)
				}
				if w.crypt != nil && !reflect.DeepEqual(l.Crypt, w.crypt) {
					t.Errorf("%s: got crypt %v, want %v", w.path, l.Crypt, w.crypt)
				}
				if w.plain != nil && !reflect.DeepEqual(l.Plain, w.plain) {
					t.Errorf("%s: got plain %v, want %v", w.path, l.Plain, w.plain)
				}
				if !strings.Contains(l.Evidence, w.in) {
					t.Errorf("%s: evidence %q does not contain %q", w.path, l.Evidence, w.in)
				}
			}
		})
	}
}

func TestClassifyDevices(t *testing.T) {
	dir := t.TempDir()
	b := blockstacktest.New(dir)
	b.Disk("sda", "8:0", 10*G).Part("sda", 5, "8:5", G, G)
	b.Disk("sdb", "8:16", 10*G)
	b.Crypt("dm-0", "253:0", "LUKS2", "sdb_crypt", 10*G, "sdb")
	b.Zram("zram0", "252:0", 4*G, "/dev/sda5")
	b.Zram("zram1", "252:1", 4*G, "/dev/mapper/sdb_crypt")
	b.Zram("zram2", "252:2", 4*G, "")
	b.LV("dm-1", "253:1", "vg0", "mail", G, "sda5")
	b.LVRole("dm-2", "253:2", "vg0", "snap", "cow", G, "sda5")
	b.Mount("/", "ext4", "/dev/sda", "8:0", "")
	if err := b.Finish(); err != nil {
		t.Fatal(err)
	}
	s, err := blockstack.Scan(rootfs.Dir(dir))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		dev   string
		class blockstack.Class
		role  string
	}{
		{"zram0", blockstack.Plaintext, ""},
		{"zram1", blockstack.RAM, ""}, // memory, spilling to an encrypted device
		{"zram2", blockstack.RAM, ""},
		{"dm-1", blockstack.Plaintext, ""},
		{"dm-2", blockstack.Plaintext, "cow"},
		{"dm-0", blockstack.Encrypted, ""},
	}
	for _, tt := range tests {
		d := s.Device(tt.dev)
		if d == nil {
			t.Fatalf("%s not scanned", tt.dev)
		}
		if got := s.Classify(d).Class; got != tt.class {
			t.Errorf("%s: got %s, want %s", tt.dev, got, tt.class)
		}
		if got := d.LVMRole(); got != tt.role {
			t.Errorf("%s: role got %q, want %q", tt.dev, got, tt.role)
		}
	}
	if got := s.Device("dm-0").CryptUUID(); got != strings.ReplaceAll(blockstacktest.CryptUUID("sdb_crypt"), "-", "") {
		t.Errorf("CryptUUID: got %q", got)
	}
	if d := s.Device("sda5"); d.Parent != "sda" || d.Partition != 5 || d.Start != G || d.LogicalSectorSize != 512 {
		t.Errorf("sda5: got %+v, want parent sda, partition 5, start 1 GiB, 512-byte sectors", d)
	}
	if got := s.Device("sda5").Holders; !reflect.DeepEqual(got, []string{"dm-1", "dm-2"}) {
		t.Errorf("sda5 holders: got %v", got)
	}
}

func TestScanMissing(t *testing.T) {
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "etc"), 0o755); err != nil {
		t.Fatal(err)
	}
	s, err := blockstack.Scan(rootfs.Dir(dir))
	if err != nil {
		t.Fatal(err)
	}
	if s.HaveSysfs() || s.HaveMounts() || s.HaveSwaps() {
		t.Errorf("got have sysfs/mounts/swaps %v/%v/%v on an empty tree, want all false (missing: %v)",
			s.HaveSysfs(), s.HaveMounts(), s.HaveSwaps(), s.Missing)
	}
	if got, want := s.HostTreeGaps(), []string{"proc/self/mountinfo", "proc/swaps", "sys/class/block"}; !reflect.DeepEqual(got, want) {
		t.Errorf("gaps of an empty tree: got %q, want %q", got, want)
	}
	if l := s.Locate("/tmp"); l.Class != blockstack.Unknown {
		t.Errorf("/tmp on an empty tree: got %s, want unknown", l.Class)
	}
}

// TestLiveRoot reads this machine: it must not fail and "/" must resolve.
func TestLiveRoot(t *testing.T) {
	s, err := blockstack.Scan(rootfs.Dir("/"))
	if err != nil {
		t.Fatal(err)
	}
	if !s.HaveMounts() {
		t.Skip("no mountinfo readable on this machine")
	}
	if l := s.Locate("/"); l.Mount == nil {
		t.Errorf("/ has no mount: %+v", l)
	}
}

// A disk's WWID and serial are read where the kernel puts them: under
// device/ for SCSI/SATA, on the disk itself for NVMe and virtio; a disk
// that has neither reads as unknown ("").
func TestScanDiskIdentifiers(t *testing.T) {
	dir := t.TempDir()
	b := blockstacktest.New(dir)
	b.Disk("sda", "8:0", 10*G).Part("sda", 1, "8:1", G, G)
	b.Disk("nvme0n1", "259:0", 10*G)
	b.Disk("vda", "254:0", 10*G)
	sda := "/sys/devices/pci0000:00/0000:00:01.0/block/sda"
	b.File(sda+"/device/wwid", "naa.5000c500a1b2c3d4\n", 0o444)
	b.File(sda+"/device/serial", "WD-WCC4N1234567\n", 0o444)
	b.File("/sys/devices/pci0000:00/0000:00:01.0/block/nvme0n1/wwid", "eui.0025388b91b2c3d4\n", 0o444)
	b.File("/sys/devices/pci0000:00/0000:00:01.0/block/nvme0n1/serial", "S4EWNX0N123456\n", 0o444)
	if err := b.Finish(); err != nil {
		t.Fatal(err)
	}
	s, err := blockstack.Scan(rootfs.Dir(dir))
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct{ dev, wwid, serial string }{
		{"sda", "naa.5000c500a1b2c3d4", "WD-WCC4N1234567"},
		{"sda1", "", ""}, // partitions are known by their disk
		{"nvme0n1", "eui.0025388b91b2c3d4", "S4EWNX0N123456"},
		{"vda", "", ""},
	} {
		d := s.Device(tt.dev)
		if d == nil {
			t.Fatalf("%s not scanned", tt.dev)
		}
		if d.WWID != tt.wwid || d.Serial != tt.serial {
			t.Errorf("%s: got WWID %q serial %q, want %q %q", tt.dev, d.WWID, d.Serial, tt.wwid, tt.serial)
		}
	}
}
