// Package libvirttest starts a private libvirtd (with its own virtlogd) for
// host-tier tests, following docs/ENVIRONMENT.md's recipe but touching none
// of the system's libvirt state.
//
// libvirtd running as root takes its configuration, sockets and state from
// fixed paths (/etc/libvirt, /run/libvirt, /var/lib/libvirt, ...). To keep
// them private, the daemons run in their own mount namespace (unshare -m)
// where a fresh per-test directory is bind-mounted over each of those paths;
// the host's view never changes. The control socket is then reachable from
// the host as DIR/run/libvirt-sock.
//
// Stop tears everything down by PID: every domain's qemu is destroyed
// through libvirt, then libvirtd and virtlogd are terminated, and any qemu
// whose pid file remains is killed.
package libvirttest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"libvirt.org/go/libvirtxml"

	"github.com/cryptshift/cryptshift/internal/harness/testtier"
	"github.com/cryptshift/cryptshift/libvirt"
)

// Programs the harness needs; tests pass them to testtier.Host.
var Programs = []string{"unshare", "nsenter", "libvirtd", "virtlogd", "virsh", "qemu-img", "qemu-system-x86_64"}

// The paths a privileged libvirtd uses; each gets a private directory.
var privatePaths = []struct{ sub, path string }{
	{"etc", "/etc/libvirt"},
	{"run", "/run/libvirt"},
	{"lib", "/var/lib/libvirt"},
	{"log", "/var/log/libvirt"},
	{"cache", "/var/cache/libvirt"},
}

// qemu.conf from ENVIRONMENT.md: without systemd, cgroups, namespaces and
// an AppArmor/SELinux driver, qemu runs as root with nothing confining it.
const qemuConf = `user = "root"
group = "root"
namespaces = []
cgroup_controllers = []
security_driver = "none"
`

const libvirtdConf = `unix_sock_rw_perms = "0700"
auth_unix_rw = "none"
auth_unix_ro = "none"
log_outputs = "3:stderr"
`

// mountScript runs inside the new mount namespace: it binds the private
// directories, then becomes virtlogd (exec keeps the PID the harness knows).
// libvirtd joins the same namespace with nsenter, so both daemons are direct
// children of the test and are reaped by it.
const mountScript = `set -e
D="$1"
mount --make-rprivate /
mount --bind "$D/etc" /etc/libvirt
mount --bind "$D/run" /run/libvirt
mount --bind "$D/lib" /var/lib/libvirt
mount --bind "$D/log" /var/log/libvirt
mount --bind "$D/cache" /var/cache/libvirt
exec virtlogd --pid-file "$D/virtlogd.pid"
`

// Daemon is a private libvirtd.
type Daemon struct {
	Dir    string // everything the daemon writes lives here
	Socket string // its control socket
	URI    string // qemu:///system?socket=... for virsh
	pid    int    // libvirtd
	vlPid  int    // virtlogd, the first process in the namespace
	exited map[int]chan struct{}
}

// Start starts a private libvirtd and registers its teardown with
// t.Cleanup. It fails the test (or skips outside CI) when a prerequisite is
// missing.
func Start(t testing.TB) *Daemon {
	t.Helper()
	testtier.Host(t, Programs...)
	if os.Geteuid() != 0 {
		testtier.Unavailable(t, "a private libvirtd needs root (mount namespace, qemu as root)")
	}
	if err := EnsureUsers(); err != nil {
		t.Fatal(err)
	}
	// Short path: a unix socket path must stay under 108 bytes.
	dir, err := os.MkdirTemp("", "cs-lv-")
	if err != nil {
		t.Fatal(err)
	}
	d := &Daemon{Dir: dir, Socket: filepath.Join(dir, "run", "libvirt-sock")}
	d.URI = "qemu:///system?socket=" + d.Socket
	t.Cleanup(func() {
		d.Stop(t)
		if !t.Failed() || os.Getenv("CRYPTSHIFT_KEEP") == "" {
			os.RemoveAll(dir)
		} else {
			t.Logf("kept %s (CRYPTSHIFT_KEEP is set)", dir)
		}
	})
	if err := d.start(); err != nil {
		t.Fatalf("cannot start a private libvirtd: %v\n%s", err, d.Logs())
	}
	return d
}

// EnsureUsers creates the users and groups Debian's libvirt expects, if
// missing (ENVIRONMENT.md: the packages' maintainer scripts create them, a
// minimal machine may not have run them).
func EnsureUsers() error {
	// Test binaries of several packages may get here at once: a failed
	// add is fine when the other one made the entry.
	ensure := func(db, name string, add ...string) error {
		if exec.Command("getent", db, name).Run() == nil {
			return nil
		}
		out, err := exec.Command(add[0], add[1:]...).CombinedOutput()
		if err != nil && exec.Command("getent", db, name).Run() != nil {
			return fmt.Errorf("cannot create %s %s: %v: %s", db, name, err, out)
		}
		return nil
	}
	for _, g := range []string{"kvm", "libvirt-qemu"} {
		if err := ensure("group", g, "groupadd", "-r", g); err != nil {
			return err
		}
	}
	return ensure("passwd", "libvirt-qemu", "useradd", "-r", "-g", "libvirt-qemu", "-G", "kvm", "libvirt-qemu")
}

func (d *Daemon) start() error {
	for _, p := range privatePaths {
		if err := os.MkdirAll(filepath.Join(d.Dir, p.sub), 0o755); err != nil {
			return err
		}
		// The mount points must exist on the host; Debian's packages create
		// them, a minimal install may not have. Empty directories only.
		if err := os.MkdirAll(p.path, 0o755); err != nil {
			return err
		}
	}
	// libvirtd creates its qemu log directory lazily; serial log files in it
	// must be creatable from the first domain start.
	if err := os.MkdirAll(filepath.Join(d.Dir, "log", "qemu"), 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(d.Dir, "etc", "qemu.conf"), []byte(qemuConf), 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(d.Dir, "etc", "libvirtd.conf"), []byte(libvirtdConf), 0o644); err != nil {
		return err
	}
	d.exited = map[int]chan struct{}{}
	vl, err := d.spawn(filepath.Join(d.Dir, "virtlogd.log"), "unshare", "--mount", "--propagation", "private", "--",
		"/bin/sh", "-c", mountScript, "sh", d.Dir)
	if err != nil {
		return err
	}
	d.vlPid = vl
	if err := d.waitFor(vl, filepath.Join(d.Dir, "run", "virtlogd-sock"), nil); err != nil {
		return fmt.Errorf("virtlogd: %w", err)
	}
	lvd, err := d.spawn(filepath.Join(d.Dir, "libvirtd.log"), "nsenter", fmt.Sprintf("--mount=/proc/%d/ns/mnt", vl), "--",
		// The default pid files (/run/libvirtd.pid, /run/virtlogd.pid) are
		// outside the private directories; two harnesses would collide.
		"libvirtd", "--pid-file", filepath.Join(d.Dir, "libvirtd.pid"))
	if err != nil {
		return err
	}
	d.pid = lvd
	return d.waitFor(lvd, d.Socket, func() bool {
		c, err := libvirt.Dial(d.Socket)
		if err != nil {
			return false
		}
		c.Close()
		return true
	})
}

// spawn starts one daemon in the foreground as a child of the test, its
// output going to logFile, and reaps it when it exits.
func (d *Daemon) spawn(logFile, prog string, args ...string) (int, error) {
	log, err := os.Create(logFile)
	if err != nil {
		return 0, err
	}
	cmd := exec.Command(prog, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		log.Close()
		return 0, err
	}
	done := make(chan struct{})
	d.exited[cmd.Process.Pid] = done
	go func() {
		_ = cmd.Wait()
		log.Close()
		close(done)
	}()
	return cmd.Process.Pid, nil
}

// waitFor waits until path exists and ready (if given) says yes.
func (d *Daemon) waitFor(pid int, path string, ready func() bool) error {
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-d.exited[pid]:
			return errors.New("it exited at start")
		case <-time.After(50 * time.Millisecond):
		}
		if _, err := os.Stat(path); err != nil {
			continue
		}
		if ready == nil || ready() {
			return nil
		}
	}
	return fmt.Errorf("%s did not appear within 30s", path)
}

// Dial opens a connection to the daemon; it is closed at test cleanup.
func (d *Daemon) Dial(t testing.TB) *libvirt.Conn {
	t.Helper()
	c, err := libvirt.Dial(d.Socket)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// Logs returns the daemons' logs, for failure messages.
func (d *Daemon) Logs() string {
	var b strings.Builder
	for _, f := range []string{"libvirtd.log", "virtlogd.log"} { // the daemons' stderr
		if data, err := os.ReadFile(filepath.Join(d.Dir, f)); err == nil {
			fmt.Fprintf(&b, "--- %s\n%s", f, tail(data, 4000))
		}
	}
	return b.String()
}

// DomainLog returns the qemu log of a domain (what qemu printed, including
// why a block job failed).
func (d *Daemon) DomainLog(name string) string {
	data, _ := os.ReadFile(filepath.Join(d.Dir, "log", "qemu", name+".log"))
	return tail(data, 4000)
}

func tail(b []byte, n int) string {
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}

// QemuPID returns the PID of a running domain's qemu process, from
// libvirt's pid file.
func (d *Daemon) QemuPID(name string) int {
	b, err := os.ReadFile(filepath.Join(d.Dir, "run", "qemu", name+".pid"))
	if err != nil {
		return 0
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	return pid
}

// Virsh runs virsh against the daemon and returns its standard output.
func (d *Daemon) Virsh(t testing.TB, args ...string) string {
	t.Helper()
	out, err := d.VirshErr(args...)
	if err != nil {
		t.Fatalf("virsh %s: %v", strings.Join(args, " "), err)
	}
	return out
}

// VirshErr runs virsh and returns its output and any failure.
func (d *Daemon) VirshErr(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "virsh", append([]string{"-c", d.URI}, args...)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("%v: %s", err, strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}

// DefineDirPool defines and starts a directory storage pool.
func (d *Daemon) DefineDirPool(t testing.TB, name, dir string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o711); err != nil {
		t.Fatal(err)
	}
	x := libvirtxml.StoragePool{Type: "dir", Name: name, Target: &libvirtxml.StoragePoolTarget{Path: dir}}
	doc, err := x.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	f := filepath.Join(d.Dir, "pool-"+name+".xml")
	if err := os.WriteFile(f, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	d.Virsh(t, "pool-define", f)
	d.Virsh(t, "pool-start", name)
}

// Stop destroys every running domain and stops the daemons, by PID.
func (d *Daemon) Stop(t testing.TB) {
	if d.pid == 0 && d.vlPid == 0 {
		return
	}
	if c, err := libvirt.Dial(d.Socket); err == nil {
		names, _ := c.DomainNames()
		for _, n := range names {
			if st, err := c.DomainState(n); err == nil && st != libvirt.ShutOff {
				if err := c.DestroyDomain(n); err != nil {
					t.Logf("cleanup: %v", err)
				}
			}
		}
		c.Close()
	}
	// A qemu whose domain libvirt could not destroy still has its pid file.
	pids, _ := filepath.Glob(filepath.Join(d.Dir, "run", "qemu", "*.pid"))
	for _, f := range pids {
		if filepath.Base(f) == "driver.pid" { // libvirtd's own qemu driver lock
			continue
		}
		b, _ := os.ReadFile(f)
		if pid, _ := strconv.Atoi(strings.TrimSpace(string(b))); pid > 0 && alive(pid) {
			t.Logf("cleanup: killing leftover qemu %d (%s)", pid, f)
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	if d.pid > 0 {
		d.stop(t, d.pid, "libvirtd")
	}
	if d.vlPid > 0 {
		d.stop(t, d.vlPid, "virtlogd")
	}
	d.pid, d.vlPid = 0, 0
}

// alive reports whether pid runs; a zombie (exited, not yet reaped by its
// parent) counts as gone.
func alive(pid int) bool {
	if syscall.Kill(pid, 0) != nil {
		return false
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// The state follows the parenthesised command name.
	if i := bytes.LastIndexByte(b, ')'); i >= 0 && i+2 < len(b) && b[i+2] == 'Z' {
		return false
	}
	return true
}

// stop sends SIGTERM, then SIGKILL after a grace period, to one of the
// daemons the harness started, and waits until it is reaped.
func (d *Daemon) stop(t testing.TB, pid int, what string) {
	done := d.exited[pid]
	_ = syscall.Kill(pid, syscall.SIGTERM)
	select {
	case <-done:
		return
	case <-time.After(10 * time.Second):
	}
	t.Logf("cleanup: %s (%d) ignored SIGTERM, killing it", what, pid)
	_ = syscall.Kill(pid, syscall.SIGKILL)
	<-done
}

// FileDisk is a virtio disk element backed by an image file.
func FileDisk(target, path, format string) libvirtxml.DomainDisk {
	return libvirtxml.DomainDisk{
		Device: "disk",
		Driver: &libvirtxml.DomainDiskDriver{Name: "qemu", Type: format},
		Source: &libvirtxml.DomainDiskSource{File: &libvirtxml.DomainDiskSourceFile{File: path}},
		Target: &libvirtxml.DomainDiskTarget{Dev: target, Bus: "virtio"},
	}
}

// Domain is a minimal TCG guest definition: no OS is needed for block jobs,
// qemu runs the firmware, finds nothing to boot and idles.
func Domain(name string, disks ...libvirtxml.DomainDisk) *libvirtxml.Domain {
	return &libvirtxml.Domain{
		Type:     "qemu", // TCG: nested KVM hangs on these machines (ENVIRONMENT.md)
		Name:     name,
		Memory:   &libvirtxml.DomainMemory{Value: 128, Unit: "MiB"},
		VCPU:     &libvirtxml.DomainVCPU{Value: 1},
		OS:       &libvirtxml.DomainOS{Type: &libvirtxml.DomainOSType{Arch: "x86_64", Machine: "pc", Type: "hvm"}},
		OnReboot: "destroy",
		Devices: &libvirtxml.DomainDeviceList{
			Disks: disks,
			// No graphics, no network: nothing the tests do not need. The
			// serial port goes to a file the test can read.
			Serials: []libvirtxml.DomainSerial{{Source: &libvirtxml.DomainChardevSource{
				File: &libvirtxml.DomainChardevSourceFile{Path: "/var/log/libvirt/qemu/" + name + ".serial"}}}},
			MemBalloon: &libvirtxml.DomainMemBalloon{Model: "none"},
		},
	}
}

// Define defines a domain and, if start is set, starts it.
func (d *Daemon) Define(t testing.TB, dom *libvirtxml.Domain, start bool) {
	t.Helper()
	c := d.Dial(t)
	if err := c.DefineDomain(dom); err != nil {
		t.Fatal(err)
	}
	if start {
		if err := c.StartDomain(dom.Name); err != nil {
			t.Fatalf("%v\n%s", err, d.DomainLog(dom.Name))
		}
	}
}

// SerialLog is what a domain defined by Domain wrote to its serial port.
func (d *Daemon) SerialLog(name string) string {
	b, _ := os.ReadFile(filepath.Join(d.Dir, "log", "qemu", name+".serial"))
	return string(b)
}
