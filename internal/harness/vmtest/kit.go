package vmtest

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"debug/elf"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// kitFormat changes whenever the kit's layout or the way it is built
// changes in a way the other key inputs do not capture.
const kitFormat = "cryptshift-vmtest-kit-1"

// kernelMeta is the Debian package that linux-image-amd64 points at. The
// generic flavour, not -cloud-amd64: the cloud kernel has no 9p.
const kernelMeta = "linux-image-amd64"

// Kit is a bootable test machine: a kernel and the runner initramfs.
type Kit struct {
	Dir           string   // the kit's cache directory
	KernelPackage string   // e.g. "linux-image-6.1.0-56-amd64=6.1.192-2"
	KernelVersion string   // e.g. "6.1.0-56-amd64"
	Kernel        string   // vmlinuz
	Initrd        string   // runner initramfs (uncompressed newc cpio)
	Modules       []string // loaded at boot
	OnDemand      []string // present, loaded when asked for
}

// CacheDir is where kits live: $CRYPTSHIFT_VM_CACHE, else
// $XDG_CACHE_HOME/cryptshift/vmtest (os.UserCacheDir).
func CacheDir() (string, error) {
	if d := os.Getenv("CRYPTSHIFT_VM_CACHE"); d != "" {
		return d, nil
	}
	d, err := os.UserCacheDir()
	if err != nil {
		return "", fmt.Errorf("cannot find a cache directory (set CRYPTSHIFT_VM_CACHE): %w", err)
	}
	return filepath.Join(d, "cryptshift", "vmtest"), nil
}

var kitMu sync.Mutex
var kitCached *Kit

// EnsureKit returns the cached kit, building it first if the kernel package
// or anything that goes into the initramfs changed. Concurrent callers, in
// this process or others (go test runs packages in parallel), build it once.
func EnsureKit(ctx context.Context) (*Kit, error) {
	kitMu.Lock()
	defer kitMu.Unlock()
	if kitCached != nil {
		return kitCached, nil
	}
	kt, err := kernelTree(ctx)
	if err != nil {
		return nil, err
	}
	bb, err := os.ReadFile(busyboxPath)
	if err != nil {
		return nil, fmt.Errorf("cannot read busybox (install busybox-static): %w", err)
	}
	key := kitKey(kt.Package, append(append([]string{}, RunnerModules...), OnDemandModules...), initScript(kt.Version)+runnerPayload, bb)
	cache, err := CacheDir()
	if err != nil {
		return nil, err
	}
	dir := filepath.Join(cache, "kit", key)
	k := &Kit{
		Dir:           dir,
		KernelPackage: kt.Package,
		KernelVersion: kt.Version,
		Kernel:        kt.Boot,
		Initrd:        filepath.Join(dir, "initrd.cpio"),
		Modules:       RunnerModules,
		OnDemand:      OnDemandModules,
	}
	unlock, err := lockFile(ctx, filepath.Join(cache, "build.lock"))
	if err != nil {
		return nil, err
	}
	defer unlock()
	manifestPath := filepath.Join(dir, "kit.json")
	if _, err := os.Stat(manifestPath); err == nil {
		// Marks the kit as in use for pruneKits.
		now := time.Now()
		_ = os.Chtimes(manifestPath, now, now)
		kitCached = k
		return k, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("cannot create kit directory: %w", err)
	}
	if err := buildInitramfs(ctx, kt, k.Initrd, runnerPayload, RunnerModules, OnDemandModules); err != nil {
		return nil, err
	}
	manifest, _ := json.MarshalIndent(k, "", "  ")
	if err := os.WriteFile(manifestPath, append(manifest, '\n'), 0o644); err != nil {
		return nil, fmt.Errorf("cannot write kit manifest: %w", err)
	}
	pruneKits(filepath.Join(cache, "kit"), key, 7*24*time.Hour)
	kitCached = k
	return k, nil
}

// pruneKits removes kits (13 MB each) other than keep that no process has
// used for maxAge; another checkout with other module lists may still want
// a recent one.
func pruneKits(dir, keep string, maxAge time.Duration) {
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if e.Name() == keep {
			continue
		}
		fi, err := os.Stat(filepath.Join(dir, e.Name(), "kit.json"))
		if err == nil && time.Since(fi.ModTime()) < maxAge {
			continue
		}
		os.RemoveAll(filepath.Join(dir, e.Name()))
	}
}

// Kernel returns the path of the kit's kernel image (downloading and
// extracting the Debian kernel package on first use), for booting guests
// built with BuildInitramfs. It is the uncompressed ELF vmlinux with a PVH
// entry point when the kernel has one (about 3 s faster to boot under TCG;
// qemu's -kernel and libvirt's <kernel> load it the same way), else the
// package's bzImage.
func Kernel(ctx context.Context) (string, error) {
	kt, err := kernelTree(ctx)
	if err != nil {
		return "", err
	}
	return kt.Boot, nil
}

// kitKey names a kit after everything that goes into it, so that a new
// kernel package, a changed module list, init script or busybox builds a
// new kit instead of reusing a stale one.
func kitKey(kernelPackage string, modules []string, scripts string, busybox []byte) string {
	h := sha256.New()
	for _, part := range []string{kitFormat, kernelPackage, strings.Join(modules, ","), scripts} {
		fmt.Fprintf(h, "%d:%s\n", len(part), part)
	}
	bb := sha256.Sum256(busybox)
	h.Write(bb[:])
	return hex.EncodeToString(h.Sum(nil))[:16]
}

type kernelTreeInfo struct {
	Package string // name=version
	Version string // uname -r of the kernel
	Root    string // extracted package root: boot/, lib/modules/VERSION/
	Vmlinuz string // the package's compressed bzImage
	// Boot is what qemu -kernel gets: the uncompressed vmlinux when the
	// kernel has a PVH entry point, else Vmlinuz.
	Boot string
}

var treeMu sync.Mutex
var treeCached *kernelTreeInfo

// kernelTree downloads and extracts the kernel package linux-image-amd64
// currently depends on, once per package version, and indexes its modules.
func kernelTree(ctx context.Context) (*kernelTreeInfo, error) {
	treeMu.Lock()
	defer treeMu.Unlock()
	if treeCached != nil {
		return treeCached, nil
	}
	cache, err := CacheDir()
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cache, 0o755); err != nil {
		return nil, fmt.Errorf("cannot create cache directory: %w", err)
	}
	name, version, err := resolveKernelPackage(ctx, cache)
	if err != nil {
		// Offline with an empty apt cache: a kernel extracted earlier still
		// boots, and a stale kernel beats no test tier.
		if kt, ok := newestKernelTree(cache); ok {
			fmt.Fprintf(os.Stderr, "vmtest: %v; using the cached %s\n", err, kt.Package)
			treeCached = kt
			return kt, nil
		}
		return nil, err
	}
	kt := &kernelTreeInfo{
		Package: name + "=" + version,
		Version: strings.TrimPrefix(name, "linux-image-"),
		Root:    filepath.Join(cache, "kernel", name+"_"+version, "root"),
	}
	kt.Vmlinuz = filepath.Join(kt.Root, "boot", "vmlinuz-"+kt.Version)
	done := filepath.Join(filepath.Dir(kt.Root), "complete")

	unlock, err := lockFile(ctx, filepath.Join(cache, "build.lock"))
	if err != nil {
		return nil, err
	}
	defer unlock()
	if _, err := os.Stat(done); err != nil {
		if err := extractKernel(ctx, name, version, kt); err != nil {
			return nil, err
		}
		if err := os.WriteFile(done, []byte(kt.Package+"\n"), 0o644); err != nil {
			return nil, fmt.Errorf("cannot mark kernel tree complete: %w", err)
		}
		// apt moved on to this kernel, so every process on this machine
		// will; the old trees (about 470 MB each) are dead weight.
		olds, _ := filepath.Glob(filepath.Join(cache, "kernel", "*"))
		for _, old := range olds {
			if old != filepath.Dir(kt.Root) {
				os.RemoveAll(old)
			}
		}
	}
	if err := pickBootImage(ctx, kt); err != nil {
		return nil, err
	}
	treeCached = kt
	return kt, nil
}

// pickBootImage sets kt.Boot, extracting boot/vmlinux-VERSION from the
// bzImage once. Under TCG, SeaBIOS, the real-mode setup and decompressing
// Debian's xz-compressed bzImage take about 3 s per boot; qemu loads an
// uncompressed ELF vmlinux with a PVH entry note directly, which measured
// 2.2-3.1 s instead of 5.5-5.8 s to the same point in the boot.
func pickBootImage(ctx context.Context, kt *kernelTreeInfo) error {
	kt.Boot = kt.Vmlinuz
	elfPath := filepath.Join(kt.Root, "boot", "vmlinux-"+kt.Version)
	noPVH := elfPath + ".no-pvh"
	if _, err := os.Stat(noPVH); err == nil {
		return nil
	}
	if _, err := os.Stat(elfPath); err == nil {
		kt.Boot = elfPath
		return nil
	}
	bz, err := os.ReadFile(kt.Vmlinuz)
	if err != nil {
		return fmt.Errorf("cannot read the kernel image: %w", err)
	}
	elfData, err := decompressBzImage(ctx, bz)
	if err == nil {
		err = checkPVH(elfData)
	}
	if err != nil {
		// Slower, but boots: remember the decision instead of retrying.
		fmt.Fprintf(os.Stderr, "vmtest: booting the compressed kernel: %v\n", err)
		return os.WriteFile(noPVH, []byte(err.Error()+"\n"), 0o644)
	}
	tmp := elfPath + ".tmp"
	if err := os.WriteFile(tmp, elfData, 0o644); err != nil {
		return fmt.Errorf("cannot write %s: %w", elfPath, err)
	}
	if err := os.Rename(tmp, elfPath); err != nil {
		return fmt.Errorf("cannot write %s: %w", elfPath, err)
	}
	kt.Boot = elfPath
	return nil
}

// xzMagic starts an xz stream (the .xz file format, section 2.1.1.1).
var xzMagic = []byte{0xFD, '7', 'z', 'X', 'Z', 0x00}

// decompressBzImage finds the xz payload in a bzImage (Debian builds with
// CONFIG_KERNEL_XZ) and decompresses it, like the kernel's
// scripts/extract-vmlinux. It needs xz(1): the payload uses the x86 BCJ
// filter, which busybox's unxz and the pure-Go decoders do not implement.
func decompressBzImage(ctx context.Context, bz []byte) ([]byte, error) {
	off := bytes.Index(bz, xzMagic)
	if off < 0 {
		return nil, errors.New("no xz payload in the bzImage")
	}
	cmd := exec.CommandContext(ctx, "xz", "-dc", "--single-stream")
	cmd.Stdin = bytes.NewReader(bz[off:])
	var out, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("cannot decompress the kernel (install xz-utils): %v: %s", err, strings.TrimSpace(stderr.String()))
	}
	return out.Bytes(), nil
}

// checkPVH accepts an ELF kernel that carries the Xen PVH entry point note
// (XEN_ELFNOTE_PHYS32_ENTRY), which qemu requires to boot an uncompressed
// kernel.
func checkPVH(data []byte) error {
	f, err := elf.NewFile(bytes.NewReader(data))
	if err != nil {
		return fmt.Errorf("the decompressed kernel is not ELF: %w", err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type != elf.PT_NOTE {
			continue
		}
		b, err := io.ReadAll(p.Open())
		if err != nil {
			return fmt.Errorf("cannot read the kernel's ELF notes: %w", err)
		}
		if hasELFNote(b, "Xen", xenElfnotePhys32Entry) {
			return nil
		}
	}
	return errors.New("the kernel has no PVH entry point (CONFIG_PVH)")
}

// xenElfnotePhys32Entry is XEN_ELFNOTE_PHYS32_ENTRY from
// include/xen/interface/elfnote.h.
const xenElfnotePhys32Entry = 18

// hasELFNote walks a PT_NOTE segment: namesz, descsz, type (4 bytes each,
// little-endian on x86), then name and desc, each padded to 4 bytes.
func hasELFNote(b []byte, name string, typ uint32) bool {
	for len(b) >= 12 {
		namesz := binary.LittleEndian.Uint32(b[0:])
		descsz := binary.LittleEndian.Uint32(b[4:])
		t := binary.LittleEndian.Uint32(b[8:])
		b = b[12:]
		nlen, dlen := align4(namesz), align4(descsz)
		if uint64(len(b)) < nlen+dlen {
			return false
		}
		n := strings.TrimRight(string(b[:namesz]), "\x00")
		if n == name && t == typ {
			return true
		}
		b = b[nlen+dlen:]
	}
	return false
}

func align4(n uint32) uint64 { return (uint64(n) + 3) &^ 3 }

func extractKernel(ctx context.Context, name, version string, kt *kernelTreeInfo) error {
	pkgDir := filepath.Dir(kt.Root)
	if err := os.RemoveAll(pkgDir); err != nil {
		return fmt.Errorf("cannot clear %s: %w", pkgDir, err)
	}
	dl := filepath.Join(pkgDir, "download")
	if err := os.MkdirAll(dl, 0o755); err != nil {
		return fmt.Errorf("cannot create %s: %w", dl, err)
	}
	fmt.Fprintf(os.Stderr, "vmtest: downloading %s=%s\n", name, version)
	if _, err := runDir(ctx, dl, "apt-get", "download", "-q", name+"="+version); err != nil {
		return fmt.Errorf("cannot download the kernel package: %w", err)
	}
	debs, _ := filepath.Glob(filepath.Join(dl, name+"_*.deb"))
	if len(debs) != 1 {
		return fmt.Errorf("cannot find the downloaded kernel package in %s", dl)
	}
	if _, err := run(ctx, "dpkg-deb", "-x", debs[0], kt.Root); err != nil {
		return fmt.Errorf("cannot extract the kernel package: %w", err)
	}
	if _, err := os.Stat(kt.Vmlinuz); err != nil {
		return fmt.Errorf("cannot find the kernel image in %s: %w", debs[0], err)
	}
	// Debian ships no module index (its postinst runs depmod), and modprobe
	// --show-depends needs one.
	if _, err := run(ctx, "depmod", "-b", kt.Root, kt.Version); err != nil {
		return fmt.Errorf("cannot index the kernel's modules: %w", err)
	}
	return os.RemoveAll(dl)
}

// aptListsDir holds apt's package lists; resolution is cached against it.
var aptListsDir = "/var/lib/apt/lists"

// resolveKernelPackage asks apt which kernel linux-image-amd64 depends on
// and that package's candidate version. apt-cache takes about a second per
// call here and every test binary asks, so the answer is cached until apt's
// package lists change (apt-get update).
func resolveKernelPackage(ctx context.Context, cache string) (name, version string, err error) {
	stamp := aptListsStamp(aptListsDir)
	memo := filepath.Join(cache, "kernel-package")
	if b, err := os.ReadFile(memo); err == nil && stamp != "" {
		if f := strings.Fields(string(b)); len(f) == 3 && f[0] == stamp {
			return f[1], f[2], nil
		}
	}
	name, version, err = queryKernelPackage(ctx)
	if err != nil {
		return "", "", err
	}
	if stamp = aptListsStamp(aptListsDir); stamp != "" {
		_ = os.WriteFile(memo, []byte(stamp+" "+name+" "+version+"\n"), 0o644)
	}
	return name, version, nil
}

// aptListsStamp fingerprints apt's lists by name, size and mtime; empty
// when there are none.
func aptListsStamp(dir string) string {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return ""
	}
	h := sha256.New()
	n := 0
	for _, e := range entries {
		fi, err := e.Info()
		if err != nil || !fi.Mode().IsRegular() || !strings.Contains(e.Name(), "_Packages") {
			continue
		}
		fmt.Fprintf(h, "%s %d %d\n", e.Name(), fi.Size(), fi.ModTime().UnixNano())
		n++
	}
	if n == 0 {
		return ""
	}
	return hex.EncodeToString(h.Sum(nil))[:16]
}

// queryKernelPackage runs apt-cache, refreshing the package lists once if
// it finds nothing (a fresh machine).
func queryKernelPackage(ctx context.Context) (name, version string, err error) {
	for attempt := 0; ; attempt++ {
		out, err := run(ctx, "apt-cache", "depends", kernelMeta)
		if err == nil {
			name, err = pickKernelPackage(out)
		}
		if err == nil {
			var show []byte
			show, err = run(ctx, "apt-cache", "show", "--no-all-versions", name)
			if err == nil {
				version, err = debField(show, "Version")
			}
		}
		if err == nil {
			return name, version, nil
		}
		if attempt > 0 {
			return "", "", fmt.Errorf("cannot find the kernel package %s depends on (does apt-get update work?): %w", kernelMeta, err)
		}
		if _, uerr := run(ctx, "apt-get", "update", "-qq"); uerr != nil {
			return "", "", fmt.Errorf("cannot find the kernel package %s depends on: %v; and %w", kernelMeta, err, uerr)
		}
	}
}

// pickKernelPackage reads `apt-cache depends linux-image-amd64` and returns
// the versioned image package it depends on.
func pickKernelPackage(out []byte) (string, error) {
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		// "|Depends:" marks an alternative; the first alternative is the one
		// apt installs.
		rest, ok := strings.CutPrefix(strings.TrimPrefix(line, "|"), "Depends: ")
		if !ok {
			continue
		}
		p := strings.TrimSpace(rest)
		if strings.HasPrefix(p, "linux-image-") && strings.HasSuffix(p, "-amd64") && !strings.HasSuffix(p, "-cloud-amd64") && !strings.HasPrefix(p, "<") {
			return p, nil
		}
	}
	return "", errors.New("no linux-image-*-amd64 dependency listed")
}

// debField returns a field of the first stanza of a Debian control file.
func debField(out []byte, field string) (string, error) {
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(make([]byte, 0, 64*1024), 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), field+": "); ok {
			return strings.TrimSpace(v), nil
		}
		if sc.Text() == "" {
			break
		}
	}
	return "", fmt.Errorf("no %s field in apt's answer", field)
}

func newestKernelTree(cache string) (*kernelTreeInfo, bool) {
	marks, _ := filepath.Glob(filepath.Join(cache, "kernel", "*", "complete"))
	sort.Slice(marks, func(i, j int) bool {
		a, _ := os.Stat(marks[i])
		b, _ := os.Stat(marks[j])
		return a.ModTime().After(b.ModTime())
	})
	for _, m := range marks {
		b, err := os.ReadFile(m)
		if err != nil {
			continue
		}
		pkg := strings.TrimSpace(string(b))
		name, _, _ := strings.Cut(pkg, "=")
		kt := &kernelTreeInfo{Package: pkg, Version: strings.TrimPrefix(name, "linux-image-"), Root: filepath.Join(filepath.Dir(m), "root")}
		kt.Vmlinuz = filepath.Join(kt.Root, "boot", "vmlinuz-"+kt.Version)
		kt.Boot = kt.Vmlinuz
		if _, err := os.Stat(kt.Vmlinuz); err == nil {
			return kt, true
		}
	}
	return nil, false
}

// lockFile takes an exclusive flock on path, waiting until ctx is done.
// flock locks die with the process, so a crashed build never wedges others.
func lockFile(ctx context.Context, path string) (unlock func(), err error) {
	for {
		release, ok, err := flockNB(path)
		if err != nil {
			return nil, err
		}
		if ok {
			return release, nil
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("cannot lock %s: %w", path, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// tryLock takes path's flock if it is free.
func tryLock(path string) (func(), bool) {
	release, ok, err := flockNB(path)
	return release, ok && err == nil
}

func flockNB(path string) (func(), bool, error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, false, fmt.Errorf("cannot open lock %s: %w", path, err)
	}
	err = unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
	if err == nil {
		return func() { f.Close() }, true, nil
	}
	f.Close()
	if errors.Is(err, unix.EWOULDBLOCK) {
		return nil, false, nil
	}
	return nil, false, fmt.Errorf("cannot lock %s: %w", path, err)
}
