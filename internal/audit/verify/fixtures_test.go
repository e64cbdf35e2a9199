package verify

import (
	"fmt"
	"strings"

	"github.com/cryptshift/cryptshift/internal/hostview/blockstack/blockstacktest"
	"github.com/cryptshift/cryptshift/luks"
)

// stdOpts switch parts of the standard encrypted host on or off so a
// fixture can replace exactly one of them with its defect.
type stdOpts struct {
	noSwap  bool // no encrypted swap LV
	noTmpfs bool // no tmpfs on /tmp
	varKey  string
}

// std builds the reference layout `cryptshift plan` proposes for a mail
// host: /boot plain on sda1, PV on sda2, one LUKS2 container per LV (root
// by passphrase, the others by key files on the encrypted root), swap with
// a fresh random key (plain dm-crypt), /tmp on tmpfs.
func (f *fx) std(host string, o stdOpts) {
	f.debian(host)
	f.DiskWith("sda", "8:0", 100*G, 512, 4096, 2<<30)
	f.Part("sda", 1, "8:1", G, 1<<20).Part("sda", 2, "8:2", 99*G, G+1<<20)
	f.DevLink("/dev/disk/by-uuid/5e1f0c2a-7d0b-4b9e-9a1e-6c2d9f0b1a01", "sda1")
	f.LV("dm-0", "253:0", "vg0", "root", 20*G, "sda2")
	f.LV("dm-1", "253:1", "vg0", "var", 20*G, "sda2")
	f.LV("dm-3", "253:3", "vg0", "mail", 40*G, "sda2")
	f.Crypt("dm-4", "253:4", "LUKS2", "root_crypt", 20*G-16<<20, "dm-0")
	f.Crypt("dm-5", "253:5", "LUKS2", "var_crypt", 20*G-16<<20, "dm-1")
	f.Crypt("dm-7", "253:7", "LUKS2", "mail_crypt", 40*G-16<<20, "dm-3")
	f.luks2("/dev/dm-0", "root_crypt")
	f.luks2("/dev/dm-1", "var_crypt")
	f.luks2("/dev/dm-3", "mail_crypt")
	varKey := o.varKey
	if varKey == "" {
		varKey = "/etc/keys/var.key"
		f.keyFile(varKey, 0o400)
	}
	f.keyFile("/etc/keys/mail.key", 0o400)
	f.ct = append(f.ct,
		"root_crypt UUID="+blockstacktest.CryptUUID("root_crypt")+" none luks",
		"var_crypt /dev/vg0/var "+varKey+" luks",
		"mail_crypt /dev/vg0/mail /etc/keys/mail.key luks")
	f.Mount("/", "ext4", "/dev/mapper/root_crypt", "253:4", "rw,errors=remount-ro")
	f.pseudo()
	f.Mount("/boot", "ext4", "/dev/sda1", "8:1", "rw")
	f.Mount("/var", "ext4", "/dev/mapper/var_crypt", "253:5", "rw")
	f.Mount("/srv/mail", "ext4", "/dev/mapper/mail_crypt", "253:7", "rw")
	f.fst = append(f.fst,
		"/dev/mapper/root_crypt /         ext4 errors=remount-ro 0 1",
		"UUID=5e1f0c2a-7d0b-4b9e-9a1e-6c2d9f0b1a01 /boot ext4 defaults 0 2",
		"/dev/mapper/var_crypt  /var      ext4 defaults 0 2",
		"/dev/mapper/mail_crypt /srv/mail ext4 defaults 0 2")
	if !o.noSwap {
		f.LV("dm-2", "253:2", "vg0", "swap", 4*G, "sda2")
		f.Crypt("dm-6", "253:6", "PLAIN", "swap_crypt", 4*G, "dm-2")
		f.ct = append(f.ct, "swap_crypt /dev/vg0/swap /dev/urandom swap,cipher=aes-xts-plain64,size=512")
		f.fst = append(f.fst, "/dev/mapper/swap_crypt none swap sw 0 0")
		f.Swap("/dev/dm-6", "partition", 4<<20)
	}
	if !o.noTmpfs {
		f.Mount("/tmp", "tmpfs", "tmpfs", "0:30", "rw,nosuid,nodev,size=4g")
		f.fst = append(f.fst, "tmpfs /tmp tmpfs nosuid,nodev,size=4g 0 0")
	}
	f.Mkdir("/var/tmp")
	f.Mkdir("/var/crash")
	lvs := []string{"root", "var", "mail"}
	if !o.noSwap {
		lvs = append(lvs, "swap")
	}
	f.File("/etc/lvm/backup/vg0", lvmStripedMeta("vg0", "/dev/sda2", lvs...), 0o600)
	f.postfix("")
	f.dovecot("maildir:/srv/mail/%d/%n:INDEX=/var/lib/dovecot/index/%d/%n")
}

// vmVolume adds an encrypted volume for guest images: LV vg0/vm with a
// LUKS2 container (key file on the encrypted root) mounted on /srv/vm.
func (f *fx) vmVolume() {
	f.LV("dm-8", "253:8", "vg0", "vm", 50*G, "sda2")
	f.Crypt("dm-9", "253:9", "LUKS2", "vm_crypt", 50*G-16<<20, "dm-8")
	f.luks2("/dev/dm-8", "vm_crypt")
	f.keyFile("/etc/keys/vm.key", 0o400)
	f.ct = append(f.ct, "vm_crypt /dev/vg0/vm /etc/keys/vm.key luks")
	f.Mount("/srv/vm", "ext4", "/dev/mapper/vm_crypt", "253:9", "rw")
}

// plainPool adds libvirt with its default pool on a plaintext disk and
// an encrypted /srv/vm beside it.
func (f *fx) plainPool() {
	f.plainDisk()
	f.libvirtBase()
	f.Mount("/var/lib/libvirt/images", "ext4", "/dev/sdb1", "8:17", "rw")
	f.vmVolume()
}

// dumpVolume adds LV vg0/dump with a LUKS2 container dump_crypt (key file
// on the encrypted root, crypttab options opts) for crash dumps.
func (f *fx) dumpVolume(opts string) {
	f.LV("dm-8", "253:8", "vg0", "dump", 8*G, "sda2")
	f.Crypt("dm-9", "253:9", "LUKS2", "dump_crypt", 8*G-16<<20, "dm-8")
	f.luks2("/dev/dm-8", "dump_crypt")
	f.keyFile("/etc/keys/dump.key", 0o400)
	f.ct = append(f.ct, "dump_crypt /dev/vg0/dump /etc/keys/dump.key "+opts)
}

// kdumpTools arms kdump (crashkernel= reserved, crash kernel loaded) with
// Debian's kdump-tools writing the vmcore under dir.
func (f *fx) kdumpTools(dir string) {
	f.File("/proc/cmdline", "BOOT_IMAGE=/vmlinuz-6.1.0-28-amd64 root=/dev/mapper/root_crypt ro quiet crashkernel=512M\n", 0o444)
	f.File("/sys/kernel/kexec_crash_loaded", "1\n", 0o444)
	f.File("/etc/default/kdump-tools", "USE_KDUMP=1\nKDUMP_COREDIR=\""+dir+"\"\n", 0o644)
	f.Mkdir(dir)
}

// plainDisk adds a second disk with plaintext partitions 1 and 2.
func (f *fx) plainDisk() {
	f.DiskWith("sdb", "8:16", 500*G, 512, 4096, 0)
	f.Part("sdb", 1, "8:17", 200*G, 1<<20).Part("sdb", 2, "8:18", 8*G, 200*G+1<<20)
}

// fixture is one captured-style tree under testdata/verify/NAME with its
// golden report; want states the verdicts the scenario is about, so the
// test checks meaning and not only bytes.
type fixture struct {
	name, comment string
	build         func(f *fx)
	want          []want
	noFail        bool // no result may FAIL
}

type want struct {
	id, subject string // subject "" matches every result of the id
	status      Status // the worst status among the matched results
}

var fixtures = []fixture{
	{
		name:    "mailhost-luks-on-lvm",
		comment: "the reference layout: one LUKS2 container per LV, random-key swap, tmpfs /tmp, two guests on encrypted storage",
		noFail:  true,
		build: func(f *fx) {
			f.std("mx1", stdOpts{})
			f.libvirtBase()
			f.LV("dm-8", "253:8", "vg0", "guest-mx", 10*G, "sda2")
			f.Crypt("dm-9", "253:9", "LUKS2", "guest-mx_crypt", 10*G-16<<20, "dm-8")
			f.luks2("/dev/dm-8", "guest-mx_crypt")
			f.keyFile("/etc/keys/guest-mx.key", 0o400)
			f.ct = append(f.ct, "guest-mx_crypt /dev/vg0/guest-mx /etc/keys/guest-mx.key luks")
			f.domain("mx", blockDisk("/dev/mapper/guest-mx_crypt", "vda"))
			f.domain("web", fileDisk("/var/lib/libvirt/images/web.qcow2", "qcow2", "vda"))
			f.image("/var/lib/libvirt/images/web.qcow2", 2<<30, qcow2Header(20*G, "/var/lib/libvirt/images/debian12-base.qcow2", "qcow2", 0), "qcow2")
			f.image("/var/lib/libvirt/images/debian12-base.qcow2", 1<<30, qcow2Header(20*G, "", "", 0), "qcow2")
			f.File("/etc/libvirt/secrets/"+blockstacktest.CryptUUID("secret")+".xml", "<secret ephemeral='no' private='yes'><usage type='volume'><volume>/var/lib/libvirt/images/x</volume></usage></secret>\n", 0o600)
			f.File("/etc/libvirt/secrets/"+blockstacktest.CryptUUID("secret")+".base64", "", 0o600)
			f.File("/etc/amavis/conf.d/05-debian_defaults", "$MYHOME = '/var/lib/amavis';\n$TEMPBASE = \"$MYHOME/tmp\";\n", 0o644)
			f.Mkdir("/var/lib/amavis/tmp")
		},
		want: []want{
			{"swap.device", "/dev/dm-6", Pass}, {"tmp.tmp", "", Pass}, {"mail.postfix.queue", "", Pass},
			{"mail.dovecot.location", "/srv/mail", Pass}, {"libvirt.disk.storage", "", Pass}, {"libvirt.disk.backing", "", Pass},
			{"keys.crypttab", "", Pass}, {"luks.kdf", "", Pass}, {"luks.cipher", "", Pass},
		},
	},
	{
		name:    "swap-lv-in-luks-pv",
		comment: "Debian installer's encrypted LVM: PV inside LUKS2, swap LV in it (Lynis #1419 and fwupd HSI call this unencrypted)",
		noFail:  true,
		build: func(f *fx) {
			f.debian("laptop")
			f.DiskWith("nvme0n1", "259:0", 512*G, 512, 512, 2<<30)
			f.Part("nvme0n1", 1, "259:1", 512<<20, 1<<20).Part("nvme0n1", 2, "259:2", 512<<20, 513<<20).Part("nvme0n1", 3, "259:3", 511*G, 1025<<20)
			f.Crypt("dm-0", "253:0", "LUKS2", "nvme0n1p3_crypt", 511*G, "nvme0n1p3")
			f.luks2("/dev/nvme0n1p3", "nvme0n1p3_crypt")
			f.LV("dm-1", "253:1", "laptop-vg", "root", 60*G, "dm-0")
			f.LV("dm-2", "253:2", "laptop-vg", "swap_1", 16*G, "dm-0")
			f.LV("dm-3", "253:3", "laptop-vg", "home", 400*G, "dm-0")
			f.Mount("/", "ext4", "/dev/mapper/laptop--vg-root", "253:1", "rw,errors=remount-ro")
			f.pseudo()
			f.Mount("/boot", "ext2", "/dev/nvme0n1p2", "259:2", "rw")
			f.Mount("/boot/efi", "vfat", "/dev/nvme0n1p1", "259:1", "rw,fmask=0077,dmask=0077")
			f.Mount("/home", "ext4", "/dev/mapper/laptop--vg-home", "253:3", "rw")
			f.Swap("/dev/dm-2", "partition", 16<<20)
			f.ct = append(f.ct, "nvme0n1p3_crypt UUID="+blockstacktest.CryptUUID("nvme0n1p3_crypt")+" none luks,discard")
			f.fst = append(f.fst, "/dev/mapper/laptop--vg-root / ext4 errors=remount-ro 0 1",
				"UUID=0d9c-boot /boot ext2 defaults 0 2", "UUID=7A1B-2C3D /boot/efi vfat umask=0077 0 1",
				"/dev/mapper/laptop--vg-home /home ext4 defaults 0 2", "/dev/mapper/laptop--vg-swap_1 none swap sw 0 0")
			f.File("/etc/initramfs-tools/conf.d/resume", "RESUME=/dev/mapper/laptop--vg-swap_1\n", 0o644)
			f.Mkdir("/var/tmp")
		},
		want: []want{
			{"swap.device", "/dev/dm-2", Pass}, {"swap.fstab", "", Pass}, {"hibernate.resume", "", Pass},
			{"tmp.tmp", "", Pass}, {"luks.discard", "", Warn},
		},
	},
	{
		name:    "swap-plain-partition",
		comment: "encrypted LVs, but swap on a plaintext partition of a second disk",
		build: func(f *fx) {
			f.std("mx2", stdOpts{noSwap: true})
			f.plainDisk()
			f.DevLink("/dev/disk/by-uuid/9b3c5d7e-swap-0000-0000-000000000017", "sdb1")
			f.Swap("/dev/sdb1", "partition", 200<<20)
			f.fst = append(f.fst, "UUID=9b3c5d7e-swap-0000-0000-000000000017 none swap sw 0 0")
		},
		want: []want{{"swap.device", "/dev/sdb1", Fail}, {"swap.fstab", "", Fail}, {"tmp.tmp", "", Fail}, {"tmp.dev-shm", "", Fail}, {"tmp.var-tmp", "", Pass}},
	},
	{
		name:    "swapfile-plain-fs",
		comment: "a swap file on a plaintext data filesystem next to one on encrypted /var",
		build: func(f *fx) {
			f.std("mx3", stdOpts{noSwap: true})
			f.plainDisk()
			f.Mount("/data", "ext4", "/dev/sdb1", "8:17", "rw")
			f.File("/data/swapfile", "", 0o600)
			f.File("/var/swapfile", "", 0o600)
			f.Swap("/data/swapfile", "file", 8<<20)
			f.Swap("/var/swapfile", "file", 2<<20)
			f.fst = append(f.fst, "/dev/sdb1 /data ext4 defaults 0 2", "/data/swapfile none swap sw 0 0", "/var/swapfile none swap sw 0 0")
		},
		want: []want{{"swap.device", "/data/swapfile", Fail}, {"swap.device", "/var/swapfile", Pass}, {"swap.fstab", "/data/swapfile", Fail}},
	},
	{
		name:    "zram-writeback-plain",
		comment: "zram swap whose writeback device is a plaintext partition",
		build: func(f *fx) {
			f.std("mx4", stdOpts{noSwap: true})
			f.plainDisk()
			f.Zram("zram0", "252:0", 8*G, "/dev/sdb2")
			f.Swap("/dev/zram0", "partition", 8<<20)
		},
		want: []want{{"swap.device", "/dev/zram0", Fail}, {"swap.zram-writeback", "/dev/zram0", Fail}},
	},
	{
		name:    "hibernate-plain",
		comment: "encrypted swap, but an old plaintext swap partition is still active and hibernation resumes from it (Linux writes the image to the active swap area resume= names)",
		build: func(f *fx) {
			f.std("mx5", stdOpts{})
			f.plainDisk()
			f.Swap("/dev/sdb2", "partition", 8<<20)
			f.DevLink("/dev/disk/by-uuid/c0ffee00-0000-4000-8000-000000000018", "sdb2")
			f.File("/sys/power/resume", "8:18\n", 0o444)
			f.File("/proc/cmdline", "BOOT_IMAGE=/vmlinuz-6.1.0-28-amd64 root=/dev/mapper/root_crypt ro quiet resume=UUID=c0ffee00-0000-4000-8000-000000000018\n", 0o444)
			f.File("/etc/initramfs-tools/conf.d/resume", "RESUME=UUID=c0ffee00-0000-4000-8000-000000000018\n", 0o644)
		},
		want: []want{{"hibernate.resume", "", Fail}, {"swap.device", "/dev/dm-6", Pass}, {"swap.device", "/dev/sdb2", Fail}},
	},
	{
		name:    "hibernate-resume-not-swap",
		comment: "clean counterpart: resume= names a plaintext partition that is no active swap area; Linux writes a hibernation image only to an active swap area, so hibernation fails and nothing lands there (WARN, not a leak)",
		build: func(f *fx) {
			f.std("mx5b", stdOpts{})
			f.plainDisk()
			f.DevLink("/dev/disk/by-uuid/c0ffee00-0000-4000-8000-000000000018", "sdb2")
			f.File("/sys/power/resume", "8:18\n", 0o444)
			f.File("/proc/cmdline", "BOOT_IMAGE=/vmlinuz-6.1.0-28-amd64 root=/dev/mapper/root_crypt ro quiet resume=UUID=c0ffee00-0000-4000-8000-000000000018\n", 0o444)
			f.m.Signatures["sdb2"] = ""
			f.m.Signatures["sdb1"] = ""
		},
		noFail: true,
		want:   []want{{"hibernate.resume", "", Warn}, {"swap.device", "", Pass}},
	},
	{
		name:    "tmp-plain",
		comment: "/tmp is a plaintext partition instead of tmpfs",
		build: func(f *fx) {
			f.std("mx6", stdOpts{noTmpfs: true})
			f.plainDisk()
			f.Mount("/tmp", "ext4", "/dev/sdb1", "8:17", "rw,nosuid,nodev")
			f.fst = append(f.fst, "/dev/sdb1 /tmp ext4 nosuid,nodev 0 2")
		},
		want: []want{{"tmp.tmp", "/tmp", Fail}, {"tmp.var-tmp", "", Pass}, {"tmp.dev-shm", "", Pass}},
	},
	{
		name:    "coredump-plain",
		comment: "kernel.core_pattern writes cores to /var/crash, a plaintext mount",
		build: func(f *fx) {
			f.std("mx7", stdOpts{})
			f.plainDisk()
			f.Mount("/var/crash", "ext4", "/dev/sdb1", "8:17", "rw")
			f.File("/proc/sys/kernel/core_pattern", "/var/crash/core.%e.%p.%t\n", 0o444)
			f.File("/etc/sysctl.d/60-core.conf", "kernel.core_pattern = /var/crash/core.%e.%p.%t\n", 0o644)
		},
		want: []want{{"coredump.pattern", "", Fail}, {"coredump.crash-dir", "", Fail}, {"coredump.systemd", "", Skip}},
	},
	{
		name:    "libvirt-pool-plain",
		comment: "libvirt's default image pool on a plaintext disk, with a guest image in it",
		build: func(f *fx) {
			f.std("kvm1", stdOpts{})
			f.plainDisk()
			f.libvirtBase()
			f.Mount("/var/lib/libvirt/images", "ext4", "/dev/sdb1", "8:17", "rw")
			f.File("/etc/libvirt/storage/default.xml", "<pool type='dir'>\n  <name>default</name>\n  <target><path>/var/lib/libvirt/images</path></target>\n</pool>\n", 0o600)
			f.domain("mx", fileDisk("/var/lib/libvirt/images/mx.raw", "raw", "vda"))
			f.image("/var/lib/libvirt/images/mx.raw", 20<<30, nil, "raw")
		},
		want: []want{{"libvirt.pool", "", Fail}, {"libvirt.disk.storage", "mx/vda", Fail}, {"libvirt.managed-save", "", Pass}},
	},
	{
		name:    "libvirt-backing-plain",
		comment: "an overlay on encrypted storage whose qcow2 backing file is plaintext",
		build: func(f *fx) {
			f.std("kvm2", stdOpts{})
			f.plainDisk()
			f.libvirtBase()
			f.vmVolume()
			f.Mount("/var/lib/libvirt/images", "ext4", "/dev/sdb1", "8:17", "rw")
			f.domain("mx", fileDisk("/srv/vm/mx-overlay.qcow2", "qcow2", "vda"))
			f.image("/srv/vm/mx-overlay.qcow2", 3<<30, qcow2Header(20*G, "/var/lib/libvirt/images/debian12-mx.qcow2", "qcow2", 0), "qcow2")
			f.image("/var/lib/libvirt/images/debian12-mx.qcow2", 9<<30, qcow2Header(20*G, "", "", 0), "qcow2")
			// A running guest: libvirt's status XML carries the chain qemu opened.
			f.File("/run/libvirt/qemu/web.xml", `<domstatus state='running' reason='booted' pid='4242'>
  <domain type='kvm' id='3'>
    <name>web</name>
    <memory unit='KiB'>1048576</memory>
    <devices>
      <disk type='file' device='disk'>
        <driver name='qemu' type='qcow2'/>
        <source file='/srv/vm/web.qcow2' index='2'/>
        <backingStore type='file' index='1'>
          <format type='raw'/>
          <source file='/srv/vm/web-base.raw'/>
          <backingStore/>
        </backingStore>
        <target dev='vda' bus='virtio'/>
      </disk>
    </devices>
  </domain>
</domstatus>
`, 0o600)
			f.image("/srv/vm/web.qcow2", 1<<30, qcow2Header(10*G, "web-base.raw", "raw", 0), "qcow2")
			f.image("/srv/vm/web-base.raw", 10<<30, nil, "raw")
		},
		want: []want{
			{"libvirt.disk.storage", "mx/vda", Pass}, {"libvirt.disk.backing", "mx/vda: backing layer 1", Fail},
			{"libvirt.disk.storage", "web/vda", Pass}, {"libvirt.disk.backing", "web/vda: backing layer 1", Pass},
		},
	},
	{
		name:    "libvirt-leftover",
		comment: "after migrating the guest onto an encrypted LV, its old plaintext image is still in the pool",
		build: func(f *fx) {
			f.std("kvm3", stdOpts{})
			f.plainDisk()
			f.libvirtBase()
			f.Mount("/var/lib/libvirt/images", "ext4", "/dev/sdb1", "8:17", "rw")
			f.LV("dm-8", "253:8", "vg0", "mx-disk", 20*G, "sda2")
			f.Crypt("dm-9", "253:9", "LUKS2", "mx-disk_crypt", 20*G-16<<20, "dm-8")
			f.luks2("/dev/dm-8", "mx-disk_crypt")
			f.keyFile("/etc/keys/mx-disk.key", 0o400)
			f.ct = append(f.ct, "mx-disk_crypt /dev/vg0/mx-disk /etc/keys/mx-disk.key luks")
			f.domain("mx", blockDisk("/dev/mapper/mx-disk_crypt", "vda"))
			f.image("/var/lib/libvirt/images/mx.qcow2", 14<<30, qcow2Header(20*G, "", "", 0), "qcow2")
			f.image("/var/lib/libvirt/images/debian-12.11.0-amd64-netinst.iso", 663<<20, nil, "raw")
		},
		want: []want{{"libvirt.leftover", "/var/lib/libvirt/images/mx.qcow2", Fail}, {"libvirt.disk.storage", "mx/vda", Pass}},
	},
	{
		name:    "postfix-queue-plain",
		comment: "the Postfix queue is a separate plaintext mount; mailboxes are encrypted",
		build: func(f *fx) {
			f.std("mx8", stdOpts{})
			f.plainDisk()
			f.Mount("/var/spool/postfix", "ext4", "/dev/sdb1", "8:17", "rw")
			f.fst = append(f.fst, "/dev/sdb1 /var/spool/postfix ext4 defaults 0 2")
		},
		want: []want{{"mail.postfix.queue", "", Fail}, {"mail.postfix.spool", "", Pass}, {"mail.dovecot.location", "", Pass}},
	},
	{
		name:    "keyfile-plain-boot",
		comment: "the key of var_crypt lives on plaintext /boot and inside the initramfs",
		build: func(f *fx) {
			f.std("mx9", stdOpts{varKey: "/boot/keys/var.key"})
			f.keyFile("/boot/keys/var.key", 0o644)
			f.File("/etc/cryptsetup-initramfs/conf-hook", "KEYFILE_PATTERN=\"/boot/keys/*.key\"\n", 0o644)
			f.initramfs("/boot/initrd.img-6.1.0-28-amd64", []string{"cryptroot/keyfiles/var_crypt.key"})
		},
		want: []want{{"keys.crypttab", "/boot/keys/var.key", Fail}, {"keys.crypttab", "/etc/keys/mail.key", Pass}, {"keys.initramfs", "", Fail}},
	},
	{
		name:    "luks-weak",
		comment: "an old LUKS1 root: aes-cbc-essiv 256 bits, PBKDF2 with 1000 iterations, one keyslot, discard",
		build: func(f *fx) {
			f.debian("oldbox")
			f.Disk("vda", "254:0", 40*G)
			f.Part("vda", 1, "254:1", 512<<20, 1<<20).Part("vda", 2, "254:2", 39*G, 513<<20)
			f.CryptDiscard("dm-0", "253:0", "LUKS1", "vda2_crypt", 39*G, "vda2")
			f.m.LUKS["/dev/vda2"] = &luks.Header{Version: 1, UUID: blockstacktest.CryptUUID("vda2_crypt"), Cipher: "aes-cbc-essiv:sha256",
				KeySize: 256, SectorSize: 512, DataOffset: 4096 * 512,
				Keyslots: []luks.Keyslot{{ID: 0, KDF: "pbkdf2", Hash: "sha1", Iterations: 1000, KeySize: 256}}}
			f.Mount("/", "ext4", "/dev/mapper/vda2_crypt", "253:0", "rw")
			f.pseudo()
			f.Mount("/boot", "ext4", "/dev/vda1", "254:1", "rw")
			f.ct = append(f.ct, "vda2_crypt /dev/vda2 none luks,discard")
			f.fst = append(f.fst, "/dev/mapper/vda2_crypt / ext4 defaults 0 1", "/dev/vda1 /boot ext4 defaults 0 2")
		},
		want: []want{{"luks.version", "", Warn}, {"luks.cipher", "", Warn}, {"luks.kdf", "", Fail}, {"luks.keyslots", "", Warn}, {"luks.discard", "", Warn}},
	},
	{
		name:    "partial-capture",
		comment: "a capture without kernel.core_pattern, without /sys/power/resume and without LUKS metadata, mail on NFS: missing facts give SKIP (or WARN), never PASS, and the verdict is INCOMPLETE",
		build: func(f *fx) {
			f.std("mx10", stdOpts{})
			for k := range f.m.LUKS {
				delete(f.m.LUKS, k)
			}
			f.drop = append(f.drop, "/proc/sys/kernel/core_pattern", "/sys/power/resume")
			f.Mount("/srv/vmail", "nfs4", "filer:/export/vmail", "0:60", "rw,vers=4.2")
			f.File("/etc/dovecot/conf.d/10-mail.conf", "mail_location = maildir:/srv/vmail/%d/%n\n", 0o644)
		},
		want: []want{{"coredump.pattern", "", Skip}, {"hibernate.resume", "", Skip}, {"luks.header", "", Skip}, {"mail.dovecot.location", "/srv/vmail", Warn}},
	},
	{
		name:    "lvm-snapshot-plain",
		comment: "a snapshot of a plaintext LV and an unused plaintext LV left over after migration",
		build: func(f *fx) {
			f.std("kvm4", stdOpts{})
			f.plainDisk()
			f.LVRole("dm-10", "253:10", "vg1", "data", "real", 100*G, "sdb1")
			f.LVRole("dm-11", "253:11", "vg1", "data-snap", "cow", 10*G, "sdb1")
			f.LV("dm-12", "253:12", "vg1", "data", 100*G, "dm-10")
			f.LV("dm-13", "253:13", "vg1", "data-snap", 100*G, "dm-10", "dm-11")
			f.LV("dm-14", "253:14", "vg1", "old-mx", 20*G, "sdb1")
			f.LV("dm-15", "253:15", "vg1", "new-vm", 20*G, "sdb1")
			f.m.Signatures["dm-14"] = "ext4"
			f.m.Signatures["dm-15"] = "luks"
			f.Mount("/srv/data", "ext4", "/dev/mapper/vg1-data", "253:12", "rw")
		},
		want: []want{{"lvm.snapshot", "vg1-data--snap", Fail}, {"lvm.leftover", "vg1-old--mx", Fail}, {"lvm.leftover", "vg1-new--vm", Pass}},
	},
	{
		name:    "fleet-host",
		comment: "the largest fixture: the reference layout with 24 guests, each on its own LUKS2 LV",
		noFail:  true,
		build: func(f *fx) {
			f.std("kvm-fleet", stdOpts{})
			f.libvirtBase()
			for i := 0; i < 24; i++ {
				lv, cr := fmt.Sprintf("dm-%d", 20+2*i), fmt.Sprintf("dm-%d", 21+2*i)
				name := fmt.Sprintf("guest%02d", i)
				f.LV(lv, fmt.Sprintf("253:%d", 20+2*i), "vg0", name, 20*G, "sda2")
				f.Crypt(cr, fmt.Sprintf("253:%d", 21+2*i), "LUKS2", name+"_crypt", 20*G-16<<20, lv)
				f.luks2("/dev/"+lv, name+"_crypt")
				f.keyFile("/etc/keys/"+name+".key", 0o400)
				f.ct = append(f.ct, fmt.Sprintf("%s_crypt /dev/vg0/%s /etc/keys/%s.key luks", name, name, name))
				f.domain(name, blockDisk("/dev/mapper/"+name+"_crypt", "vda")+"\n"+
					fileDisk("/var/lib/libvirt/images/"+name+"-seed.qcow2", "qcow2", "vdb"))
				f.image("/var/lib/libvirt/images/"+name+"-seed.qcow2", 1<<20, qcow2Header(1<<20, "", "", 0), "qcow2")
			}
		},
		want: []want{{"libvirt.disk.storage", "guest23/vda", Pass}, {"luks.kdf", "", Pass}},
	},
}

// leakClassFixtures are issue 9's leak classes: for each, a host that
// leaks through it and the clean counterpart a text-pattern auditor would
// wrongly flag. The comment states the Linux behaviour each encodes.
var leakClassFixtures = []fixture{
	{
		name:    "crypt-null-plain",
		comment: "dm-crypt stores data as it is with cipher_null: a plain swap mapping with cipher=cipher_null-ecb is no encryption, whatever its dm UUID says",
		build: func(f *fx) {
			f.std("mx11", stdOpts{noSwap: true})
			f.LV("dm-2", "253:2", "vg0", "swap", 4*G, "sda2")
			f.Crypt("dm-6", "253:6", "PLAIN", "swap_crypt", 4*G, "dm-2")
			f.ct = append(f.ct, "swap_crypt /dev/vg0/swap /dev/urandom swap,cipher=cipher_null-ecb")
			f.fst = append(f.fst, "/dev/mapper/swap_crypt none swap sw 0 0")
			f.Swap("/dev/dm-6", "partition", 4<<20)
			f.m.DMCrypt = map[string]string{"swap_crypt": "cipher_null-ecb"}
		},
		want: []want{{"swap.device", "/dev/dm-6", Fail}, {"luks.cipher", "swap_crypt (dm-6)", Fail}, {"luks.cipher", "crypttab swap_crypt", Fail}, {"tmp.dev-shm", "", Fail}},
	},
	{
		name:    "crypt-null-comment",
		comment: "clean counterpart: cipher_null only in a commented-out crypttab line; the active mapping uses aes-xts-plain64",
		noFail:  true,
		build: func(f *fx) {
			f.std("mx12", stdOpts{})
			f.ct = append(f.ct, "# tried: swap_crypt /dev/vg0/swap /dev/urandom swap,cipher=cipher_null-ecb")
			f.m.DMCrypt = map[string]string{"swap_crypt": "aes-xts-plain64"}
		},
		want: []want{{"swap.device", "/dev/dm-6", Pass}, {"luks.version", "swap_crypt (dm-6)", Pass}},
	},
	{
		name:    "kdump-raw-plain",
		comment: "RHEL kdump.conf 'raw /dev/sdb2': the crash kernel writes the vmcore (all RAM, volume keys included) straight onto that plaintext partition, not to /var/crash on the encrypted root",
		build: func(f *fx) {
			f.std("mx13", stdOpts{})
			f.plainDisk()
			f.File("/sys/kernel/kexec_crash_loaded", "1\n", 0o444)
			f.File("/etc/kdump.conf", "# kexec-tools\nraw /dev/sdb2\ncore_collector makedumpfile -l --message-level 7 -d 31\n", 0o644)
			f.m.Signatures["sdb1"], f.m.Signatures["sdb2"] = "", ""
		},
		want: []want{{"kdump.target", "/dev/sdb2", Fail}, {"coredump.crash-dir", "", Pass}},
	},
	{
		name:    "kdump-fs-encrypted",
		comment: "clean counterpart: kdump.conf 'ext4 /dev/mapper/dump_crypt' writes the vmcore onto an encrypted filesystem, although the host's /var/crash is a plaintext mount a naive auditor would judge",
		build: func(f *fx) {
			f.std("mx14", stdOpts{})
			f.plainDisk()
			f.Mount("/var/crash", "ext4", "/dev/sdb1", "8:17", "rw")
			f.dumpVolume("luks")
			f.File("/sys/kernel/kexec_crash_loaded", "1\n", 0o444)
			f.File("/etc/kdump.conf", "ext4 /dev/mapper/dump_crypt\npath /vmcore\n", 0o644)
			f.m.Signatures["sdb2"] = ""
		},
		want: []want{{"kdump.target", "/dev/mapper/dump_crypt", Pass}, {"coredump.crash-dir", "", Fail}},
	},
	{
		name:    "kdump-tools-plain",
		comment: "Debian kdump-tools KDUMP_COREDIR=/var/dump: the crash kernel's initramfs mounts /var/dump from fstab (noauto, so today the directory sits on the encrypted /var) and writes the vmcore, all RAM with the volume keys, onto that plaintext partition",
		build: func(f *fx) {
			f.std("mx23", stdOpts{})
			f.plainDisk()
			f.fst = append(f.fst, "/dev/sdb1              /var/dump ext4 noauto 0 2")
			f.kdumpTools("/var/dump")
			f.m.Signatures["sdb1"], f.m.Signatures["sdb2"] = "", ""
		},
		want: []want{{"kdump.target", "/var/dump", Fail}},
	},
	{
		name:    "kdump-tools-encrypted",
		comment: "clean counterpart: KDUMP_COREDIR=/srv/dump lies today on the plaintext /srv a naive auditor would judge, but fstab mounts the encrypted dump_crypt there (noauto) and that is where the crash kernel writes the vmcore",
		build: func(f *fx) {
			f.std("mx24", stdOpts{})
			f.plainDisk()
			f.Mount("/srv", "ext4", "/dev/sdb1", "8:17", "rw")
			f.dumpVolume("luks,noauto")
			f.fst = append(f.fst, "/dev/mapper/dump_crypt /srv/dump ext4 noauto 0 2")
			f.kdumpTools("/srv/dump")
			f.m.Signatures["sdb2"] = ""
		},
		want: []want{{"kdump.target", "/srv/dump", Pass}},
	},
	{
		name:    "dovecot-userdb-home",
		comment: "Dovecot's ~ is the home its userdb returns: a static userdb home=/data/vmail/%d/%n on a plaintext disk, while /etc/passwd homes are encrypted",
		build: func(f *fx) {
			f.std("mx15", stdOpts{})
			f.plainDisk()
			f.Mount("/data", "ext4", "/dev/sdb1", "8:17", "rw")
			f.File("/etc/dovecot/conf.d/10-mail.conf", "mail_location = maildir:~/Maildir\n", 0o644)
			f.File("/etc/dovecot/conf.d/auth-static.conf", "userdb {\n  driver = static\n  args = uid=vmail gid=vmail home=/data/vmail/%d/%n\n}\n", 0o644)
			f.m.Signatures["sdb2"] = ""
		},
		want: []want{{"mail.dovecot.location", "/data/vmail/Maildir", Fail}},
	},
	{
		name:    "dovecot-passwdfile-home",
		comment: "clean counterpart: /etc/passwd puts anna's home on a plaintext /home, but Dovecot's passwd-file userdb gives every mail user a home under encrypted /srv/mail",
		noFail:  true,
		build: func(f *fx) {
			f.std("mx16", stdOpts{})
			f.File("/etc/dovecot/conf.d/10-mail.conf", "mail_location = maildir:~/Maildir\n", 0o644)
			f.File("/etc/dovecot/conf.d/auth-passwdfile.conf", "userdb {\n  driver = passwd-file\n  args = username_format=%u /etc/dovecot/users\n}\n", 0o644)
			f.File("/etc/dovecot/users", "anna@example.org:<redacted>:5000:5000::/srv/mail/example.org/anna::\nbob@example.org:<redacted>:5000:5000::/srv/mail/example.org/bob::\n", 0o640)
		},
		want: []want{{"mail.dovecot.location", "/srv/mail/example.org/anna/Maildir", Pass}, {"mail.dovecot.location", "/srv/mail/example.org/bob/Maildir", Pass}},
	},
	{
		name:    "postfix-multi-instance",
		comment: "multi-instance Postfix: the second instance (multi_instance_directories = /etc/postfix-out) keeps its queue on a plaintext disk",
		build: func(f *fx) {
			f.std("mx17", stdOpts{})
			f.plainDisk()
			f.Mount("/data", "ext4", "/dev/sdb1", "8:17", "rw")
			f.postfix("multi_instance_wrapper = ${command_directory}/postmulti -p --\nmulti_instance_enable = yes\nmulti_instance_directories = /etc/postfix-out\n")
			f.File("/etc/postfix-out/main.cf", "queue_directory = /data/spool/postfix-out\ndata_directory = /var/lib/postfix-out\nmulti_instance_name = postfix-out\nmulti_instance_enable = yes\n", 0o644)
			f.Mkdir("/data/spool/postfix-out")
			f.m.Signatures["sdb2"] = ""
		},
		want: []want{{"mail.postfix.queue", "/data/spool/postfix-out", Fail}, {"mail.postfix.queue", "/var/spool/postfix", Pass}},
	},
	{
		name:    "postfix-queue-moved",
		comment: "clean counterpart: queue_directory is /srv/mail/postfix on the encrypted mail volume; a check that assumes the default /var/spool/postfix (here a leftover directory on /var) looks at the wrong place",
		noFail:  true,
		build: func(f *fx) {
			f.std("mx18", stdOpts{})
			f.postfix("queue_directory = /srv/mail/postfix\n")
			f.Mkdir("/srv/mail/postfix")
		},
		want: []want{{"mail.postfix.queue", "/srv/mail/postfix", Pass}},
	},
	{
		name:    "qcow2-relative-backing",
		comment: "qemu opens a relative backing file as IMAGE_DIR/NAME with IMAGE_DIR as written; the kernel follows the symlink before '..': /srv/vm/cur/../base.raw is /var/lib/libvirt/images/base.raw (plaintext), not /srv/vm/base.raw",
		build: func(f *fx) {
			f.std("kvm5", stdOpts{})
			f.plainPool()
			f.Symlink("/srv/vm/cur", "/var/lib/libvirt/images/mx")
			f.domain("mx", fileDisk("/srv/vm/mx-overlay.qcow2", "qcow2", "vda"))
			f.image("/srv/vm/mx-overlay.qcow2", 1<<30, qcow2Header(20*G, "cur/mx-top.qcow2", "qcow2", 0), "qcow2")
			f.image("/var/lib/libvirt/images/mx/mx-top.qcow2", 1<<30, qcow2Header(20*G, "../base.raw", "raw", 0), "qcow2")
			f.image("/var/lib/libvirt/images/base.raw", 20<<30, nil, "raw")
			f.image("/srv/vm/base.raw", 20<<30, nil, "raw") // what cleaning the name as text would wrongly pick
			f.m.Signatures["sdb2"] = ""
		},
		want: []want{{"libvirt.disk.backing", "mx/vda: backing layer 2", Fail}},
	},
	{
		name:    "qcow2-relative-backing-clean",
		comment: "clean counterpart: cleaned as text, ../base.raw would be the plaintext /var/lib/libvirt/images/base.raw; through the symlink it is the encrypted /srv/vm/base.raw qemu really opens",
		build: func(f *fx) {
			f.std("kvm6", stdOpts{})
			f.plainPool()
			f.Symlink("/var/lib/libvirt/images/cur", "/srv/vm/mx")
			f.domain("mx", fileDisk("/var/lib/libvirt/images/cur/mx.qcow2", "qcow2", "vda"))
			f.image("/srv/vm/mx/mx.qcow2", 1<<30, qcow2Header(20*G, "../base.raw", "raw", 0), "qcow2")
			f.image("/srv/vm/base.raw", 20<<30, nil, "raw")
			f.image("/var/lib/libvirt/images/base.raw", 20<<30, nil, "raw")
			f.m.Signatures["sdb2"] = ""
		},
		want: []want{{"libvirt.disk.storage", "mx/vda", Pass}, {"libvirt.disk.backing", "mx/vda: backing layer 1", Pass}},
	},
	{
		name:    "fuse-bindfs-plain",
		comment: "bindfs passes every file through to its source directory (mountinfo names it): the mail store /srv/mail is a bindfs view of /data/mail on a plaintext disk",
		build: func(f *fx) {
			f.std("mx19", stdOpts{})
			f.plainDisk()
			f.Mount("/data", "ext4", "/dev/sdb1", "8:17", "rw")
			f.Mkdir("/data/mail")
			f.Mount("/srv/mail", "fuse.bindfs", "/data/mail", "0:50", "rw,user_id=0,group_id=0,default_permissions,allow_other")
			f.m.Signatures["sdb2"] = ""
		},
		want: []want{{"mail.dovecot.location", "/srv/mail", Fail}, {"storage.mount", "/srv/mail", Fail}},
	},
	{
		name:    "fuse-bindfs-encrypted",
		comment: "clean counterpart: a bindfs view whose source is on the encrypted /var (FUSE has no block device a naive auditor could trace)",
		noFail:  true,
		build: func(f *fx) {
			f.std("mx20", stdOpts{})
			f.Mkdir("/var/vmail")
			f.Mount("/srv/vmail", "fuse.bindfs", "/var/vmail", "0:50", "rw,user_id=0,group_id=0,allow_other")
			f.File("/etc/dovecot/conf.d/10-mail.conf", "mail_location = maildir:/srv/vmail/%d/%n\n", 0o644)
		},
		want: []want{{"mail.dovecot.location", "/srv/vmail", Pass}, {"storage.mount", "/srv/vmail", Pass}},
	},
	{
		name:    "lvm-thin-snapshot-inactive",
		comment: "thin snapshots are created with the activation-skip flag: no dm device, invisible in sysfs, yet the snapshot of the plaintext LV data keeps its old blocks in the pool on the plaintext PV sdb1 (LVM metadata in /etc/lvm/backup)",
		build: func(f *fx) {
			f.std("kvm7", stdOpts{})
			f.plainDisk()
			f.LVRole("dm-10", "253:10", "vg1", "pool", "tpool", 100*G, "sdb1")
			f.LV("dm-11", "253:11", "vg1", "data", 50*G, "dm-10")
			f.m.Signatures["sdb2"] = ""
			f.File("/etc/lvm/backup/vg1", lvmThinMeta("/dev/sdb1"), 0o600)
			f.Mount("/srv/data", "xfs", "/dev/mapper/vg1-data", "253:11", "rw")
		},
		want: []want{{"lvm.snapshot", "vg1/data-snap", Fail}},
	},
	{
		name:    "lvm-thin-snapshot-encrypted",
		comment: "clean counterpart: the same inactive thin snapshot in a VG whose only PV is a LUKS2 container: its old blocks are ciphertext",
		noFail:  true,
		build: func(f *fx) {
			f.std("kvm8", stdOpts{})
			f.DiskWith("sdb", "8:16", 500*G, 512, 4096, 0)
			f.Part("sdb", 1, "8:17", 200*G, 1<<20)
			f.Crypt("dm-9", "253:9", "LUKS2", "sdb1_crypt", 200*G-16<<20, "sdb1")
			f.luks2("/dev/sdb1", "sdb1_crypt")
			f.keyFile("/etc/keys/sdb1.key", 0o400)
			f.ct = append(f.ct, "sdb1_crypt /dev/sdb1 /etc/keys/sdb1.key luks")
			f.LVRole("dm-10", "253:10", "vg1", "pool", "tpool", 100*G, "dm-9")
			f.LV("dm-11", "253:11", "vg1", "data", 50*G, "dm-10")
			f.File("/etc/lvm/backup/vg1", lvmThinMeta("/dev/mapper/sdb1_crypt"), 0o600)
			f.Mount("/srv/data", "xfs", "/dev/mapper/vg1-data", "253:11", "rw")
		},
		want: []want{{"lvm.snapshot", "vg1/data-snap", Pass}},
	},
}

// lvmStripedMeta is the metadata of a VG with plain (striped) LVs on one PV.
func lvmStripedMeta(vg, pv string, lvs ...string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "contents = \"Text Format Volume Group\"\nversion = 1\n%s {\n\tid = \"x\"\n\tphysical_volumes {\n\t\tpv0 {\n\t\t\tdevice = \"%s\"\n\t\t}\n\t}\n\tlogical_volumes {\n", vg, pv)
	for i, lv := range lvs {
		fmt.Fprintf(&b, "\t\t%s {\n\t\t\tstatus = [\"READ\", \"WRITE\", \"VISIBLE\"]\n\t\t\tsegment1 {\n\t\t\t\ttype = \"striped\"\n\t\t\t\tstripes = [\"pv0\", %d]\n\t\t\t}\n\t\t}\n", lv, i*5120)
	}
	b.WriteString("\t}\n}\n")
	return b.String()
}

// lvmThinMeta is a VG's metadata as LVM 2.03 writes it to
// /etc/lvm/backup: a thin pool, a thin LV and an (inactive) thin snapshot.
func lvmThinMeta(pvDevice string) string {
	return `# Generated by LVM2 version 2.03.16(2) (2022-05-18)
contents = "Text Format Volume Group"
version = 1
description = "Created *after* executing 'lvcreate -s vg1/data -n data-snap'"
creation_host = "kvm"
vg1 {
	id = "Xr8bnm-1"
	seqno = 7
	format = "lvm2"
	status = ["RESIZEABLE", "READ", "WRITE"]
	extent_size = 8192
	physical_volumes {
		pv0 {
			id = "abc-123"
			device = "` + pvDevice + `"
			status = ["ALLOCATABLE"]
			pe_start = 2048
			pe_count = 51199
		}
	}
	logical_volumes {
		pool {
			id = "p1"
			status = ["READ", "WRITE", "VISIBLE"]
			segment_count = 1
			segment1 {
				start_extent = 0
				extent_count = 25600
				type = "thin-pool"
				metadata = "pool_tmeta"
				pool = "pool_tdata"
				transaction_id = 2
				chunk_size = 128
			}
		}
		data {
			id = "d1"
			status = ["READ", "WRITE", "VISIBLE"]
			segment_count = 1
			segment1 {
				start_extent = 0
				extent_count = 12800
				type = "thin"
				thin_pool = "pool"
				transaction_id = 0
				device_id = 1
			}
		}
		data-snap {
			id = "s1"
			status = ["READ", "WRITE", "VISIBLE"]
			flags = ["ACTIVATION_SKIP"]
			segment_count = 1
			segment1 {
				start_extent = 0
				extent_count = 12800
				type = "thin"
				thin_pool = "pool"
				transaction_id = 1
				device_id = 2
				origin = "data"
			}
		}
		pool_tmeta {
			id = "m1"
			status = ["READ", "WRITE"]
			segment_count = 1
			segment1 {
				start_extent = 0
				extent_count = 25
				type = "striped"
				stripe_count = 1
				stripes = ["pv0", 25600]
			}
		}
		pool_tdata {
			id = "t1"
			status = ["READ", "WRITE"]
			segment_count = 1
			segment1 {
				start_extent = 0
				extent_count = 25600
				type = "striped"
				stripe_count = 1
				stripes = ["pv0", 0]
			}
		}
	}
}
`
}

func init() { fixtures = append(fixtures, leakClassFixtures...) }

// unlockFixtures show the unlock methods read from LUKS2 tokens.
var unlockFixtures = []fixture{
	{
		name:    "unlock-tpm2-tang-self",
		comment: "root unlocked by Clevis: a tpm2 pin (no PIN: a stolen server unlocks itself) and a tang pin whose server is this host (localhost); both keyslots are token-bound, so no recovery keyslot; SSH unlock by dropbear in the initramfs",
		noFail:  true,
		build: func(f *fx) {
			f.std("mx21", stdOpts{})
			h := f.m.LUKS["/dev/dm-0"]
			h.Keyslots = append(h.Keyslots, luks.Keyslot{ID: 2, KDF: "pbkdf2", Hash: "sha256", Iterations: 1000, KeySize: 512})
			h.Keyslots[2].Iterations = 1000000
			h.Tokens = []string{"clevis", "clevis"}
			h.TokenInfo = []luks.Token{
				{ID: 0, Type: "clevis", Keyslots: []int{1}, Clevis: &luks.ClevisPin{Pin: "tpm2", PCRIDs: "7", PCRBank: "sha256"}},
				{ID: 1, Type: "clevis", Keyslots: []int{2}, Clevis: &luks.ClevisPin{Pin: "tang", URLs: []string{"http://localhost:7500"}}},
				{ID: 2, Type: "clevis", Keyslots: []int{0}, Clevis: &luks.ClevisPin{Pin: "tang", URLs: []string{"http://tang.example.net"}}},
			}
			f.File("/etc/dropbear/initramfs/authorized_keys", "", 0o600)
			f.initramfs("/boot/initrd.img-6.1.0-28-amd64", []string{"usr/sbin/dropbear", "etc/dropbear/dropbear_ed25519_host_key"})
		},
		want: []want{{"keys.unlock", "root_crypt (dm-4)", Warn}, {"keys.unlock", "var_crypt (dm-5)", Pass}},
	},
	{
		name:    "unlock-sss-recovery",
		comment: "clean counterpart: Clevis sss with t=2 over tpm2 and a Tang server elsewhere, a passphrase keyslot and a recovery keyslot",
		noFail:  true,
		build: func(f *fx) {
			f.std("mx22", stdOpts{})
			h := f.m.LUKS["/dev/dm-0"]
			h.Keyslots = append(h.Keyslots, luks.Keyslot{ID: 2, KDF: "argon2id", Time: 4, MemoryKiB: 1048576, Parallel: 4, KeySize: 512})
			h.Tokens = []string{"clevis"}
			h.TokenInfo = []luks.Token{{ID: 0, Type: "clevis", Keyslots: []int{2}, Clevis: &luks.ClevisPin{Pin: "sss", Threshold: 2,
				Pins: []luks.ClevisPin{{Pin: "tang", URLs: []string{"http://tang.example.net"}}, {Pin: "tang", URLs: []string{"http://tang2.example.net"}}}}}}
		},
		want: []want{{"keys.unlock", "root_crypt (dm-4)", Pass}},
	},
}

func init() { fixtures = append(fixtures, unlockFixtures...) }
