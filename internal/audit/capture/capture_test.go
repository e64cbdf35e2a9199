package capture

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cryptshift/cryptshift/internal/audit/manifest"
)

func fixedNow() time.Time { return time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC) }

// TestCaptureFixtures captures every fixture tree as if it were a live
// system and checks that verify answers the same on the capture, and that
// nothing but allow-listed configuration carries contents.
func TestCaptureFixtures(t *testing.T) {
	roots, err := filepath.Glob("../../../testdata/verify/*/root")
	if err != nil || len(roots) < 12 {
		t.Fatalf("got %d fixture trees (%v), want at least 12", len(roots), err)
	}
	for _, root := range roots {
		name := filepath.Base(filepath.Dir(root))
		t.Run(name, func(t *testing.T) {
			dest := filepath.Join(t.TempDir(), "cap")
			res, err := Capture(Options{Root: root, Dest: dest, Tool: "test", Now: fixedNow})
			if err != nil {
				t.Fatal(err)
			}
			if len(res.Mismatch) > 0 {
				t.Errorf("verify differs between the tree and its capture:\n%s", strings.Join(res.Mismatch, "\n"))
			}
			if res.LiveCheck.Summary.Pass+res.LiveCheck.Summary.Fail == 0 {
				t.Errorf("the live run judged nothing: %+v", res.LiveCheck.Summary)
			}
			checkNoContents(t, dest, res.LiveCheck.Inputs)
		})
	}
}

// checkNoContents fails for any file with contents that capture must not
// copy: key files, secret values, images beyond their header.
func checkNoContents(t *testing.T, dest string, inputs map[string]string) {
	t.Helper()
	filepath.Walk(dest, func(p string, fi os.FileInfo, err error) error {
		if err != nil || !fi.Mode().IsRegular() || fi.Size() == 0 {
			return err
		}
		rel := "/" + filepath.ToSlash(strings.TrimPrefix(p, dest+string(filepath.Separator)))
		switch {
		case copyable.MatchString(rel), rel == manifest.ManifestPath:
		case inputs[rel] == "passwd-file":
			b, _ := os.ReadFile(p)
			for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
				if f := strings.Split(l, ":"); len(f) > 1 && f[1] != "<redacted>" {
					t.Errorf("%s: password field copied: %q", rel, l)
				}
			}
		case inputs[rel] != "": // a configuration file verify read and named
		case strings.HasSuffix(rel, ".qcow2") && fi.Size() <= 64<<10: // header prefix
		default:
			t.Errorf("%s: %d bytes copied, want an empty stub", rel, fi.Size())
		}
		return nil
	})
}

func TestRedactPasswdFile(t *testing.T) {
	in := "anna@example.org:{SHA512-CRYPT}$6$x$y:5000:5000::/srv/mail/anna::userdb_quota_rule=*:storage=1G pass=hunter2\n# comment\n"
	want := "anna@example.org:<redacted>:5000:5000::/srv/mail/anna::userdb_quota_rule=*:storage=1G pass=<redacted>\n# comment\n"
	if got := string(RedactPasswdFile([]byte(in))); got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

func TestRedact(t *testing.T) {
	tests := []struct{ path, in, want string }{
		{"/etc/libvirt/qemu.conf", "vnc_password = \"hunter2\"\nauto_dump_path = \"/x\"\n", "vnc_password = <redacted>\nauto_dump_path = \"/x\"\n"},
		{"/etc/libvirt/qemu/mx.xml", "<graphics type='vnc' passwd='hunter2'/>", "<graphics type='vnc' passwd='<redacted>'/>"},
		{"/etc/dovecot/conf.d/10-ssl.conf", "ssl_key_password = s3cret\nssl = yes\n", "ssl_key_password = <redacted>\nssl = yes\n"},
		{"/etc/amavis/conf.d/50-user", "$MYHOME = '/srv/amavis';\n@lookup_sql_dsn = (['DBI:mysql:db', 'u', 'hunter2']);\n", "$MYHOME = '/srv/amavis';\n"},
		{"/etc/passwd", "anna:x:1000:1000::/home/anna:/bin/bash\n", "anna:x:1000:1000::/home/anna:/bin/bash\n"},
	}
	for _, tt := range tests {
		if got := string(Redact(tt.path, []byte(tt.in))); got != tt.want {
			t.Errorf("%s: got %q, want %q", tt.path, got, tt.want)
		}
	}
}

func TestCaptureRefusesNonEmpty(t *testing.T) {
	dest := t.TempDir()
	if err := os.WriteFile(filepath.Join(dest, "x"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := Capture(Options{Root: "../../../testdata/verify/tmp-plain/root", Dest: dest})
	if err == nil || !strings.Contains(err.Error(), "not empty") {
		t.Fatalf("got %v, want a refusal naming the non-empty directory", err)
	}
}

// TestFailedCaptureLeavesNoDirectory: a run that fails removes the DIR it
// made, and never a DIR that was there before.
func TestFailedCaptureLeavesNoDirectory(t *testing.T) {
	bad := filepath.Join(t.TempDir(), "missing-root")
	dest := filepath.Join(t.TempDir(), "new")
	if _, err := Capture(Options{Root: bad, Dest: dest}); err == nil {
		t.Fatal("capture of a missing root succeeded")
	}
	if _, err := os.Lstat(dest); !os.IsNotExist(err) {
		t.Errorf("%s left behind after a failed capture (stat: %v)", dest, err)
	}
	empty := t.TempDir()
	if _, err := Capture(Options{Root: bad, Dest: empty}); err == nil {
		t.Fatal("capture of a missing root succeeded")
	}
	if fi, err := os.Stat(empty); err != nil || !fi.IsDir() {
		t.Errorf("the empty DIR the user made is gone after a failed capture: %v", err)
	}
}

// TestCaptureLive captures this machine: whatever it is, the capture must
// give the same verdicts.
func TestCaptureLive(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("capturing the live root reads /dev and /proc/1: needs root")
	}
	dest := filepath.Join(t.TempDir(), "cap")
	res, err := Capture(Options{Dest: dest, Tool: "test", Now: fixedNow})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Mismatch) > 0 {
		t.Errorf("verify differs between this machine and its capture:\n%s", strings.Join(res.Mismatch, "\n"))
	}
	checkNoContents(t, dest, res.LiveCheck.Inputs)

}
