package doctor

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/cryptshift/cryptshift/internal/doors/execx"
	"github.com/cryptshift/cryptshift/internal/hostview/rootfs"
	"github.com/cryptshift/cryptshift/libvirt"
	"github.com/cryptshift/cryptshift/luks"
)

// Minimum versions, and the upstream feature each one encodes.
var (
	// cryptsetup 2.0.0 introduced the LUKS2 format with argon2 key
	// derivation and --sector-size, which every planned luksFormat uses.
	minCryptsetup = version{2, 0, 0}
	// LVM 2.02.158 added --reportformat json, the only way cryptshift reads
	// LVM state.
	minLVM = version{2, 2, 158}
	// qemu-img 2.10 added -U/--force-share, which migrate uses to read
	// images a running qemu holds.
	minQemuImg = version{2, 10, 0}
)

type version [3]int

func (v version) less(w version) bool {
	for i := range v {
		if v[i] != w[i] {
			return v[i] < w[i]
		}
	}
	return false
}

func (v version) String() string { return fmt.Sprintf("%d.%d.%d", v[0], v[1], v[2]) }

// parseVersion finds the first "X.Y.Z" that re's group 1 captures, and
// returns it as numbers and as the tool spells it (LVM's "2.03.16").
func parseVersion(re *regexp.Regexp, out string) (version, string, bool) {
	m := re.FindStringSubmatch(out)
	if m == nil {
		return version{}, "", false
	}
	var v version
	for i, p := range strings.SplitN(m[1], ".", 3) {
		n, err := strconv.Atoi(p)
		if err != nil {
			return version{}, "", false
		}
		v[i] = n
	}
	return v, m[1], true
}

var (
	reCryptsetup = regexp.MustCompile(`(?m)^cryptsetup (\d+\.\d+\.\d+)`)
	reLVM        = regexp.MustCompile(`LVM version:\s*(\d+\.\d+\.\d+)`)
	reQemuImg    = regexp.MustCompile(`qemu-img version (\d+\.\d+\.\d+)`)
)

type tools struct {
	o   Options
	ctx context.Context
}

// sbinDirs are where Debian keeps administrator tools; a normal user's PATH
// lacks them, so doctor looks there before calling a tool missing.
var sbinDirs = []string{"/usr/local/sbin", "/usr/sbin", "/sbin"}

func lookPath(prog string) (string, error) {
	if p, err := exec.LookPath(prog); err == nil {
		return p, nil
	}
	for _, d := range sbinDirs {
		p := filepath.Join(d, prog)
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s: not found in PATH or %s", prog, strings.Join(sbinDirs, ", "))
}

// find locates the program behind an execx tool name.
func (t *tools) find(tool string) (string, bool) {
	prog := execx.Tools[tool]
	if prog == "" {
		prog = tool
	}
	p, err := t.o.LookPath(prog)
	return p, err == nil
}

// runAs is the execx tool name to run a program found at p by: the tool
// itself when PATH leads to it, else the full path (execx runs an unknown
// tool name as a program).
func runAs(tool, p string) string {
	if onPath(p) {
		return tool
	}
	return p
}

// versionOf runs TOOL ARGS and parses its version.
func (t *tools) versionOf(tool string, re *regexp.Regexp, args ...string) (version, string, error) {
	res, err := t.o.Run.Run(t.ctx, execx.Cmd{Tool: tool, Args: args})
	if err != nil {
		return version{}, "", err
	}
	out := string(res.Stdout) + string(res.Stderr)
	v, raw, ok := parseVersion(re, out)
	if !ok {
		return version{}, "", fmt.Errorf("cannot read the version of %s from %q", tool, firstLine(out))
	}
	return v, raw, nil
}

func firstLine(s string) string {
	l, _, _ := strings.Cut(strings.TrimSpace(s), "\n")
	return l
}

// versioned checks that a tool exists and is recent enough.
func (t *tools) versioned(id, title, tool, pkg string, min version, re *regexp.Regexp, args ...string) Check {
	c := Check{ID: id, Title: title}
	p, ok := t.find(tool)
	if !ok {
		c.Status, c.Found, c.Fix = Fail, tool+" is not installed", "apt-get install "+pkg
		return c
	}
	v, raw, err := t.versionOf(runAs(tool, p), re, args...)
	if err != nil {
		c.Status, c.Found, c.Fix = Fail, fmt.Sprintf("%s does not run: %v", p, err), "reinstall it: apt-get install --reinstall "+pkg
		return c
	}
	c.Found = fmt.Sprintf("%s %s (%s)", tool, raw, p)
	if v.less(min) {
		c.Status, c.Fix = Fail, fmt.Sprintf("cryptshift needs %s %s or newer: upgrade %s", tool, min, pkg)
		return c
	}
	c.Status = OK
	if !onPath(p) {
		c.Status = Warn
		c.Found += "; not in PATH: run cryptshift as root, whose PATH has the sbin directories"
	}
	return c
}

func onPath(p string) bool {
	dir := filepath.Dir(p)
	for _, d := range filepath.SplitList(os.Getenv("PATH")) {
		if d == dir {
			return true
		}
	}
	return false
}

func (t *tools) cryptsetup() Check {
	return t.versioned("tool.cryptsetup", "cryptsetup (LUKS2)", "cryptsetup", "cryptsetup", minCryptsetup, reCryptsetup, "--version")
}

func (t *tools) lvm() Check {
	return t.versioned("tool.lvm", "LVM tools", "lvm", "lvm2", minLVM, reLVM, "version")
}

func (t *tools) qemuImg() Check {
	return t.versioned("tool.qemu-img", "qemu-img (guest disk copies)", "qemu-img", "qemu-utils", minQemuImg, reQemuImg, "--version")
}

// argon2id formats a 1 MiB scratch file as LUKS2 with argon2id at the
// smallest cost cryptsetup accepts (4 iterations, 32 KiB) and reads the
// header back. That is what apply's luksFormat needs, without device-mapper
// and in about 0.1 s; `cryptsetup benchmark --pbkdf argon2id` takes seconds
// and refuses --pbkdf-force-iterations. A cryptsetup built without argon2
// (some FIPS builds) refuses the format.
func (t *tools) argon2id(cs Check) Check {
	c := Check{ID: "cryptsetup.argon2id", Title: "argon2id key derivation in cryptsetup"}
	if !cs.met() {
		c.Status, c.Found = Skip, "needs cryptsetup"
		return c
	}
	dir, err := os.MkdirTemp(t.o.TempDir, "cryptshift-doctor-")
	if err != nil {
		c.Status, c.Found = Warn, fmt.Sprintf("cannot create a scratch file to test with: %v", err)
		return c
	}
	defer os.RemoveAll(dir)
	img := filepath.Join(dir, "probe.img")
	// 16 KiB of LUKS2 metadata and 512 KiB of keyslots hold one keyslot
	// of a 512-bit key (4000 anti-forensic stripes of 64 bytes = 250 KiB).
	if err := os.WriteFile(img, nil, 0o600); err != nil || os.Truncate(img, 1<<20) != nil {
		c.Status, c.Found = Warn, fmt.Sprintf("cannot create a scratch file in %s to test with", dir)
		return c
	}
	// A throwaway key for a throwaway header; it goes on stdin like every
	// key cryptshift hands to cryptsetup.
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		c.Status, c.Found = Warn, fmt.Sprintf("cannot generate a test key: %v", err)
		return c
	}
	p, _ := t.find("cryptsetup")
	tool := runAs("cryptsetup", p)
	_, err = t.o.Run.Run(t.ctx, execx.Cmd{Tool: tool, Args: luks.ProbeFormat{Image: img}.Argv()[1:], Stdin: key})
	if err != nil {
		c.Status, c.Found = Fail, fmt.Sprintf("cryptsetup cannot format LUKS2 with argon2id: %v", err)
		c.Fix = "install a cryptsetup built with argon2 (Debian's cryptsetup-bin is)"
		return c
	}
	res, err := t.o.Run.Run(t.ctx, execx.Cmd{Tool: tool, Args: []string{"luksDump", img}})
	if err != nil {
		c.Status, c.Found = Warn, fmt.Sprintf("formatted, but cannot read the header back: %v", err)
		return c
	}
	if !regexp.MustCompile(`PBKDF:\s+argon2id`).Match(res.Stdout) {
		c.Status, c.Found = Fail, "cryptsetup formatted the test header without argon2id"
		c.Fix = "install a cryptsetup built with argon2 (Debian's cryptsetup-bin is)"
		return c
	}
	c.Status, c.Found = OK, "a LUKS2 test header with an argon2id keyslot was written and read back"
	return c
}

// need checks for tools a capability cannot do without.
func (t *tools) need(id, title, pkgs string, progs ...string) Check {
	return t.present(id, title, pkgs, Fail, progs...)
}

// optional checks for tools only some layouts need.
func (t *tools) optional(id, title, pkgs string, progs ...string) Check {
	return t.present(id, title, pkgs, Warn, progs...)
}

func (t *tools) present(id, title, pkgs string, missing Status, progs ...string) Check {
	c := Check{ID: id, Title: title}
	var have, lack []string
	for _, p := range progs {
		if _, ok := t.find(p); ok {
			have = append(have, p)
		} else {
			lack = append(lack, p)
		}
	}
	if len(lack) == 0 {
		c.Status, c.Found = OK, strings.Join(have, ", ")
		return c
	}
	c.Status, c.Found, c.Fix = missing, "missing: "+strings.Join(lack, ", "), "apt-get install "+pkgs
	return c
}

// initramfs: an encrypted root is unlocked before the root filesystem is
// mounted, so the initramfs must carry cryptsetup and the crypttab: on
// Debian the cryptroot hook of cryptsetup-initramfs, with dracut its crypt
// module.
func initramfs(fsys rootfs.FS) Check {
	c := Check{ID: "boot.initramfs-crypt", Title: "initramfs can unlock an encrypted root"}
	switch {
	case rootfs.Exists(fsys, "/usr/share/initramfs-tools/hooks/cryptroot"):
		c.Status, c.Found = OK, "initramfs-tools with the cryptroot hook (cryptsetup-initramfs)"
	case rootfs.Exists(fsys, "/usr/lib/dracut/modules.d/90crypt"):
		c.Status, c.Found = OK, "dracut with its crypt module"
	default:
		c.Status, c.Found = Warn, "no initramfs generator with cryptsetup support (neither cryptsetup-initramfs nor dracut's crypt module)"
		c.Fix = "before applying a layout with an encrypted root: apt-get install cryptsetup-initramfs"
	}
	return c
}

func (t *tools) libvirt() Check {
	c := Check{ID: "libvirt", Title: "libvirt daemon reachable"}
	v, socket, err := t.o.Libvirt(t.o.Connect)
	if err != nil {
		c.Status, c.Found = Fail, err.Error()
		c.Fix = "start libvirtd (systemctl start libvirtd; virtqemud on modular hosts) or pass --connect URI|SOCKET; to install: apt-get install libvirt-daemon-system"
		return c
	}
	c.Status = OK
	c.Found = fmt.Sprintf("libvirt %d.%d.%d at %s", v/1000000, v/1000%1000, v%1000, socket)
	return c
}

// dialLibvirt connects through package libvirt. The connection's own
// timeout covers dialing; the RPC calls after it have none, so the whole
// probe runs under a deadline and a daemon that accepts but never answers
// costs at most timeout.
func dialLibvirt(timeout time.Duration) func(string) (uint64, string, error) {
	return func(connect string) (uint64, string, error) {
		ep, err := libvirt.ParseConnect(connect)
		if err != nil {
			return 0, "", err
		}
		type answer struct {
			v   uint64
			err error
		}
		ch := make(chan answer, 1)
		go func() {
			conn, err := libvirt.Dial(connect)
			if err != nil {
				// Dial's own advice repeats the fix doctor gives;
				// keep the cause.
				if cause := errors.Unwrap(err); cause != nil {
					err = fmt.Errorf("cannot connect to libvirt at %s (%s): %w", ep.Socket, ep.URI, cause)
				}
				ch <- answer{err: err}
				return
			}
			defer conn.Close()
			v, err := conn.Version()
			ch <- answer{v, err}
		}()
		select {
		case a := <-ch:
			if a.err != nil {
				return 0, ep.Socket, a.err
			}
			return a.v, ep.Socket, nil
		case <-time.After(timeout):
			return 0, ep.Socket, fmt.Errorf("cannot connect to libvirt at %s: no answer within %s", ep.Socket, timeout)
		}
	}
}

func privileges(euid int) Check {
	c := Check{ID: "privileges", Title: "root privileges"}
	if euid == 0 {
		c.Status, c.Found = OK, "running as root"
		return c
	}
	c.Status, c.Found = Fail, fmt.Sprintf("running as uid %d", euid)
	c.Fix = "apply, migrate and capture need root (sudo cryptshift ...); plan and verify of captured trees do not"
	return c
}

// entropy: since Linux 5.18 (random.c rewrite, "random: use BLAKE2s instead
// of SHA1"; entropy_avail fixed at 256 by "random: make
// /proc/sys/kernel/random/entropy_avail constant") the counter no longer
// means anything; what matters is whether the CRNG is initialised, which
// getrandom(GRND_NONBLOCK) tells without blocking. cryptsetup takes keys
// from /dev/urandom (its --help: "RNG: /dev/urandom"), the same CRNG.
func entropy(fsys rootfs.FS, k *kernel, live bool) Check {
	c := Check{ID: "random", Title: "kernel random number generator"}
	avail := strings.TrimSpace(string(readOr(fsys, "/proc/sys/kernel/random/entropy_avail")))
	modern := kernelAtLeast(k.release, 5, 18)
	var parts []string
	if avail != "" {
		if modern {
			parts = append(parts, fmt.Sprintf("entropy_avail %s (Linux 5.18 and later always report 256: the number says nothing)", avail))
		} else {
			parts = append(parts, "entropy_avail "+avail)
		}
	}
	if !live {
		c.Status = Skip
		c.Found = strings.Join(append(parts, "not the running system: whether the generator is initialised cannot be read from files"), "; ")
		return c
	}
	buf := make([]byte, 16)
	_, err := unix.Getrandom(buf, unix.GRND_NONBLOCK)
	switch {
	case err == nil:
		c.Status = OK
		parts = append([]string{"initialised (getrandom does not block)"}, parts...)
	case errors.Is(err, unix.EAGAIN):
		c.Status = Fail
		parts = append([]string{"not initialised yet: getrandom would block, and key generation with it"}, parts...)
		c.Fix = "wait for the generator to initialise after boot, or give the machine a hardware RNG (virtio-rng for a VM)"
	default:
		c.Status = Warn
		parts = append([]string{fmt.Sprintf("cannot ask getrandom: %v", err)}, parts...)
	}
	c.Found = strings.Join(parts, "; ")
	return c
}

// kernelAtLeast compares a release such as "6.1.0-28-amd64".
func kernelAtLeast(release string, major, minor int) bool {
	var a, b int
	if _, err := fmt.Sscanf(release, "%d.%d", &a, &b); err != nil {
		return false
	}
	return a > major || a == major && b >= minor
}
