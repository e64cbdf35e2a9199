package inventory

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/cryptshift/cryptshift/internal/hostview/rootfs"
)

// HasTPM2 reads a captured tree the way the kernel lays it out: the class
// entry is a symlink into /sys/devices.
func TestHasTPM2(t *testing.T) {
	tree := func(t *testing.T, files map[string]string, links map[string]string) rootfs.FS {
		dir := t.TempDir()
		for p, data := range files {
			f := filepath.Join(dir, p)
			if err := os.MkdirAll(filepath.Dir(f), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(f, []byte(data), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		for p, target := range links {
			f := filepath.Join(dir, p)
			if err := os.MkdirAll(filepath.Dir(f), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink(target, f); err != nil {
				t.Fatal(err)
			}
		}
		return rootfs.Dir(dir)
	}
	for _, c := range []struct {
		name  string
		files map[string]string
		links map[string]string
		want  bool
		why   string
	}{
		{"none", nil, nil, false, "/sys/class/tpm is empty or missing"},
		{"tpm2 via sysfs link",
			map[string]string{"sys/devices/platform/MSFT0101:00/tpm/tpm0/tpm_version_major": "2\n"},
			map[string]string{"sys/class/tpm/tpm0": "../../devices/platform/MSFT0101:00/tpm/tpm0"},
			true, "/sys/class/tpm/tpm0/tpm_version_major is 2"},
		{"tpm 1.2", map[string]string{"sys/class/tpm/tpm0/tpm_version_major": "1\n"}, nil, false, "/sys/class/tpm lists no TPM 2.0"},
		{"old kernel, resource manager node", map[string]string{"sys/class/tpm/tpm0/dev": "10:224\n", "dev/tpmrm0": ""}, nil, true, "/dev/tpmrm0 exists"},
		{"old kernel, no resource manager", map[string]string{"sys/class/tpm/tpm0/dev": "10:224\n"}, nil, false, "/sys/class/tpm lists no TPM 2.0"},
		{"a link out of the tree is not followed",
			nil, map[string]string{"sys/class/tpm/tpm0": "/sys/devices/platform/MSFT0101:00/tpm/tpm0"}, false, "/sys/class/tpm lists no TPM 2.0"},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, why := HasTPM2(tree(t, c.files, c.links))
			if got != c.want || why != c.why {
				t.Errorf("HasTPM2 = %v, %q; want %v, %q", got, why, c.want, c.why)
			}
		})
	}
}

// An inventory says true or false; one made before the field existed
// says nothing, which the planner reads as unknown.
func TestInventoryTPM2Field(t *testing.T) {
	no := false
	b, err := json.Marshal(Inventory{APIVersion: APIVersion, Kind: Kind, TPM2: &no})
	if err != nil {
		t.Fatal(err)
	}
	var back Inventory
	if err := json.Unmarshal(b, &back); err != nil || back.TPM2 == nil || *back.TPM2 {
		t.Fatalf("tpm2:false did not survive JSON (%s): %v %v", b, back.TPM2, err)
	}
	var old Inventory
	if err := json.Unmarshal([]byte(`{"apiVersion":"cryptshift/v1","kind":"Inventory","devices":[]}`), &old); err != nil || old.TPM2 != nil {
		t.Fatalf("an old inventory reads as %v, want unknown (nil): %v", old.TPM2, err)
	}
}
