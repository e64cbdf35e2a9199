package apply

import (
	"context"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cryptshift/cryptshift/internal/harness/testtier"
)

func TestWriteBlockAndRestore(t *testing.T) {
	block := "# BEGIN cryptshift layout x\nroot_crypt UUID=1 none luks\n# END cryptshift layout x\n"
	block2 := "# BEGIN cryptshift layout x\nroot_crypt UUID=2 none luks\n# END cryptshift layout x\n"
	tests := []struct {
		name   string
		before *string
	}{
		{"absent", nil},
		{"with admin lines", ptr("# admin\nold_crypt /dev/sdz none luks")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := filepath.Join(t.TempDir(), "etc", "crypttab")
			if tt.before != nil {
				os.MkdirAll(filepath.Dir(f), 0o755)
				os.WriteFile(f, []byte(*tt.before), 0o640)
			}
			if err := WriteBlock(f, block); err != nil {
				t.Fatal(err)
			}
			if err := WriteBlock(f, block); err != nil { // a rerun must not add it twice
				t.Fatal(err)
			}
			if err := WriteBlock(f, block2); err != nil { // a changed block replaces the old one
				t.Fatal(err)
			}
			got, _ := os.ReadFile(f)
			want := block2
			if tt.before != nil {
				want = *tt.before + "\n" + block2
			}
			if string(got) != want {
				t.Fatalf("got %q, want %q", got, want)
			}
			if tt.before != nil {
				if st, _ := os.Stat(f); st.Mode().Perm() != 0o640 {
					t.Errorf("mode changed to %v", st.Mode())
				}
			}
			if err := Restore(f); err != nil {
				t.Fatal(err)
			}
			got, err := os.ReadFile(f)
			switch {
			case tt.before == nil && !os.IsNotExist(err):
				t.Errorf("restore left %q where there was no file", got)
			case tt.before != nil && string(got) != *tt.before:
				t.Errorf("restore gave %q, want %q", got, *tt.before)
			}
			left, _ := filepath.Glob(f + ".cryptshift-*")
			if len(left) != 0 {
				t.Errorf("restore left %v", left)
			}
		})
	}
}

func ptr(s string) *string { return &s }

func TestWriteBlockRefusesUnmarked(t *testing.T) {
	if err := WriteBlock(filepath.Join(t.TempDir(), "f"), "x y z\n"); err == nil {
		t.Fatal("an unmarked block was written")
	}
}

func TestKeyFile(t *testing.T) {
	p := filepath.Join(t.TempDir(), "keys", "var.key")
	if err := KeyFile(p, 4096); err != nil {
		t.Fatal(err)
	}
	st, _ := os.Stat(p)
	dst, _ := os.Stat(filepath.Dir(p))
	if st.Size() != 4096 || st.Mode().Perm() != 0o400 || dst.Mode().Perm() != 0o700 {
		t.Fatalf("size %d mode %v dir %v", st.Size(), st.Mode(), dst.Mode())
	}
	first, _ := os.ReadFile(p)
	if err := KeyFile(p, 4096); err != nil { // a rerun keeps the key a keyslot may use
		t.Fatal(err)
	}
	again, _ := os.ReadFile(p)
	if string(first) != string(again) {
		t.Fatal("a rerun replaced an existing key file")
	}
	if tmp, _ := filepath.Glob(filepath.Join(filepath.Dir(p), ".*tmp*")); len(tmp) != 0 {
		t.Fatalf("temporary files left: %v", tmp)
	}
}

func TestParsePartSpec(t *testing.T) {
	p, err := parsePartSpec("3:start=1048576,size=2097152,type=E6D6D379-F507-44C2-A23C-238F2A3DF928,name=pv,uuid=u")
	if err != nil || p.number != 3 || p.start != 1<<20 || p.size != 2<<20 || p.name != "pv" || p.uuid != "u" {
		t.Fatalf("got %+v %v", p, err)
	}
	for _, bad := range []string{"x", "0:start=1", "1:start=a", "1:color=red"} {
		if _, err := parsePartSpec(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

// The GPT go-diskfs writes is the one sfdisk reads back.
func TestHostPartitionImage(t *testing.T) {
	testtier.Host(t, "sfdisk")
	img := filepath.Join(t.TempDir(), "disk.img")
	os.WriteFile(img, nil, 0o600)
	os.Truncate(img, 64<<20)
	// stale data where partition 2 will start, to check --wipe-partitions
	f, _ := os.OpenFile(img, os.O_WRONLY, 0)
	f.WriteAt([]byte(strings.Repeat("OLD", 1000)), 17<<20)
	f.Close()
	err := Partition(img, "5fc49146-841c-4e88-9437-6e1c0e2f7a11", []string{
		"1:start=1048576,size=16777216,type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B,name=esp,uuid=0b6a3c0e-8d3b-4a56-9c1e-2f4a5b6c7d8e",
		"2:start=17825792,size=46137344,type=E6D6D379-F507-44C2-A23C-238F2A3DF928,name=pv,uuid=1b6a3c0e-8d3b-4a56-9c1e-2f4a5b6c7d8e",
	}, true)
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("sfdisk", "--json", img).Output()
	if err != nil {
		t.Fatal(err)
	}
	var got struct {
		PT struct {
			Label      string `json:"label"`
			ID         string `json:"id"`
			Partitions []struct {
				Start, Size int64
				Type, UUID  string
				Name        string
			} `json:"partitions"`
		} `json:"partitiontable"`
	}
	json.Unmarshal(out, &got)
	if got.PT.Label != "gpt" || !strings.EqualFold(got.PT.ID, "5fc49146-841c-4e88-9437-6e1c0e2f7a11") || len(got.PT.Partitions) != 2 {
		t.Fatalf("sfdisk reads %s", out)
	}
	p2 := got.PT.Partitions[1]
	if p2.Start != 17825792/512 || p2.Size != 46137344/512 || p2.Name != "pv" || !strings.EqualFold(p2.Type, "E6D6D379-F507-44C2-A23C-238F2A3DF928") ||
		!strings.EqualFold(p2.UUID, "1b6a3c0e-8d3b-4a56-9c1e-2f4a5b6c7d8e") {
		t.Errorf("partition 2: %+v", p2)
	}
	b, _ := os.ReadFile(img)
	if strings.Contains(string(b[17<<20:18<<20]), "OLD") {
		t.Error("the old data at the start of partition 2 was not cleared")
	}
}

// Rolling back one block keeps the others: a migration's crypttab entries
// written after an apply's must survive the apply's rollback, and the
// original comes back exactly once nothing else is left.
func TestRemoveBlockKeepsOtherBlocks(t *testing.T) {
	f := filepath.Join(t.TempDir(), "crypttab")
	orig := "# admin\nold_crypt /dev/sdz none luks\n"
	os.WriteFile(f, []byte(orig), 0o600)
	applyBlock := "# BEGIN cryptshift layout mail\nroot_crypt UUID=1 none luks\n# END cryptshift layout mail\n"
	migrateBlock := "# BEGIN cryptshift migrate mx\nmx-vda_crypt UUID=2 /etc/k luks\n# END cryptshift migrate mx\n"
	if err := WriteBlock(f, applyBlock); err != nil {
		t.Fatal(err)
	}
	if err := WriteBlock(f, migrateBlock); err != nil {
		t.Fatal(err)
	}
	if err := Internal(context.Background(), nil, []string{"restore", "--file", f, "--block", "crypttab:mail"}, nil, io.Discard); err != nil {
		t.Fatal(err)
	}
	if got := string(mustRead(t, f)); got != orig+migrateBlock {
		t.Fatalf("after the apply's rollback: %q", got)
	}
	if err := RemoveBlock(f, "# BEGIN cryptshift migrate mx", "# END cryptshift migrate mx"); err != nil {
		t.Fatal(err)
	}
	if got := string(mustRead(t, f)); got != orig {
		t.Fatalf("after both rollbacks: %q, want the original", got)
	}
	if left, _ := filepath.Glob(f + ".cryptshift-*"); len(left) != 0 {
		t.Errorf("backups left: %v", left)
	}
	if st, _ := os.Stat(f); st.Mode().Perm() != 0o600 {
		t.Errorf("mode %v", st.Mode())
	}
}
