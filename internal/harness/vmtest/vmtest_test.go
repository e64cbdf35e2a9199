package vmtest_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cryptshift/cryptshift/internal/harness/testtier"
	"github.com/cryptshift/cryptshift/internal/harness/vmtest"
)

// TestVMHarness proves the tier end to end inside the guest: two loop
// devices, LUKS2 (argon2id at the lowest cost cryptsetup accepts, since
// TCG is slow) with the key on stdin, opened through dm-crypt, LVM across
// both, ext4, a file written, everything closed, reopened from scratch and
// the file read back; then a stack left open is torn down by LoopDevices'
// cleanup without leaving a mapping, mount or loop device behind.
func TestVMHarness(t *testing.T) {
	testtier.VM(t, "qemu-system-x86_64")
	if !vmtest.InGuest(t) {
		return
	}
	start := time.Now()
	devs := vmtest.LoopDevices(t, 64*vmtest.MiB, 64*vmtest.MiB)
	key := []byte("vmtest harness passphrase \x00 with a NUL")
	names := []string{"vmh0", "vmh1"}
	for i, dev := range devs {
		cmd(t, key, "cryptsetup", "luksFormat", "--batch-mode", "--type", "luks2",
			"--pbkdf", "argon2id", "--pbkdf-force-iterations", "4", "--pbkdf-memory", "32768",
			"--key-file", "-", dev)
		cmd(t, key, "cryptsetup", "open", "--key-file", "-", dev, names[i])
		cmd(t, nil, "lvm", "pvcreate", "/dev/mapper/"+names[i])
	}
	cmd(t, nil, "lvm", "vgcreate", "vmh", "/dev/mapper/vmh0", "/dev/mapper/vmh1")
	// 100%FREE spans both PVs, so the reopen below needs both mappings.
	cmd(t, nil, "lvm", "lvcreate", "--yes", "-l", "100%FREE", "-n", "data", "vmh")
	cmd(t, nil, "mkfs.ext4", "-q", "-E", "lazy_itable_init=0,lazy_journal_init=0", "/dev/vmh/data")
	mnt := t.TempDir()
	cmd(t, nil, "mount", "/dev/vmh/data", mnt)
	want := make([]byte, 24*vmtest.MiB)
	rand.Read(want)
	wstart := time.Now()
	if err := os.WriteFile(filepath.Join(mnt, "proof"), want, 0o600); err != nil {
		t.Fatalf("cannot write the proof file: %v", err)
	}
	cmd(t, nil, "sync")
	t.Logf("wrote %d MiB through ext4/LVM/dm-crypt at %.1f MB/s", len(want)/vmtest.MiB, float64(len(want))/1e6/time.Since(wstart).Seconds())
	cmd(t, nil, "umount", mnt)
	cmd(t, nil, "lvm", "vgchange", "-an", "vmh")
	for _, n := range names {
		cmd(t, nil, "cryptsetup", "close", n)
	}
	if _, err := os.Stat("/dev/mapper/vmh0"); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("/dev/mapper/vmh0 still there after close: %v", err)
	}

	// Reopen from nothing but the devices and the key.
	if out, err := run(t, []byte("wrong"), "cryptsetup", "open", "--key-file", "-", devs[0], "vmh0"); err == nil {
		t.Fatalf("cryptsetup opened %s with a wrong key:\n%s", devs[0], out)
	}
	for i, dev := range devs {
		cmd(t, key, "cryptsetup", "open", "--key-file", "-", dev, names[i])
	}
	cmd(t, nil, "lvm", "vgchange", "-ay", "vmh")
	cmd(t, nil, "mount", "/dev/vmh/data", mnt)
	got, err := os.ReadFile(filepath.Join(mnt, "proof"))
	if err != nil {
		t.Fatalf("cannot read the proof file back: %v", err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("proof file differs after reopen: got %d bytes, want %d", len(got), len(want))
	}
	dump := cmd(t, nil, "cryptsetup", "luksDump", devs[0])
	for _, w := range []string{"Version:       \t2", "argon2id", "aes-xts-plain64"} {
		if !strings.Contains(dump, w) {
			t.Errorf("luksDump %s lacks %q:\n%s", devs[0], w, dump)
		}
	}
	cmd(t, nil, "umount", mnt)
	cmd(t, nil, "lvm", "vgchange", "-an", "vmh")
	for _, n := range names {
		cmd(t, nil, "cryptsetup", "close", n)
	}
	t.Logf("harness proof took %.1fs inside the guest", time.Since(start).Seconds())

	// A stack left fully open must be torn down by the helper's cleanup.
	var loops []string
	t.Run("cleanup", func(t *testing.T) {
		loops = vmtest.LoopDevices(t, 32*vmtest.MiB)
		cmd(t, key, "cryptsetup", "luksFormat", "--batch-mode", "--type", "luks2",
			"--pbkdf", "argon2id", "--pbkdf-force-iterations", "4", "--pbkdf-memory", "32768",
			"--key-file", "-", loops[0])
		cmd(t, key, "cryptsetup", "open", "--key-file", "-", loops[0], "vmhc")
		cmd(t, nil, "lvm", "vgcreate", "--yes", "vmhc", "/dev/mapper/vmhc")
		cmd(t, nil, "lvm", "lvcreate", "--yes", "-l", "100%FREE", "-n", "lv", "vmhc")
		cmd(t, nil, "mkfs.ext4", "-q", "/dev/vmhc/lv")
		cmd(t, nil, "mount", "/dev/vmhc/lv", t.TempDir())
	})
	for _, p := range []string{"/dev/mapper/vmhc", "/dev/mapper/vmhc-lv"} {
		if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s survived the cleanup: %v", p, err)
		}
	}
	if out := cmd(t, nil, "losetup", "--list", "--noheadings", "-O", "NAME"); strings.Contains(out, loops[0]) {
		t.Errorf("%s still attached after cleanup:\n%s", loops[0], out)
	}
	if mounts, _ := os.ReadFile("/proc/self/mounts"); bytes.Contains(mounts, []byte("vmhc")) {
		t.Errorf("a vmhc mount survived the cleanup:\n%s", mounts)
	}
}

// TestVMRun checks what Run promises the host: the guest command's exit
// status and output (stdout and stderr) come back, the environment and
// working directory are as documented, and the share is writable.
func TestVMRun(t *testing.T) {
	testtier.VM(t, "qemu-system-x86_64")
	if testtier.InVM() {
		t.Skip("host-side test")
	}
	wd, _ := os.Getwd()
	share := t.TempDir()
	tests := []struct {
		name     string
		opts     vmtest.Options
		wantCode int
		wantOut  []string
		check    func(t *testing.T)
	}{{
		name:     "exit status and both streams",
		opts:     vmtest.Options{Args: []string{"sh", "-c", "echo to-stdout; echo to-stderr >&2; exit 3"}},
		wantCode: 3,
		wantOut:  []string{"to-stdout\n", "to-stderr\n"},
	}, {
		name: "environment, working directory and share",
		opts: vmtest.Options{
			Args:  []string{"sh", "-c", `echo "in=$CRYPTSHIFT_IN_VM extra=$EXTRA pwd=$(pwd) uid=$(id -u)"; echo "$PATH" | grep -q sbin && echo sbin-ok; echo from-guest >"$1/f"`, "sh", share},
			Env:   []string{"EXTRA=it's \"quoted\" $HOME"},
			Share: share,
		},
		wantOut: []string{fmt.Sprintf("in=1 extra=it's \"quoted\" $HOME pwd=%s uid=0\n", wd), "sbin-ok\n"},
		check: func(t *testing.T) {
			b, err := os.ReadFile(filepath.Join(share, "f"))
			if err != nil || string(b) != "from-guest\n" {
				t.Errorf("share file: got %q, %v; want %q", b, err, "from-guest\n")
			}
		},
	}, {
		name:     "command not found",
		opts:     vmtest.Options{Args: []string{"/nonexistent/cmd"}},
		wantCode: 127,
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, err := vmtest.Run(context.Background(), tt.opts)
			if err != nil {
				t.Fatalf("Run: %v\nconsole:\n%s", err, res.Console)
			}
			if res.ExitCode != tt.wantCode {
				t.Errorf("exit code: got %d, want %d; output:\n%s", res.ExitCode, tt.wantCode, res.Output)
			}
			for _, w := range tt.wantOut {
				if !bytes.Contains(res.Output, []byte(w)) {
					t.Errorf("output: got %q, want it to contain %q", res.Output, w)
				}
			}
			if tt.check != nil {
				tt.check(t)
			}
			t.Logf("boot to command %.2fs, whole run %.2fs", res.Boot.Seconds(), res.Duration.Seconds())
		})
	}
}

// TestVMRunTimeout checks that a guest outliving its timeout is killed, the
// error says so, the output written so far comes back, and no qemu is left.
func TestVMRunTimeout(t *testing.T) {
	testtier.VM(t, "qemu-system-x86_64")
	if testtier.InVM() {
		t.Skip("host-side test")
	}
	res, err := vmtest.Run(context.Background(), vmtest.Options{
		Args:    []string{"sh", "-c", "echo started; sleep 600"},
		Timeout: 30 * time.Second,
	})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Run: got error %v, want a deadline error", err)
	}
	if !bytes.Contains(res.Output, []byte("started")) {
		t.Errorf("partial output: got %q, want it to contain %q", res.Output, "started")
	}
	if kids := qemuChildren(t); len(kids) > 0 {
		t.Errorf("qemu processes left behind: %v", kids)
	}
}

// qemuChildren lists this process's child processes running qemu.
func qemuChildren(t *testing.T) []string {
	t.Helper()
	procs, _ := filepath.Glob("/proc/[0-9]*/stat")
	var kids []string
	for _, p := range procs {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		// Fields after the parenthesised command: state, ppid.
		s := string(b)
		i := strings.LastIndex(s, ")")
		if i < 0 || !strings.Contains(s[:i], "qemu") {
			continue
		}
		f := strings.Fields(s[i+1:])
		if len(f) > 1 && f[1] == fmt.Sprint(os.Getpid()) {
			kids = append(kids, p)
		}
	}
	return kids
}

// cmd runs a tool in the guest test and fails the test with its output if
// it fails. stdin carries keys, never argv.
func cmd(t *testing.T, stdin []byte, prog string, args ...string) string {
	t.Helper()
	out, err := run(t, stdin, prog, args...)
	if err != nil {
		t.Fatalf("cannot run %s %s: %v\n%s", prog, strings.Join(args, " "), err, out)
	}
	return out
}

func run(t *testing.T, stdin []byte, prog string, args ...string) (string, error) {
	t.Helper()
	c := exec.Command(prog, args...)
	c.Stdin = bytes.NewReader(stdin)
	start := time.Now()
	out, err := c.CombinedOutput()
	t.Logf("%s %s (%.2fs)", prog, strings.Join(args, " "), time.Since(start).Seconds())
	return string(out), err
}

// TestVMGuestKit boots the kit's kernel with an initramfs from
// BuildInitramfs and a virtio-blk disk, the way the migrate tests boot a
// tiny libvirt guest, and checks the script's pattern landed on the disk.
func TestVMGuestKit(t *testing.T) {
	testtier.VM(t, "qemu-system-x86_64")
	if testtier.InVM() {
		t.Skip("host-side test")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	kernel, err := vmtest.Kernel(ctx)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	script := `i=0
while [ $i -lt 1000 ]; do printf 'block %06d\n' $i; i=$((i+1)); done >/dev/vda
echo pattern-written
`
	initrd, err := vmtest.BuildInitramfs(ctx, dir, script, nil)
	if err != nil {
		t.Fatal(err)
	}
	disk := filepath.Join(dir, "disk.raw")
	if err := os.WriteFile(disk, make([]byte, vmtest.MiB), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.CommandContext(ctx, vmtest.Qemu, "-nodefaults", "-no-user-config", "-no-reboot",
		"-accel", "tcg", "-cpu", "max", "-m", "256", "-display", "none", "-monitor", "none", "-serial", "stdio",
		"-kernel", kernel, "-initrd", initrd, "-append", vmtest.GuestCmdline,
		"-drive", "file="+disk+",format=raw,if=virtio").CombinedOutput()
	if err != nil {
		t.Fatalf("qemu: %v\n%s", err, out)
	}
	if !bytes.Contains(out, []byte("pattern-written")) {
		t.Errorf("console lacks the script's output:\n%s", out)
	}
	got, _ := os.ReadFile(disk)
	for _, i := range []int{0, 1, 999} {
		want := fmt.Sprintf("block %06d\n", i)
		off := i * len(want)
		if off+len(want) > len(got) || string(got[off:off+len(want)]) != want {
			t.Errorf("disk at %d: got %q, want %q", off, got[off:min(off+len(want), len(got))], want)
		}
	}
}
