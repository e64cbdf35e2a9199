package doctor

import (
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/cryptshift/cryptshift/internal/doors/execx"
	"github.com/cryptshift/cryptshift/internal/harness/golden"
	"github.com/cryptshift/cryptshift/internal/textfmt"
)

// A host as these development machines are: a microVM kernel without
// device-mapper or module support, loop built in, XTS-AES built in.
var microVM = map[string]string{
	"/proc/sys/kernel/osrelease":            "6.18.44-fc-v669\n",
	"/proc/sys/kernel/hostname":             "vm\n",
	"/proc/sys/kernel/random/entropy_avail": "256\n",
	"/proc/devices":                         "Character devices:\n  1 mem\n 10 misc\n\nBlock devices:\n  7 loop\n253 zram\n254 virtblk\n259 blkext\n",
	"/proc/misc":                            "237 loop-control\n232 kvm\n",
	"/proc/crypto":                          "name         : aes\ndriver       : aes-generic\n\nname         : ecb(aes)\n",
	"/proc/config.gz":                       "# CONFIG_MODULES is not set\nCONFIG_BLK_DEV_LOOP=y\n# CONFIG_MD is not set\nCONFIG_CRYPTO_AES=y\nCONFIG_CRYPTO_XTS=y\n",
	"/dev/loop-control":                     "",
	"/usr/share/initramfs-tools/hooks/lvm2": "",
}

// A Debian 12 host right after boot: dm-mod and dm-crypt are modules that
// nothing has loaded yet, the configuration is in /boot.
var debianCold = map[string]string{
	"/proc/sys/kernel/osrelease":                          "6.1.0-28-amd64\n",
	"/proc/sys/kernel/hostname":                           "kvm1\n",
	"/proc/sys/kernel/random/entropy_avail":               "256\n",
	"/proc/devices":                                       "Character devices:\n  1 mem\n\nBlock devices:\n  8 sd\n259 blkext\n",
	"/proc/misc":                                          "237 loop-control\n",
	"/proc/crypto":                                        "name         : aes\n",
	"/boot/config-6.1.0-28-amd64":                         "CONFIG_MODULES=y\nCONFIG_BLK_DEV_LOOP=m\nCONFIG_MD=y\nCONFIG_BLK_DEV_DM=m\nCONFIG_DM_CRYPT=m\nCONFIG_CRYPTO_AES=y\nCONFIG_CRYPTO_XTS=m\n",
	"/lib/modules/6.1.0-28-amd64/modules.dep":             "kernel/drivers/md/dm-mod.ko.xz:\nkernel/drivers/md/dm-crypt.ko.xz: kernel/drivers/md/dm-mod.ko.xz\nkernel/drivers/block/loop.ko.xz:\nkernel/crypto/xts.ko.xz:\n",
	"/lib/modules/6.1.0-28-amd64/modules.builtin":         "kernel/crypto/aes_generic.ko\n",
	"/usr/share/initramfs-tools/hooks/cryptroot":          "",
	"/lib/modules/6.1.0-28-amd64/kernel/drivers/md/x.txt": "",
}

// A Debian 12 host in service: everything loaded.
var debianWarm = merge(debianCold, map[string]string{
	"/proc/devices":                "Character devices:\n  1 mem\n\nBlock devices:\n  7 loop\n  8 sd\n254 device-mapper\n259 blkext\n",
	"/proc/misc":                   "236 device-mapper\n237 loop-control\n",
	"/proc/crypto":                 "name         : xts(aes)\ndriver       : xts-aes-aesni\n",
	"/sys/module/dm_crypt/refcnt":  "3\n",
	"/sys/module/dm_mod/refcnt":    "9\n",
	"/dev/loop-control":            "",
	"/usr/lib/dracut/modules.d/.x": "",
})

// A kernel whose configuration says "module" but whose modules are not
// installed (a kernel upgraded under a running system, or a stripped image).
var modulesGone = merge(debianCold, map[string]string{
	"/lib/modules/6.1.0-28-amd64/modules.dep":             "",
	"/lib/modules/6.1.0-28-amd64/modules.builtin":         "",
	"/lib/modules/6.1.0-28-amd64/kernel/drivers/md/x.txt": "",
})

// A kernel with neither configuration nor modules to read.
var unknownKernel = map[string]string{
	"/proc/sys/kernel/osrelease": "5.10.0-custom\n",
	"/proc/devices":              "Character devices:\n  1 mem\n\nBlock devices:\n  8 sd\n",
	"/proc/sys/kernel/hostname":  "old\n",
}

func merge(a, b map[string]string) map[string]string {
	out := map[string]string{}
	for k, v := range a {
		out[k] = v
	}
	for k, v := range b {
		out[k] = v
	}
	return out
}

// tree writes a fixture root; /proc/config.gz is gzipped as the kernel
// serves it.
func tree(t *testing.T, files map[string]string) string {
	t.Helper()
	root := t.TempDir()
	for name, content := range files {
		p := filepath.Join(root, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		data := []byte(content)
		if strings.HasSuffix(name, ".gz") {
			var b bytes.Buffer
			zw := gzip.NewWriter(&b)
			zw.Write(data)
			zw.Close()
			data = b.Bytes()
		}
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

// fakeHost answers the tool probes of a well-equipped Debian 12 host.
type fakeHost struct {
	missing   map[string]bool // programs LookPath does not find
	libvirt   error
	euid      int
	cryptFail error // luksFormat fails with this
	dump      string
}

func (f fakeHost) options(t *testing.T, root string) (Options, *execx.Recorder) {
	t.Setenv("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
	rec := &execx.Recorder{Responses: map[string]execx.Result{
		"cryptsetup --version": {Stdout: []byte("cryptsetup 2.6.1 flags: UDEV BLKID KEYRING KERNEL_CAPI \n")},
		"lvm version":          {Stdout: []byte("  LVM version:     2.03.16(2) (2022-05-18)\n  Library version: 1.02.185 (2022-05-18)\n")},
		"qemu-img --version":   {Stdout: []byte("qemu-img version 7.2.22 (Debian 1:7.2+dfsg-7+deb12u18+b3)\nCopyright (c) 2003-2022 Fabrice Bellard and the QEMU Project developers\n")},
		"cryptsetup luksDump":  {Stdout: []byte("LUKS header information\nVersion:       \t2\nKeyslots:\n  0: luks2\n\tPBKDF:      argon2id\n")},
	}, Errors: map[string]error{}}
	if f.dump != "" {
		rec.Responses["cryptsetup luksDump"] = execx.Result{Stdout: []byte(f.dump)}
	}
	if f.cryptFail != nil {
		rec.Errors["cryptsetup luksFormat"] = f.cryptFail
	}
	live := false
	return Options{
		Root:    root,
		Version: "test",
		Run:     rec,
		LookPath: func(p string) (string, error) {
			if f.missing[p] {
				return "", errors.New("not found")
			}
			if p == "qemu-img" || p == "virsh" {
				return "/usr/bin/" + p, nil
			}
			return "/usr/sbin/" + p, nil
		},
		Libvirt: func(connect string) (uint64, string, error) {
			if f.libvirt != nil {
				return 0, "/run/libvirt/libvirt-sock", f.libvirt
			}
			return 9000000, "/run/libvirt/libvirt-sock", nil
		},
		Euid:    func() int { return f.euid },
		TempDir: t.TempDir(),
		Live:    &live,
	}, rec
}

func byID(r *Report) map[string]Check {
	m := map[string]Check{}
	for _, c := range r.Checks {
		m[c.ID] = c
	}
	return m
}

func capability(r *Report, name string) Capability {
	for _, c := range r.Capabilities {
		if c.Name == name {
			return c
		}
	}
	return Capability{}
}

func TestKernelChecks(t *testing.T) {
	type want struct {
		status Status
		found  string // substring of Found
		fix    string // substring of Fix ("" = no fix expected)
	}
	tests := []struct {
		name  string
		files map[string]string
		want  map[string]want
	}{
		{"microvm-without-dm", microVM, map[string]want{
			"kernel.device-mapper": {Fail, "CONFIG_MD is not set in /proc/config.gz", "run apply in a VM"},
			"kernel.dm-crypt":      {Fail, "CONFIG_MD is not set", "CONFIG_DM_CRYPT"},
			"kernel.loop":          {OK, "/proc/devices lists loop", ""},
			"kernel.xts-aes":       {OK, "CONFIG_CRYPTO_XTS=y, AES=y", ""},
			"boot.initramfs-crypt": {Warn, "no initramfs generator", "cryptsetup-initramfs"},
		}},
		{"debian-cold", debianCold, map[string]want{
			"kernel.device-mapper": {Warn, "module dm-mod (CONFIG_BLK_DEV_DM=m", "modprobe dm_mod"},
			"kernel.dm-crypt":      {OK, "loads on first use", ""},
			"kernel.loop":          {Warn, "module loop", "modprobe loop"},
			"kernel.xts-aes":       {OK, "CONFIG_CRYPTO_XTS=m, AES=y in /boot/config-6.1.0-28-amd64", ""},
			"boot.initramfs-crypt": {OK, "cryptroot hook", ""},
		}},
		{"debian-warm", debianWarm, map[string]want{
			"kernel.device-mapper": {OK, "/proc/devices lists device-mapper, /proc/misc lists device-mapper", ""},
			"kernel.dm-crypt":      {OK, "loaded (/sys/module/dm_crypt)", ""},
			"kernel.loop":          {OK, "/dev/loop-control exists", ""},
			"kernel.xts-aes":       {OK, "/proc/crypto lists xts(aes)", ""},
		}},
		{"modules-not-installed", modulesGone, map[string]want{
			"kernel.device-mapper": {Fail, "/lib/modules/6.1.0-28-amd64 does not have it", "linux-image-6.1.0-28-amd64"},
			"kernel.dm-crypt":      {Fail, "built as module dm-crypt", "linux-image-6.1.0-28-amd64"},
		}},
		{"no-config-no-modules", unknownKernel, map[string]want{
			"kernel.device-mapper": {Fail, "no kernel configuration (/proc/config.gz, /boot/config-5.10.0-custom) and no /lib/modules/5.10.0-custom", "CONFIG_BLK_DEV_DM"},
			"kernel.xts-aes":       {Warn, "cannot tell", "cryptsetup benchmark"},
			"random":               {Skip, "not the running system", ""},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o, _ := fakeHost{}.options(t, tree(t, tt.files))
			r, err := Run(context.Background(), o)
			if err != nil {
				t.Fatal(err)
			}
			got := byID(r)
			for id, w := range tt.want {
				c := got[id]
				if c.Status != w.status || !strings.Contains(c.Found, w.found) || !strings.Contains(c.Fix, w.fix) || (w.fix == "" && c.Fix != "") {
					t.Errorf("%s: got %s %q fix %q, want %s containing %q, fix containing %q", id, c.Status, c.Found, c.Fix, w.status, w.found, w.fix)
				}
			}
		})
	}
}

func TestCapabilities(t *testing.T) {
	tests := []struct {
		name     string
		files    map[string]string
		host     fakeHost
		forCaps  []string
		ready    bool
		notReady []string
		blockers map[string][]string
	}{
		{
			name:  "microvm: plan and verify yes, apply no, libvirt down",
			files: microVM, host: fakeHost{libvirt: errors.New("cannot connect to libvirt at /run/libvirt/libvirt-sock (qemu:///system): connect: no such file or directory")},
			ready: false, notReady: []string{CapMigratePool, CapApply, CapMigrateVG},
			blockers: map[string][]string{
				CapPlan: nil, CapVerify: nil, CapVerifyCaptured: nil,
				CapApply:       {"kernel.device-mapper", "kernel.dm-crypt"},
				CapMigratePool: {"libvirt"},
				CapMigrateVG:   {"kernel.device-mapper", "kernel.dm-crypt", "libvirt"},
			},
		},
		{
			name: "microvm, asked for what it can do", files: microVM, host: fakeHost{},
			forCaps: []string{CapVerify, CapMigratePool, CapPlan}, ready: true,
			blockers: map[string][]string{CapMigratePool: nil, CapApply: {"kernel.device-mapper", "kernel.dm-crypt"}},
		},
		{
			name: "debian host after boot is ready (modules load on demand)", files: debianCold, host: fakeHost{},
			ready: true, blockers: map[string][]string{CapApply: nil, CapMigratePool: nil, CapMigrateVG: nil},
		},
		{
			name: "debian host without lvm2 and qemu-utils", files: debianWarm,
			host:  fakeHost{missing: map[string]bool{"lvm": true, "qemu-img": true}},
			ready: false, notReady: []string{CapMigratePool, CapApply, CapMigrateVG},
			blockers: map[string][]string{CapApply: {"tool.lvm"}, CapMigratePool: {"tool.qemu-img"}, CapMigrateVG: {"tool.lvm", "tool.qemu-img"}},
		},
		{
			name: "not root: apply blocked, verify ready with a note", files: debianWarm, host: fakeHost{euid: 1000},
			forCaps: []string{CapApply}, ready: false, notReady: []string{CapApply},
			blockers: map[string][]string{CapApply: {"privileges"}, CapVerify: nil},
		},
		{
			name: "cryptsetup without argon2", files: debianWarm,
			host:  fakeHost{cryptFail: errors.New("PBKDF argon2id not supported")},
			ready: false, notReady: []string{CapApply, CapMigrateVG},
			blockers: map[string][]string{CapApply: {"cryptsetup.argon2id"}, CapMigrateVG: {"cryptsetup.argon2id"}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o, _ := tt.host.options(t, tree(t, tt.files))
			o.For = tt.forCaps
			r, err := Run(context.Background(), o)
			if err != nil {
				t.Fatal(err)
			}
			if r.Ready != tt.ready {
				t.Errorf("Ready = %v, want %v", r.Ready, tt.ready)
			}
			if got, want := strings.Join(r.NotReady(), ","), strings.Join(tt.notReady, ","); got != want {
				t.Errorf("NotReady = %q, want %q", got, want)
			}
			for name, want := range tt.blockers {
				c := capability(r, name)
				if got := strings.Join(c.Blockers, ","); got != strings.Join(want, ",") {
					t.Errorf("%s blockers = %q, want %q", name, got, strings.Join(want, ","))
				}
			}
		})
	}
	t.Run("not root", func(t *testing.T) {
		o, _ := fakeHost{euid: 1000}.options(t, tree(t, debianWarm))
		r, _ := Run(context.Background(), o)
		if c := capability(r, CapApply); c.Ready || !strings.Contains(strings.Join(c.Blockers, ","), "privileges") {
			t.Errorf("apply as uid 1000: got ready=%v blockers %q, want blocked by privileges", c.Ready, c.Blockers)
		}
		if c := capability(r, CapVerify); !c.Ready || !strings.Contains(c.Note, "not root") {
			t.Errorf("verify as uid 1000: got ready=%v note %q, want ready with a note about root", c.Ready, c.Note)
		}
	})
	t.Run("migrate-vg on a full host", func(t *testing.T) {
		o, _ := fakeHost{}.options(t, tree(t, debianWarm))
		o.For = []string{CapMigrateVG}
		r, _ := Run(context.Background(), o)
		if c := capability(r, CapMigrateVG); !c.Ready || len(c.Blockers) != 0 || !r.Ready {
			t.Errorf("migrate-vg on a full host: got ready=%v blockers %q, report ready %v; want ready", c.Ready, c.Blockers, r.Ready)
		}
	})
	t.Run("unknown capability", func(t *testing.T) {
		o, _ := fakeHost{}.options(t, tree(t, debianWarm))
		o.For = []string{"apply", "teleport"}
		_, err := Run(context.Background(), o)
		if err == nil || !strings.Contains(err.Error(), `cannot check readiness for "teleport"`) {
			t.Errorf("got %v, want an error naming teleport", err)
		}
	})
}

func TestToolChecks(t *testing.T) {
	t.Run("argon2id probe: exact arguments, key on stdin only", func(t *testing.T) {
		o, rec := fakeHost{}.options(t, tree(t, debianWarm))
		r, err := Run(context.Background(), o)
		if err != nil {
			t.Fatal(err)
		}
		var format *execx.Cmd
		for i, c := range rec.Cmds {
			if len(c.Args) > 0 && c.Args[0] == "luksFormat" {
				format = &rec.Cmds[i]
			}
		}
		if format == nil {
			t.Fatalf("no luksFormat ran; commands: %q", rec.Lines())
		}
		img := format.Args[len(format.Args)-1]
		want := "cryptsetup luksFormat --batch-mode --type luks2 --pbkdf argon2id --pbkdf-force-iterations 4 --pbkdf-memory 32 --luks2-metadata-size 16k --luks2-keyslots-size 512k --key-file - " + img
		if got := format.String(); got != want {
			t.Errorf("got %q, want %q", got, want)
		}
		if len(format.Stdin) != 32 {
			t.Errorf("key on stdin is %d bytes, want 32", len(format.Stdin))
		}
		if !strings.HasPrefix(img, o.TempDir) {
			t.Errorf("scratch image %s is not under %s", img, o.TempDir)
		}
		if _, err := os.Stat(filepath.Dir(img)); !os.IsNotExist(err) {
			t.Errorf("scratch directory %s left behind (stat: %v)", filepath.Dir(img), err)
		}
		if c := byID(r)["cryptsetup.argon2id"]; c.Status != OK {
			t.Errorf("argon2id: got %s %q, want ok", c.Status, c.Found)
		}
	})
	tests := []struct {
		name   string
		host   fakeHost
		id     string
		status Status
		found  string
		fix    string
	}{
		{"versions", fakeHost{}, "tool.lvm", OK, "lvm 2.03.16 (/usr/sbin/lvm)", ""},
		{"qemu-img version", fakeHost{}, "tool.qemu-img", OK, "qemu-img 7.2.22 (/usr/bin/qemu-img)", ""},
		{"cryptsetup missing", fakeHost{missing: map[string]bool{"cryptsetup": true}}, "tool.cryptsetup", Fail, "cryptsetup is not installed", "apt-get install cryptsetup"},
		{"argon2id skipped without cryptsetup", fakeHost{missing: map[string]bool{"cryptsetup": true}}, "cryptsetup.argon2id", Skip, "needs cryptsetup", ""},
		{"argon2id refused", fakeHost{cryptFail: errors.New("x")}, "cryptsetup.argon2id", Fail, "cannot format LUKS2 with argon2id", "built with argon2"},
		{"argon2id silently replaced", fakeHost{dump: "Keyslots:\n  0: luks2\n\tPBKDF:      pbkdf2\n"}, "cryptsetup.argon2id", Fail, "without argon2id", "built with argon2"},
		{"mkswap missing", fakeHost{missing: map[string]bool{"mkswap": true, "wipefs": true}}, "tool.util-linux", Fail, "missing: mkswap, wipefs", "apt-get install util-linux mount"},
		{"xfs is optional", fakeHost{missing: map[string]bool{"mkfs.xfs": true}}, "tool.xfsprogs", Warn, "missing: mkfs.xfs", "xfsprogs"},
		{"libvirt down", fakeHost{libvirt: errors.New("cannot connect to libvirt at /run/libvirt/libvirt-sock (qemu:///system): connect: no such file or directory")}, "libvirt", Fail, "no such file or directory", "systemctl start libvirtd"},
		{"libvirt up", fakeHost{}, "libvirt", OK, "libvirt 9.0.0 at /run/libvirt/libvirt-sock", ""},
		{"not root", fakeHost{euid: 1000}, "privileges", Fail, "uid 1000", "need root"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o, _ := tt.host.options(t, tree(t, debianWarm))
			r, err := Run(context.Background(), o)
			if err != nil {
				t.Fatal(err)
			}
			c := byID(r)[tt.id]
			if c.Status != tt.status || !strings.Contains(c.Found, tt.found) || !strings.Contains(c.Fix, tt.fix) {
				t.Errorf("%s: got %s %q fix %q, want %s containing %q, fix containing %q", tt.id, c.Status, c.Found, c.Fix, tt.status, tt.found, tt.fix)
			}
		})
	}
}

func TestVersionCompare(t *testing.T) {
	tests := []struct {
		out  string
		re   *regexp.Regexp
		min  version
		want version
		old  bool
	}{
		{"cryptsetup 2.6.1 flags: UDEV", reCryptsetup, minCryptsetup, version{2, 6, 1}, false},
		{"cryptsetup 1.7.5", reCryptsetup, minCryptsetup, version{1, 7, 5}, true},
		{"  LVM version:     2.02.157(2) (2016-07-06)", reLVM, minLVM, version{2, 2, 157}, true},
		{"  LVM version:     2.02.158(2)", reLVM, minLVM, version{2, 2, 158}, false},
		{"qemu-img version 2.9.0", reQemuImg, minQemuImg, version{2, 9, 0}, true},
	}
	for _, tt := range tests {
		v, _, ok := parseVersion(tt.re, tt.out)
		if !ok || v != tt.want {
			t.Errorf("parse %q: got %v %v, want %v", tt.out, v, ok, tt.want)
		}
		if got := v.less(tt.min); got != tt.old {
			t.Errorf("%q older than %s: got %v, want %v", tt.out, tt.min, got, tt.old)
		}
	}
}

func TestEntropyKernelVersions(t *testing.T) {
	tests := []struct {
		release string
		want    bool
	}{{"6.18.44-fc-v669", true}, {"5.18.0", true}, {"5.17.9-arch1", false}, {"4.19.0-27-amd64", false}, {"garbage", false}}
	for _, tt := range tests {
		if got := kernelAtLeast(tt.release, 5, 18); got != tt.want {
			t.Errorf("kernelAtLeast(%q, 5, 18) = %v, want %v", tt.release, got, tt.want)
		}
	}
}

// TestGolden pins the full text and JSON reports of the microVM these
// machines are, with libvirt down; go test ./doctor -update rewrites them.
func TestGolden(t *testing.T) {
	root := tree(t, microVM)
	o, _ := fakeHost{libvirt: errors.New("cannot connect to libvirt at /run/libvirt/libvirt-sock (qemu:///system): dial unix /run/libvirt/libvirt-sock: connect: no such file or directory")}.options(t, root)
	r, err := Run(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	for _, format := range []string{"text", "json"} {
		var b bytes.Buffer
		if format == "json" {
			err = r.WriteJSON(&b)
		} else {
			err = r.WriteText(&b, textfmt.Style{})
		}
		if err != nil {
			t.Fatal(err)
		}
		got := strings.ReplaceAll(b.String(), root, "$ROOT")
		golden.Check(t, filepath.Join("testdata", "microvm."+format), []byte(got))
	}
	// Deterministic: a second run gives the same bytes.
	r2, _ := Run(context.Background(), o)
	var a, b bytes.Buffer
	r.WriteJSON(&a)
	r2.WriteJSON(&b)
	if a.String() != b.String() {
		t.Errorf("two runs on the same host differ:\n%s\n---\n%s", a.String(), b.String())
	}
}

// TestWriteTextColour: with colour the verdicts are painted, and without
// the escape sequences the text is the plain report byte for byte (the
// colour never shifts a column).
func TestWriteTextColour(t *testing.T) {
	r := &Report{Host: "h", Kernel: "6.1", Root: "/", For: []string{"plan", "apply"},
		Checks: []Check{
			{ID: "cryptsetup", Status: OK, Found: "2.6.1"},
			{ID: "dm-crypt", Status: Fail, Found: "missing", Fix: "modprobe dm-crypt"},
			{ID: "libvirt", Status: Warn, Found: "not reachable"},
			{ID: "rng", Status: Skip, Found: "not checked"},
		},
		Capabilities: []Capability{{Name: "plan", Ready: true, Summary: "plan"}, {Name: "apply", Summary: "apply", Blockers: []string{"dm-crypt"}}},
	}
	var plain, colour bytes.Buffer
	if err := r.WriteText(&plain, textfmt.Style{}); err != nil {
		t.Fatal(err)
	}
	if err := r.WriteText(&colour, textfmt.Style{Color: true}); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(plain.String(), "\033[") {
		t.Errorf("escape sequences without colour:\n%s", plain.String())
	}
	for _, want := range []string{"\033[32mOK\033[0m", "\033[1;31mFAIL\033[0m", "\033[33mWARN\033[0m", "\033[1;31mNO\033[0m", "\033[32myes\033[0m", "\033[1;31mNot ready for:\033[0m"} {
		if !strings.Contains(colour.String(), want) {
			t.Errorf("coloured report lacks %q:\n%s", want, colour.String())
		}
	}
	if got := regexp.MustCompile("\033\\[[0-9;]*m").ReplaceAllString(colour.String(), ""); got != plain.String() {
		t.Errorf("without its colour codes the report differs from the plain one:\n%s\nwant:\n%s", got, plain.String())
	}
}
