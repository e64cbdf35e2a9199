package probe

import (
	"bytes"
	"encoding/binary"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cryptshift/cryptshift/internal/harness/testtier"
)

// sparse makes a sparse file of size bytes with the given bytes written at
// their offsets.
func sparse(t *testing.T, size int64, writes map[int64][]byte) *os.File {
	t.Helper()
	f, err := os.Create(filepath.Join(t.TempDir(), "img"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	for off, b := range writes {
		if _, err := f.WriteAt(b, off); err != nil {
			t.Fatal(err)
		}
	}
	return f
}

func le16(v uint16) []byte { b := make([]byte, 2); binary.LittleEndian.PutUint16(b, v); return b }

// Each leftover that a first-68-KiB probe misses makes the device not
// blank, and the finding says what and where.
func TestBlankFindsLeftoversBeyondTheStart(t *testing.T) {
	const size = 300 << 20
	tests := []struct {
		name   string
		writes map[int64][]byte
		want   string
	}{
		{"zeros", nil, ""},
		{"LUKS2 secondary header of a 1 MiB header", map[int64][]byte{1 << 20: []byte("SKUL\xba\xbe\x00\x02")},
			"a LUKS2 secondary header at byte 1048576 (the primary header is gone, but cryptsetup can restore it from this copy)"},
		{"LUKS2 secondary header of a 4 MiB header", map[int64][]byte{4 << 20: []byte("SKUL\xba\xbe\x00\x02")},
			"a LUKS2 secondary header at byte 4194304"},
		{"backup GPT", map[int64][]byte{size - 512: []byte("EFI PART")},
			"a backup GPT header in the last 512-byte sector (the primary table is gone)"},
		{"md 1.0 superblock at the end", map[int64][]byte{size - 8192: []byte(mdMagic)},
			"an md RAID superblock at byte 314564608"},
		{"md 0.90 superblock at the end", map[int64][]byte{size - 65536: []byte(mdMagic)},
			"an md RAID superblock at byte 314507264"},
		{"ext4 backup superblock (4 KiB blocks)", map[int64][]byte{128<<20 + 0x38: le16(0xEF53)},
			"an ext2/3/4 backup superblock at byte 134217728"},
		{"ext2 backup superblock (1 KiB blocks)", map[int64][]byte{8193<<10 + 0x38: le16(0xEF53)},
			"an ext2/3/4 backup superblock at byte 8389632"},
		{"btrfs mirror", map[int64][]byte{64<<20 + 64: []byte("_BHRfS_M")},
			"a btrfs superblock copy at byte 67108864"},
		{"data in the body", map[int64][]byte{size / BodySamples * 17: []byte("Subject: payroll")},
			"no signature at its start, but data at byte 83558400"},
		{"data in the head beyond 68 KiB", map[int64][]byte{900 << 10: {1}},
			"no signature at its start, but data at byte 921600"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := sparse(t, size, tt.writes)
			if r, err := Probe(f); err != nil || r != nil {
				t.Fatalf("the head probe should see zeros: %+v %v", r, err)
			}
			r, err := Blank(f, size)
			if err != nil {
				t.Fatal(err)
			}
			switch {
			case tt.want == "" && r != nil:
				t.Fatalf("got %+v, want blank", r)
			case tt.want != "" && (r == nil || r.Type != "unknown" || !strings.Contains(r.Note, tt.want)):
				t.Fatalf("got %+v, want unknown with note %q", r, tt.want)
			}
		})
	}
}

// Small devices and short reads: nothing beyond the end is read, and a
// zero-sized device is blank.
func TestBlankSmallDevices(t *testing.T) {
	for _, size := range []int64{0, 1, 511, 4096, 70000, 1 << 20, 3<<20 + 1} {
		f := sparse(t, size, nil)
		if r, err := Blank(f, size); err != nil || r != nil {
			t.Errorf("size %d: got %+v, %v; want blank", size, r, err)
		}
	}
	// The device is shorter than it was said to be: what can be read is
	// judged, and the read error is not a finding.
	f := sparse(t, 4096, map[int64][]byte{100: {7}})
	if r, err := Blank(f, 1<<30); err != nil || r == nil || !strings.Contains(r.Note, "byte 100") {
		t.Errorf("got %+v, %v", r, err)
	}
}

// md 1.2 members carry their superblock at 4 KiB: a signature, not
// anonymous data.
func TestProbeMDMember(t *testing.T) {
	b := make([]byte, ReadSize)
	copy(b[4096:], mdMagic)
	binary.LittleEndian.PutUint32(b[4100:], 1)
	copy(b[4096+16:], []byte{0xde, 0xad, 0xbe, 0xef, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12})
	r := Bytes(b)
	if r == nil || r.Type != "linux_raid_member" || r.UUID != "deadbeef-0102-0304-0506-0708090a0b0c" {
		t.Fatalf("got %+v", r)
	}
}

// Real tools leave the leftovers; their own readers are the oracle that
// the data is still there (blkid finds the LUKS2 copy, sfdisk reads the
// backup GPT, dumpe2fs the backup superblock), and Blank must see it too.
func TestHostBlankAgainstRealLeftovers(t *testing.T) {
	testtier.Host(t, "cryptsetup", "blkid", "sfdisk", "sgdisk", "mkfs.ext4", "dumpe2fs")
	dir := t.TempDir()
	pass := filepath.Join(dir, "pass")
	os.WriteFile(pass, []byte("blank-test-passphrase"), 0o600)
	run := func(t *testing.T, name string, args ...string) string {
		t.Helper()
		out, err := exec.Command(name, args...).CombinedOutput()
		if err != nil {
			t.Fatalf("%s %v: %v\n%s", name, args, err, out)
		}
		return string(out)
	}
	img := func(name string, size int64) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Truncate(p, size); err != nil {
			t.Fatal(err)
		}
		return p
	}
	zeroHead := func(t *testing.T, p string, n int64) {
		f, err := os.OpenFile(p, os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if _, err := f.WriteAt(make([]byte, n), 0); err != nil {
			t.Fatal(err)
		}
	}
	check := func(t *testing.T, p, want string) {
		t.Helper()
		f, err := os.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		st, _ := f.Stat()
		if r, _ := Probe(f); r != nil {
			t.Fatalf("%s: the head probe found %+v; the test wants its start wiped", p, r)
		}
		r, err := Blank(f, st.Size())
		if err != nil || r == nil || !strings.Contains(r.Note, want) {
			t.Errorf("%s: got %+v, %v; want a note with %q", p, r, err, want)
		}
	}

	t.Run("luks2 with its primary header wiped", func(t *testing.T) {
		p := img("luks.img", 64<<20)
		run(t, "cryptsetup", "luksFormat", "--batch-mode", "--type", "luks2", "--luks2-metadata-size", "1m", "--luks2-keyslots-size", "1m",
			"--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000", "--key-file", pass, p)
		zeroHead(t, p, 1<<20)
		if got := blkid(t, p)["TYPE"]; got != "crypto_LUKS" {
			t.Fatalf("blkid no longer sees the LUKS2 copy (%q): the test proves nothing", got)
		}
		check(t, p, "a LUKS2 secondary header at byte 1048576")
	})
	t.Run("gpt with its primary table wiped", func(t *testing.T) {
		p := img("gpt.img", 64<<20)
		cmd := exec.Command("sfdisk", "--quiet", p)
		cmd.Stdin = strings.NewReader("label: gpt\n,32M\n")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("sfdisk: %v\n%s", err, out)
		}
		zeroHead(t, p, 1<<20)
		// sgdisk falls back to the backup header and lists the partition.
		if out, _ := exec.Command("sgdisk", "--print", p).CombinedOutput(); !strings.Contains(string(out), "loaded backup partition table") {
			t.Fatalf("sgdisk does not read the backup table:\n%s", out)
		}
		check(t, p, "a backup GPT header in the last 512-byte sector")
	})
	t.Run("ext4 with its primary superblock wiped", func(t *testing.T) {
		p := img("ext4.img", 256<<20)
		run(t, "mkfs.ext4", "-q", "-b", "4096", p)
		zeroHead(t, p, 1<<20)
		// dumpe2fs exits 1 (the first block group's tables are gone too)
		// after printing the superblock it read.
		if out, _ := exec.Command("dumpe2fs", "-h", "-o", "superblock=32768", "-o", "blocksize=4096", p).CombinedOutput(); !strings.Contains(string(out), "Filesystem UUID") {
			t.Fatalf("dumpe2fs does not read the backup superblock:\n%s", out)
		}
		check(t, p, "an ext2/3/4 backup superblock at byte 134217728")
	})
}

// FuzzBlank: any content and any claimed size never panics Blank, and a
// finding always says what and where.
func FuzzBlank(f *testing.F) {
	f.Add([]byte{}, int64(0))
	f.Add([]byte("SKUL\xba\xbe"), int64(1<<30))
	f.Fuzz(func(t *testing.T, b []byte, size int64) {
		r, err := Blank(bytes.NewReader(b), size)
		if err == nil && r != nil && (r.Type != "unknown" || r.Note == "") {
			t.Fatalf("got %+v", r)
		}
	})
}
