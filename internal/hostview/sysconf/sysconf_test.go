package sysconf

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/klauspost/compress/zstd"

	"github.com/cryptshift/cryptshift/internal/hostview/rootfs"
)

func TestParseFstab(t *testing.T) {
	in := `# /etc/fstab
/dev/mapper/vg0-root /               ext4    errors=remount-ro 0       1
UUID=0b1e-22 /boot ext4 defaults 0 2
/swap\040file none swap sw 0 0
tmpfs /tmp tmpfs
`
	want := []FstabEntry{
		{Spec: "/dev/mapper/vg0-root", File: "/", VFSType: "ext4", Options: []string{"errors=remount-ro"}, PassNo: 1, Line: 2},
		{Spec: "UUID=0b1e-22", File: "/boot", VFSType: "ext4", Options: []string{"defaults"}, PassNo: 2, Line: 3},
		{Spec: "/swap file", File: "none", VFSType: "swap", Options: []string{"sw"}, Line: 4},
		{Spec: "tmpfs", File: "/tmp", VFSType: "tmpfs", Options: []string{"defaults"}, Line: 5},
	}
	got, err := ParseFstab(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got  %+v\nwant %+v", got, want)
	}
	for _, bad := range []string{"/dev/sda1 /\n", "/dev/sda1 / ext4 defaults x 1\n", "a b c d 0 0 extra\n"} {
		if _, err := ParseFstab(strings.NewReader(bad)); err == nil || !strings.Contains(err.Error(), "cannot parse fstab line 1") {
			t.Errorf("%q: got %v, want an error naming line 1", bad, err)
		}
	}
}

func TestParseCrypttab(t *testing.T) {
	in := `# <target name> <source device> <key file> <options>
sda2_crypt UUID=6a4e-1 none luks,discard
swap /dev/sdb2 /dev/urandom swap,cipher=aes-xts-plain64,size=512
data /dev/vg0/data /etc/keys/data.key luks
usb /dev/disk/by-uuid/x /key.bin:UUID=abcd luks,header=/boot/hdr.img
bare /dev/vda3
`
	want := []CrypttabEntry{
		{Name: "sda2_crypt", Device: "UUID=6a4e-1", Options: []string{"luks", "discard"}, Line: 2},
		{Name: "swap", Device: "/dev/sdb2", KeyFile: "/dev/urandom", Options: []string{"swap", "cipher=aes-xts-plain64", "size=512"}, Line: 3},
		{Name: "data", Device: "/dev/vg0/data", KeyFile: "/etc/keys/data.key", Options: []string{"luks"}, Line: 4},
		{Name: "usb", Device: "/dev/disk/by-uuid/x", KeyFile: "/key.bin", KeyDevice: "UUID=abcd", Options: []string{"luks", "header=/boot/hdr.img"}, Line: 5},
		{Name: "bare", Device: "/dev/vda3", Line: 6},
	}
	got, err := ParseCrypttab(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got  %+v\nwant %+v", got, want)
	}
	if !got[1].RandomKey() || got[2].RandomKey() {
		t.Error("RandomKey: want true for /dev/urandom only")
	}
	if h, _ := got[3].Option("header"); h != "/boot/hdr.img" {
		t.Errorf("header option: got %q", h)
	}
	if _, err := ParseCrypttab(strings.NewReader("onlyname\n")); err == nil {
		t.Error("one field: got no error")
	}
}

func TestUnstableDevice(t *testing.T) {
	tests := map[string]bool{
		"/dev/sdb2": true, "/dev/vda3": true, "/dev/nvme0n1p2": true, "/dev/dm-3": true,
		"UUID=x": false, "PARTUUID=y": false, "/dev/disk/by-id/ata-x-part2": false,
		"/dev/mapper/vg0-swap": false, "/dev/vg0/swap": false, "LABEL=s": false,
	}
	for in, want := range tests {
		if got := UnstableDevice(in); got != want {
			t.Errorf("UnstableDevice(%q): got %v, want %v", in, got, want)
		}
	}
}

// The .hdr fixtures are the first 4 KiB of images made by qemu-img 7.2
// (`capture` stores the same prefix): see the commands in TestParseQCOW2.
func TestParseQCOW2(t *testing.T) {
	tests := []struct {
		file string
		want QCOW2
	}{
		// qemu-img create -f qcow2 base.qcow2 1G
		{"base.qcow2.hdr", QCOW2{Version: 3, Size: 1 << 30, ClusterBits: 16}},
		// qemu-img create -f qcow2 -u -b /var/lib/libvirt/images/base.qcow2 -F qcow2 overlay.qcow2 1G
		{"overlay.qcow2.hdr", QCOW2{Version: 3, Size: 1 << 30, ClusterBits: 16, BackingFile: "/var/lib/libvirt/images/base.qcow2", BackingFormat: "qcow2"}},
		// qemu-img create -f qcow2 -o compat=0.10 -u -b /srv/old/plain.raw -F raw v2.qcow2 2G
		{"v2.qcow2.hdr", QCOW2{Version: 2, Size: 2 << 30, ClusterBits: 16, BackingFile: "/srv/old/plain.raw", BackingFormat: "raw"}},
		// qemu-img create -f qcow2 --object secret,id=s0,data=x -o encrypt.format=luks,encrypt.key-secret=s0 enc.qcow2 1G
		{"enc.qcow2.hdr", QCOW2{Version: 3, Size: 1 << 30, ClusterBits: 16, CryptMethod: 2, CryptHeaderOffset: 256 << 10, CryptHeaderLength: 2068480}}, // qemu-img 7.2: the LUKS header in the 5th cluster
		// qemu-img create -f qcow2 -o data_file=/tmp/q/srvdata/ext.raw,data_file_raw=on ext.qcow2 1G
		{"ext.qcow2.hdr", QCOW2{Version: 3, Size: 1 << 30, ClusterBits: 16, DataFile: "/tmp/q/srvdata/ext.raw"}},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			b, err := os.ReadFile(filepath.Join("testdata", tt.file))
			if err != nil {
				t.Fatal(err)
			}
			got, err := ParseQCOW2(bytes.NewReader(b))
			if err != nil {
				t.Fatal(err)
			}
			got.HeaderEnd = 0
			if !reflect.DeepEqual(*got, tt.want) {
				t.Errorf("got  %+v\nwant %+v", *got, tt.want)
			}
		})
	}
	if _, err := ParseQCOW2(bytes.NewReader(make([]byte, 512))); err != ErrNotQCOW2 {
		t.Errorf("zeros: got %v, want ErrNotQCOW2", err)
	}
}

func FuzzParseQCOW2(f *testing.F) {
	for _, n := range []string{"base", "overlay", "v2", "enc", "ext"} {
		b, err := os.ReadFile(filepath.Join("testdata", n+".qcow2.hdr"))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		q, err := ParseQCOW2(bytes.NewReader(in))
		if err != nil {
			return
		}
		if len(q.BackingFile) > qcowMaxBackingName {
			t.Errorf("backing name of %d bytes accepted", len(q.BackingFile))
		}
	})
}

func FuzzParseFstab(f *testing.F) {
	f.Add("/dev/sda1 / ext4 defaults 0 1\nUUID=x none swap sw\n")
	f.Add("/a\\040b /c tmpfs rw 0\n# c\n")
	f.Fuzz(func(t *testing.T, in string) {
		es, err := ParseFstab(strings.NewReader(in))
		if err != nil {
			return
		}
		for _, e := range es {
			if e.Spec == "" || e.File == "" || e.VFSType == "" || len(e.Options) == 0 {
				t.Errorf("incomplete entry %+v from %q", e, in)
			}
		}
	})
}

func FuzzParseCrypttab(f *testing.F) {
	f.Add("sda2_crypt UUID=6a4e none luks,discard\nswap /dev/sdb2 /dev/urandom swap\n")
	f.Add("a /dev/x /k:UUID=y header=/h\n")
	f.Fuzz(func(t *testing.T, in string) {
		es, err := ParseCrypttab(strings.NewReader(in))
		if err != nil {
			return
		}
		for _, e := range es {
			if e.Name == "" || e.Device == "" {
				t.Errorf("incomplete entry %+v from %q", e, in)
			}
			_ = UnstableDevice(e.Device)
		}
	})
}

func TestPostfix(t *testing.T) {
	in := `# main.cf
myhostname = mx.example.org
queue_directory = /srv/postfix
mail_spool_directory = $data_directory/spool
smtpd_recipient_restrictions =
    permit_mynetworks
    reject_unauth_destination
`
	c, err := ParsePostfixMainCF(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	tests := map[string]string{
		"queue_directory":              "/srv/postfix",
		"mail_spool_directory":         "/var/lib/postfix/spool",
		"data_directory":               "/var/lib/postfix",
		"smtpd_recipient_restrictions": "permit_mynetworks reject_unauth_destination",
	}
	for k, want := range tests {
		if got := c.Get(k); got != want {
			t.Errorf("%s: got %q, want %q", k, got, want)
		}
	}
}

func TestDovecot(t *testing.T) {
	dir := t.TempDir()
	write := func(p, s string) {
		h := filepath.Join(dir, p)
		if err := os.MkdirAll(filepath.Dir(h), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(h, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("etc/dovecot/dovecot.conf", "protocols = imap\n!include conf.d/*.conf\n!include_try /etc/dovecot/local.conf\n")
	write("etc/dovecot/conf.d/10-mail.conf", `mail_location = mbox:~/mail:INBOX=/var/mail/%u # comment
namespace inbox {
  inbox = yes
  location = maildir:/srv/shared:INDEX=/var/lib/dovecot/idx/%u
}
`)
	write("etc/dovecot/conf.d/20-override.conf", "mail_location = \"maildir:/var/vmail/%d/%n:INDEX=/var/lib/dovecot/index/%d/%n\"\n")
	c, err := ReadDovecotConfig(rootfs.Dir(dir), "/etc/dovecot/dovecot.conf")
	if err != nil {
		t.Fatal(err)
	}
	v, _ := c.Get("mail_location")
	ml := ParseMailLocation(v)
	if ml.Format != "maildir" || ml.Path != "/var/vmail/%d/%n" || ml.Params["INDEX"] != "/var/lib/dovecot/index/%d/%n" {
		t.Errorf("mail_location: got %+v", ml)
	}
	locs := c.All("location")
	if len(locs) != 1 || locs[0].Section != "namespace inbox" {
		t.Errorf("namespace location: got %+v", locs)
	}
	if p, ok := StaticPrefix(ml.Path); !ok || p != "/var/vmail" {
		t.Errorf("StaticPrefix: got %q %v", p, ok)
	}
	if _, ok := StaticPrefix("~/Maildir"); ok {
		t.Error("StaticPrefix(~/Maildir): want not static")
	}
	if got := ParseMailLocation("mbox:~/mail:INBOX=/var/mail/%u"); got.Path != "~/mail" || got.Params["INBOX"] != "/var/mail/%u" {
		t.Errorf("mbox location: got %+v", got)
	}
}

func TestKV(t *testing.T) {
	sv := ParseShellVars("# kdump\nUSE_KDUMP=1\nexport KDUMP_COREDIR=\"/var/crash\" \nX = y\n")
	if sv["USE_KDUMP"] != "1" || sv["KDUMP_COREDIR"] != "/var/crash" || len(sv) != 2 {
		t.Errorf("shell vars: got %v", sv)
	}
	sc := ParseSysctl("; c\nkernel.core_pattern = |/lib/systemd/systemd-coredump %P\n-kernel/core_uses_pid=1\n")
	if sc["kernel.core_pattern"] != "|/lib/systemd/systemd-coredump %P" || sc["kernel.core_uses_pid"] != "1" {
		t.Errorf("sysctl: got %v", sc)
	}
	ini := ParseINI("[Coredump]\n#Storage=external\nStorage=none\n[Other]\nX=1\n")
	if ini["Coredump.Storage"] != "none" || ini["Other.X"] != "1" {
		t.Errorf("ini: got %v", ini)
	}
	lc := ParseLibvirtConf("# qemu.conf\nauto_dump_path = \"/var/lib/libvirt/qemu/dump\"\ndump_guest_core = 1\nnvram = [\n \"a\",\n \"b\"\n]\n")
	if lc["auto_dump_path"] != "/var/lib/libvirt/qemu/dump" || lc["dump_guest_core"] != "1" || lc["nvram"] != "a,b" {
		t.Errorf("libvirt conf: got %v", lc)
	}
	pw := ParsePasswd("root:x:0:0:root:/root:/bin/bash\nbob:x:1000:1000::/home/bob:/bin/bash\nbad:line\n")
	if len(pw) != 2 || pw[1].Home != "/home/bob" || pw[1].UID != 1000 {
		t.Errorf("passwd: got %+v", pw)
	}
}

func TestReadSystemdConfAndSysctl(t *testing.T) {
	dir := t.TempDir()
	write := func(p, s string) {
		h := filepath.Join(dir, p)
		if err := os.MkdirAll(filepath.Dir(h), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(h, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("etc/systemd/coredump.conf", "[Coredump]\nStorage=external\n")
	write("usr/lib/systemd/coredump.conf.d/10-x.conf", "[Coredump]\nStorage=journal\n")
	write("etc/systemd/coredump.conf.d/50-y.conf", "[Coredump]\nStorage=none\n")
	got, files := ReadSystemdConf(rootfs.Dir(dir), "systemd/coredump.conf")
	if got["Coredump.Storage"].Value != "none" || len(files) != 3 {
		t.Errorf("coredump.conf: got %v from %v, want none from 3 files", got, files)
	}
	write("usr/lib/sysctl.d/50-coredump.conf", "kernel.core_pattern=|/usr/lib/systemd/systemd-coredump %P\n")
	write("etc/sysctl.d/50-coredump.conf", "kernel.core_pattern=/var/crash/core.%p\n") // masks the /usr/lib file
	sc := ReadSysctl(rootfs.Dir(dir))
	if s := sc["kernel.core_pattern"]; s.Value != "/var/crash/core.%p" || s.File != "/etc/sysctl.d/50-coredump.conf" {
		t.Errorf("sysctl: got %+v", s)
	}
}

// newc writes a cpio "newc" archive of the named members.
func newc(members map[string]string, order []string) []byte {
	var b bytes.Buffer
	add := func(name string, mode uint32, data string) {
		fmt.Fprintf(&b, "070701%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x", 1, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(name)+1, 0)
		b.WriteString(name + "\x00")
		for b.Len()%4 != 0 {
			b.WriteByte(0)
		}
		b.WriteString(data)
		for b.Len()%4 != 0 {
			b.WriteByte(0)
		}
	}
	for _, n := range order {
		add(n, 0o100600, members[n])
	}
	add("TRAILER!!!", 0, "")
	return b.Bytes()
}

func TestListInitramfs(t *testing.T) {
	early := newc(map[string]string{"kernel/x86/microcode/GenuineIntel.bin": "ucode"}, []string{"kernel/x86/microcode/GenuineIntel.bin"})
	main := newc(map[string]string{"init": "#!/bin/sh", "cryptroot/keyfiles/data.key": "SECRET", "etc/crypttab": "x"},
		[]string{"init", "cryptroot/keyfiles/data.key", "etc/crypttab"})
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write(main)
	zw.Close()
	var zs bytes.Buffer
	ze, _ := zstd.NewWriter(&zs)
	ze.Write(main)
	ze.Close()
	pad := make([]byte, 512) // initramfs-tools pads between archives
	tests := []struct {
		name string
		img  []byte
	}{
		{"early+gzip", append(append(append([]byte{}, early...), pad...), gz.Bytes()...)},
		{"early+zstd", append(append([]byte{}, early...), zs.Bytes()...)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ListInitramfs(bytes.NewReader(tt.img))
			if err != nil {
				t.Fatal(err)
			}
			var names []string
			var keys []string
			for _, e := range got {
				names = append(names, e.Name)
				if IsKeyFileMember(e.Name) {
					keys = append(keys, e.Name)
				}
			}
			want := []string{"kernel/x86/microcode/GenuineIntel.bin", "init", "cryptroot/keyfiles/data.key", "etc/crypttab"}
			if !reflect.DeepEqual(names, want) {
				t.Errorf("got %v, want %v", names, want)
			}
			if !reflect.DeepEqual(keys, []string{"cryptroot/keyfiles/data.key"}) {
				t.Errorf("key members: got %v", keys)
			}
		})
	}
	if _, err := ListInitramfs(bytes.NewReader([]byte("BZh91AY"))); err == nil {
		t.Error("bzip2: got no error, want unsupported format")
	}
}
