package verify_test

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cryptshift/cryptshift/internal/audit/capture"
	"github.com/cryptshift/cryptshift/internal/audit/verify"
	"github.com/cryptshift/cryptshift/internal/harness/testtier"
	"github.com/cryptshift/cryptshift/internal/harness/vmtest"
)

// TestVMVerifyLive builds both encrypted swap layouts by hand on loop
// devices with real dm-crypt and LVM, runs verify on the live guest and
// checks that both count as encrypted: swap on an LV inside an encrypted
// PV (the Debian installer's layout, which Lynis #1419 and fwupd's HSI call
// unencrypted) and swap on a LUKS container on an LV (cryptshift's layout).
// Then it adds a swap file on a plaintext ext4 filesystem and checks that
// verify no longer passes it and names the file. Finally it captures the
// live guest and checks that verify gives the same verdicts on the capture.
func TestVMVerifyLive(t *testing.T) {
	testtier.VM(t, "qemu-system-x86_64")
	if !vmtest.InGuest(t) {
		return
	}
	devs := vmtest.LoopDevices(t, 96*vmtest.MiB, 96*vmtest.MiB, 32*vmtest.MiB)
	key := []byte("verify vm test passphrase")
	format := func(dev string) {
		// The cheapest argon2id cryptsetup accepts: TCG is slow.
		sh(t, key, "cryptsetup", "luksFormat", "--batch-mode", "--type", "luks2", "--pbkdf", "argon2id",
			"--pbkdf-force-iterations", "4", "--pbkdf-memory", "32768", "--key-file", "-", dev)
	}
	// LVM on LUKS: loop → LUKS2 → PV → VG vmv → LV swap.
	format(devs[0])
	sh(t, key, "cryptsetup", "open", "--key-file", "-", devs[0], "vmv_pv")
	sh(t, nil, "lvm", "pvcreate", "/dev/mapper/vmv_pv")
	sh(t, nil, "lvm", "vgcreate", "vmv", "/dev/mapper/vmv_pv")
	sh(t, nil, "lvm", "lvcreate", "--yes", "-L", "16M", "-n", "swap", "vmv")
	sh(t, nil, "mkswap", "/dev/vmv/swap")
	sh(t, nil, "swapon", "/dev/vmv/swap")
	// LUKS on LVM: loop → PV → VG vmw → LV swap → LUKS2.
	sh(t, nil, "lvm", "pvcreate", devs[1])
	sh(t, nil, "lvm", "vgcreate", "vmw", devs[1])
	sh(t, nil, "lvm", "lvcreate", "--yes", "-L", "40M", "-n", "swap", "vmw")
	format("/dev/vmw/swap")
	sh(t, key, "cryptsetup", "open", "--key-file", "-", "/dev/vmw/swap", "vmw_swap_crypt")
	sh(t, nil, "mkswap", "/dev/mapper/vmw_swap_crypt")
	sh(t, nil, "swapon", "/dev/mapper/vmw_swap_crypt")

	// /proc/swaps names the areas as swapon resolved them (/dev/mapper/...).
	swaps := map[string]string{"/dev/mapper/vmv-swap": "vmv_pv (" + filepath.Base(dmPath(t, "vmv_pv")) + ", LUKS2)",
		"/dev/mapper/vmw_swap_crypt": "vmw_swap_crypt (" + filepath.Base(dmPath(t, "vmw_swap_crypt")) + ", LUKS2) → vmw-swap"}
	r := run(t)
	for dev, crypt := range swaps {
		c := result(t, r, "swap.device", dev)
		if c.Status != verify.Pass || !strings.Contains(strings.Join(c.Evidence, "\n"), crypt) {
			t.Errorf("swap %s: got %s %q, want PASS naming crypt node %s", dev, c.Status, c.Evidence, crypt)
		}
	}
	for _, name := range []string{"vmv_pv", "vmw_swap_crypt"} {
		subj := name + " (" + filepath.Base(dmPath(t, name)) + ")"
		if c := result(t, r, "luks.version", subj); c.Status != verify.Pass {
			t.Errorf("luks.version %s: got %s %q, want PASS from the real LUKS2 header", subj, c.Status, c.Evidence)
		}
		if c := result(t, r, "luks.kdf", subj); !strings.Contains(strings.Join(c.Evidence, " "), "argon2id t=4 m=32768KiB") {
			t.Errorf("luks.kdf %s: evidence %q does not show the header's argon2id parameters", subj, c.Evidence)
		}
	}

	// dm-crypt with cipher_null, set up by hand (no crypttab, no header):
	// only the running kernel's dm table can tell that it does not
	// encrypt, and verify must ask it (the key-free IMA status).
	sectors := strings.TrimSpace(sh(t, nil, "blockdev", "--getsz", devs[2]))
	sh(t, nil, "dmsetup", "create", "vmnull", "--uuid", "CRYPT-PLAIN-vmnull", "--table", "0 "+sectors+" crypt cipher_null-ecb - 0 "+devs[2]+" 0")
	removeNull := func() {
		exec.Command("swapoff", "/dev/mapper/vmnull").Run()
		exec.Command("dmsetup", "remove", "vmnull").Run()
	}
	t.Cleanup(removeNull)
	sh(t, nil, "mkswap", "/dev/mapper/vmnull")
	sh(t, nil, "swapon", "/dev/mapper/vmnull")
	r = run(t)
	// The loop device's backing file lies on the VM's /tmp (tmpfs): what
	// the mapping stores stays in RAM, so the verdict is RAM's; the point
	// is that the crypt node no longer counts as encryption.
	if c := result(t, r, "swap.device", "/dev/mapper/vmnull"); strings.Contains(strings.Join(c.Evidence, " "), "⇒ encrypted") ||
		!strings.Contains(strings.Join(c.Evidence, " "), "(cipher_null-ecb: no encryption)") {
		t.Errorf("swap on a cipher_null mapping: got %s %q, want the mapping traced as no encryption", c.Status, c.Evidence)
	}
	nullSubj := "vmnull (" + filepath.Base(dmPath(t, "vmnull")) + ")"
	if c := result(t, r, "luks.cipher", nullSubj); c.Status != verify.Fail || !strings.Contains(strings.Join(c.Evidence, " "), "running kernel's dm table") {
		t.Errorf("luks.cipher %s: got %s %q, want FAIL from the kernel's dm table", nullSubj, c.Status, c.Evidence)
	}
	removeNull()

	// A swap file on plaintext ext4. On a spare disk, if the VM has one,
	// that is plaintext and must FAIL. Otherwise the filesystem goes on a
	// loop device over a file on the overlay root, whose upper layer is a
	// tmpfs outside this chroot: verify can vouch for nothing there, so the
	// file must not PASS (it is WARN, "cannot tell").
	dir := t.TempDir()
	mnt := filepath.Join(dir, "plain")
	swapfile := filepath.Join(mnt, "swapfile")
	dev, img, loop := spareDisk(), "", ""
	if dev == "" {
		img = filepath.Join("/var/tmp", fmt.Sprintf("plain-%d.img", os.Getpid()))
		sh(t, nil, "truncate", "-s", "48M", img)
		loop = strings.TrimSpace(sh(t, nil, "losetup", "--find", "--show", img))
		dev = loop
	}
	t.Cleanup(func() {
		exec.Command("swapoff", swapfile).Run()
		exec.Command("umount", mnt).Run()
		if loop != "" {
			exec.Command("losetup", "--detach", loop).Run()
			os.Remove(img)
		}
	})
	sh(t, nil, "mkfs.ext4", "-q", dev)
	os.MkdirAll(mnt, 0o755)
	sh(t, nil, "mount", dev, mnt)
	sh(t, nil, "dd", "if=/dev/zero", "of="+swapfile, "bs=1M", "count=16", "status=none")
	os.Chmod(swapfile, 0o600)
	sh(t, nil, "mkswap", swapfile)
	sh(t, nil, "swapon", swapfile)

	r = run(t)
	c := result(t, r, "swap.device", swapfile)
	ev := strings.Join(c.Evidence, "\n")
	if c.Status == verify.Pass || r.Summary.Verdict == verify.Pass {
		t.Errorf("plaintext swap file passed: %s %q", c.Status, c.Evidence)
	}
	if !strings.Contains(ev, swapfile) || !strings.Contains(ev, filepath.Base(dev)) || !strings.Contains(ev, img) {
		t.Errorf("evidence %q does not trace %s through %s to %s", ev, swapfile, dev, img)
	}
	if loop == "" && c.Status != verify.Fail {
		t.Errorf("swap file on the plaintext disk %s: got %s, want FAIL", dev, c.Status)
	}
	if loop != "" && c.Status != verify.Warn {
		t.Errorf("swap file on a loop over the overlay root: got %s, want WARN (cannot tell)", c.Status)
	}
	t.Logf("swap file on %s: %s: %s", dev, c.Status, ev)
	for dev := range swaps {
		if c := result(t, r, "swap.device", dev); c.Status != verify.Pass {
			t.Errorf("swap %s after adding the file: got %s", dev, c.Status)
		}
	}
	// tmpfs pages may now go to a swap file verify cannot vouch for.
	if c := result(t, r, "tmp.tmp", "/tmp"); c.Status == verify.Pass {
		t.Errorf("/tmp (tmpfs) passed although swap goes to %s: %q", swapfile, c.Evidence)
	}

	// The capture of this guest must give the same verdicts.
	res, err := capture.Capture(capture.Options{Dest: filepath.Join(dir, "capture"), Tool: "vm"})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Mismatch) > 0 {
		t.Errorf("verify differs on the capture of the live guest:\n%s", strings.Join(res.Mismatch, "\n"))
	}
	for _, dev := range []string{devs[0], dmPath(t, "vmw-swap")} {
		if h, ok := res.Manifest.LUKS[dev]; !ok || h.Version != 2 {
			t.Errorf("capture holds no LUKS2 metadata for %s: %+v", dev, h)
		}
	}
	var b bytes.Buffer
	verify.Render(&b, r, "text")
	t.Log(b.String())
}

func run(t *testing.T) *verify.Report {
	t.Helper()
	r, err := verify.Run(verify.Options{Root: "/", Version: "vm"})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func result(t *testing.T, r *verify.Report, id, subject string) verify.Result {
	t.Helper()
	var subjects []string
	for _, c := range r.Checks {
		if c.ID == id && c.Subject == subject {
			return c
		}
		if c.ID == id {
			subjects = append(subjects, c.Subject)
		}
	}
	t.Fatalf("no %s result for %q; subjects: %q", id, subject, subjects)
	return verify.Result{}
}

// dmPath returns /dev/dm-N of a device-mapper name. Without udev,
// libdevmapper makes /dev/mapper/NAME a device node, not a link, so the
// name is looked up in sysfs.
func dmPath(t *testing.T, name string) string {
	t.Helper()
	names, _ := filepath.Glob("/sys/class/block/dm-*/dm/name")
	for _, n := range names {
		if b, err := os.ReadFile(n); err == nil && strings.TrimSpace(string(b)) == name {
			return "/dev/" + filepath.Base(filepath.Dir(filepath.Dir(n)))
		}
	}
	t.Fatalf("no device-mapper device named %s", name)
	return ""
}

func sh(t *testing.T, stdin []byte, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// spareDisk returns /dev/NAME of a whole disk nothing uses (no partitions,
// holders or mounts), or "" when the VM has none.
func spareDisk() string {
	ents, _ := os.ReadDir("/sys/class/block")
	mounts, _ := os.ReadFile("/proc/self/mountinfo")
	for _, e := range ents {
		n := e.Name()
		if strings.HasPrefix(n, "loop") || strings.HasPrefix(n, "dm-") || strings.HasPrefix(n, "zram") || strings.HasPrefix(n, "ram") {
			continue
		}
		base := filepath.Join("/sys/class/block", n)
		if _, err := os.Stat(filepath.Join(base, "partition")); err == nil {
			continue
		}
		holders, _ := os.ReadDir(filepath.Join(base, "holders"))
		parts, _ := filepath.Glob(filepath.Join(base, n+"*"))
		dev, _ := os.ReadFile(filepath.Join(base, "dev"))
		size, _ := os.ReadFile(filepath.Join(base, "size"))
		if len(holders) > 0 || len(parts) > 0 || bytes.Contains(mounts, []byte(" "+strings.TrimSpace(string(dev))+" ")) {
			continue
		}
		if s := strings.TrimSpace(string(size)); len(s) < 6 { // fewer than 100000 sectors: too small
			continue
		}
		return "/dev/" + n
	}
	return ""
}
