// Package vmtest is cryptshift's VM test tier (tier 3): real dm-crypt, LVM
// and loop devices inside a throwaway Debian kernel booted under qemu TCG.
// The host kernel has no device-mapper, and nested KVM hangs on these
// machines, so this is the only place such tests can run.
//
// # The machine
//
// The kit is the kernel of the Debian package linux-image-amd64 depends on
// (the generic flavour: -cloud has no 9p), fetched with apt-get download,
// plus a busybox-static initramfs with the kernel modules the tier needs,
// their dependencies resolved with depmod and modprobe --show-depends. It is
// cached under CacheDir() ($CRYPTSHIFT_VM_CACHE, else
// $XDG_CACHE_HOME/cryptshift/vmtest), keyed by the kernel package version,
// the module lists, the init scripts and busybox, so changing any of them
// builds a new kit. Building takes about 5 s; `scripts/deps.sh` installs the
// Debian packages (qemu-system-x86, busybox-static, kmod, xz-utils,
// cryptsetup-bin, lvm2, ...).
//
// At boot /init loads RunnerModules (OnDemandModules are present and load
// when the kernel or modprobe asks), mounts the host's / read-only over 9p
// (cache=loose) under an overlay whose upper layer is a tmpfs, mounts /proc,
// /sys, /dev (devtmpfs), /dev/pts, /dev/shm, /run and /tmp (fresh tmpfs),
// binds the kit's modules into /lib/modules, writes an /etc/lvm/lvm.conf
// that works without udev, and runs the command chrooted, in the same
// working directory as on the host, as root, with CRYPTSHIFT_IN_VM=1 and
// DM_DISABLE_UDEV=1. The guest writes its output and exit status to a
// per-run directory shared over 9p (not scraped from the console), then
// powers off. Writes anywhere else vanish with the VM; Options.Share is the
// one way to leave files on the host.
//
// # Running a command: Run
//
//	res, err := vmtest.Run(ctx, vmtest.Options{
//		Args:    []string{"sh", "-c", "cryptsetup --version; exit 3"},
//		Timeout: 2 * time.Minute,
//	})
//	// err == nil, res.ExitCode == 3, res.Output == "cryptsetup 2.6.1 ...\n"
//
// Run kills qemu by PID on timeout or cancellation (and qemu dies with the
// test binary through PR_SET_PDEATHSIG), so no emulator outlives a test. By
// default only one VM runs at a time machine-wide (CRYPTSHIFT_VM_PARALLEL
// raises it): two TCG guests on the two shared cores slow each other into
// timeouts.
//
// # Go tests in the VM: InGuest
//
//	func TestVMSomething(t *testing.T) {
//		testtier.VM(t, "qemu-system-x86_64")
//		if !vmtest.InGuest(t) {
//			return // the host side: the VM ran the test and t reports it
//		}
//		devs := vmtest.LoopDevices(t, 64*vmtest.MiB, 64*vmtest.MiB)
//		// root in the VM, real dm-crypt and LVM on devs[0], devs[1]
//	}
//
// On the host, InGuest runs the same test binary in the VM with only that
// test selected and relays its pass, skip or failure and its output. Under
// scripts/test-vm.sh (CRYPTSHIFT_VM_BATCH=1) the first such test boots one
// VM for all of the package's selected TestVM tests. LoopDevices' cleanup
// tears down whatever the test stacked on its devices (mounts, swap, LVM,
// dm-crypt) and detaches them. CRYPTSHIFT_VM_CONSOLE=1 copies the serial
// console to stderr live.
//
// # A tiny guest for libvirt: Kernel and BuildInitramfs
//
//	kernel, _ := vmtest.Kernel(ctx)
//	initrd, _ := vmtest.BuildInitramfs(ctx, dir,
//		"seq 1 100000 >/dev/vda\n", nil) // GuestModules (virtio_blk) always in
//	// <os><type>hvm</type><kernel>kernel</kernel><initrd>initrd</initrd>
//	//     <cmdline>vmtest.GuestCmdline</cmdline></os>, a virtio disk vda
//
// The script runs under busybox sh with /proc, /sys, /dev and /run mounted
// and the modules loaded; the machine powers off when it returns (loop
// forever to keep it up). Kernel is the uncompressed vmlinux with a PVH
// entry point, which qemu (and libvirt's <kernel>) boot about 3 s faster
// under TCG than the xz-compressed bzImage.
//
// # Measured (2-core Debian 12 host shared with other work, load 3-7)
//
//   - qemu start to guest command: 3.3-4.5 s wall at low load (guest uptime
//     2.7-3.5 s); a whole `true` run 3.6-4.5 s. PVH vmlinux instead of the
//     bzImage saved ~3 s, cryptomgr.notests ~0.5 s, not preloading xfs ~1 s.
//   - TestVMHarness (two 64 MiB loops, LUKS2 argon2id at minimum cost, LVM,
//     ext4, 24 MiB written, close, reopen, read back, cleanup): VM 30.3 s
//     (boot 5.4 s, guest test 23.3 s) at load 13; 37.6 s host-side at load
//     ~3 before the apt-cache memo and binary staging saved ~3.5 s. Each
//     cryptsetup open costs ~1 s of argon2 under TCG. Queueing for the VM
//     slot behind other packages' VM tests can add minutes (logged).
//   - dm-crypt (aes-xts-plain64, 128 MiB, O_DIRECT): -cpu max (AES-NI
//     emulated, xts-aes-aesni) writes 38-40 MB/s and reads 56-67 MB/s;
//     -cpu qemu64 (xts(ecb(aes-generic))) writes 23-29 MB/s and reads
//     24-38 MB/s. Hence the default -cpu max. scripts/vm-bench.sh reproduces
//     these.
package vmtest
