package boot

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/cryptshift/cryptshift/internal/harness/secretscan"
)

// testPassphrase unlocks the test's root volume. A fixed test-only value:
// the disks are throwaway images in the test's temporary directory.
var testPassphrase = []byte("cryptshift boot tier passphrase")

// NewDiskSize is the size of each of the two new disks (sparse): the
// mail-host layout gives root 15% of the volume group, which must hold the
// old host's /usr.
const NewDiskSize = 5 << 30

// moveRun is one run of the host-move proof: the moved disk set and what
// the boots share.
type moveRun struct {
	dir  string
	bin  string // cryptshift built from the tree, copied into each booted system
	oh   *OldHost
	tang *Tang
	port int // tang's port, stable across restarts
	// keys is Tang's key directory, kept next to the cached old host: its
	// thumbprint is pinned in the layout, so the moved disks' binding
	// stays valid for later runs that reuse them.
	keys string
	// mails is how many mails alice had when the old host was moved.
	mails int
}

// TestBootMigrateHost moves the old host onto the encrypted mail-host
// layout with the real verbs, inside the running old host: cryptshift
// apply on two fresh disks (binding the root to the test's Tang server,
// as the layout's keys.unlock.tang asks), then cryptshift migrate-host
// (killed with SIGKILL during its first copy pass and resumed). It first
// proves that a move onto an unmounted or an unencrypted target is
// refused and changes nothing. Then it boots the two new disks alone
// through OVMF, GRUB and the moved system's own initramfs and unlocks the
// root every way the layout and Clevis offer.
//
// Boots, each on copy-on-write overlays so the moved disks stay as the
// move left them (S0: passphrase, recovery key, tang):
//
//	dropbear  on S0: Tang stopped, so clevis cannot unlock: unlock over
//	                 SSH into dropbear-initramfs; every check, the mails,
//	                 cryptshift verify inside; with the swtpm attached,
//	                 cryptshift unlock add tpm2 (-> S1: + tpm2)
//	tang      on S1: no TPM attached: unlocked by Tang with no console
//	                 input; cryptshift unlock remove tang (-> S2: tpm2)
//	fallback  on S1: Tang stopped, no TPM: the passphrase typed on the
//	                 console unlocks; every volume, swap, /tmp, the mails
//	tpm2      on S2: unlocked by the software TPM with no console input
func TestBootMigrateHost(t *testing.T) {
	Require(t)
	ctx := context.Background()
	oh, err := EnsureOldHost(ctx, t.Logf)
	if err != nil {
		t.Fatal(err)
	}
	r := &moveRun{dir: RunDir(t), oh: oh, keys: filepath.Join(filepath.Dir(oh.Dir), "tang-keys")}
	if jwks, _ := filepath.Glob(filepath.Join(r.keys, "*.jwk")); len(jwks) < 2 {
		os.RemoveAll(r.keys)
		if err := NewTangKeys(ctx, r.keys); err != nil {
			t.Fatal(err)
		}
	}
	r.startTang(t)
	// Subtests stop and start Tang; whichever instance runs last is
	// stopped here (by PID).
	t.Cleanup(func() { r.tang.Stop() })
	s0 := r.move(t, ctx)

	var s1, s2 [2]string
	if !t.Run("dropbear", func(t *testing.T) { s1 = r.dropbear(t, ctx, s0) }) {
		return
	}
	if !t.Run("tang", func(t *testing.T) { s2 = r.tangBoot(t, ctx, s1) }) {
		return
	}
	t.Run("fallback", func(t *testing.T) { r.fallback(t, ctx, s1) })
	t.Run("tpm2", func(t *testing.T) { r.tpm2(t, ctx, s2) })
}

func (r *moveRun) startTang(t *testing.T) {
	t.Helper()
	tg, err := StartTang(context.Background(), r.keys, r.dir, "host", r.port)
	if err != nil {
		t.Fatal(err)
	}
	tg.GuestPort = tangGuestPort
	r.tang, r.port = tg, tg.Port
}

// tangGuestPort is where guests reach the test's Tang server (at
// GuestFwdAddr): fixed, because its URL is in the layout.
const tangGuestPort = 7500

// moveArgs are the migrate-host options of the test: the serial console
// for the harness, MODULES=dep (MODULES=most copies about a thousand
// modules with a shell loop, over 15 minutes under TCG), the mail services
// stopped for the final pass.
var moveArgs = []string{"-f", "/root/mail-host.yaml", "--target", "/target",
	"--stop-service", "postfix", "--stop-service", "dovecot",
	"--kernel-cmdline", "console=ttyS0", "--initramfs-modules", "dep"}

// moveSetup is test-only configuration of the old host made before the
// move, so the copy carries it: udev under TCG on a loaded 2-core host can
// take longer than systemd's default 90 s to announce the LVs
// (docs/boot-tier.md, pitfalls); GRUB boots its default entry at once
// instead of showing its menu for 5 s in each of the four boots.
const moveSetup = `mkdir -p /etc/systemd/system.conf.d && printf '[Manager]\nDefaultDeviceTimeoutSec=10min\n' >/etc/systemd/system.conf.d/cryptshift-boot-test.conf && ` +
	`mkdir -p /etc/default/grub.d && printf 'GRUB_TIMEOUT=0\n' >/etc/default/grub.d/zz-cryptshift-boot-test.cfg`

// journalOnTarget is where migrate-host journals the move.
const journalOnTarget = "/target/var/lib/cryptshift/migrate-host-mail-host.journal"

// move returns the moved disks: from the cache when the same old host was
// moved by the same cryptshift binary, layout and options before (Go
// builds are reproducible, so any change to cryptshift moves again), else
// by booting the old host with two fresh disks, running cryptshift apply
// and cryptshift migrate-host in it and powering it off. The boots only
// ever use overlays over them.
func (r *moveRun) move(t *testing.T, ctx context.Context) [2]string {
	t.Helper()
	bin := filepath.Join(r.dir, "cryptshift")
	r.bin = bin
	if out, err := exec.CommandContext(ctx, "go", "build", "-trimpath", "-o", bin, "github.com/cryptshift/cryptshift/cmd/cryptshift").CombinedOutput(); err != nil {
		t.Fatalf("cannot build cryptshift: %v\n%s", err, out)
	}
	layout, err := exec.CommandContext(ctx, bin, "plan", "--example", "mail-host", "-o", "layout").Output()
	if err != nil {
		t.Fatalf("cannot get the mail-host layout: %v", err)
	}
	pub, err := os.ReadFile(r.oh.Key + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	thp, err := r.tang.Thumbprint(ctx)
	if err != nil {
		t.Fatal(err)
	}
	layout = sshUnlock(testKDF(layout), strings.TrimSpace(string(pub)), r.tang.URL(), thp)
	binData, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	cached := filepath.Join(filepath.Dir(r.oh.Dir), "moved-"+movedKey(r.oh, binData, layout))
	disks := [2]string{filepath.Join(cached, "new0.img"), filepath.Join(cached, "new1.img")}
	if os.Getenv("CRYPTSHIFT_BOOT_REUSE_MOVED") == "1" {
		// A developer's knob: boot the disks the last complete move left
		// even though cryptshift changed since (the booted systems get the
		// new binary copied in for verify and unlock). Never in CI.
		done, _ := filepath.Glob(filepath.Join(filepath.Dir(r.oh.Dir), "moved-*", "complete"))
		if len(done) > 0 && os.Getenv("CI") != "true" {
			cached = filepath.Dir(done[0])
			disks = [2]string{filepath.Join(cached, "new0.img"), filepath.Join(cached, "new1.img")}
			t.Logf("move: CRYPTSHIFT_BOOT_REUSE_MOVED=1: reusing %s, moved by an earlier cryptshift", cached)
		}
	}
	if _, err := os.Stat(filepath.Join(cached, "complete")); err == nil {
		t.Logf("move: reusing the moved disks in %s", cached)
		r.mails = Mails
		if b, err := os.ReadFile(filepath.Join(cached, "mails")); err == nil {
			fmt.Sscan(string(b), &r.mails)
		}
		return disks
	}
	olds, _ := filepath.Glob(filepath.Join(filepath.Dir(r.oh.Dir), "moved-*"))
	for _, o := range olds {
		os.RemoveAll(o)
	}
	if err := os.MkdirAll(cached, 0o755); err != nil {
		t.Fatal(err)
	}
	root, err := Overlay(ctx, r.oh.Image, filepath.Join(r.dir, "oldroot.qcow2"))
	if err != nil {
		t.Fatal(err)
	}
	root.Serial = "oldroot"
	d0, err := SparseDisk(disks[0], NewDiskSize)
	if err != nil {
		t.Fatal(err)
	}
	d1, err := SparseDisk(disks[1], NewDiskSize)
	if err != nil {
		t.Fatal(err)
	}
	d0.Serial, d1.Serial = "newdisk0", "newdisk1"
	// Tang is forwarded: apply binds the root to it (keys.unlock.tang).
	port, fwd := r.tang.Forward()
	vm := Boot(t, ctx, Machine{Name: "oldhost", Dir: r.dir, Kernel: r.oh.Kernel, Initrd: r.oh.Initrd, Append: r.oh.Append(),
		Disks: []Disk{root, d0, d1}, GuestFwd: map[int]string{port: fwd}}, r.oh.Key)
	if _, err := vm.WaitMultiUser(ctx, bootTimeout); err != nil {
		t.Fatal(err)
	}
	// The same checks as TestBootOldHost: the move starts from a working
	// mail server, and the mail delivered live must arrive on the new disks.
	checkOldHost(t, ctx, vm)
	oldHostChecked = vm.M.Name + " in " + t.Name()
	r.mails = Mails + 1
	if err := os.WriteFile(filepath.Join(cached, "mails"), []byte(fmt.Sprintln(r.mails)), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, f := range []struct {
		path string
		data []byte
		mode os.FileMode
	}{
		{"/root/mail-host.yaml", layout, 0o644},
		{"/run/luks.pass", testPassphrase, 0o600}, // on tmpfs: the move does not copy it
	} {
		if err := vm.SSH.WriteFile(ctx, f.path, f.data, f.mode); err != nil {
			t.Fatal(err)
		}
	}
	if err := vm.SSH.CopyFile(ctx, bin, "/root/cryptshift", 0o755); err != nil {
		t.Fatal(err)
	}
	run := func(what, cmd string) string {
		t.Helper()
		start := time.Now()
		out, err := vm.SSH.Run(ctx, "{ "+cmd+"\n} 2>&1", nil)
		f, _ := os.OpenFile(filepath.Join(cached, "move.log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
		fmt.Fprintf(f, "== %s (%s)\n$ %s\n%s\n", what, time.Since(start).Round(time.Second), cmd, out)
		f.Close()
		if err != nil {
			t.Fatalf("%s failed: %v\n%s", what, err, lastLines(out, 40))
		}
		t.Logf("move: %s: %s", what, time.Since(start).Round(time.Second))
		return out
	}
	mh := "/root/cryptshift migrate-host " + strings.Join(moveArgs, " ")
	run("test-only setup", moveSetup)

	// Refused, nothing changed: the target is not mounted yet.
	out := run("refuse an unmounted target", "mkdir -p /target && "+mh+" --yes; echo rc=$?; ls -A /target | wc -l")
	if !strings.Contains(out, "rc=4") || !strings.Contains(out, "/target is not mounted") || !strings.HasSuffix(strings.TrimSpace(out), "\n0") {
		t.Fatalf("migrate-host onto an unmounted target was not refused with exit 4, or wrote to it:\n%s", out)
	}

	start := time.Now()
	// Every process's command line is recorded while apply runs (and
	// binds the root to Tang): the passphrase must be on none.
	// The watcher is a static Go program (cmd/argwatch) on the tmpfs /run,
	// so the move does not copy it; a shell loop polling as often took
	// most of a virtual CPU from apply under TCG.
	watcher := filepath.Join(r.dir, "argwatch")
	build := exec.CommandContext(ctx, "go", "build", "-trimpath", "-o", watcher, "github.com/cryptshift/cryptshift/internal/harness/boot/cmd/argwatch")
	build.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("cannot build the command-line watcher: %v\n%s", err, out)
	}
	// /run itself is noexec (initramfs-tools mounts it so): a small tmpfs
	// of its own runs the watcher, and the move skips it like all of /run.
	run("a place to run the watcher", "mkdir -p /run/argwatch && mount -t tmpfs -o size=16m,mode=0700 argwatch /run/argwatch")
	if err := vm.SSH.CopyFile(ctx, watcher, "/run/argwatch/argwatch", 0o755); err != nil {
		t.Fatal(err)
	}
	// setsid, as for the move below: a background job left in the ssh
	// session's process group kept the session open.
	run("watch command lines", "touch /run/watch; setsid /run/argwatch/argwatch /run/watch /run/cmdlines.txt >/dev/null 2>/run/argwatch.err </dev/null & sleep 1; "+
		"pgrep -x argwatch >/dev/null || { echo the watcher did not start; cat /run/argwatch.err; exit 1; }")
	applyOut := run("cryptshift apply", "/root/cryptshift apply -f /root/mail-host.yaml --device disk0=/dev/disk/by-id/virtio-newdisk0 "+
		"--device disk1=/dev/disk/by-id/virtio-newdisk1 --allow-destroy --yes --passphrase-file /run/luks.pass "+
		"--recovery-key-file /run/recovery.key --target /target && findmnt -R /target")
	cmdlines := run("stop watching", "rm /run/watch; for i in $(seq 600); do [ -e /run/cmdlines.txt ] && break; sleep 0.2; done; cat /run/cmdlines.txt; umount /run/argwatch")
	bindings := run("clevis bindings made by apply", "clevis luks list -d /dev/vg0/root; cryptsetup luksDump /dev/vg0/root | grep -E '^ +[0-9]+: (luks2|clevis)'")
	if want := "2: tang '{\"url\":\"" + r.tang.URL() + "\"}'"; !strings.Contains(bindings, want) || strings.Count(bindings, "luks2") != 3 {
		t.Fatalf("apply did not bind keyslot 2 of the root to tang from the layout (want %q and three keyslots):\n%s", want, bindings)
	}
	if !strings.Contains(cmdlines, "clevis-luks-bind") {
		t.Fatalf("the command-line watcher never saw clevis luks bind:\n%s", lastLines(cmdlines, 20))
	}
	journal := run("the system journal and apply's journal", "journalctl -b -o cat --no-pager | tail -n 3000; cat /var/lib/cryptshift/apply-*.journal")
	if !strings.Contains(journal, `"clevisBind`) {
		t.Fatalf("apply's journal does not record the binding step:\n%s", lastLines(journal, 20))
	}
	for where, b := range map[string]string{"process command lines": cmdlines, "apply's output": applyOut, "the journal (system and apply)": journal} {
		if enc := secretscan.Find([]byte(b), testPassphrase); enc != "" {
			t.Fatalf("the passphrase appears in %s (%s)", where, enc)
		}
	}
	fmt.Println("host move proof: apply bound the root to tang from the layout (keyslot 2; passphrase and recovery keyslots kept), the passphrase in no command line, output or journal")

	// Refused, nothing changed: /target/boot is mounted but plaintext.
	out = run("refuse an unencrypted target", "touch /root/before-refusal; "+strings.Replace(mh, "--target /target", "--target /target/boot", 1)+
		" --yes; echo rc=$?; find /target/boot -newer /root/before-refusal | wc -l")
	if !strings.Contains(out, "rc=4") || !strings.Contains(out, "not on an encrypted volume") || !strings.HasSuffix(strings.TrimSpace(out), "\n0") {
		t.Fatalf("migrate-host onto the plaintext /boot was not refused with exit 4, or wrote to it:\n%s", out)
	}
	fmt.Println("host move proof: a move onto an unmounted or unencrypted target is refused and changes nothing")

	plan := run("dry run", mh+" --dry-run")
	_ = os.WriteFile(filepath.Join(cached, "move-plan.txt"), []byte(plan), 0o644)
	t.Logf("migrate-host --dry-run:\n%s", plan)

	// Crash: SIGKILL during the first copy pass (rsync dies with it:
	// Pdeathsig), then --resume.
	run("start the move", "setsid "+mh+" --yes --progress none >/root/move-killed.log 2>&1 </dev/null &")
	run("wait for the copy", "for i in $(seq 600); do pgrep -x rsync >/dev/null && break; sleep 1; done; pgrep -x rsync && sleep 20 && pgrep -x rsync")
	run("kill -9 during the copy", "kill -9 $(pgrep -x cryptshift) || exit 1; for i in $(seq 60); do pgrep -x rsync >/dev/null || break; sleep 1; done; "+
		"if pgrep -x rsync; then echo rsync survived; exit 1; fi; tail -n 3 "+journalOnTarget+"; cat /root/move-killed.log")
	out = run("resume the move", mh+" --resume")
	if !strings.Contains(out, "Moved the host onto /target") {
		t.Fatalf("the resumed move did not finish:\n%s", lastLines(out, 40))
	}
	fmt.Println("host move proof: killed with SIGKILL during the copy, resumed, and the moved disks boot below")
	t.Logf("move: apply + migrate-host %s in the old host", time.Since(start).Round(time.Second))

	run("release the new disks", "swapoff -a; umount -R /target && "+
		"for m in $(dmsetup ls --target crypt | cut -f1); do cryptsetup close \"$m\" || exit 1; done; vgchange -an vg0")
	if err := vm.PowerOff(ctx, 5*time.Minute); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(cached, "complete"), []byte(time.Now().Format(time.RFC3339)+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return disks
}

// sshUnlock adds the layout's unlock methods: dropbear in the initramfs
// with the test key, DHCP, the virtio NIC's driver, and the test's Tang
// server pinned by its thumbprint.
func sshUnlock(layout []byte, pub, tangURL, thp string) []byte {
	return regexp.MustCompile(`(?m)^keys:\n`).ReplaceAll(layout, []byte("keys:\n  unlock:\n    ip: dhcp\n    networkModules: [virtio_net]\n    ssh:\n      authorizedKeys:\n        - \""+pub+"\"\n"+
		"    tang:\n      - url: "+tangURL+"\n        thumbprint: "+thp+"\n"))
}

// movedKey names a moved disk set after what made it.
func movedKey(oh *OldHost, cryptshift, layout []byte) string {
	h := sha256.New()
	for _, part := range [][]byte{[]byte(filepath.Base(oh.Dir)), cryptshift, layout, []byte(strings.Join(moveArgs, " ")), []byte(moveSetup)} {
		fmt.Fprintf(h, "%d:", len(part))
		h.Write(part)
	}
	return hex.EncodeToString(h.Sum(nil))[:16]
}

// testKDF forces a low argon2id cost for the test (the layout's
// `iterations`, cryptsetup --pbkdf-force-iterations: no benchmark): with
// the defaults (1 GiB, 2 s benchmarked) each luksFormat and recovery
// keyslot took 15-50 s under TCG on a loaded 2-core host, so apply alone
// took 4-10 minutes, and systemd opening four key file volumes at once
// would want 4 GiB in a 2 GiB guest. The boot path is the same;
// CRYPTSHIFT_BOOT_FULL_KDF=1 keeps the defaults.
func testKDF(layout []byte) []byte {
	if os.Getenv("CRYPTSHIFT_BOOT_FULL_KDF") == "1" {
		return layout
	}
	return regexp.MustCompile(`(?m)^luks:\n`).ReplaceAll(layout, []byte("luks:\n  iterations: 4\n  memoryKiB: 65536\n"))
}

// bootMoved boots the moved disks (overlays over base, named after the
// boot) through OVMF with nothing else attached.
func (r *moveRun) bootMoved(t *testing.T, ctx context.Context, name string, base [2]string, withTang bool, tpm *SWTPM, extra ...Disk) (*VM, [2]string) {
	t.Helper()
	var disks []Disk
	var paths [2]string
	for i, b := range base {
		paths[i] = filepath.Join(r.dir, fmt.Sprintf("%s-disk%d.qcow2", name, i))
		d, err := Overlay(ctx, b, paths[i])
		if err != nil {
			t.Fatal(err)
		}
		d.Serial = fmt.Sprintf("newdisk%d", i)
		disks = append(disks, d)
	}
	m := Machine{Name: name, Dir: r.dir, UEFI: true, Disks: append(disks, extra...), TPM: tpm}
	if withTang {
		port, cmd := r.tang.Forward()
		m.GuestFwd = map[int]string{port: cmd}
	}
	return Boot(t, ctx, m, r.oh.Key), paths
}

// kernelStarted is the kernel's first line: firmware and GRUB are done.
var kernelStarted = regexp.MustCompile(`Linux version \d`)

// timeline records when a boot passed its milestones.
type timeline struct {
	t     *testing.T
	vm    *VM
	marks []string
}

// newTimeline logs the boot's milestones when the test ends, passed or
// failed.
func newTimeline(t *testing.T, vm *VM) *timeline {
	tl := &timeline{t: t, vm: vm}
	t.Cleanup(tl.log)
	return tl
}

func (tl *timeline) mark(what string) {
	tl.marks = append(tl.marks, fmt.Sprintf("%s %s", what, tl.vm.Uptime().Round(time.Second)))
}

func (tl *timeline) log() {
	tl.t.Logf("boot timing (%s): %s", tl.vm.M.Name, strings.Join(tl.marks, ", "))
}

func (tl *timeline) expect(ctx context.Context, re *regexp.Regexp, what string) []string {
	tl.t.Helper()
	m, err := tl.vm.Console.Expect(ctx, re, bootTimeout)
	if err != nil {
		tl.t.Fatal(err)
	}
	tl.mark(what)
	return m
}

func (tl *timeline) multiUser(ctx context.Context) {
	tl.t.Helper()
	if _, err := tl.vm.WaitMultiUser(ctx, bootTimeout); err != nil {
		tl.t.Fatal(err)
	}
	tl.mark("multi-user")
}

func (r *moveRun) dropbear(t *testing.T, ctx context.Context, s0 [2]string) [2]string {
	// The root is bound to Tang (by apply, from the layout): with Tang
	// stopped clevis cannot unlock, and the passphrase over SSH does. The
	// TPM is attached so that this boot can bind tpm2 for the later ones.
	r.tang.Stop()
	tpm := r.swtpm(t, ctx, "dropbear")
	before := r.tang.Requests()
	vm, disks := r.bootMoved(t, ctx, "dropbear", s0, true, tpm)
	tl := newTimeline(t, vm)
	tl.expect(ctx, kernelStarted, "kernel")
	tl.expect(ctx, UnlockPrompt, "prompt")
	// dropbear starts once the initramfs has DHCP. cryptroot-unlock
	// copies a stdin that is not a terminal to askpass's fifo as it is
	// (`cat >"$PASSFIFO"`): a trailing newline would become part of the
	// passphrase, so none is sent.
	deadline := time.Now().Add(bootTimeout)
	for {
		out, err := vm.SSH.Run(ctx, "cryptroot-unlock", strings.NewReader(string(testPassphrase)))
		if err == nil {
			t.Logf("cryptroot-unlock: %s", strings.TrimSpace(out))
			break
		}
		if time.Now().After(deadline) || vm.Exited() {
			t.Fatalf("cannot unlock over ssh into dropbear: %v", err)
		}
		time.Sleep(3 * time.Second)
	}
	tl.mark("unlocked over ssh")
	tl.multiUser(ctx)
	if n := r.tang.Requests() - before; n != 0 {
		t.Fatalf("tang answered %d requests while stopped", n)
	}
	r.startTang(t)
	r.checkSystem(t, ctx, vm)
	fmt.Println("boot proof: unlocked over ssh (dropbear) and reached multi-user")
	fmt.Printf("host move proof: %d mails readable after the move\n", r.mails)
	r.verifyInside(t, ctx, vm)

	// cryptshift unlock checks Tang's advertisement first: a wrong
	// thumbprint is refused and changes nothing (the header is compared).
	if err := vm.SSH.WriteFile(ctx, "/run/luks.pass", testPassphrase, 0o600); err != nil {
		t.Fatal(err)
	}
	hdr := "dev=$(cryptsetup status root_crypt | awk '$1==\"device:\"{print $2}'); cryptsetup luksDump --dump-json-metadata \"$dev\" | sha256sum"
	was, err := vm.SSH.Run(ctx, hdr, nil)
	if err != nil {
		t.Fatal(err)
	}
	if out, err := r.cryptshift(t, ctx, vm, "unlock add tang --volume root_crypt --url "+r.tang.URL()+" --thumbprint AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA --passphrase-file /run/luks.pass"); err == nil || !strings.Contains(out, "does not advertise the pinned thumbprint") {
		t.Fatalf("a thumbprint mismatch was not refused: %v\n%s", err, out)
	}
	if now, err := vm.SSH.Run(ctx, hdr, nil); err != nil || now != was {
		t.Fatalf("the refused binding changed the root's LUKS2 metadata (%v)", err)
	}
	// The TPM binding for the later boots is made in this real OVMF boot,
	// so PCR 7 is what those boots measure (see docs/boot-tier.md).
	r.unlock(t, ctx, vm, "add tpm2 --volume root_crypt --pcrs 7 --pcr-bank sha256 --passphrase-file /run/luks.pass")
	if err := vm.PowerOff(ctx, 3*time.Minute); err != nil {
		t.Fatal(err)
	}
	return disks
}

// treeBinary is where the cryptshift built from the tree goes in a booted
// system (not /run: initramfs-tools mounts it noexec).
const treeBinary = "/usr/local/sbin/cryptshift"

// cryptshift copies the cryptshift built from the tree into the booted
// system and runs it with args.
func (r *moveRun) cryptshift(t *testing.T, ctx context.Context, vm *VM, args string) (string, error) {
	t.Helper()
	if err := vm.SSH.CopyFile(ctx, r.bin, treeBinary, 0o755); err != nil {
		t.Fatal(err)
	}
	return vm.SSH.Run(ctx, treeBinary+" "+args+" 2>&1", nil)
}

// unlock adds or removes an unlock method of the root volume with
// cryptshift unlock (the passphrase in a 0600 file on /run, removed at
// once) and logs the bindings clevis lists afterwards.
func (r *moveRun) unlock(t *testing.T, ctx context.Context, vm *VM, args string) {
	t.Helper()
	if err := vm.SSH.WriteFile(ctx, "/run/luks.pass", testPassphrase, 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := r.cryptshift(t, ctx, vm, "unlock "+args)
	vm.SSH.Run(ctx, "rm -f /run/luks.pass", nil)
	if err != nil {
		t.Fatalf("cryptshift unlock %s: %v\n%s", args, err, out)
	}
	list, _ := vm.SSH.Run(ctx, "clevis luks list -d \"$(cryptsetup status root_crypt | awk '$1==\"device:\"{print $2}')\"", nil)
	t.Logf("cryptshift unlock %s: %s; clevis bindings now: %s", args, strings.TrimSpace(out), list)
}

// swtpm starts the software TPM for a boot; its state is shared by every
// boot of the run, so what one boot seals the next can unseal.
func (r *moveRun) swtpm(t *testing.T, ctx context.Context, name string) *SWTPM {
	t.Helper()
	tpm, err := StartSWTPM(ctx, filepath.Join(r.dir, "tpm-state"), r.dir, name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(tpm.Stop)
	return tpm
}

// autoUnlock boots base with the software TPM if withTPM and the forward
// to Tang if withTang, and expects clevis to unlock the root with no
// console input and the system to reach multi-user. What is not attached
// cannot unlock: each proof is isolated by what the guest can reach.
func (r *moveRun) autoUnlock(t *testing.T, ctx context.Context, name string, base [2]string, withTang, withTPM bool, extra ...Disk) (*VM, [2]string) {
	t.Helper()
	var tpm *SWTPM
	if withTPM {
		tpm = r.swtpm(t, ctx, name)
	}
	vm, disks := r.bootMoved(t, ctx, name, base, withTang, tpm, extra...)
	tl := newTimeline(t, vm)
	tl.expect(ctx, kernelStarted, "kernel")
	tl.expect(ctx, Unlocked, "unlocked")
	tl.multiUser(ctx)
	if n := vm.Console.Typed(); n != 0 {
		t.Fatalf("the harness typed %d line(s) on the console of a boot that must unlock by itself", n)
	}
	return vm, disks
}

func (r *moveRun) tangBoot(t *testing.T, ctx context.Context, s1 [2]string) [2]string {
	before := r.tang.Requests()
	// The old plaintext disk is attached again (an overlay: it stays as
	// the move left it), as it is on a real host after the move until the
	// admin retires it: verify must list it as a leftover. It holds no
	// EFI system partition, so the firmware still boots the new disks.
	old, err := Overlay(ctx, r.oh.Image, filepath.Join(r.dir, "tang-oldroot.qcow2"))
	if err != nil {
		t.Fatal(err)
	}
	old.Serial = "oldroot"
	// No TPM attached: the tpm2 binding cannot unlock, only Tang can.
	vm, disks := r.autoUnlock(t, ctx, "tang", s1, true, false, old)
	if n := r.tang.Requests() - before; n < 1 {
		t.Fatalf("the root was unlocked without a key recovery request to tang (log %s)", r.tang.Log)
	}
	root := r.checkSystem(t, ctx, vm)
	t.Logf("root from %s", root)
	fmt.Println("boot proof: unlocked by tang with no console input")
	r.oldDiskIsLeftover(t, ctx, vm)

	// Leave the tpm2 binding alone for the last boot (the one made from
	// the layout goes: cryptshift unlock remove, keyslot and token).
	r.unlock(t, ctx, vm, "remove tang --volume root_crypt")
	if err := vm.PowerOff(ctx, 3*time.Minute); err != nil {
		t.Fatal(err)
	}
	return disks
}

func (r *moveRun) fallback(t *testing.T, ctx context.Context, s1 [2]string) {
	r.tang.Stop()
	t.Cleanup(func() { r.startTang(t) })
	before := r.tang.Requests()
	vm, _ := r.bootMoved(t, ctx, "fallback", s1, true, nil)
	tl := newTimeline(t, vm)
	tl.expect(ctx, kernelStarted, "kernel")
	tl.expect(ctx, UnlockPrompt, "prompt")
	// Clevis retries every few seconds; give it time to fail for real.
	if _, err := vm.Console.Expect(ctx, Unlocked, 45*time.Second); err == nil {
		t.Fatal("clevis unlocked the root although tang was stopped")
	}
	tl.mark("still locked after 45s")
	if err := vm.Console.SendSecret(testPassphrase); err != nil {
		t.Fatal(err)
	}
	tl.multiUser(ctx)
	if n := r.tang.Requests() - before; n != 0 {
		t.Fatalf("tang answered %d requests while stopped", n)
	}
	root := r.checkSystem(t, ctx, vm)
	n := r.volumes(t, ctx, vm)
	fmt.Printf("boot proof: %d volumes unlocked, root from %s, unlocked by console passphrase\n", n, root)
	fmt.Println("boot proof: fell back to the passphrase when tang was unreachable")
	if err := vm.PowerOff(ctx, 3*time.Minute); err != nil {
		t.Fatal(err)
	}
}

func (r *moveRun) tpm2(t *testing.T, ctx context.Context, s2 [2]string) {
	vm, _ := r.autoUnlock(t, ctx, "tpm2", s2, false, true)
	root := r.checkSystem(t, ctx, vm)
	if _, err := vm.SSH.Run(ctx, "dev=$(cryptsetup status root_crypt | awk '$1==\"device:\"{print $2}'); clevis luks list -d \"$dev\" | grep -q tpm2 && ! clevis luks list -d \"$dev\" | grep -q tang", nil); err != nil {
		t.Fatalf("the root volume is not bound to tpm2 alone: %v", err)
	}
	t.Logf("root from %s", root)
	fmt.Println("boot proof: unlocked by tpm2 with no console input")
	if err := vm.PowerOff(ctx, 3*time.Minute); err != nil {
		t.Fatal(err)
	}
}

// checkSystem checks the booted moved system and returns the root's
// source: every filesystem of the layout from its crypt mapping, swap on
// the random-key mapping, /tmp a tmpfs, the old disk absent, the mail
// services up and alice's mails there.
func (r *moveRun) checkSystem(t *testing.T, ctx context.Context, vm *VM) string {
	t.Helper()
	want := map[string]string{"/": "/dev/mapper/root_crypt", "/var": "/dev/mapper/var_crypt", "/var/vmail": "/dev/mapper/vmail_crypt", "/tmp": "tmpfs"}
	for mnt, src := range want {
		out, err := vm.SSH.Run(ctx, "findmnt -no SOURCE "+mnt, nil)
		if err != nil || strings.TrimSpace(out) != src {
			t.Errorf("%s is mounted from %q (%v), want %s", mnt, strings.TrimSpace(out), err, src)
		}
	}
	checks := []struct{ what, cmd string }{
		{"swap is on swap_crypt, a plain (random key) mapping",
			`test "$(swapon --show=NAME --noheadings)" = "$(readlink -f /dev/mapper/swap_crypt)" && cryptsetup status swap_crypt | grep -q 'type:.*PLAIN'`},
		{"root, var and vmail are LUKS2 on LVs of vg0",
			`for v in root var vmail; do cryptsetup status ${v}_crypt | grep -q 'type:.*LUKS2' && cryptsetup status ${v}_crypt | grep -q "device:.*/dev/mapper/vg0-$v" || exit 1; done`},
		oldDiskCheck(vm),
		{"postfix, dovecot and sshd are active", `systemctl is-active postfix dovecot ssh`},
	}
	for _, c := range checks {
		if out, err := vm.SSH.Run(ctx, c.cmd, nil); err != nil {
			t.Errorf("check failed: %s: %v\n%s", c.what, err, out)
		}
	}
	if n := mailCount(t, ctx, vm); n != r.mails {
		t.Errorf("doveadm fetch counts %d mails for alice, want the %d she had when the old host was moved", n, r.mails)
	}
	if t.Failed() {
		t.FailNow()
	}
	return "/dev/mapper/root_crypt"
}

// oldDiskCheck is checkSystem's check of the old plaintext disk: not
// attached to a boot from the new disks alone; where a boot attaches it
// again, nothing mounted or swapping from it.
func oldDiskCheck(vm *VM) struct{ what, cmd string } {
	for _, d := range vm.M.Disks {
		if d.Serial == "oldroot" {
			return struct{ what, cmd string }{"the old plaintext disk is attached but nothing uses it",
				`old=$(readlink -f /dev/disk/by-id/virtio-oldroot) && test -b "$old" && ! grep -q "^$old " /proc/mounts && ! swapon --show=NAME --noheadings | grep -qx "$old"`}
		}
	}
	return struct{ what, cmd string }{"the old plaintext disk is not attached", `test ! -e /dev/disk/by-id/virtio-oldroot`}
}

// oldDiskIsLeftover runs verify in a booted moved system that has the old
// plaintext disk attached and requires it to be reported as a plaintext
// leftover (storage.leftover FAIL) with how to retire it.
func (r *moveRun) oldDiskIsLeftover(t *testing.T, ctx context.Context, vm *VM) {
	t.Helper()
	if err := vm.SSH.CopyFile(ctx, r.bin, treeBinary, 0o755); err != nil {
		t.Fatal(err)
	}
	dev, err := vm.SSH.Run(ctx, "readlink -f /dev/disk/by-id/virtio-oldroot", nil)
	if err != nil {
		t.Fatal(err)
	}
	dev = strings.TrimSpace(dev)
	// verify exits 1 here (the leftover is a FAIL): the report says so.
	out, err := vm.SSH.Run(ctx, treeBinary+" verify -o json 2>/dev/null; true", nil)
	if err != nil {
		t.Fatal(err)
	}
	_ = os.WriteFile(filepath.Join(r.dir, "verify-old-disk.json"), []byte(out), 0o644)
	var rep struct {
		Checks []struct{ ID, Status, Subject, Fix string }
	}
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("cannot read verify's JSON report: %v\n%s", err, lastLines(out, 20))
	}
	for _, c := range rep.Checks {
		if c.ID == "storage.leftover" && c.Status == "FAIL" && c.Subject == dev && strings.Contains(c.Fix, "wipefs") && strings.Contains(c.Fix, "blkdiscard") {
			fmt.Printf("host move proof: verify lists the old disk %s as a plaintext leftover, with how to retire it\n", dev)
			return
		}
	}
	t.Fatalf("verify does not report the old plaintext disk %s as storage.leftover FAIL with how to retire it (report in %s)", dev, filepath.Join(r.dir, "verify-old-disk.json"))
}

// cryptMappings are the dm-crypt mappings the mail-host layout's crypttab
// opens at boot: five LUKS2 volumes and the random-key swap.
var cryptMappings = []string{"guest-mx_crypt", "guest-web_crypt", "root_crypt", "swap_crypt", "var_crypt", "vmail_crypt"}

// volumes checks that exactly the layout's crypt mappings are active and
// returns how many there are. dmsetup prints "NAME\t(MAJOR, MINOR)", so
// only the first field of each line is a name.
func (r *moveRun) volumes(t *testing.T, ctx context.Context, vm *VM) int {
	t.Helper()
	out, err := vm.SSH.Run(ctx, "dmsetup ls --target crypt | cut -f1 | sort", nil)
	if err != nil {
		t.Fatal(err)
	}
	got := strings.Fields(out)
	if strings.Join(got, " ") != strings.Join(cryptMappings, " ") {
		t.Fatalf("active crypt mappings %q, want %q", got, cryptMappings)
	}
	return len(got)
}

func grepLines(s, prefix string) string {
	var keep []string
	for _, l := range strings.Split(s, "\n") {
		if strings.HasPrefix(l, prefix) {
			keep = append(keep, l)
		}
	}
	return strings.Join(keep, "\n")
}

// verifyInside runs the moved cryptshift's verify in the booted system and
// requires 0 FAIL; it logs each volume's unlock methods as verify reports
// them.
func (r *moveRun) verifyInside(t *testing.T, ctx context.Context, vm *VM) {
	t.Helper()
	// verify exits 1 on a FAIL and 2 when incomplete; the report says which.
	if err := vm.SSH.CopyFile(ctx, r.bin, treeBinary, 0o755); err != nil {
		t.Fatal(err)
	}
	out, err := vm.SSH.Run(ctx, treeBinary+" verify -o json >/run/verify.json 2>/run/verify.err; cat /run/verify.json; cat /run/verify.err >&2", nil)
	if err != nil {
		t.Fatalf("cannot run cryptshift verify in the booted host: %v\n%s", err, out)
	}
	_ = os.WriteFile(filepath.Join(r.dir, "verify-inside.json"), []byte(out), 0o644)
	var rep struct {
		Summary struct{ Pass, Warn, Fail, Skip int }
		Volumes []struct {
			Name   string   `json:"name"`
			Unlock []string `json:"unlock"`
		}
		Checks []struct {
			ID, Status, Subject string
		}
	}
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("cannot read verify's JSON report: %v\n%s", err, lastLines(out, 20))
	}
	for _, v := range rep.Volumes {
		t.Logf("verify: %s unlocks by: %s", v.Name, strings.Join(v.Unlock, "; "))
	}
	if rep.Summary.Fail != 0 {
		for _, c := range rep.Checks {
			if c.Status == "FAIL" {
				t.Errorf("verify FAIL: %s %s", c.ID, c.Subject)
			}
		}
		t.Fatalf("verify inside the booted host: %d FAIL (report in %s)", rep.Summary.Fail, filepath.Join(r.dir, "verify-inside.json"))
	}
	t.Logf("verify inside the booted host: %d PASS, %d WARN, %d SKIP", rep.Summary.Pass, rep.Summary.Warn, rep.Summary.Skip)
	fmt.Printf("boot proof: verify inside the booted host: %d FAIL\n", rep.Summary.Fail)
}
