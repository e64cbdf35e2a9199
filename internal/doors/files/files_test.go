package files

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func mustRead(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

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
	if err := RemoveBlock(f, "# BEGIN cryptshift layout mail", "# END cryptshift layout mail"); err != nil {
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

func TestRemove(t *testing.T) {
	p := filepath.Join(t.TempDir(), "a.img")
	if err := os.WriteFile(p, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	r := Remove{Path: p}
	if got, want := strings.Join(r.Argv(), " "), "rm -f "+p; got != want {
		t.Errorf("Argv: got %q, want %q", got, want)
	}
	for i := 0; i < 2; i++ { // the second time there is nothing to remove
		if err := r.Run(); err != nil {
			t.Fatalf("run %d: %v", i, err)
		}
	}
	if _, err := os.Stat(p); !os.IsNotExist(err) {
		t.Errorf("%s still there: %v", p, err)
	}
	dir := filepath.Join(t.TempDir(), "d")
	if err := os.MkdirAll(filepath.Join(dir, "x"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := (Remove{Path: dir}).Run(); err == nil || !strings.Contains(err.Error(), "cannot remove "+dir) {
		t.Errorf("non-empty directory: got %v", err)
	}
}
