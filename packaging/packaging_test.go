package packaging

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func TestDebianVersion(t *testing.T) {
	tests := []struct{ describe, want string }{
		{"v1.2.0", "1.2.0"},
		{"1.2.0", "1.2.0"},
		{"v1.2.0-3-gabc1234", "1.2.0+3.gabc1234"},
		{"v1.2.0-3-gabc1234-dirty", "1.2.0+3.gabc1234+dirty"},
		{"v1.2.0-dirty", "1.2.0+dirty"},
		{"43ad30f", "0.0.0~git.43ad30f"},
		{"43ad30f-dirty", "0.0.0~git.43ad30f+dirty"},
		{"dev", "0.0.0~dev"},
		{"0.0.0-test", "0.0.0.test"},
	}
	for _, tt := range tests {
		if got := DebianVersion(tt.describe); got != tt.want {
			t.Errorf("DebianVersion(%q) = %q, want %q", tt.describe, got, tt.want)
		}
	}
}

// TestDebianVersionOrder checks with dpkg itself that versions sort the way
// the releases they name do, when dpkg is there to ask.
func TestDebianVersionOrder(t *testing.T) {
	if _, err := exec.LookPath("dpkg"); err != nil {
		t.Skip("dpkg not installed: cannot ask it how versions sort")
	}
	ordered := []string{"43ad30f", "v0.9.0", "v0.9.0-1-gabc1234", "v0.9.0-2-gdef5678", "v1.0.0"}
	for i := 1; i < len(ordered); i++ {
		a, b := DebianVersion(ordered[i-1]), DebianVersion(ordered[i])
		if err := exec.Command("dpkg", "--compare-versions", a, "lt", b).Run(); err != nil {
			t.Errorf("dpkg does not sort %s (%s) before %s (%s)", a, ordered[i-1], b, ordered[i])
		}
	}
}

func TestWriteSums(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "b"), []byte("hello\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "a"), nil, 0o644)
	p, err := WriteSums(dir, []string{"b", "a"})
	if err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(p)
	// sha256 of "" and of "hello\n", sorted by name, as sha256sum prints.
	want := "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855  a\n" +
		"5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03  b\n"
	if string(got) != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

// TestPlaybookFiles: the package ships the playbooks, role and examples, not
// the Go embedding code or the CI fixtures.
func TestPlaybookFiles(t *testing.T) {
	files, err := playbookFiles("../playbooks")
	if err != nil {
		t.Fatal(err)
	}
	all := strings.Join(files, "\n")
	for _, want := range []string{"README.md", "verify.yml", "roles/cryptshift/defaults/main.yml", "examples/mail-host.yaml"} {
		if !strings.Contains(all, want) {
			t.Errorf("package would lack playbooks/%s; it has:\n%s", want, all)
		}
	}
	for _, f := range files {
		if strings.HasSuffix(f, ".go") || strings.HasPrefix(f, "inventory-ci") {
			t.Errorf("package would ship playbooks/%s", f)
		}
	}
}

// TestUserDocs: the .deb carries the layout reference, the CLI contract
// and the JSON schemas, and packaging fails when one is missing.
func TestUserDocs(t *testing.T) {
	docs, err := userDocs("..")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"docs/layout.md", "docs/cli.md", "docs/pool-targets.md", "docs/schema/verify-report.schema.json", "docs/schema/inventory.schema.json", "docs/schema/doctor.schema.json"} {
		found := false
		for _, d := range docs {
			found = found || d == want
		}
		if !found {
			t.Errorf("the package documentation lacks %s: %v", want, docs)
		}
	}
	if _, err := userDocs(t.TempDir()); err == nil {
		t.Error("packaging a tree without docs/layout.md succeeded")
	}
}
