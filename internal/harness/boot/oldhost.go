package boot

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	_ "embed"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// Suite is the Debian release of the old host.
const Suite = "bookworm"

// OldHostPackages are debootstrap's --include list for the old host: a
// kernel and initramfs-tools, everything the encrypted layout needs at boot
// (cryptsetup-initramfs, lvm2, GRUB for EFI and BIOS, dropbear-initramfs,
// Clevis with its tang and tpm2 pins), the mail server (Postfix, Dovecot)
// and the tools the move uses (rsync, e2fsprogs, dosfstools). Networking is
// systemd-networkd, part of systemd.
var OldHostPackages = []string{
	"linux-image-amd64", "systemd-sysv", "udev", "dbus", "initramfs-tools", "kmod",
	"cryptsetup", "cryptsetup-initramfs", "lvm2",
	"grub-efi-amd64-bin", "grub-pc-bin", "grub2-common",
	"dropbear-initramfs",
	"clevis", "clevis-luks", "clevis-initramfs", "clevis-tpm2", "tpm2-tools",
	"postfix", "dovecot-imapd",
	"openssh-server", "rsync", "e2fsprogs", "dosfstools", "iproute2", "procps", "less",
}

//go:embed scripts/oldhost-config.sh
var oldHostConfig string

// imageFormat changes whenever the image's layout or the way it is built
// changes in a way the package list and the script do not capture.
const imageFormat = "cryptshift-boot-oldhost-1"

// OldHostImageSize is the size of the old host's root filesystem image
// (sparse); the tree is about 800 MB.
const OldHostImageSize = 3 << 30

// OldHost is a built old host: a plaintext ext4 root filesystem image
// (the whole disk, no partition table) and the kernel and initramfs from
// its /boot, which the harness boots directly (the old host's boot path is
// not under test; the moved system's is).
type OldHost struct {
	Dir           string        `json:"-"`
	Image         string        `json:"image"`
	Kernel        string        `json:"kernel"`
	Initrd        string        `json:"initrd"`
	KernelVersion string        `json:"kernelVersion"`
	RootUUID      string        `json:"rootUUID"`
	Key           string        `json:"key"` // the test SSH key, authorized for root
	BuildTime     time.Duration `json:"buildTime"`
	Debootstrap   time.Duration `json:"debootstrap"`
}

// Append is the old host's kernel command line.
func (o *OldHost) Append() string {
	return "root=UUID=" + o.RootUUID + " ro console=ttyS0 panic=-1"
}

// Mails is how many mails the old host's user alice has in her Maildir.
const Mails = 3

// CacheDir is where built images live: $CRYPTSHIFT_BOOT_CACHE, else
// $XDG_CACHE_HOME/cryptshift/boot.
func CacheDir() (string, error) {
	if d := os.Getenv("CRYPTSHIFT_BOOT_CACHE"); d != "" {
		return d, nil
	}
	d, err := os.UserCacheDir()
	if err != nil {
		return "", fmt.Errorf("cannot find a cache directory (set CRYPTSHIFT_BOOT_CACHE): %w", err)
	}
	return filepath.Join(d, "cryptshift", "boot"), nil
}

// recipeKey names an image after everything that goes into it.
func recipeKey() string {
	h := sha256.New()
	for _, part := range []string{imageFormat, Suite, strings.Join(OldHostPackages, ","), oldHostConfig, fmt.Sprint(OldHostImageSize)} {
		fmt.Fprintf(h, "%d:%s\n", len(part), part)
	}
	return hex.EncodeToString(h.Sum(nil))[:16]
}

// EnsureOldHost returns the cached old host, building it first if the
// recipe changed (about 3 minutes: debootstrap from the Debian archive,
// configuration, mke2fs -d). Concurrent callers build it once. logf
// receives progress lines.
func EnsureOldHost(ctx context.Context, logf func(string, ...any)) (*OldHost, error) {
	cache, err := CacheDir()
	if err != nil {
		return nil, err
	}
	dir := filepath.Join(cache, "oldhost-"+recipeKey())
	if err := os.MkdirAll(cache, 0o755); err != nil {
		return nil, fmt.Errorf("cannot create the cache directory: %w", err)
	}
	unlock, err := lockFile(ctx, filepath.Join(cache, "build.lock"))
	if err != nil {
		return nil, err
	}
	defer unlock()
	manifest := filepath.Join(dir, "oldhost.json")
	if b, err := os.ReadFile(manifest); err == nil {
		o := &OldHost{Dir: dir}
		if err := json.Unmarshal(b, o); err == nil {
			o.resolve()
			now := time.Now()
			_ = os.Chtimes(manifest, now, now)
			return o, nil
		}
	}
	o, err := buildOldHost(ctx, dir, logf)
	if err != nil {
		return nil, err
	}
	b, _ := json.MarshalIndent(o, "", "  ")
	if err := os.WriteFile(manifest, append(b, '\n'), 0o644); err != nil {
		return nil, fmt.Errorf("cannot write the old host manifest: %w", err)
	}
	o.resolve()
	pruneOld(cache, filepath.Base(dir))
	return o, nil
}

// resolve turns the manifest's relative names into paths.
func (o *OldHost) resolve() {
	for _, p := range []*string{&o.Image, &o.Kernel, &o.Initrd, &o.Key} {
		if !filepath.IsAbs(*p) {
			*p = filepath.Join(o.Dir, *p)
		}
	}
}

// pruneOld removes images of other recipes (about 1 GB each).
func pruneOld(cache, keep string) {
	olds, _ := filepath.Glob(filepath.Join(cache, "oldhost-*"))
	for _, d := range olds {
		if filepath.Base(d) != keep {
			os.RemoveAll(d)
		}
	}
}

func buildOldHost(ctx context.Context, dir string, logf func(string, ...any)) (*OldHost, error) {
	start := time.Now()
	if err := os.RemoveAll(dir); err != nil {
		return nil, fmt.Errorf("cannot clear %s: %w", dir, err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("cannot create %s: %w", dir, err)
	}
	root := filepath.Join(dir, "root")
	// The tree is only needed until it is in the image.
	defer os.RemoveAll(root)
	log := filepath.Join(dir, "build.log")
	o := &OldHost{Dir: dir, Image: "root.img", Kernel: "vmlinuz", Initrd: "initrd.img", Key: "id_ed25519"}

	logf("boot: debootstrap %s into %s (log %s)", Suite, root, log)
	t0 := time.Now()
	if err := runLogged(ctx, log, "debootstrap", "--variant=minbase", "--include="+strings.Join(OldHostPackages, ","), Suite, root); err != nil {
		return nil, fmt.Errorf("cannot debootstrap the old host (needs root, the debootstrap package and the Debian archive): %w", err)
	}
	o.Debootstrap = time.Since(t0)
	logf("boot: debootstrap took %s", o.Debootstrap.Round(time.Second))

	key := filepath.Join(dir, o.Key)
	if err := GenerateKey(ctx, key); err != nil {
		return nil, err
	}
	o.RootUUID = newUUID()
	script := filepath.Join(dir, "oldhost-config.sh")
	if err := os.WriteFile(script, []byte(oldHostConfig), 0o755); err != nil {
		return nil, fmt.Errorf("cannot write the configuration script: %w", err)
	}
	if err := runLogged(ctx, log, "bash", script, root, key+".pub", o.RootUUID); err != nil {
		return nil, fmt.Errorf("cannot configure the old host: %w", err)
	}

	kernels, _ := filepath.Glob(filepath.Join(root, "boot", "vmlinuz-*"))
	if len(kernels) != 1 {
		return nil, fmt.Errorf("cannot find the old host's kernel: %d vmlinuz-* in /boot", len(kernels))
	}
	o.KernelVersion = strings.TrimPrefix(filepath.Base(kernels[0]), "vmlinuz-")
	if err := copyFile(kernels[0], filepath.Join(dir, o.Kernel)); err != nil {
		return nil, fmt.Errorf("cannot copy the old host's kernel: %w", err)
	}
	if err := copyFile(filepath.Join(root, "boot", "initrd.img-"+o.KernelVersion), filepath.Join(dir, o.Initrd)); err != nil {
		return nil, fmt.Errorf("cannot copy the old host's initramfs: %w", err)
	}
	// mke2fs -d fills the filesystem from the tree (owners, modes, device
	// nodes, hard links, xattrs) without mounting anything: no loop device,
	// and the host kernel's lack of device-mapper does not matter.
	img := filepath.Join(dir, o.Image)
	if err := runLogged(ctx, log, "mke2fs", "-q", "-F", "-t", "ext4", "-L", "oldroot", "-U", o.RootUUID,
		"-d", root, img, fmt.Sprintf("%dk", OldHostImageSize>>10)); err != nil {
		return nil, fmt.Errorf("cannot make the old host's root image: %w", err)
	}
	o.BuildTime = time.Since(start)
	logf("boot: old host built in %s", o.BuildTime.Round(time.Second))
	return o, nil
}

// runLogged runs a build command with its output appended to log; on
// failure the error quotes the log's tail.
func runLogged(ctx context.Context, log string, argv ...string) error {
	f, err := os.OpenFile(log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("cannot open %s: %w", log, err)
	}
	defer f.Close()
	fmt.Fprintf(f, "$ %s\n", quote(argv))
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive", "LC_ALL=C.UTF-8")
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s: %v; log tail (%s):\n%s", quote(argv), err, log, tail(log, 15))
	}
	return nil
}

func newUUID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

// lockFile takes an exclusive flock on path, polling until ctx is done;
// the lock dies with the process, so a crashed build never wedges others.
func lockFile(ctx context.Context, path string) (func(), error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("cannot open lock %s: %w", path, err)
	}
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return func() { f.Close() }, nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) {
			f.Close()
			return nil, fmt.Errorf("cannot lock %s: %w", path, err)
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, fmt.Errorf("cannot lock %s: %w", path, ctx.Err())
		case <-time.After(200 * time.Millisecond):
		}
	}
}
