package boot

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/cryptshift/cryptshift/internal/harness/testtier"
)

// Programs the boot tier needs on the host; tests pass them to
// testtier.Boot. scripts/deps.sh installs them.
var Programs = []string{"qemu-system-x86_64", "qemu-img", "debootstrap", "mke2fs",
	"ssh", "ssh-keygen", "swtpm", "socat", "jose", Tangd, TangdKeygen}

// Require gates a boot-tier test: testtier.Boot with Programs, plus the
// OVMF firmware files and root (debootstrap, chroot).
func Require(t testing.TB) {
	t.Helper()
	testtier.Boot(t, Programs...)
	for _, f := range []string{OVMFCode, OVMFVars} {
		if _, err := os.Stat(f); err != nil {
			testtier.Unavailable(t, f+" is missing: install the ovmf package (scripts/deps.sh)")
		}
	}
	if os.Geteuid() != 0 {
		testtier.Unavailable(t, "the boot tier builds its Debian image with debootstrap and needs root")
	}
}

// RunDir is a test's directory for disk overlays, sockets and logs:
// t.TempDir(), or with CRYPTSHIFT_BOOT_LOGDIR=DIR a fresh DIR/TEST-NAME
// that stays after the test, so the consoles and logs can be read.
func RunDir(t testing.TB) string {
	t.Helper()
	base := os.Getenv("CRYPTSHIFT_BOOT_LOGDIR")
	if base == "" {
		return t.TempDir()
	}
	dir := filepath.Join(base, strings.ReplaceAll(t.Name(), "/", "_"))
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Logf("logs and disks in %s (CRYPTSHIFT_BOOT_LOGDIR; remove it when done)", dir)
	return dir
}

// Overlay makes a copy-on-write qcow2 image over base, so that every boot
// starts from the same state and base is never written.
func Overlay(ctx context.Context, base, path string) (Disk, error) {
	format := "raw"
	if strings.HasSuffix(base, ".qcow2") {
		format = "qcow2"
	}
	out, err := exec.CommandContext(ctx, "qemu-img", "create", "-q", "-f", "qcow2", "-b", base, "-F", format, path).CombinedOutput()
	if err != nil {
		return Disk{}, fmt.Errorf("cannot create an overlay over %s: %v: %s", base, err, out)
	}
	return Disk{Path: path, Format: "qcow2"}, nil
}

// SparseDisk creates an empty raw disk image of size bytes.
func SparseDisk(path string, size int64) (Disk, error) {
	f, err := os.Create(path)
	if err != nil {
		return Disk{}, fmt.Errorf("cannot create disk %s: %w", path, err)
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		return Disk{}, fmt.Errorf("cannot size disk %s: %w", path, err)
	}
	return Disk{Path: path, Format: "raw"}, nil
}

// Boot starts m for a test: its logs stay in m.Dir (t.TempDir() or the
// caller's), qemu is stopped by PID when the test ends, and a failing test
// prints the console's tail. ssh is set up with key.
func Boot(t testing.TB, ctx context.Context, m Machine, key string) *VM {
	t.Helper()
	vm, err := m.Start(ctx)
	if err != nil {
		t.Fatalf("cannot boot %s: %v", m.Name, err)
	}
	vm.SSH = &SSH{Port: vm.M.SSHPort, Key: key, Log: filepath.Join(m.Dir, m.Name+".ssh.log")}
	t.Cleanup(func() {
		vm.Stop()
		if t.Failed() {
			t.Logf("%s: console tail (whole log: %s):\n%s", m.Name, vm.Console.LogPath(), vm.Console.Tail(40))
		}
	})
	t.Logf("%s: booting (console %s)", m.Name, vm.Console.LogPath())
	return vm
}

// Up is the command WaitUp uses for "reached multi-user": systemd has
// finished starting (running or degraded; the harness reports which) and
// the default target is active.
const Up = "systemctl is-system-running --wait >/dev/null; systemctl is-active multi-user.target"

// WaitMultiUser waits for the guest to reach multi-user over SSH and
// returns how long that took since qemu started.
func (vm *VM) WaitMultiUser(ctx context.Context, timeout time.Duration) (time.Duration, error) {
	if err := vm.SSH.WaitUp(ctx, vm, Up, timeout); err != nil {
		return 0, err
	}
	return vm.Uptime(), nil
}

// PowerOff asks the guest to power off over SSH and waits for qemu to
// exit.
func (vm *VM) PowerOff(ctx context.Context, timeout time.Duration) error {
	// The connection drops as the guest goes down; the exit is the proof.
	_, _ = vm.SSH.Run(ctx, "systemctl --no-block poweroff", nil)
	return vm.Wait(ctx, timeout)
}

// UnlockPrompt is cryptsetup's askpass prompt in the initramfs
// ("Please unlock disk root_crypt: ").
var UnlockPrompt = regexp.MustCompile(`Please unlock disk ([A-Za-z0-9_.-]+):`)

// ClevisUnlocked is what clevis-initramfs's unlock loop prints when a pin
// opened a disk; it does not reach the console (the loop runs in the
// background), so tests look for Unlocked and prove the absence of input
// with Console.Typed.
var ClevisUnlocked = regexp.MustCompile(`Unlocked (\S+) with clevis`)

// Unlocked is cryptsetup's line in the initramfs once a volume is open,
// whoever gave the key (console, dropbear, clevis).
var Unlocked = regexp.MustCompile(`cryptsetup: (\S+): set up successfully`)
