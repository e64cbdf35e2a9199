// The VM tier, apply: what is refused, and how resume fails clearly
// (wrong passphrase, missing key file, vanished device), and Ctrl-C and
// SIGTERM stopping at a step boundary.

package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cryptshift/cryptshift/internal/harness/testtier"
	"github.com/cryptshift/cryptshift/internal/harness/vmtest"
	"github.com/cryptshift/cryptshift/internal/model/plan"
)

const smallLayout = `apiVersion: cryptshift/v1
kind: Layout
name: small
disks:
  - name: disk0
    device: /dev/null-replaced-by-device-flag
    table: none
volumeGroups:
  - name: vgsmall
volumes:
  - name: root
    size: 50%VG
    mount: /
  - name: var
    size: 30%VG
    mount: /var
luks:
  iterations: 4
  memoryKiB: 1024
  parallel: 1
keys:
  headerBackupDir: /root/luks-headers
`

// TestVMApplyRefusesAndFailsClearly: a disk with a filesystem is refused
// and left intact; a resume with the wrong passphrase, a missing key file
// or a vanished device stops with a clear error before changing anything.
func TestVMApplyRefusesAndFailsClearly(t *testing.T) {
	testtier.VM(t, "qemu-system-x86_64")
	if !vmtest.InGuest(t) {
		return
	}
	dir := t.TempDir()
	layoutFile := filepath.Join(dir, "small.yaml")
	os.WriteFile(layoutFile, []byte(smallLayout), 0o644)
	pass := filepath.Join(dir, "pass")
	os.WriteFile(pass, []byte(vmPassphrase), 0o600)
	disks := partscanLoops(t, 256<<20, 256<<20, 256<<20)
	root := filepath.Join(dir, "target")
	t.Cleanup(func() { exec.Command("umount", "-R", root).Run() })

	// A disk holding a filesystem with a file on it is refused.
	used := disks[0]
	if out, err := exec.Command("mkfs.ext4", "-q", "-L", "old-mail", used).CombinedOutput(); err != nil {
		t.Fatalf("mkfs: %v %s", err, out)
	}
	mnt := filepath.Join(dir, "mnt")
	os.MkdirAll(mnt, 0o755)
	exec.Command("mount", used, mnt).Run()
	os.WriteFile(filepath.Join(mnt, "precious.txt"), []byte("last year's mail"), 0o600)
	exec.Command("umount", mnt).Run()
	r := run(t, "apply", "-f", layoutFile, "--yes", "--passphrase-file", pass, "--recovery-key-file", filepath.Join(dir, "rk0"),
		"--journal", filepath.Join(dir, "j0"), "--root", root, "--device", "disk0="+used)
	if r.code != 4 || !strings.Contains(r.stderr, used+": an ext4 filesystem") || !strings.Contains(r.stderr, `label "old-mail"`) {
		t.Fatalf("apply on a used disk: exit %d\n%s", r.code, r.stderr)
	}
	if _, err := os.Stat(filepath.Join(dir, "j0")); err == nil {
		t.Error("a refused apply wrote a journal")
	}
	exec.Command("mount", "-o", "ro", used, mnt).Run()
	got, err := os.ReadFile(filepath.Join(mnt, "precious.txt"))
	exec.Command("umount", mnt).Run()
	if err != nil || string(got) != "last year's mail" {
		t.Fatalf("the file on the refused disk: %q %v", got, err)
	}

	// Resume errors on the second disk.
	disk := disks[1]
	journalFile := filepath.Join(dir, "j1")
	rk := filepath.Join(dir, "rk1")
	args := []string{"apply", "-f", layoutFile, "--yes", "--passphrase-file", pass, "--recovery-key-file", rk,
		"--journal", journalFile, "--root", root, "--device", "disk0=" + disk}
	resume := []string{"apply", "--resume", "--journal", journalFile, "--recovery-key-file", rk}
	pr := run(t, "plan", "-f", layoutFile, "-o", "json", "--root", root, "--device", "disk0="+disk)
	p, err := plan.Parse("plan", []byte(pr.stdout))
	if err != nil {
		t.Fatal(err)
	}
	index := func(id string) int {
		for i, s := range p.Steps {
			if s.ID == id {
				return i + 1
			}
		}
		t.Fatalf("no step %s", id)
		return 0
	}
	keyStep := fmt.Sprintf("keyfile:%s/etc/cryptsetup-keys.d/var_crypt.key", root)

	// 1. wrong passphrase
	if r := runEnv(t, []string{"CRYPTSHIFT_FAULT=after:" + p.Steps[index(keyStep)-1].ID}, args...); r.code != -1 {
		t.Fatalf("fault did not kill: %d %s", r.code, r.stderr)
	}
	before := readFile(t, journalFile)
	wrong := filepath.Join(dir, "wrong")
	os.WriteFile(wrong, []byte("not the passphrase"), 0o600)
	r = run(t, append(resume, "--passphrase-file", wrong)...)
	if r.code == 0 || !strings.Contains(r.stderr, "the passphrase given does not open /dev/vgsmall/root") {
		t.Fatalf("resume with a wrong passphrase: exit %d\n%s", r.code, r.stderr)
	}
	if !bytes.Equal(before, readFile(t, journalFile)) {
		t.Error("a refused resume changed the journal")
	}

	// 2. missing key file
	keyFile := filepath.Join(root, "etc/cryptsetup-keys.d/var_crypt.key")
	saved := readFile(t, keyFile)
	os.Remove(keyFile)
	r = run(t, append(resume, "--passphrase-file", pass)...)
	if r.code == 0 || !strings.Contains(r.stderr, "key file "+keyFile+", made by step "+keyStep+", is missing") {
		t.Fatalf("resume without the key file: exit %d\n%s", r.code, r.stderr)
	}
	if !bytes.Equal(before, readFile(t, journalFile)) {
		t.Error("a refused resume changed the journal")
	}
	os.WriteFile(keyFile, saved, 0o400)

	// 3. the root LV deactivated under us (as a reboot leaves a volume
	// group that nothing activated): not gone, a lapsed effect. Resume
	// activates the volume group again, reopens the mapping, remounts the
	// target and finishes. (An LV that is really gone is refused: tier 1,
	// TestResumeActivatesAnLVAReBootLeftInactive.)
	exec.Command("umount", "-R", root).Run()
	exec.Command("cryptsetup", "close", "root_crypt").Run()
	if out, err := exec.Command("lvm", "lvchange", "-an", "vgsmall/root").CombinedOutput(); err != nil {
		t.Fatalf("lvchange: %v %s", err, out)
	}
	r = run(t, append(resume, "--passphrase-file", pass)...)
	if r.code != 0 {
		t.Fatalf("resume with the root LV deactivated: exit %d\n%s", r.code, r.stderr)
	}
	for _, want := range []string{
		"logical volume vgsmall/root is not active: its effect has lapsed (step lvcreate:/dev/vgsmall/root): re-establishing it",
		"/dev/mapper/root_crypt is not open: its effect has lapsed (step open:/dev/mapper/root_crypt): re-establishing it",
		root + " is not mounted: its effect has lapsed",
	} {
		if !strings.Contains(r.stdout+r.stderr, want) {
			t.Errorf("resume with the root LV deactivated does not say %q:\n%s", want, r.stderr)
		}
	}
	if out, err := exec.Command("findmnt", "-no", "SOURCE", root).Output(); err != nil || strings.TrimSpace(string(out)) != "/dev/mapper/root_crypt" {
		t.Errorf("after the resume %s is mounted from %q (%v), want /dev/mapper/root_crypt", root, strings.TrimSpace(string(out)), err)
	}
	// The finished apply leaves its mappings open; the signal runs below
	// use the same mapping names on another volume group.
	exec.Command("umount", "-R", root).Run()
	for _, m := range []string{"var_crypt", "root_crypt"} {
		if out, err := exec.Command("cryptsetup", "close", m).CombinedOutput(); err != nil {
			t.Fatalf("cryptsetup close %s: %v %s", m, err, out)
		}
	}

	// SIGINT (Ctrl-C) and SIGTERM stop at the next step boundary, with
	// exit status 6, and --resume finishes the job.
	sigLayout := filepath.Join(dir, "sig.yaml")
	os.WriteFile(sigLayout, []byte(strings.ReplaceAll(smallLayout, "vgsmall", "vgsig")), 0o644)
	for i, sig := range []os.Signal{os.Interrupt, syscall.SIGTERM} {
		dev, jf := disks[2], filepath.Join(dir, fmt.Sprintf("j-sig%d", i))
		root2 := filepath.Join(dir, fmt.Sprintf("target-sig%d", i))
		t.Cleanup(func() { exec.Command("umount", "-R", root2).Run() })
		rk2 := filepath.Join(dir, fmt.Sprintf("rk-sig%d", i))
		cmd := exec.Command(binary, "apply", "-f", sigLayout, "--yes", "--passphrase-file", pass, "--recovery-key-file", rk2,
			"--journal", jf, "--root", root2, "--device", "disk0="+dev)
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		exited := make(chan struct{})
		go func() { cmd.Wait(); close(exited) }()
		for !strings.HasPrefix(lastJournalRecord(t, jf), "start lvcreate:") {
			select {
			case <-exited:
				t.Fatalf("apply ended before its first lvcreate:\n%s", out.String())
			case <-time.After(10 * time.Millisecond):
			}
		}
		cmd.Process.Signal(sig)
		<-exited
		code := cmd.ProcessState.ExitCode()
		last := lastJournalRecord(t, jf)
		if code != 6 || !strings.HasPrefix(last, "stopped") || !strings.Contains(out.String(), "stopping after the current step") {
			t.Fatalf("%v: exit %d, journal ends %q\n%s", sig, code, last, out.String())
		}
		recs := string(readFile(t, jf))
		if strings.Count(recs, `"type":"start"`) != strings.Count(recs, `"type":"done"`) {
			t.Fatalf("%v: a step was cut off mid-way:\n%s", sig, recs)
		}
		r := run(t, "apply", "--resume", "--journal", jf, "--passphrase-file", pass, "--recovery-key-file", rk2)
		if r.code != 0 {
			t.Fatalf("resume after %v: exit %d\n%s", sig, r.code, r.stderr)
		}
		if r := run(t, "rollback", "--allow-destroy", "--yes", jf); r.code != 0 {
			t.Fatalf("rollback after %v: %s", sig, r.stderr)
		}
		// The rollback leaves ciphertext without a header, which the next
		// apply would rightly refuse to overwrite without --allow-destroy.
		discardDisks(t, dev)
		os.Remove(rk2)
	}
}
