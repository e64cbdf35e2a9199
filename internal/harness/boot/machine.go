package boot

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// Qemu is the emulator the harness starts.
var Qemu = "qemu-system-x86_64"

// OVMF firmware from Debian's ovmf package: the code is shared read-only,
// each machine gets its own copy of the variable store.
var (
	OVMFCode = "/usr/share/OVMF/OVMF_CODE_4M.fd"
	OVMFVars = "/usr/share/OVMF/OVMF_VARS_4M.fd"
)

// GuestFwdAddr is where a guest reaches the host services given in
// Machine.GuestFwd. Not 10.0.2.2: that is slirp's alias for the host,
// which restrict=on cuts off and which qemu refuses as a guestfwd address
// ("Conflicting/invalid host:port in guest forwarding rule").
const GuestFwdAddr = "10.0.2.100"

// Disk is a virtio disk. Serial becomes /dev/disk/by-id/virtio-SERIAL in a
// guest with udev, a name that does not depend on the attach order.
type Disk struct {
	Path   string
	Format string // "raw" or "qcow2"; default raw
	Serial string
}

// Machine describes one boot of a guest under qemu TCG (nested KVM hangs
// on these hosts).
type Machine struct {
	Name string // for logs: NAME.console.log, NAME.qemu.log
	Dir  string // logs, sockets and the firmware variable store
	// UEFI boots through OVMF (firmware, then whatever the disks hold);
	// otherwise Kernel/Initrd/Append boot directly (only the old host may
	// take that shortcut).
	UEFI                   bool
	Kernel, Initrd, Append string
	Disks                  []Disk
	// SSHPort is the host port on 127.0.0.1 forwarded to the guest's port
	// 22; 0 picks a free one.
	SSHPort int
	// GuestFwd forwards guest connections to GuestFwdAddr:PORT to a host
	// command run per connection (qemu user networking's guestfwd), the
	// only way out of the restricted network (see qemuArgs).
	GuestFwd map[int]string
	// TPM, if set, is attached as a TPM 2.0 TIS device.
	TPM       *SWTPM
	MemoryMiB int // default 2048
	CPUs      int // default 2
}

// VM is a running machine.
type VM struct {
	M       Machine
	Console *Console
	SSH     *SSH // set by the caller once it knows the key; Port is filled in
	qemu    *proc
	Started time.Time
}

// Start boots the machine. The caller must Stop it (t.Cleanup).
func (m Machine) Start(ctx context.Context) (*VM, error) {
	if m.SSHPort == 0 {
		p, err := freePort()
		if err != nil {
			return nil, err
		}
		m.SSHPort = p
	}
	if m.UEFI {
		vars := filepath.Join(m.Dir, m.Name+".OVMF_VARS.fd")
		if err := copyFile(OVMFVars, vars); err != nil {
			return nil, fmt.Errorf("cannot copy the OVMF variable store (install ovmf): %w", err)
		}
	}
	args := m.qemuArgs()
	// OS pipes, not io.Pipe: with an *os.File exec hands qemu the
	// descriptor itself, so Wait returns when qemu exits instead of waiting
	// for a copying goroutine that blocks on a console nobody writes to.
	inR, inW, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("cannot create the console pipe: %w", err)
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		inR.Close()
		inW.Close()
		return nil, fmt.Errorf("cannot create the console pipe: %w", err)
	}
	logPath := filepath.Join(m.Dir, m.Name+".qemu.log")
	p, err := startProc("qemu "+m.Name, logPath, append([]string{Qemu}, args...), func(c *exec.Cmd) {
		c.Stdin, c.Stdout = inR, outW
	})
	// qemu has its own copies; ours would keep the console open after it
	// exits (no EOF for the reader).
	inR.Close()
	outW.Close()
	if err != nil {
		inW.Close()
		outR.Close()
		return nil, err
	}
	go func() { <-p.done; inW.Close() }()
	con, err := newConsole(outR, inW, filepath.Join(m.Dir, m.Name+".console.log"))
	if err != nil {
		p.Stop(time.Second)
		return nil, err
	}
	return &VM{M: m, Console: con, qemu: p, Started: time.Now()}, nil
}

// qemuArgs renders the machine. The serial console is qemu's stdio (a
// pipe, not a terminal: nothing is put in raw mode). User networking runs
// with restrict=on so the guest reaches nothing outside except through the
// explicit forwards: SSH in, and guestfwd out to host services (Tang).
func (m Machine) qemuArgs() []string {
	mem, cpus := m.MemoryMiB, m.CPUs
	if mem <= 0 {
		mem = 2048
	}
	if cpus <= 0 {
		cpus = 2
	}
	args := []string{
		"-name", m.Name,
		"-nodefaults", "-no-user-config", "-no-reboot",
		"-accel", "tcg", "-machine", "q35", "-cpu", "max",
		"-smp", strconv.Itoa(cpus), "-m", strconv.Itoa(mem),
		"-display", "none", "-monitor", "none",
		"-chardev", "stdio,id=ser0,signal=off", "-serial", "chardev:ser0",
		"-device", "virtio-rng-pci",
	}
	if m.UEFI {
		args = append(args,
			"-drive", "if=pflash,format=raw,unit=0,readonly=on,file="+OVMFCode,
			"-drive", "if=pflash,format=raw,unit=1,file="+filepath.Join(m.Dir, m.Name+".OVMF_VARS.fd"))
	} else {
		args = append(args, "-kernel", m.Kernel, "-append", m.Append)
		if m.Initrd != "" {
			args = append(args, "-initrd", m.Initrd)
		}
	}
	for i, d := range m.Disks {
		f := d.Format
		if f == "" {
			f = "raw"
		}
		id := fmt.Sprintf("disk%d", i)
		args = append(args,
			"-drive", fmt.Sprintf("file=%s,format=%s,if=none,id=%s,cache=unsafe,discard=unmap", d.Path, f, id),
			"-device", fmt.Sprintf("virtio-blk-pci,drive=%s,serial=%s,bootindex=%d", id, d.Serial, i+1))
	}
	net := fmt.Sprintf("user,id=net0,restrict=on,hostfwd=tcp:127.0.0.1:%d-:22", m.SSHPort)
	for _, port := range sortedPorts(m.GuestFwd) {
		// qemu's option parser takes a doubled comma as a literal one.
		net += fmt.Sprintf(",guestfwd=tcp:%s:%d-cmd:%s", GuestFwdAddr, port, strings.ReplaceAll(m.GuestFwd[port], ",", ",,"))
	}
	args = append(args, "-netdev", net, "-device", "virtio-net-pci,netdev=net0")
	if m.TPM != nil {
		args = append(args,
			"-chardev", "socket,id=chrtpm,path="+m.TPM.Socket,
			"-tpmdev", "emulator,id=tpm0,chardev=chrtpm",
			"-device", "tpm-tis,tpmdev=tpm0")
	}
	return args
}

func sortedPorts(m map[int]string) []int {
	var ports []int
	for p := range m {
		ports = append(ports, p)
	}
	for i := range ports {
		for j := i + 1; j < len(ports); j++ {
			if ports[j] < ports[i] {
				ports[i], ports[j] = ports[j], ports[i]
			}
		}
	}
	return ports
}

// Wait waits for qemu to exit (the guest powered off: -no-reboot turns a
// reboot into an exit too).
func (vm *VM) Wait(ctx context.Context, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if err := vm.qemu.Wait(ctx); err != nil && !vm.qemu.Exited() {
		return fmt.Errorf("cannot see %s power off: %w; console tail:\n%s", vm.M.Name, err, vm.Console.Tail(15))
	}
	return nil
}

// Exited reports whether qemu has ended.
func (vm *VM) Exited() bool { return vm.qemu.Exited() }

// Stop ends qemu by PID (SIGTERM, then SIGKILL) if it still runs.
func (vm *VM) Stop() {
	vm.qemu.Stop(5 * time.Second)
}

// Uptime is the wall time since qemu started.
func (vm *VM) Uptime() time.Duration { return time.Since(vm.Started) }

func copyFile(src, dst string) error {
	b, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	return os.WriteFile(dst, b, 0o644)
}
