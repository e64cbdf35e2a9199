package main

import (
	"bytes"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/cryptshift/cryptshift/internal/exitcode"
)

// TestMigrateRecoveryKeyFile: a new recovery key goes to a new 0400 file
// (never over an existing one) and a resumed migration reads it back from
// the flag's file or, without the flag, from the file the journal names.
func TestMigrateRecoveryKeyFile(t *testing.T) {
	dir := t.TempDir()
	f := filepath.Join(dir, "rk")
	var out bytes.Buffer
	k, err := migrateRecoveryKey(&out, f, false, "")
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`^[0-9A-Z]{5}(-[0-9A-Z]{5}){7}$`).Match(k) {
		t.Errorf("recovery key %q is not 8 groups of 5", k)
	}
	st, err := os.Stat(f)
	if err != nil || st.Mode().Perm() != 0o400 {
		t.Fatalf("recovery key file: %v %v", st, err)
	}
	if strings.Contains(out.String(), string(k)) || !strings.Contains(out.String(), "written to "+f) {
		t.Errorf("output: %q", out.String())
	}
	if _, err := migrateRecoveryKey(&out, f, false, ""); err == nil || !strings.Contains(err.Error(), "does not exist yet") || exitcode.Of(err) != exitcode.Usage {
		t.Errorf("an existing file was not refused: %v", err)
	}
	for _, tt := range []struct{ flag, recorded string }{{f, ""}, {"", f}, {f, "/nonexistent"}} {
		back, err := migrateRecoveryKey(&out, tt.flag, true, tt.recorded)
		if err != nil || !bytes.Equal(back, k) {
			t.Errorf("resume (flag %q, journal %q): got %q, %v", tt.flag, tt.recorded, back, err)
		}
	}
}
