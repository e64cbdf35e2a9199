// Package hostiletest builds host trees that a compromised host could hand
// to `cryptshift verify --root` (or leave for `capture`): symlinks that try
// to leave the root, FIFOs and device nodes where files belong, sparse
// giant files, a diamond of 30 levels of block devices, nested and
// oversized compression, crafted LUKS and qcow2 headers, control
// characters in names. Tests of verify, capture and the CLI use them with
// a canary file outside the root that must never be read.
package hostiletest

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/cryptshift/cryptshift/internal/hostview/blockstack/blockstacktest"
)

// CanaryText is in every canary file; a report containing it read outside
// the root.
const CanaryText = "CANARY-5e7a9c1d /canary/path/that/must/never/appear"

// Canary writes canary files into outside (a directory next to, not
// inside, the root): a config-like file, and a FIFO that would block a
// reader that opens it without O_NONBLOCK.
func Canary(outside string) error {
	if err := os.MkdirAll(outside, 0o755); err != nil {
		return err
	}
	text := fmt.Sprintf("# %s\n/dev/sdz1 /canary ext4 defaults 0 0\ncanary_crypt /dev/sdz2 /canary.key luks\nqueue_directory = /canary\nraw /dev/canary\n", CanaryText)
	if err := os.WriteFile(filepath.Join(outside, "canary.conf"), []byte(text), 0o644); err != nil {
		return err
	}
	return syscall.Mkfifo(filepath.Join(outside, "canary.fifo"), 0o644)
}

// Base writes a small but complete host tree: LUKS2 root on sda2, plain
// /boot on sda1, random-key swap, tmpfs /tmp, Postfix, Dovecot, libvirt
// with one guest, an initramfs. It has no capture manifest: verify reads
// it as a bare tree, headers from the device stubs.
func Base(root string) error {
	t := blockstacktest.New(root)
	const G = uint64(1) << 30
	t.DiskWith("sda", "8:0", 100*G, 512, 4096, 0)
	t.Part("sda", 1, "8:1", G, 1<<20).Part("sda", 2, "8:2", 99*G, G+1<<20)
	t.Crypt("dm-0", "253:0", "LUKS2", "root_crypt", 99*G-16<<20, "sda2")
	t.Crypt("dm-1", "253:1", "PLAIN", "swap_crypt", 4*G, "sda2")
	t.Mount("/", "ext4", "/dev/mapper/root_crypt", "253:0", "rw")
	t.Mount("/proc", "proc", "proc", "0:21", "rw")
	t.Mount("/sys", "sysfs", "sysfs", "0:22", "rw")
	t.Mount("/dev", "devtmpfs", "udev", "0:5", "rw")
	t.Mount("/dev/shm", "tmpfs", "tmpfs", "0:24", "rw")
	t.Mount("/run", "tmpfs", "tmpfs", "0:25", "rw")
	t.Mount("/tmp", "tmpfs", "tmpfs", "0:30", "rw")
	t.Mount("/boot", "ext4", "/dev/sda1", "8:1", "rw")
	t.Swap("/dev/dm-1", "partition", 4<<20)
	for p, c := range map[string]string{
		"/etc/hostname":                  "hostile\n",
		"/proc/sys/kernel/hostname":      "hostile\n",
		"/proc/sys/kernel/osrelease":     "6.1.0-28-amd64\n",
		"/proc/sys/kernel/core_pattern":  "|/lib/systemd/systemd-coredump %P %u %g %s %t 9223372036854775808 %h\n",
		"/proc/cmdline":                  "root=/dev/mapper/root_crypt ro\n",
		"/sys/power/resume":              "0:0\n",
		"/sys/kernel/kexec_crash_loaded": "0\n",
		"/etc/passwd":                    "root:x:0:0:root:/root:/bin/bash\nanna:x:1000:1000::/home/anna:/bin/bash\n",
		"/etc/fstab":                     "/dev/mapper/root_crypt / ext4 defaults 0 1\n/dev/sda1 /boot ext4 defaults 0 2\n/dev/mapper/swap_crypt none swap sw 0 0\n",
		"/etc/crypttab":                  "root_crypt /dev/sda2 none luks\nswap_crypt /dev/sda2 /dev/urandom swap,cipher=aes-xts-plain64,size=512\n",
		"/etc/postfix/main.cf":           "myhostname = hostile.example\n",
		"/etc/dovecot/dovecot.conf":      "mail_location = maildir:~/Maildir\n",
		"/etc/libvirt/qemu.conf":         "\n",
		"/etc/libvirt/qemu/g.xml": `<domain type='kvm'><name>g</name><memory unit='KiB'>1024</memory><devices>
<disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='/var/lib/libvirt/images/g.qcow2'/><target dev='vda' bus='virtio'/></disk>
</devices></domain>
`,
	} {
		t.File(p, c, 0o644)
	}
	t.Mkdir("/var/lib/libvirt/images")
	t.Mkdir("/var/tmp")
	t.Mkdir("/var/log/journal")
	t.Mkdir("/home/anna")
	t.File("/var/lib/libvirt/images/g.qcow2", "", 0o600)
	t.File("/boot/initrd.img-6.1.0-28-amd64", string(gz(cpio("init", "bin/sh"))), 0o644)
	t.Symlink("/proc/self/root", "/")
	return t.Finish()
}

// Tree writes the canary into dir/outside and a Base tree with the given
// cases applied into dir/root, and returns both paths.
func Tree(dir string, cases ...Case) (root, outside string, err error) {
	root, outside = filepath.Join(dir, "root"), filepath.Join(dir, "outside")
	if err := Canary(outside); err != nil {
		return "", "", err
	}
	if err := Base(root); err != nil {
		return "", "", err
	}
	for _, c := range cases {
		if err := c.Apply(root, outside); err != nil {
			return "", "", fmt.Errorf("%s: %w", c.Name, err)
		}
	}
	return root, outside, nil
}

// Case is one hostile change to a Base tree.
type Case struct {
	Name string
	// Refused is what the report must name as refused or unreadable
	// (a substring of its coverage or a result's evidence); "" when the
	// point is only that verify ends and reads nothing outside.
	Refused string
	Apply   func(root, outside string) error
}

func link(root, p, target string) error {
	h := filepath.Join(root, p)
	os.Remove(h)
	if err := os.MkdirAll(filepath.Dir(h), 0o755); err != nil {
		return err
	}
	return os.Symlink(target, h)
}

// Cases are the hostile changes; Combined applies them all to one tree.
func Cases() []Case {
	return []Case{
		{"symlink-absolute", "", func(root, out string) error {
			return link(root, "/etc/fstab", filepath.Join(out, "canary.conf"))
		}},
		{"symlink-climbs-above-root", "", func(root, out string) error {
			return link(root, "/etc/crypttab", strings.Repeat("../", 30)+strings.TrimPrefix(filepath.Join(out, "canary.conf"), "/"))
		}},
		{"dotdot-after-missing-component", "after a missing component", func(root, out string) error {
			return link(root, "/etc/postfix/main.cf", "nosuchdir/"+strings.Repeat("../", 30)+strings.TrimPrefix(filepath.Join(out, "canary.conf"), "/"))
		}},
		{"proc-self-root", "", func(root, out string) error {
			return link(root, "/etc/kdump.conf", "/proc/self/root"+filepath.Join(out, "canary.conf"))
		}},
		{"fifo-outside", "", func(root, out string) error {
			return link(root, "/etc/default/kdump-tools", filepath.Join(out, "canary.fifo"))
		}},
		{"symlink-loop", "too many levels of symbolic links", func(root, out string) error {
			if err := link(root, "/etc/loop-a", "/etc/loop-b"); err != nil {
				return err
			}
			if err := link(root, "/etc/loop-b", "/etc/loop-a"); err != nil {
				return err
			}
			return link(root, "/etc/default/grub", "/etc/loop-a")
		}},
		{"fifo-as-fstab", "not a regular file", func(root, out string) error {
			p := filepath.Join(root, "etc/fstab")
			os.Remove(p)
			return syscall.Mkfifo(p, 0o644)
		}},
		{"dev-zero-as-crypttab", "not a regular file", func(root, out string) error {
			p := filepath.Join(root, "dev/zero")
			os.Remove(p)
			// A character device 1:5 (/dev/zero) where root may make one,
			// else a FIFO: either way not a regular file.
			if err := syscall.Mknod(p, syscall.S_IFCHR|0o666, 1<<8|5); err != nil {
				if err := syscall.Mkfifo(p, 0o644); err != nil {
					return err
				}
			}
			return link(root, "/etc/crypttab", "/dev/zero")
		}},
		{"chardev-as-crypttab", "not a regular file", func(root, out string) error {
			// A character device 1:3 (/dev/null) planted where the file
			// itself belongs, no link: refused before any open (a 10:130
			// /dev/watchdog would be armed by the open alone).
			p := filepath.Join(root, "etc/crypttab")
			os.Remove(p)
			if err := syscall.Mknod(p, syscall.S_IFCHR|0o644, 1<<8|3); err != nil {
				return syscall.Mkfifo(p, 0o644)
			}
			return nil
		}},
		{"sparse-8GiB-config", "larger than 16 MiB", func(root, out string) error {
			return os.Truncate(filepath.Join(root, "etc/dovecot/dovecot.conf"), 8<<30)
		}},
		{"diamond-30-levels", "", func(root, out string) error { return diamond(root, 30) }},
		{"nested-gzip-initramfs", "compressed twice", func(root, out string) error {
			return os.WriteFile(filepath.Join(root, "boot/initrd.img-6.1.0-28-amd64"), gz(gz(cpio("init"))), 0o644)
		}},
		{"gzip-bomb-initramfs", "larger than 512 MiB", func(root, out string) error {
			return os.WriteFile(filepath.Join(root, "boot/initrd.img-6.1.0-28-amd64"), bomb(600<<20), 0o644)
		}},
		{"luks2-json-without-nul", "JSON area not terminated by a NUL", func(root, out string) error {
			return os.WriteFile(filepath.Join(root, "dev/sda2"), LUKS2WithoutNUL(), 0o600)
		}},
		{"qcow2-crafted", "a loop qemu refuses to open", func(root, out string) error {
			img := filepath.Join(root, "var/lib/libvirt/images")
			for name, b := range map[string][]byte{
				"g.qcow2":     QCOW2("loop.qcow2", 0),
				"loop.qcow2":  QCOW2("g.qcow2", 0),
				"trunc.qcow2": QCOW2("x", 0)[:20],
				"huge.qcow2":  QCOW2("y", 0xffffffff),
			} {
				if err := os.WriteFile(filepath.Join(img, name), b, 0o600); err != nil {
					return err
				}
			}
			return nil
		}},
		{"control-characters", "", func(root, out string) error {
			name := "/var/tmp/swap\x1b[2J\x1b[31mfile\a"
			if err := os.WriteFile(filepath.Join(root, name), nil, 0o600); err != nil {
				return err
			}
			sw := "Filename\tType\tSize\tUsed\tPriority\n/dev/dm-1\tpartition\t4096\t0\t-2\n/var/tmp/swap\x1b[2J\x1b[31mfile\a\tfile\t4096\t0\t-3\n"
			return os.WriteFile(filepath.Join(root, "proc/swaps"), []byte(sw), 0o444)
		}},
	}
}

// diamond stacks n levels of two dm devices on sda, each built on both
// devices of the level below: 2^n paths through n*2 devices. "/" moves to
// the top.
func diamond(root string, n int) error {
	var b strings.Builder
	prev := []string{"sda2", "sda2"}
	minor := 100
	for i := 0; i < n; i++ {
		var cur []string
		for j := 0; j < 2; j++ {
			name := fmt.Sprintf("dm-%d", minor)
			dir := filepath.Join(root, "sys/devices/virtual/block", name)
			for _, sub := range []string{"slaves", "holders", "dm", "queue"} {
				if err := os.MkdirAll(filepath.Join(dir, sub), 0o755); err != nil {
					return err
				}
			}
			for f, v := range map[string]string{"dev": fmt.Sprintf("253:%d", minor), "size": "2048", "ro": "0",
				"dm/name": fmt.Sprintf("d%d-%d", i, j), "dm/uuid": fmt.Sprintf("LVM-%064d", minor)} {
				if err := os.WriteFile(filepath.Join(dir, f), []byte(v+"\n"), 0o444); err != nil {
					return err
				}
			}
			for _, s := range prev {
				os.Symlink("../../"+s, filepath.Join(dir, "slaves", s))
			}
			if err := os.Symlink("../../devices/virtual/block/"+name, filepath.Join(root, "sys/class/block", name)); err != nil {
				return err
			}
			cur = append(cur, name)
			minor++
		}
		prev = cur
	}
	// sda2's directory is elsewhere; the first level's slave links point
	// at sys/devices/virtual/block/sda2: make that a link to the real one.
	if err := os.Symlink("../../pci0000:00/0000:00:01.0/block/sda/sda2", filepath.Join(root, "sys/devices/virtual/block/sda2")); err != nil {
		return err
	}
	mi, err := os.ReadFile(filepath.Join(root, "proc/self/mountinfo"))
	if err != nil {
		return err
	}
	fmt.Fprintf(&b, "%s", strings.Replace(string(mi), "253:0 / / rw,relatime - ext4 /dev/mapper/root_crypt", fmt.Sprintf("253:%d / / rw,relatime - ext4 /dev/%s", minor-1, prev[1]), 1))
	return os.WriteFile(filepath.Join(root, "proc/self/mountinfo"), []byte(b.String()), 0o444)
}

func cpio(names ...string) []byte {
	var b bytes.Buffer
	for _, n := range append(names, "TRAILER!!!") {
		hdr := fmt.Sprintf("070701%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x", 0, 0o100644, 0, 0, 1, 0, 0, 0, 0, 0, 0, len(n)+1, 0)
		b.WriteString(hdr + n + "\x00")
		for b.Len()%4 != 0 {
			b.WriteByte(0)
		}
	}
	return b.Bytes()
}

func gz(in []byte) []byte {
	var b bytes.Buffer
	w := gzip.NewWriter(&b)
	w.Write(in)
	w.Close()
	return b.Bytes()
}

// bomb is a gzip stream of a cpio member of size bytes of zeros: tiny on
// disk, huge unpacked.
func bomb(size int) []byte {
	var b bytes.Buffer
	w, _ := gzip.NewWriterLevel(&b, gzip.BestSpeed)
	name := "zeros"
	fmt.Fprintf(w, "070701%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%s\x00", 0, 0o100644, 0, 0, 1, 0, size, 0, 0, 0, 0, len(name)+1, 0, name)
	io.CopyN(w, zeroReader{}, int64(size))
	w.Close()
	return b.Bytes()
}

type zeroReader struct{}

func (zeroReader) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

// LUKS2WithoutNUL is a LUKS2 header whose checksum is right but whose
// JSON area has no terminating NUL: github.com/anatol/luks.go indexes
// bytes.IndexByte(...) == -1 and panics on it.
func LUKS2WithoutNUL() []byte {
	const size = 16384
	b := make([]byte, size)
	copy(b, "LUKS\xba\xbe")
	binary.BigEndian.PutUint16(b[6:], 2)
	binary.BigEndian.PutUint64(b[8:], size)
	binary.BigEndian.PutUint64(b[16:], 1)
	copy(b[72:], "sha256")
	copy(b[168:], "0b9e3c1e-1d8e-4a55-9b3e-3d2f0c1a2b3c")
	for i := 4096; i < size; i++ {
		b[i] = ' '
	}
	copy(b[4096:], `{"keyslots":{},"segments":{},"digests":{},"config":{}}`)
	sum := sha256.Sum256(b)
	copy(b[448:], sum[:])
	return b
}

// QCOW2 is a qcow2 v3 header naming backing, with a backing name length
// of nameLen (0: its real length).
func QCOW2(backing string, nameLen uint32) []byte {
	h := make([]byte, 512)
	copy(h, "QFI\xfb")
	be := binary.BigEndian
	be.PutUint32(h[4:], 3)
	be.PutUint32(h[20:], 16)
	be.PutUint64(h[24:], 1<<30)
	be.PutUint32(h[100:], 104)
	if nameLen == 0 {
		nameLen = uint32(len(backing))
	}
	be.PutUint64(h[8:], 112)
	be.PutUint32(h[16:], nameLen)
	copy(h[112:], backing)
	return h
}
