package vmtest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/cryptshift/cryptshift/internal/harness/testtier"
)

// Options describe one command run in a fresh VM.
type Options struct {
	// Args is the command and its arguments, run as root in the guest with
	// the host's root filesystem (read-only, under a tmpfs overlay) as /.
	Args []string
	// Env adds "KEY=value" entries to the guest command's environment,
	// overriding the defaults (see guestEnv).
	Env []string
	// Dir is the guest working directory; default: the host's current
	// directory, which exists in the guest at the same path, except under
	// /tmp: the guest has its own tmpfs there, so host files under /tmp
	// (t.TempDir()) reach the guest only through Share.
	Dir string
	// Share, if set, is a host directory mounted read-write in the guest at
	// the same path; the only way for the guest to leave files on the host.
	Share string
	// MemoryMiB defaults to 2048, CPUs to 2 (the machines have 2 cores).
	MemoryMiB int
	CPUs      int
	// Timeout bounds the whole boot-run-poweroff, not the wait for a VM
	// slot (see vmSlot); default 10 minutes. On timeout or cancellation of
	// ctx qemu is killed and Run returns an error with whatever output the
	// guest had written.
	Timeout time.Duration
	// CPU is qemu's -cpu model; default "max", which emulates AES-NI so
	// dm-crypt uses aesni-intel (measured faster under TCG than the
	// generic C AES on qemu64: see the package documentation).
	CPU string
	// SpareDisks attaches one empty virtio-blk disk per size (sparse raw
	// files in the run directory, gone after the run): /dev/vda, /dev/vdb,
	// ... in the guest. Unlike loop devices over the guest's tmpfs, they
	// are disks, so data on them is plaintext on disk.
	SpareDisks []int64
	// Console, if set, receives the guest's serial console as it happens:
	// kernel messages and a copy of the command's output. For debugging;
	// Result.Output is the reliable record.
	Console io.Writer
}

// Result is what a finished guest command reported.
type Result struct {
	// ExitCode is the command's exit status in the guest.
	ExitCode int
	// Output is the command's stdout and stderr, interleaved, as written to
	// a file on the host through 9p (not scraped from the console).
	Output []byte
	// Console is the serial console (last 1 MiB), for diagnosing failures.
	Console []byte
	// Queued is how long Run waited for a VM slot; Boot the guest's uptime
	// when the command started; Duration the wall time of the VM, qemu
	// start to exit.
	Queued   time.Duration
	Boot     time.Duration
	Duration time.Duration
	// ModulesFailed lists kit modules that did not load (CPU-specific
	// drivers fail harmlessly, e.g. aesni-intel without AES-NI).
	ModulesFailed []string
}

// ErrNoStatus means the guest stopped without reporting the command's exit
// status: a harness failure, a kernel panic or a timeout.
var ErrNoStatus = errors.New("guest reported no exit status")

// Qemu is the emulator Run starts.
var Qemu = "qemu-system-x86_64"

const consoleCap = 1 << 20

// Run boots the kit in qemu (TCG), runs o.Args chrooted into the overlaid
// host root and returns the command's exit status and output. err is nil
// whenever the guest reported a status, whatever its value.
func Run(ctx context.Context, o Options) (Result, error) {
	if len(o.Args) == 0 {
		return Result{}, errors.New("cannot run a command in the VM: no command given")
	}
	if testtier.InVM() {
		// A batch boot runs every selected TestVM test in the guest,
		// host-side ones included; TCG inside TCG would crawl, so they must
		// skip there (if testtier.InVM() { t.Skip(...) }).
		return Result{}, errors.New("cannot boot a VM inside the test VM: skip host-side tests when testtier.InVM()")
	}
	kit, err := EnsureKit(ctx)
	if err != nil {
		return Result{}, fmt.Errorf("cannot build the VM kit: %w", err)
	}
	if o.Dir == "" {
		if o.Dir, err = os.Getwd(); err != nil {
			return Result{}, fmt.Errorf("cannot find the working directory: %w", err)
		}
	}
	if o.Timeout <= 0 {
		o.Timeout = 10 * time.Minute
	}
	if o.Share != "" {
		if o.Share, err = filepath.Abs(o.Share); err != nil {
			return Result{}, fmt.Errorf("cannot resolve share %s: %w", o.Share, err)
		}
	}
	// Two VMs on two shared cores slow each other into timeouts; by default
	// one VM runs at a time machine-wide and others queue, bounded by the
	// caller's ctx only: o.Timeout is for the VM itself and starts once it
	// has its slot.
	queueStart := time.Now()
	release, err := vmSlot(ctx)
	if err != nil {
		return Result{}, fmt.Errorf("cannot get a VM slot: %w", err)
	}
	queued := time.Since(queueStart)
	defer release()
	ctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()

	runDir, err := os.MkdirTemp("", "cryptshift-vmtest-")
	if err != nil {
		return Result{}, fmt.Errorf("cannot create the run directory: %w", err)
	}
	defer os.RemoveAll(runDir)
	script := runScript(o.Args, guestEnv(os.Environ(), o.Env), o.Dir, o.Share)
	if err := os.WriteFile(filepath.Join(runDir, "run.sh"), []byte(script), 0o755); err != nil {
		return Result{}, fmt.Errorf("cannot write the run script: %w", err)
	}

	if err := makeSpareDisks(runDir, o.SpareDisks); err != nil {
		return Result{}, err
	}
	args := qemuArgs(kit, o, runDir)
	cmd := exec.Command(Qemu, args...)
	console := &tailBuffer{max: consoleCap}
	var out io.Writer = console
	if o.Console != nil {
		out = io.MultiWriter(console, o.Console)
	}
	var stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = out, &stderr
	// qemu must not outlive us: killed with us if the test binary dies (a
	// test timeout panics and exits), and killed by PID below on timeout.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return Result{}, fmt.Errorf("cannot start %s: %w", Qemu, err)
	}
	waitErr := make(chan error, 1)
	go func() { waitErr <- cmd.Wait() }()
	var werr error
	select {
	case werr = <-waitErr:
	case <-ctx.Done():
		_ = cmd.Process.Kill()
		<-waitErr
		werr = ctx.Err()
	}
	res := Result{Queued: queued, Duration: time.Since(start), Console: console.Bytes()}
	res.Output, _ = os.ReadFile(filepath.Join(runDir, "output"))
	res.Boot = readUptime(filepath.Join(runDir, "uptime-start"))
	if b, err := os.ReadFile(filepath.Join(runDir, "modules-failed")); err == nil {
		res.ModulesFailed = strings.Fields(string(b))
	}
	if ctx.Err() != nil {
		return res, fmt.Errorf("cannot finish %s in the VM: %w after %s (qemu killed)", quote(o.Args), ctx.Err(), res.Duration.Round(time.Millisecond))
	}
	if werr != nil {
		return res, fmt.Errorf("cannot run the VM: %s: %w: %s", Qemu, werr, strings.TrimSpace(stderr.String()))
	}
	if b, err := os.ReadFile(filepath.Join(runDir, "harness-error")); err == nil {
		return res, fmt.Errorf("cannot set up the guest: %s: %w", strings.TrimSpace(string(b)), ErrNoStatus)
	}
	b, err := os.ReadFile(filepath.Join(runDir, "status"))
	if err != nil {
		return res, fmt.Errorf("cannot run %s in the VM: %w (console tail: %s)", quote(o.Args), ErrNoStatus, lastLines(res.Console, 5))
	}
	code, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return res, fmt.Errorf("cannot read the guest's exit status %q: %w", b, err)
	}
	res.ExitCode = code
	return res, nil
}

// qemuArgs is the machine: TCG (nested KVM hangs on these hosts), no
// default devices, serial console on stdout, the host root read-only over
// 9p, the run directory (and the optional share) read-write over 9p.
// multidevs=remap keeps inode numbers unique across the host's several
// filesystems, which overlayfs relies on.
func qemuArgs(kit *Kit, o Options, runDir string) []string {
	mem, cpus, cpu := o.MemoryMiB, o.CPUs, o.CPU
	if mem <= 0 {
		mem = 2048
	}
	if cpus <= 0 {
		cpus = 2
	}
	if cpu == "" {
		cpu = "max"
	}
	args := []string{
		"-nodefaults", "-no-user-config", "-no-reboot",
		"-accel", "tcg", "-machine", "pc", "-cpu", cpu,
		"-smp", strconv.Itoa(cpus), "-m", strconv.Itoa(mem),
		"-display", "none", "-monitor", "none", "-serial", "stdio",
		"-kernel", kit.Kernel, "-initrd", kit.Initrd,
		// panic=-1 with -no-reboot: a panic (e.g. /init exiting) ends qemu.
		// cryptomgr.notests skips the kernel's self-tests of every cipher
		// it registers (aesni-intel alone registers dozens): they verify
		// the kernel, not cryptshift, and cost about 0.5 s per boot under
		// TCG.
		"-append", "console=ttyS0 quiet panic=-1 oops=panic cryptomgr.notests",
		"-device", "virtio-rng-pci",
		"-virtfs", "local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap",
		"-virtfs", "local,path=" + runDir + ",mount_tag=vmtest,security_model=none",
	}
	if top := hostTmpTop(o.Dir); top != "" {
		args = append(args, "-virtfs", "local,path="+top+",mount_tag=hostwork,security_model=none,readonly=on,multidevs=remap")
	}
	if o.Share != "" {
		args = append(args, "-virtfs", "local,path="+o.Share+",mount_tag=share,security_model=none,multidevs=remap")
	}
	for i := range o.SpareDisks {
		args = append(args, "-drive", fmt.Sprintf("file=%s,format=raw,if=virtio,cache=unsafe", spareDiskPath(runDir, i)))
	}
	return args
}

func spareDiskPath(runDir string, i int) string {
	return filepath.Join(runDir, fmt.Sprintf("spare%d.img", i))
}

// makeSpareDisks creates the sparse files behind Options.SpareDisks.
func makeSpareDisks(runDir string, sizes []int64) error {
	for i, size := range sizes {
		p := spareDiskPath(runDir, i)
		f, err := os.Create(p)
		if err != nil {
			return fmt.Errorf("cannot create spare disk %s: %w", p, err)
		}
		err = f.Truncate(size)
		f.Close()
		if err != nil {
			return fmt.Errorf("cannot size spare disk %s: %w", p, err)
		}
	}
	return nil
}

// keepEnv are host variables the guest command inherits: the shell and Go
// toolchain setup, CI, and cryptshift's own switches (so tier gates pass in
// the guest too).
var keepEnv = []string{"PATH", "HOME", "USER", "LANG", "LC_ALL", "TERM", "CI",
	"GOROOT", "GOPATH", "GOCACHE", "GOMODCACHE", "GOFLAGS", "GOTOOLCHAIN", "GOPROXY", "GONOSUMDB", "GOPRIVATE"}

// guestEnv is the guest command's whole environment: the kept host
// variables, then the harness's, then the caller's extras (later wins).
// DM_DISABLE_UDEV makes libdevmapper (cryptsetup, lvm, dmsetup) create
// /dev/mapper nodes itself instead of waiting for a udev that is not there.
func guestEnv(host, extra []string) []string {
	m := map[string]string{}
	for _, kv := range host {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			continue
		}
		if contains(keepEnv, k) || strings.HasPrefix(k, "CRYPTSHIFT_") {
			m[k] = v
		}
	}
	if m["PATH"] == "" {
		m["PATH"] = "/usr/local/bin:/usr/bin:/bin"
	}
	// Root's tools live in sbin, which a non-root host PATH may lack.
	for _, d := range []string{"/usr/local/sbin", "/usr/sbin", "/sbin"} {
		if !contains(filepath.SplitList(m["PATH"]), d) {
			m["PATH"] += ":" + d
		}
	}
	if m["HOME"] == "" {
		m["HOME"] = "/root"
	}
	m["CRYPTSHIFT_IN_VM"] = "1"
	m["DM_DISABLE_UDEV"] = "1"
	m["TMPDIR"] = "/tmp"
	for _, kv := range extra {
		if k, v, ok := strings.Cut(kv, "="); ok {
			m[k] = v
		}
	}
	env := make([]string, 0, len(m))
	for k, v := range m {
		env = append(env, k+"="+v)
	}
	sort.Strings(env)
	return env
}

// hostTmpTop returns the host directory /tmp/NAME that holds dir when dir
// is below /tmp, else "". The guest mounts a fresh tmpfs on /tmp, so a
// working directory there (a checkout in /tmp, say) reaches the guest only
// through its own share; the whole /tmp/NAME is shared so that paths like
// ../../testdata resolve as on the host.
func hostTmpTop(dir string) string {
	rel, err := filepath.Rel("/tmp", filepath.Clean(dir))
	if err != nil || rel == "." || rel == ".." || strings.HasPrefix(rel, "../") {
		return ""
	}
	return filepath.Join("/tmp", strings.SplitN(rel, "/", 2)[0])
}

// runScript is the per-run /run/vmtest/run.sh, run by the host's /bin/sh
// chrooted in the guest. It mounts the share, records the boot time, runs
// the command with exactly env and records its exit status and output in
// the run directory, copying the output to the console as it goes.
func runScript(args, env []string, dir, share string) string {
	var b strings.Builder
	b.WriteString("#!/bin/sh\n# Generated by cryptshift's vmtest package for one run.\n")
	b.WriteString("fail() { echo \"$*\" >/run/vmtest/harness-error; echo \"vmtest: $*\" >/dev/console; exit 0; }\n")
	if top := hostTmpTop(dir); top != "" {
		// The host's directory under /tmp, read-only over 9p under an
		// overlay (writes stay in the guest), where the guest's own /tmp
		// tmpfs would hide it.
		t := shellQuote(top)
		b.WriteString("w=/run/vmtest-hostwork; mkdir -p $w/lower $w/upper $w/work " + t + " || fail \"cannot prepare the working directory\"\n")
		b.WriteString("mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144,ro,cache=loose hostwork $w/lower || fail \"cannot mount the host directory \"" + t + "\n")
		b.WriteString("mount -t overlay -o lowerdir=$w/lower,upperdir=$w/upper,workdir=$w/work overlay " + t + " || fail \"cannot mount the overlay on \"" + t + "\n")
	}
	if share != "" {
		s := shellQuote(share)
		fmt.Fprintf(&b, "mkdir -p %s && mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144 share %s || fail \"cannot mount the share at \"%s\n", s, s, s)
	}
	fmt.Fprintf(&b, "cd %s || fail \"cannot enter the working directory \"%s\n", shellQuote(dir), shellQuote(dir))
	b.WriteString("cat /proc/uptime >/run/vmtest/uptime-start\n")
	// "--" ends env's options; the assignments and the command follow.
	b.WriteString("{ env -i --")
	for _, kv := range env {
		b.WriteString(" " + shellQuote(kv))
	}
	for _, a := range args {
		b.WriteString(" " + shellQuote(a))
	}
	b.WriteString(" </dev/null; echo $? >/run/vmtest/status; } 2>&1 | tee /run/vmtest/output >/dev/console\n")
	if share != "" {
		fmt.Fprintf(&b, "umount %s\n", shellQuote(share))
	}
	b.WriteString("sync\n")
	return b.String()
}

func readUptime(path string) time.Duration {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 0
	}
	s, err := strconv.ParseFloat(f[0], 64)
	if err != nil {
		return 0
	}
	return time.Duration(s * float64(time.Second))
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func lastLines(b []byte, n int) string {
	lines := strings.Split(strings.TrimRight(string(b), "\r\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.TrimSpace(strings.ReplaceAll(strings.Join(lines, " | "), "\r", ""))
}

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	mu  sync.Mutex
	buf []byte
	max int
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, p...)
	if len(t.buf) > t.max {
		t.buf = append([]byte(nil), t.buf[len(t.buf)-t.max:]...)
	}
	return len(p), nil
}

func (t *tailBuffer) Bytes() []byte {
	t.mu.Lock()
	defer t.mu.Unlock()
	return append([]byte(nil), t.buf...)
}

// vmSlot waits for one of CRYPTSHIFT_VM_PARALLEL (default 1) machine-wide
// VM slots, flock-based so a crashed holder frees its slot.
func vmSlot(ctx context.Context) (func(), error) {
	n := 1
	if v, err := strconv.Atoi(os.Getenv("CRYPTSHIFT_VM_PARALLEL")); err == nil && v > 0 {
		n = v
	}
	cache, err := CacheDir()
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cache, 0o755); err != nil {
		return nil, fmt.Errorf("cannot create cache directory: %w", err)
	}
	for {
		for i := 0; i < n; i++ {
			if release, ok := tryLock(filepath.Join(cache, fmt.Sprintf("vm-slot-%d.lock", i))); ok {
				return release, nil
			}
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}
