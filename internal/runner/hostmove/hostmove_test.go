package hostmove

import (
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cryptshift/cryptshift/internal/doors/execx"
	"github.com/cryptshift/cryptshift/internal/harness/golden"
	"github.com/cryptshift/cryptshift/internal/harness/tangtest"
	"github.com/cryptshift/cryptshift/internal/model/layout"
	"github.com/cryptshift/cryptshift/luks"
	"github.com/cryptshift/cryptshift/playbooks"
)

// mountinfo is a moved-to-be host: the old root on /dev/vda, the applied
// mail-host layout under /target.
const mountinfo = `1 0 253:0 / / rw,relatime - ext4 /dev/vda rw
2 1 0:5 / /proc rw - proc proc rw
3 1 0:6 / /sys rw - sysfs sysfs rw
4 1 0:7 / /dev rw - devtmpfs udev rw
5 1 0:8 / /run rw - tmpfs tmpfs rw
6 1 0:9 / /tmp rw - tmpfs tmpfs rw
7 1 253:0 /srv /mnt/srv rw - ext4 /dev/vda rw
10 1 254:3 / /target rw - ext4 /dev/mapper/root_crypt rw
11 10 8:18 / /target/boot rw - ext4 /dev/vdb2 rw
12 11 8:17 / /target/boot/efi rw - vfat /dev/vdb1 rw
13 10 254:4 / /target/var rw - ext4 /dev/mapper/var_crypt rw
14 13 254:5 / /target/var/vmail rw - ext4 /dev/mapper/vmail_crypt rw
`

const sshKey = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJ0test0key0only0for0unit0tests0000000000 admin@laptop"

// fakeHost writes a Debian 12 host tree with the tools the move needs.
func fakeHost(t *testing.T, mi string) string {
	t.Helper()
	root := t.TempDir()
	files := map[string]string{
		"proc/self/mountinfo":       mi,
		"etc/os-release":            "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nID=debian\nVERSION_ID=\"12\"\n",
		"target/etc/crypttab":       "# cryptshift begin mail-host\nroot_crypt UUID=1111 none luks\nvar_crypt UUID=2222 /etc/cryptsetup-keys.d/var.key luks\n# cryptshift end mail-host\n",
		"target/etc/fstab":          "/dev/mapper/root_crypt / ext4 errors=remount-ro 0 1\n",
		"usr/sbin/update-initramfs": "", "usr/sbin/grub-install": "", "usr/sbin/update-grub": "",
		"usr/share/initramfs-tools/hooks/cryptroot": "", "usr/share/initramfs-tools/hooks/dropbear": "",
		"usr/share/initramfs-tools/scripts/local-top/cryptroot": "", "usr/lib/grub/x86_64-efi/grub.efi": "",
		"target/etc/initramfs-tools/modules": "# admin's list\nloop",
	}
	for p, data := range files {
		f := filepath.Join(root, p)
		if err := os.MkdirAll(filepath.Dir(f), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(f, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

func mailHost(t *testing.T, ssh bool) *layout.Layout {
	t.Helper()
	e, err := playbooks.Load("mail-host")
	if err != nil {
		t.Fatal(err)
	}
	data := e.Layout
	if ssh {
		data = bytes.Replace(data, []byte("\nkeys:\n"), []byte("\nkeys:\n  unlock:\n    networkModules: [virtio_net]\n    ssh:\n      authorizedKeys: [\""+sshKey+"\"]\n"), 1)
	}
	f, rep := layout.Parse("mail-host.yaml", data)
	if rep.HasErrors() {
		t.Fatal(rep)
	}
	return f.Layout
}

func options(root string, l *layout.Layout, run execx.Runner) Options {
	return Options{Layout: l, Root: root, Target: "/target", Run: run,
		StopServices: []string{"postfix", "dovecot"}, KernelCmdline: []string{"console=ttyS0"}, InitramfsModules: ModulesDep,
		CheckEncrypted: func(dir string) error {
			if dir == "/target" {
				return nil
			}
			return fmt.Errorf("%s is on plaintext storage", dir)
		}}
}

func TestPlanGolden(t *testing.T) {
	root := fakeHost(t, mountinfo)
	m, err := Prepare(options(root, mailHost(t, true), &execx.Recorder{}))
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	if err := m.Plan().Table(&b); err != nil {
		t.Fatal(err)
	}
	for _, s := range m.Plan().Steps {
		fmt.Fprintf(&b, "\n%s: %s\n", s.ID, execx.Quote(s.Command))
		if s.Input != "" {
			b.WriteString(s.Input)
		}
	}
	golden.Check(t, filepath.Join("testdata", "plan.golden"), []byte(b.String()))
}

func TestRefusals(t *testing.T) {
	for _, tc := range []struct {
		name, want string
		edit       func(t *testing.T, root string, o *Options)
	}{
		{"target not mounted", "/target is not mounted", func(t *testing.T, root string, o *Options) {
			write(t, root, "proc/self/mountinfo", strings.Join(strings.Split(mountinfo, "\n")[:7], "\n")+"\n")
		}},
		{"target not encrypted", "not on an encrypted volume", func(t *testing.T, root string, o *Options) {
			o.CheckEncrypted = func(string) error { return errors.New("/target is on plaintext storage") }
		}},
		{"other distribution", "supports Debian and its derivatives only", func(t *testing.T, root string, o *Options) {
			write(t, root, "etc/os-release", "ID=fedora\nVERSION_ID=40\n")
		}},
		{"target holds another release", "different distribution", func(t *testing.T, root string, o *Options) {
			write(t, root, "target/etc/os-release", "ID=debian\nVERSION_ID=11\n")
		}},
		{"btrfs subvolume root", "btrfs subvolume", func(t *testing.T, root string, o *Options) {
			write(t, root, "proc/self/mountinfo", strings.Replace(mountinfo, "1 0 253:0 / / rw,relatime - ext4", "1 0 0:30 /@ / rw,relatime - btrfs", 1))
		}},
		{"zfs", "ZFS", func(t *testing.T, root string, o *Options) {
			write(t, root, "proc/self/mountinfo", mountinfo+"20 1 0:40 / /home rw - zfs rpool/home rw\n")
		}},
		{"layout volume not mounted", "the layout's /var/vmail is not mounted", func(t *testing.T, root string, o *Options) {
			write(t, root, "proc/self/mountinfo", strings.Replace(mountinfo, "/target/var/vmail", "/elsewhere", 1))
		}},
		{"apply did not write crypttab", "has no crypttab entry for root_crypt", func(t *testing.T, root string, o *Options) {
			os.Remove(filepath.Join(root, "target/etc/crypttab"))
		}},
		{"no dropbear-initramfs", "dropbear-initramfs", func(t *testing.T, root string, o *Options) {
			os.Remove(filepath.Join(root, "usr/share/initramfs-tools/hooks/dropbear"))
		}},
		{"bad service name", "not a systemd unit name", func(t *testing.T, root string, o *Options) {
			o.StopServices = []string{"--all"}
		}},
		{"target is /", "other than /", func(t *testing.T, root string, o *Options) { o.Target = "/" }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root := fakeHost(t, mountinfo)
			rec := &execx.Recorder{}
			o := options(root, mailHost(t, true), rec)
			tc.edit(t, root, &o)
			_, err := Prepare(o)
			var refused *RefusedError
			if !errors.As(err, &refused) || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "nothing was changed") {
				t.Fatalf("got %v, want a refusal naming %q", err, tc.want)
			}
			if len(rec.Cmds) != 0 {
				t.Errorf("a refused move ran %v", rec.Lines())
			}
		})
	}
}

func write(t *testing.T, root, p, data string) {
	t.Helper()
	f := filepath.Join(root, p)
	if err := os.MkdirAll(filepath.Dir(f), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(f, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
}

// cpio builds a gzip-compressed newc archive with the given members.
func cpio(t *testing.T, members map[string]string) []byte {
	t.Helper()
	var raw bytes.Buffer
	add := func(name, data string, mode int) {
		fmt.Fprintf(&raw, "070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X", 1, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(name)+1, 0)
		raw.WriteString(name + "\x00")
		for raw.Len()%4 != 0 {
			raw.WriteByte(0)
		}
		raw.WriteString(data)
		for raw.Len()%4 != 0 {
			raw.WriteByte(0)
		}
	}
	for n, d := range members {
		add(n, d, 0o100644)
	}
	add("TRAILER!!!", "", 0)
	var z bytes.Buffer
	w := gzip.NewWriter(&z)
	w.Write(raw.Bytes())
	w.Close()
	return z.Bytes()
}

// goodInitramfs is what update-initramfs makes for the layout with SSH.
func goodInitramfs() map[string]string {
	return map[string]string{
		"usr/sbin/cryptsetup": "", "cryptroot/crypttab": "root_crypt UUID=1111 none luks,initramfs\n",
		"usr/lib/modules/6.1.0-28-amd64/kernel/drivers/md/dm-crypt.ko":    "",
		"usr/lib/modules/6.1.0-28-amd64/kernel/drivers/net/virtio_net.ko": "",
		"scripts/local-top/cryptroot":                                     "", "usr/sbin/dropbear": "", "usr/bin/cryptroot-unlock": "",
		"root-Xy12/.ssh/authorized_keys": sshKey + "\n",
	}
}

// TestRunWritesTheNewRoot runs every step with recorded tools: the
// commands in order, the files in the new root, the journal on the target,
// and the initramfs check.
func TestRunWritesTheNewRoot(t *testing.T) {
	root := fakeHost(t, mountinfo)
	rec := &execx.Recorder{}
	m, err := Prepare(options(root, mailHost(t, true), rec))
	if err != nil {
		t.Fatal(err)
	}
	write(t, root, "target/boot/initrd.img-6.1.0-28-amd64", string(cpio(t, goodInitramfs())))
	write(t, root, "target/boot/grub/grub.cfg", "linux /vmlinuz-6.1.0-28-amd64 root=/dev/mapper/root_crypt ro ip=dhcp console=ttyS0\n")
	if err := m.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	golden.Check(t, filepath.Join("testdata", "run-commands.golden"), []byte(strings.Join(rec.Lines(), "\n")+"\n"))
	for p, want := range map[string]string{
		"target/etc/crypttab":                                      "root_crypt UUID=1111 none luks,initramfs\n",
		"target/etc/initramfs-tools/conf.d/cryptshift":             "RESUME=none\nMODULES=dep\n",
		"target/etc/initramfs-tools/modules":                       "# admin's list\nloop\nvirtio_net\n",
		"target/etc/dropbear/initramfs/authorized_keys":            sshKey + "\n",
		"target/etc/dropbear/initramfs/dropbear.conf":              `DROPBEAR_OPTIONS="-I 600 -j -k -p 22 -s"`,
		"target/etc/default/grub.d/cryptshift.cfg":                 `GRUB_CMDLINE_LINUX="${GRUB_CMDLINE_LINUX:+$GRUB_CMDLINE_LINUX }ip=dhcp console=ttyS0"`,
		"target/var/lib/cryptshift/migrate-host-mail-host.journal": `"kind":"migrate-host"`,
	} {
		b, err := os.ReadFile(filepath.Join(root, p))
		if err != nil || !strings.Contains(string(b), want) {
			t.Errorf("%s = %q (%v), want it to contain %q", p, b, err, want)
		}
	}
	if fi, err := os.Stat(filepath.Join(root, "target/etc/dropbear/initramfs/authorized_keys")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("authorized_keys mode: %v %v, want 0600", fi, err)
	}
	// Nothing under the source was written (only under target/).
	if _, err := os.Stat(filepath.Join(root, "var/lib/cryptshift")); err == nil {
		t.Error("the move wrote its journal onto the source")
	}
	// A second run without --resume is refused; --resume goes over the
	// finished journal and changes nothing.
	if err := m.Run(context.Background()); err == nil || !strings.Contains(err.Error(), "--resume") {
		t.Errorf("a second run: %v, want a refusal pointing at --resume", err)
	}
}

func TestCheckRefusesAnIncompleteInitramfs(t *testing.T) {
	for _, tc := range []struct{ drop, want string }{
		{"usr/sbin/dropbear", "dropbear"},
		{"usr/sbin/cryptsetup", "cryptsetup"},
		{"usr/lib/modules/6.1.0-28-amd64/kernel/drivers/net/virtio_net.ko", "virtio_net"},
		{"cryptroot/crypttab", "crypttab"},
	} {
		t.Run(tc.drop, func(t *testing.T) {
			root := fakeHost(t, mountinfo)
			m, err := Prepare(options(root, mailHost(t, true), &execx.Recorder{}))
			if err != nil {
				t.Fatal(err)
			}
			members := goodInitramfs()
			delete(members, tc.drop)
			write(t, root, "target/boot/initrd.img-6.1.0-28-amd64", string(cpio(t, members)))
			write(t, root, "target/boot/grub/grub.cfg", "linux /vmlinuz root=/dev/mapper/root_crypt ro\n")
			step := m.steps[len(m.steps)-1]
			if err := step.Do(context.Background()); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("check: %v, want an error naming %s", err, tc.want)
			}
		})
	}
	t.Run("crypttab without the root", func(t *testing.T) {
		root := fakeHost(t, mountinfo)
		m, _ := Prepare(options(root, mailHost(t, true), &execx.Recorder{}))
		members := goodInitramfs()
		members["cryptroot/crypttab"] = "var_crypt UUID=2 none luks\n"
		write(t, root, "target/boot/initrd.img-6.1.0-28-amd64", string(cpio(t, members)))
		write(t, root, "target/boot/grub/grub.cfg", "linux /vmlinuz root=/dev/mapper/root_crypt ro\n")
		if err := m.steps[len(m.steps)-1].Do(context.Background()); err == nil || !strings.Contains(err.Error(), "does not unlock root_crypt") {
			t.Fatalf("check: %v", err)
		}
	})
}

// TestClevisBindingsFromTheLayout: tang and tpm2 in keys.unlock become
// binding steps (no secret in them) checked before anything changes.
func TestClevisBindingsFromTheLayout(t *testing.T) {
	srvURL := tangtest.Server(t)
	const thp = tangtest.Thumbprint
	e, _ := playbooks.Load("mail-host")
	data := bytes.Replace(e.Layout, []byte("\nkeys:\n"), []byte("\nkeys:\n  unlock:\n    ip: \":::::ens3:dhcp\"\n    tang:\n      - {url: \""+srvURL+"\", thumbprint: "+thp+"}\n    tpm2: {pcrs: \"7\"}\n"), 1)
	f, rep := layout.Parse("mail-host.yaml", data)
	if rep.HasErrors() {
		t.Fatal(rep)
	}
	pass := []byte("the root passphrase")
	prepare := func(edit func(root string, o *Options)) (*Move, *execx.Recorder, error) {
		root := fakeHost(t, mountinfo)
		for _, p := range []string{"usr/share/initramfs-tools/hooks/clevis", "usr/bin/clevis-luks-bind", "usr/bin/clevis-decrypt-tang", "usr/bin/clevis-decrypt-tpm2"} {
			write(t, root, p, "")
		}
		write(t, root, "sys/class/tpm/tpm0/tpm_version_major", "2\n")
		rec := &execx.Recorder{Responses: map[string]execx.Result{"cryptsetup status root_crypt": {Stdout: []byte("  device:  /dev/mapper/vg0-root\n")}}}
		o := options(root, f.Layout, rec)
		o.Passphrase = pass
		o.ReadHeader = func(string) (*luks.Header, error) {
			return &luks.Header{Version: 2, Keyslots: []luks.Keyslot{{ID: 0}, {ID: 1}}}, nil
		}
		if edit != nil {
			edit(root, &o)
		}
		m, err := Prepare(o)
		return m, rec, err
	}
	m, rec, err := prepare(nil)
	if err != nil {
		t.Fatal(err)
	}
	var binds []string
	for _, s := range m.Plan().Steps {
		if strings.HasPrefix(s.ID, "bind-") {
			binds = append(binds, execx.Quote(s.Command))
			if strings.Contains(strings.Join(s.Command, " "), string(pass)) {
				t.Error("the passphrase is in a plan step")
			}
		}
	}
	want := []string{
		`clevis luks bind -y -d /dev/mapper/vg0-root -k - tang '{"thp":"` + thp + `","url":"` + srvURL + `"}'`,
		`clevis luks bind -y -d /dev/mapper/vg0-root -k - tpm2 '{"pcr_bank":"sha256","pcr_ids":"7"}'`,
	}
	if strings.Join(binds, "\n") != strings.Join(want, "\n") {
		t.Errorf("binding steps:\n%s\nwant:\n%s", strings.Join(binds, "\n"), strings.Join(want, "\n"))
	}
	for _, l := range rec.Lines() {
		if strings.HasPrefix(l, "clevis") {
			t.Errorf("preparing ran %s", l)
		}
	}
	if got := m.cmdline(); strings.Join(got, " ") != "ip=:::::ens3:dhcp console=ttyS0" {
		t.Errorf("kernel command line %q", got)
	}
	// A binding apply made already (from the same layout) is not made
	// again: only tpm2 is left to bind.
	tangBound := func(string) (*luks.Header, error) {
		return &luks.Header{Version: 2, Keyslots: []luks.Keyslot{{ID: 0}, {ID: 1}, {ID: 2}},
			TokenInfo: []luks.Token{{Type: "clevis", Keyslots: []int{2}, Clevis: &luks.ClevisPin{Pin: "tang", URLs: []string{srvURL}}}}}, nil
	}
	m, _, err = prepare(func(_ string, o *Options) { o.ReadHeader = tangBound })
	if err != nil {
		t.Fatal(err)
	}
	binds = nil
	for _, s := range m.Plan().Steps {
		if strings.HasPrefix(s.ID, "bind-") {
			binds = append(binds, execx.Quote(s.Command))
		}
	}
	if strings.Join(binds, "\n") != want[1] {
		t.Errorf("with tang bound already, binding steps:\n%s\nwant only:\n%s", strings.Join(binds, "\n"), want[1])
	}
	// With every binding made already, the move needs no passphrase.
	m, _, err = prepare(func(root string, o *Options) {
		o.ReadHeader = tangBound
		o.Passphrase = nil
		o.Layout = func() *layout.Layout {
			l := *o.Layout
			u := *l.Keys.Unlock
			u.TPM2 = nil
			l.Keys.Unlock = &u
			return &l
		}()
	})
	if err != nil {
		t.Fatalf("everything bound, no passphrase: %v", err)
	}
	for _, s := range m.Plan().Steps {
		if strings.HasPrefix(s.ID, "bind-") {
			t.Errorf("everything bound, yet %s", s.ID)
		}
	}
	// Refusals: tang unreachable, thumbprint mismatch, no TPM, no passphrase.
	for name, edit := range map[string]func(root string, o *Options){
		"no TPM":        func(root string, o *Options) { os.RemoveAll(filepath.Join(root, "sys/class/tpm")) },
		"no passphrase": func(root string, o *Options) { o.Passphrase = nil },
		"no clevis-initramfs": func(root string, o *Options) {
			os.Remove(filepath.Join(root, "usr/share/initramfs-tools/hooks/clevis"))
		},
		"tang down": func(root string, o *Options) {
			o.HTTP = &http.Client{Transport: roundTrip(func(*http.Request) (*http.Response, error) { return nil, errors.New("connection refused") })}
		},
	} {
		if _, rec, err := prepare(edit); err == nil || !strings.Contains(err.Error(), "nothing was changed") {
			t.Errorf("%s: got %v, want a refusal", name, err)
		} else {
			for _, l := range rec.Lines() {
				if !strings.HasPrefix(l, "cryptsetup status") { // read-only
					t.Errorf("%s: ran %s", name, l)
				}
			}
		}
	}
}

type roundTrip func(*http.Request) (*http.Response, error)

func (f roundTrip) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// A layout with a bios-boot partition gets GRUB for BIOS on its disk (as
// given with --device), and no UEFI install without an ESP.
func TestBIOSBoot(t *testing.T) {
	e, _ := playbooks.Load("mail-host")
	y := strings.Replace(string(e.Layout), `      - name: esp
        type: esp            # vfat, mounted at /boot/efi
        size: 256MiB`, `      - name: grub
        type: bios-boot
        size: 1MiB`, 1)
	f, rep := layout.Parse("mail-host.yaml", []byte(y))
	if rep.HasErrors() {
		t.Fatal(rep)
	}
	root := fakeHost(t, strings.Replace(mountinfo, "12 11 8:17 / /target/boot/efi rw - vfat /dev/vdb1 rw\n", "", 1))
	write(t, root, "usr/lib/grub/i386-pc/boot.img", "")
	o := options(root, f.Layout, &execx.Recorder{})
	o.Devices = map[string]string{"disk0": "/dev/disk/by-id/virtio-newdisk0"}
	m, err := Prepare(o)
	if err != nil {
		t.Fatal(err)
	}
	var grub []string
	for _, s := range m.Plan().Steps {
		if strings.HasPrefix(s.ID, "grub-install") {
			grub = append(grub, execx.Quote(s.Command))
		}
	}
	if want := "chroot /target grub-install --target=i386-pc --boot-directory=/boot /dev/disk/by-id/virtio-newdisk0"; strings.Join(grub, "\n") != want {
		t.Errorf("GRUB steps %q, want %s", grub, want)
	}
}
