package probe

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cryptshift/cryptshift/internal/harness/testtier"
)

func TestBlankAndUnknown(t *testing.T) {
	if r := Bytes(make([]byte, ReadSize)); r != nil {
		t.Errorf("zeros: got %+v, want nil (blank)", r)
	}
	b := make([]byte, ReadSize)
	b[70000%len(b)] = 1
	if r := Bytes(b); r == nil || r.Type != "unknown" {
		t.Errorf("unnamed data: got %+v, want unknown", r)
	}
}

// blkid is the oracle: every image made by the real tools must be named
// as blkid -p names it, with the same UUID and label.
func TestHostProbeAgainstBlkid(t *testing.T) {
	testtier.Host(t, "blkid", "mkfs.ext4", "mkfs.vfat", "mkswap", "cryptsetup")
	dir := t.TempDir()
	pass := filepath.Join(dir, "pass")
	os.WriteFile(pass, []byte("probe-test-passphrase"), 0o600)
	tests := []struct {
		name string
		size int64
		cmd  []string
	}{
		{"ext4", 32 << 20, []string{"mkfs.ext4", "-q", "-L", "mail", "-U", "0b6a3c0e-8d3b-4a56-9c1e-2f4a5b6c7d8e", "IMG"}},
		{"ext2", 8 << 20, []string{"mkfs.ext2", "-q", "-L", "old", "IMG"}},
		{"vfat", 64 << 20, []string{"mkfs.vfat", "-F", "32", "-i", "1A2B3C4D", "-n", "ESP", "IMG"}},
		{"vfat16", 16 << 20, []string{"mkfs.vfat", "-F", "16", "-n", "SMALL", "IMG"}},
		{"swap", 16 << 20, []string{"mkswap", "-L", "swp", "-U", "11112222-3333-4444-8555-666677778888", "IMG"}},
		{"luks2", 32 << 20, []string{"cryptsetup", "luksFormat", "--batch-mode", "--type", "luks2", "--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000",
			"--label", "vmail", "--key-file", pass, "IMG"}},
		{"luks1", 32 << 20, []string{"cryptsetup", "luksFormat", "--batch-mode", "--type", "luks1", "--pbkdf-force-iterations", "1000", "--key-file", pass, "IMG"}},
	}
	if _, err := exec.LookPath("mkfs.xfs"); err == nil {
		tests = append(tests, struct {
			name string
			size int64
			cmd  []string
		}{"xfs", 300 << 20, []string{"mkfs.xfs", "-q", "-L", "data", "IMG"}})
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			img := filepath.Join(dir, tt.name+".img")
			if err := os.WriteFile(img, nil, 0o600); err != nil {
				t.Fatal(err)
			}
			os.Truncate(img, tt.size)
			args := append([]string{}, tt.cmd[1:]...)
			for i := range args {
				if args[i] == "IMG" {
					args[i] = img
				}
			}
			if out, err := exec.Command(tt.cmd[0], args...).CombinedOutput(); err != nil {
				t.Fatalf("%s: %v\n%s", tt.cmd[0], err, out)
			}
			want := blkid(t, img)
			f, _ := os.Open(img)
			defer f.Close()
			got, err := Probe(f)
			if err != nil || got == nil {
				t.Fatalf("probe: %v %v", got, err)
			}
			if got.Type != want["TYPE"] || !strings.EqualFold(got.UUID, want["UUID"]) || got.Label != want["LABEL"] {
				t.Errorf("got type %q uuid %q label %q; blkid says %v", got.Type, got.UUID, got.Label, want)
			}
		})
	}
}

func blkid(t *testing.T, img string) map[string]string {
	out, err := exec.Command("blkid", "-p", "-o", "export", img).Output()
	if err != nil {
		t.Fatalf("blkid: %v", err)
	}
	m := map[string]string{}
	for _, l := range strings.Split(string(out), "\n") {
		if k, v, ok := strings.Cut(l, "="); ok {
			m[k] = v
		}
	}
	return m
}

func FuzzBytes(f *testing.F) {
	f.Add(make([]byte, 2048))
	f.Fuzz(func(t *testing.T, b []byte) { Bytes(b) })
}
