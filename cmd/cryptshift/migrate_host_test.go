package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// migrate-host and unlock: usage errors exit 2, a refused move exits 4
// and says nothing was changed; the help names the verbs.
func TestMigrateHostAndUnlockStatuses(t *testing.T) {
	dir := t.TempDir()
	ly := filepath.Join(dir, "mail-host.yaml")
	out := run(t, "plan", "--example", "mail-host", "-o", "layout")
	if err := os.WriteFile(ly, []byte(out.stdout), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"migrate-host"}, 2, "-f LAYOUT"},
		{[]string{"migrate-host", "-f", ly, "-o", "yaml"}, 2, "invalid argument \"yaml\" for \"-o, --output\" flag: use text or json"},
		{[]string{"migrate-host", "-f", ly, "--dry-run", "--resume"}, 2, "either --dry-run or --resume"},
		{[]string{"migrate-host", "-f", filepath.Join(dir, "missing.yaml")}, 3, "cannot read layout"},
		{[]string{"migrate-host", "-f", ly, "--target", filepath.Join(dir, "not-mounted"), "--dry-run"}, 4, "is not mounted; lay the layout out first with: cryptshift apply -f LAYOUT --target "},
		// The deprecated alias still works.
		{[]string{"migrate-host", "-f", ly, "--root", filepath.Join(dir, "not-mounted"), "--dry-run"}, 4, "is not mounted"},
		{[]string{"unlock", "add", "fido2", "--volume", "root_crypt", "--dry-run"}, 2, "invalid argument"},
		{[]string{"unlock", "add", "tang", "--volume", "root_crypt"}, 2, "--passphrase-file"},
	} {
		r := run(t, tc.args...)
		if r.code != tc.code || !strings.Contains(r.stderr, tc.want) {
			t.Errorf("%v: exit %d, stderr %q; want exit %d and %q", tc.args, r.code, r.stderr, tc.code, tc.want)
		}
	}
}
