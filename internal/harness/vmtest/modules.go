package vmtest

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"path/filepath"
	"strings"
)

// RunnerModules are the kernel modules the test VM loads at boot, in the
// order given (each after its own dependencies). Names are module names or
// aliases as `modprobe` accepts them; the kit resolves them against the
// kernel's modules.dep, so whatever the 6.1 kernel builds in (cbc,
// aes_generic, sha256, tmpfs, devtmpfs) simply drops out.
//
// Every module costs boot time under TCG (xfs alone takes a second to
// insmod), so rarely used ones are in OnDemandModules instead.
var RunnerModules = []string{
	// Host root over 9p on virtio-pci, the overlay that makes it writable,
	// and a guest entropy source so cryptsetup's key generation never waits.
	"virtio_pci", "9pnet_virtio", "9p", "overlay", "virtio_rng",
	// Block devices and device-mapper: what the VM tier exists for.
	// virtio_blk serves Options.SpareDisks: a real, unencrypted disk in
	// the guest (loop files live in tmpfs, which verify rightly calls RAM).
	"loop", "dm-mod", "dm-crypt", "virtio_blk",
	// Ciphers dm-crypt and cryptsetup ask for by template name. Not the
	// alias "aes": it also names padlock-aes, a VIA driver that never loads.
	// aesni-intel fails with ENODEV on a CPU model without AES-NI (qemu64);
	// /init tolerates that and the generic AES takes over.
	"aes_generic", "aesni_intel", "xts", "ecb", "cbc", "essiv", "sha256", "sha512",
	// cryptsetup encrypts LUKS2 keyslot areas through the kernel crypto
	// user API (AF_ALG) and has no fallback without it.
	"af_alg", "algif_skcipher", "algif_hash",
	// ext4 is every layout's default; it soft-depends on crc32c.
	"ext4", "crc32c",
}

// OnDemandModules are in the runner initramfs and in the guest's
// /lib/modules but not loaded at boot: the kernel loads them itself when
// asked (mount -t xfs, a dm table naming "snapshot" or "thin-pool"), and
// guest tools can `modprobe` them (zram).
var OnDemandModules = []string{
	"dm-snapshot", "dm-thin-pool", "zram",
	"vfat", "nls_ascii", "nls_cp437", "nls_iso8859_1", "nls_utf8", "xfs",
}

// GuestModules are what a tiny libvirt guest built with BuildInitramfs
// usually needs: its disks are virtio-blk on virtio-pci.
var GuestModules = []string{"virtio_pci", "virtio_blk"}

// ModuleStep is one line of `modprobe --show-depends`: a module file to
// insmod, or a module built into the kernel (nothing to load).
type ModuleStep struct {
	Name    string // module name as the kernel knows it, e.g. "dm_crypt"
	Path    string // path relative to /lib/modules/VERSION; empty if built in
	Builtin bool
}

// ParseShowDepends reads the output of `modprobe -d ROOT -S VERSION
// --show-depends NAME`. Each line is "insmod /ABS/PATH.ko [params]" or
// "builtin NAME"; paths are made relative to modDir
// (ROOT/lib/modules/VERSION) so the result can be installed anywhere.
func ParseShowDepends(out []byte, modDir string) ([]ModuleStep, error) {
	var steps []ModuleStep
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 0 {
			continue
		}
		switch {
		case f[0] == "builtin" && len(f) >= 2:
			steps = append(steps, ModuleStep{Name: normalizeModName(f[1]), Builtin: true})
		case f[0] == "insmod" && len(f) >= 2:
			rel, err := filepath.Rel(modDir, f[1])
			if err != nil || strings.HasPrefix(rel, "..") {
				return nil, fmt.Errorf("cannot parse modprobe output: %s is outside %s", f[1], modDir)
			}
			steps = append(steps, ModuleStep{Name: moduleNameFromPath(rel), Path: rel})
		default:
			return nil, fmt.Errorf("cannot parse modprobe output: unexpected line %q", sc.Text())
		}
	}
	return steps, sc.Err()
}

// MergeModuleSteps joins the dependency lists of several requested modules
// into one load order: the first occurrence of a module wins, which keeps
// every dependency ahead of the modules that need it because modprobe lists
// dependencies first. Built-in entries are dropped: there is nothing to load.
func MergeModuleSteps(lists ...[]ModuleStep) []ModuleStep {
	seen := map[string]bool{}
	var out []ModuleStep
	for _, l := range lists {
		for _, s := range l {
			if s.Builtin || seen[s.Path] {
				continue
			}
			seen[s.Path] = true
			out = append(out, s)
		}
	}
	return out
}

// ResolveModules asks modprobe (against a kernel tree extracted under root,
// already indexed by depmod) for the load order of the requested modules and
// their dependencies, soft dependencies included.
func ResolveModules(ctx context.Context, root, version string, names []string) ([]ModuleStep, error) {
	modDir := filepath.Join(root, "lib", "modules", version)
	var lists [][]ModuleStep
	for _, n := range names {
		out, err := run(ctx, "modprobe", "-d", root, "-S", version, "--show-depends", n)
		if err != nil {
			return nil, fmt.Errorf("cannot resolve kernel module %s: %w", n, err)
		}
		steps, err := ParseShowDepends(out, modDir)
		if err != nil {
			return nil, fmt.Errorf("cannot resolve kernel module %s: %w", n, err)
		}
		lists = append(lists, steps)
	}
	return MergeModuleSteps(lists...), nil
}

func moduleNameFromPath(p string) string {
	base := filepath.Base(p)
	for _, ext := range []string{".ko.xz", ".ko.zst", ".ko.gz", ".ko"} {
		if strings.HasSuffix(base, ext) {
			base = strings.TrimSuffix(base, ext)
			break
		}
	}
	return normalizeModName(base)
}

// normalizeModName mirrors the kernel: "-" and "_" are the same in module
// names, and the kernel reports "_".
func normalizeModName(n string) string { return strings.ReplaceAll(n, "-", "_") }
