package verify

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/cryptshift/cryptshift/internal/audit/manifest"
	"github.com/cryptshift/cryptshift/internal/hostview/blockstack/blockstacktest"
	"github.com/cryptshift/cryptshift/internal/hostview/sysconf"
	"github.com/cryptshift/cryptshift/luks"
)

const G = uint64(1) << 30

// fx builds a captured-style tree: the blockstacktest tree plus the
// capture manifest (LUKS metadata, image sizes, initramfs listings).
type fx struct {
	*blockstacktest.Tree
	m   manifest.Manifest
	ct  []string // /etc/crypttab lines
	fst []string // /etc/fstab lines
	// drop lists files removed after the tree is written: a capture that
	// could not read them.
	drop []string
}

func newFx(dir, host, comment string) *fx {
	return &fx{Tree: blockstacktest.New(dir), m: manifest.Manifest{
		Schema: manifest.Schema, Host: host, Date: "2026-11-22", Tool: "cryptshift fixture",
		Kernel: "6.1.0-28-amd64", Comment: comment,
		LUKS: map[string]*luks.Header{}, Files: map[string]manifest.FileInfo{},
		Signatures: map[string]string{}, Initramfs: map[string][]sysconf.InitramfsEntry{},
		Modes: map[string]uint32{},
	}}
}

func (f *fx) finish() error {
	if len(f.ct) > 0 {
		f.File("/etc/crypttab", "# <target name>\t<source device>\t<key file>\t<options>\n"+strings.Join(f.ct, "\n")+"\n", 0o644)
	}
	if len(f.fst) > 0 {
		f.File("/etc/fstab", "# /etc/fstab: static file system information.\n"+strings.Join(f.fst, "\n")+"\n", 0o644)
	}
	// What capture records as absent on the host: the places verify looks
	// for that this fixture does not have.
	for _, p := range []string{"/etc/libvirt", "/etc/libvirt/secrets", "/etc/amavis", "/etc/rspamd", "/etc/spamassassin", "/etc/postfix",
		"/etc/dovecot", "/var/crash", "/etc/crypttab", "/etc/fstab", "/etc/default/kdump-tools", "/etc/kdump.conf", "/etc/lvm"} {
		if _, err := os.Lstat(filepath.Join(f.Dir, filepath.FromSlash(p))); err != nil && len(f.ct) == 0 && p == "/etc/crypttab" || err != nil && p != "/etc/crypttab" && !(p == "/etc/fstab" && len(f.fst) > 0) {
			f.m.Absent = append(f.m.Absent, p)
		}
	}
	sort.Strings(f.m.Absent)
	b, err := json.MarshalIndent(f.m, "", "  ")
	if err != nil {
		return err
	}
	f.File(manifest.ManifestPath, string(b)+"\n", 0o644)
	if err := f.Finish(); err != nil {
		return err
	}
	for _, p := range f.drop {
		full := filepath.Join(f.Dir, filepath.FromSlash(p))
		if err := os.Remove(full); err != nil {
			return err
		}
		// git keeps no empty directories: a parent the drop emptied goes
		// too, so the committed tree equals its definition on a fresh clone.
		for dir := filepath.Dir(full); dir != f.Dir; dir = filepath.Dir(dir) {
			if os.Remove(dir) != nil {
				break
			}
		}
	}
	return nil
}

// luks2 records the metadata a cryptsetup 2.6 luksFormat with defaults
// (plus a recovery keyslot) leaves on dev.
func (f *fx) luks2(dev, dmName string) {
	f.m.LUKS[dev] = &luks.Header{
		Version: 2, UUID: blockstacktest.CryptUUID(dmName), Cipher: "aes-xts-plain64", KeySize: 512,
		SectorSize: 4096, DataOffset: 16 << 20,
		Keyslots: []luks.Keyslot{
			{ID: 0, KDF: "argon2id", Time: 4, MemoryKiB: 1048576, Parallel: 4, KeySize: 512},
			{ID: 1, KDF: "argon2id", Time: 4, MemoryKiB: 1048576, Parallel: 4, KeySize: 512},
		},
	}
}

// keyFile adds a key file stub (capture never copies contents) and its mode.
func (f *fx) keyFile(p string, mode uint32) {
	f.File(p, "", os.FileMode(mode))
	f.m.Modes[p] = mode
}

// debian adds what every Debian 12 host has: accounts, kernel facts, the
// systemd-coredump pipe, journald's persistent directory, an initramfs.
func (f *fx) debian(host string) {
	f.File("/etc/hostname", host+"\n", 0o644)
	f.File("/proc/sys/kernel/hostname", host+"\n", 0o444)
	f.File("/proc/sys/kernel/osrelease", "6.1.0-28-amd64\n", 0o444)
	f.File("/etc/passwd", "root:x:0:0:root:/root:/bin/bash\n"+
		"daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n"+
		"postfix:x:104:111::/var/spool/postfix:/usr/sbin/nologin\n"+
		"vmail:x:5000:5000::/var/vmail:/usr/sbin/nologin\n"+
		"anna:x:1000:1000:Anna:/home/anna:/bin/bash\n", 0o644)
	f.File("/proc/sys/kernel/core_pattern", "|/lib/systemd/systemd-coredump %P %u %g %s %t 9223372036854775808 %h\n", 0o444)
	f.File("/usr/lib/sysctl.d/50-coredump.conf", "kernel.core_pattern=|/lib/systemd/systemd-coredump %P %u %g %s %t 9223372036854775808 %h\n", 0o644)
	f.File("/proc/cmdline", "BOOT_IMAGE=/vmlinuz-6.1.0-28-amd64 root=/dev/mapper/root_crypt ro quiet\n", 0o444)
	f.File("/sys/power/resume", "0:0\n", 0o444)
	f.File("/sys/kernel/kexec_crash_loaded", "0\n", 0o444)
	f.Mkdir("/var/log/journal")
	f.Mkdir("/var/lib/systemd/coredump")
	f.initramfs("/boot/initrd.img-6.1.0-28-amd64", nil)
}

// initramfs records a Debian initramfs listing, plus extra members.
func (f *fx) initramfs(p string, extra []string) {
	f.File(p, "", 0o644) // contents are not captured; the listing is
	names := []string{"kernel/x86/microcode/GenuineIntel.bin", "init", "bin/busybox", "conf/conf.d/cryptroot",
		"cryptroot/crypttab", "scripts/local-top/cryptroot", "usr/sbin/cryptsetup", "lib/modules/6.1.0-28-amd64/kernel/drivers/md/dm-crypt.ko"}
	names = append(names, extra...)
	var es []sysconf.InitramfsEntry
	for _, n := range names {
		es = append(es, sysconf.InitramfsEntry{Name: n, Mode: 0o100644, Size: 1024})
	}
	f.m.Initramfs[p] = es
}

// pseudo mounts the pseudo filesystems a systemd host has.
func (f *fx) pseudo() {
	f.Mount("/proc", "proc", "proc", "0:21", "rw")
	f.Mount("/sys", "sysfs", "sysfs", "0:22", "rw")
	f.Mount("/dev", "devtmpfs", "udev", "0:5", "rw,size=8131084k,mode=755")
	f.Mount("/dev/shm", "tmpfs", "tmpfs", "0:24", "rw")
	f.Mount("/run", "tmpfs", "tmpfs", "0:25", "rw,size=1632528k,mode=755")
}

func (f *fx) postfix(extra string) {
	f.File("/etc/postfix/main.cf", "# Debian default main.cf, trimmed\nmyhostname = mx.example.org\n"+
		"smtpd_tls_cert_file = /etc/ssl/certs/ssl-cert-snakeoil.pem\ninet_interfaces = all\n"+
		"virtual_transport = lmtp:unix:private/dovecot-lmtp\n"+extra, 0o644)
	f.Mkdir("/var/spool/postfix/deferred")
	f.Mkdir("/var/mail")
}

func (f *fx) dovecot(mailLocation string) {
	f.File("/etc/dovecot/dovecot.conf", "protocols = imap lmtp\n!include conf.d/*.conf\n!include_try local.conf\n", 0o644)
	f.File("/etc/dovecot/conf.d/10-mail.conf", "mail_location = "+mailLocation+"\n"+
		"namespace inbox {\n  inbox = yes\n}\nmail_privileged_group = mail\n", 0o644)
}

// libvirtBase adds libvirt's directories and default files.
func (f *fx) libvirtBase() {
	f.File("/etc/libvirt/qemu.conf", "# qemu.conf: all defaults\n#auto_dump_path = \"/var/lib/libvirt/qemu/dump\"\n", 0o644)
	f.Mkdir("/etc/libvirt/qemu")
	f.Mkdir("/var/lib/libvirt/qemu/save")
	f.Mkdir("/var/lib/libvirt/qemu/dump")
	f.Mkdir("/var/lib/libvirt/images")
}

// domain writes a persistent domain definition with the given disks XML.
func (f *fx) domain(name, disks string) {
	f.File("/etc/libvirt/qemu/"+name+".xml", fmt.Sprintf(`<domain type='kvm'>
  <name>%s</name>
  <uuid>%s</uuid>
  <memory unit='KiB'>2097152</memory>
  <vcpu>2</vcpu>
  <os><type arch='x86_64' machine='pc-q35-7.2'>hvm</type></os>
  <devices>
%s
    <interface type='network'><source network='default'/><model type='virtio'/></interface>
  </devices>
</domain>
`, name, blockstacktest.CryptUUID("dom:"+name), disks), 0o600)
}

func blockDisk(dev, target string) string {
	return fmt.Sprintf("    <disk type='block' device='disk'>\n      <driver name='qemu' type='raw' cache='none' io='native'/>\n      <source dev='%s'/>\n      <target dev='%s' bus='virtio'/>\n    </disk>", dev, target)
}

func fileDisk(file, format, target string) string {
	return fmt.Sprintf("    <disk type='file' device='disk'>\n      <driver name='qemu' type='%s'/>\n      <source file='%s'/>\n      <target dev='%s' bus='virtio'/>\n    </disk>", format, file, target)
}

// image stores an image file as capture does: a qcow2 header prefix, or
// nothing for raw images, with the real size in the manifest.
func (f *fx) image(p string, size int64, header []byte, format string) {
	f.Bytes(p, header, 0o600)
	f.m.Files[p] = manifest.FileInfo{Size: size, Format: format}
}

// qcow2Header writes a qcow2 v3 header as qemu-img 7.2 does: 104-byte
// header, a backing-format extension, the end marker, then the backing
// file name (docs/interop/qcow2.txt).
func qcow2Header(size uint64, backing, backingFmt string, crypt uint32) []byte {
	var b bytes.Buffer
	be := binary.BigEndian
	h := make([]byte, 104)
	copy(h, sysconf.QCOW2Magic)
	be.PutUint32(h[4:], 3)
	be.PutUint32(h[20:], 16) // 64 KiB clusters
	be.PutUint64(h[24:], size)
	be.PutUint32(h[32:], crypt)
	be.PutUint32(h[96:], 4)    // refcount_order
	be.PutUint32(h[100:], 104) // header_length
	b.Write(h)
	if backingFmt != "" {
		ext := make([]byte, 8)
		be.PutUint32(ext[0:], 0xe2792aca)
		be.PutUint32(ext[4:], uint32(len(backingFmt)))
		b.Write(ext)
		b.WriteString(backingFmt)
		for b.Len()%8 != 0 {
			b.WriteByte(0)
		}
	}
	b.Write(make([]byte, 8)) // end of extensions
	out := b.Bytes()
	if backing != "" {
		be.PutUint64(out[8:], uint64(len(out)))
		be.PutUint32(out[16:], uint32(len(backing)))
		out = append(out, backing...)
	}
	return out
}

// compareTrees reports the differences between two fixture trees: paths,
// kinds, symlink targets and file contents. Permission bits other than
// the executable bit are not compared: git does not keep them (which is
// why the manifest records the modes that matter).
func compareTrees(a, b string) []string {
	list := func(root string) map[string]string {
		out := map[string]string{}
		filepath.Walk(root, func(p string, fi os.FileInfo, err error) error {
			if err != nil {
				out["!"+p] = err.Error()
				return nil
			}
			rel, _ := filepath.Rel(root, p)
			switch {
			case fi.Mode()&os.ModeSymlink != 0:
				t, _ := os.Readlink(p)
				out[rel] = "link " + t
			case fi.IsDir():
				out[rel] = "dir"
			default:
				c, _ := os.ReadFile(p)
				out[rel] = fmt.Sprintf("file x=%v %q", fi.Mode()&0o111 != 0, c)
			}
			return nil
		})
		return out
	}
	la, lb := list(a), list(b)
	var diffs []string
	for k, v := range la {
		if w, ok := lb[k]; !ok {
			diffs = append(diffs, "only in generated: "+k)
		} else if v != w {
			diffs = append(diffs, fmt.Sprintf("%s: generated %.80s, committed %.80s", k, v, w))
		}
	}
	for k := range lb {
		if _, ok := la[k]; !ok {
			diffs = append(diffs, "only in committed: "+k)
		}
	}
	sort.Strings(diffs)
	return diffs
}
