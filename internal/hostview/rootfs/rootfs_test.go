package rootfs

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func TestResolve(t *testing.T) {
	dir := t.TempDir()
	mk := func(p string) {
		if err := os.MkdirAll(filepath.Join(dir, p), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	ln := func(p, target string) {
		if err := os.Symlink(target, filepath.Join(dir, p)); err != nil {
			t.Fatal(err)
		}
	}
	mk("var/spool/mail")
	mk("srv")
	ln("var/mail", "spool/mail")       // relative
	ln("srv/abs", "/var/spool")        // absolute: must stay inside the root
	ln("srv/up", "../../../../../etc") // climbing above the root stops at the root
	ln("loop1", "loop2")
	ln("loop2", "/loop1")
	tests := []struct{ in, want string }{
		{"/var/mail/bob", "/var/spool/mail/bob"},
		{"/srv/abs/mail", "/var/spool/mail"},
		{"/srv/up/fstab", "/etc/fstab"},
		{"/var/crash/x/y", "/var/crash/x/y"}, // missing components kept
		{"var/./spool/../mail", "/var/spool/mail"},
	}
	for _, tt := range tests {
		got, err := Resolve(Dir(dir), tt.in)
		if err != nil || got != tt.want {
			t.Errorf("Resolve(%q): got %q, %v; want %q", tt.in, got, err, tt.want)
		}
	}
	if _, err := Resolve(Dir(dir), "/loop1/x"); !errors.Is(err, ErrLoop) {
		t.Errorf("symlink loop: got %v, want ErrLoop", err)
	}
}
