package verify

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// verifyEdited copies a fixture's root, lets edit change it (remove
// inputs, add others) and verifies the copy.
func verifyEdited(t *testing.T, fixture string, edit func(root string)) *Report {
	t.Helper()
	root := filepath.Join(t.TempDir(), "root")
	if out, err := exec.Command("cp", "-a", filepath.Join(fixtureDir, fixture, "root"), root).CombinedOutput(); err != nil {
		t.Fatalf("%v %s", err, out)
	}
	edit(root)
	r, err := Run(Options{Root: root, Version: "test"})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func writeIn(t *testing.T, root, p, content string) {
	t.Helper()
	full := filepath.Join(root, filepath.FromSlash(p))
	if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(full, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func removeIn(t *testing.T, root string, paths ...string) {
	t.Helper()
	for _, p := range paths {
		if err := os.RemoveAll(filepath.Join(root, filepath.FromSlash(p))); err != nil {
			t.Fatal(err)
		}
	}
}

// wantResult asserts that id (on subject, "" for any) has status and
// that its evidence says what the verdict rests on.
func wantResult(t *testing.T, r *Report, id, subject string, status Status, evidence string) {
	t.Helper()
	n := 0
	for _, c := range r.Checks {
		if c.ID != id || subject != "" && c.Subject != subject {
			continue
		}
		n++
		ev := strings.Join(c.Evidence, "; ")
		if c.Status != status || !strings.Contains(ev, evidence) {
			t.Errorf("%s %s: got %s %q, want %s saying %q", id, c.Subject, c.Status, ev, status, evidence)
		}
	}
	if n == 0 {
		t.Errorf("%s %s: no result, want %s saying %q", id, subject, status, evidence)
	}
}

// TestKdumpWithoutKexecStateIsSkip: crashkernel= reserves memory; whether
// a crash kernel is loaded into it only /sys/kernel/kexec_crash_loaded
// says. Without that file (and no record that the kernel lacks it) the
// check cannot know: SKIP, not PASS "no crash kernel loaded".
func TestKdumpWithoutKexecStateIsSkip(t *testing.T) {
	r := verifyEdited(t, "mailhost-luks-on-lvm", func(root string) {
		writeIn(t, root, "/proc/cmdline", "BOOT_IMAGE=/vmlinuz root=/dev/mapper/root_crypt ro crashkernel=256M\n")
		removeIn(t, root, "/sys/kernel/kexec_crash_loaded")
	})
	wantResult(t, r, "kdump.target", "", Skip, "/sys/kernel/kexec_crash_loaded is not in this tree")
	wantResult(t, r, "kdump.target", "", Skip, "crashkernel=256M")
}

// TestTildeWithoutHomesIsSkip: Dovecot's and Postfix's "~" is the user's
// home; without /etc/passwd (and no userdb naming homes) verify cannot
// know which directories those are. Each "~" path says SKIP "homes
// unknown", and Dovecot's default /var/mail is not judged in its place
// (mail_location is set, so the defaults do not apply).
func TestTildeWithoutHomesIsSkip(t *testing.T) {
	r := verifyEdited(t, "mailhost-luks-on-lvm", func(root string) {
		removeIn(t, root, "/etc/passwd", "/etc/dovecot")
		writeIn(t, root, "/etc/dovecot/dovecot.conf", "mail_location = maildir:~/Maildir\n")
		writeIn(t, root, "/etc/postfix/main.cf", "myhostname = mx.example\nhome_mailbox = Maildir/\n")
	})
	wantResult(t, r, "mail.dovecot.location", "", Skip, "homes unknown (/etc/passwd is not in this tree")
	wantResult(t, r, "mail.postfix.spool", "", Skip, "homes unknown (/etc/passwd is not in this tree")
	for _, c := range r.Checks {
		if c.ID == "mail.dovecot.location" && strings.HasPrefix(c.Subject, "/var/mail") {
			t.Errorf("default %s judged (%s) although mail_location is set", c.Subject, c.Status)
		}
	}
	if r.Summary.Verdict == Pass {
		t.Errorf("verdict PASS although the mailboxes' homes are unknown")
	}
}

// TestLibvirtWithoutInputsIsSkip: a pool directory, qemu.conf or image
// header missing from the tree is no evidence of an empty pool, of
// libvirt's defaults or of an image without backing file.
func TestLibvirtWithoutInputsIsSkip(t *testing.T) {
	r := verifyEdited(t, "mailhost-luks-on-lvm", func(root string) {
		removeIn(t, root, "/var/lib/libvirt/images", "/etc/libvirt/qemu.conf", "/etc/default/libvirt-guests")
	})
	wantResult(t, r, "libvirt.leftover", "", Skip, "cannot read /var/lib/libvirt/images")
	wantResult(t, r, "libvirt.dump", "", Skip, "/etc/libvirt/qemu.conf is not in this tree")
	wantResult(t, r, "libvirt.dump-guest-core", "", Skip, "/etc/libvirt/qemu.conf is not in this tree")
	wantResult(t, r, "libvirt.disk.backing", "", Skip, "cannot read the image header of /var/lib/libvirt/images/")
}
