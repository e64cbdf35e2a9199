package migrate_test

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"libvirt.org/go/libvirtxml"

	"github.com/cryptshift/cryptshift/internal/harness/libvirttest"
	"github.com/cryptshift/cryptshift/internal/harness/testtier"
	"github.com/cryptshift/cryptshift/internal/harness/vmtest"
	"github.com/cryptshift/cryptshift/internal/runner/engine"
	"github.com/cryptshift/cryptshift/internal/runner/migrate"
	"github.com/cryptshift/cryptshift/libvirt"
	"github.com/cryptshift/cryptshift/luks"
)

// The VM tier for vg: targets: real LVM and dm-crypt on loop devices, a
// real libvirtd started inside the guest, and the real cryptshift binary.

const vgDiskSize = 16 << 20

// oldMarker is what the target VG's disk held before (a disk's past):
// none of it may survive in the migrated LVs.
const oldMarker = "OLD-PLAINTEXT-FROM-THE-DISKS-PAST "

// vmCLI is the cryptshift binary the guest runs. The host builds it before
// booting, under the repository's .cache/ (ignored by git), which the
// guest sees at the same path: building under TCG would take minutes.
func vmCLI(t *testing.T) string {
	t.Helper()
	bin, err := filepath.Abs("../../../.cache/bin/cryptshift-migrate-vm")
	if err != nil {
		t.Fatal(err)
	}
	if testtier.InVM() {
		if _, err := os.Stat(bin); err != nil {
			t.Fatalf("the host did not build %s: %v", bin, err)
		}
		return bin
	}
	vmCLIOnce.Do(func() {
		if vmCLIErr = os.MkdirAll(filepath.Dir(bin), 0o755); vmCLIErr != nil {
			return
		}
		tmp := fmt.Sprintf("%s.%d", bin, os.Getpid())
		if out, err := exec.Command("go", "build", "-o", tmp, "github.com/cryptshift/cryptshift/cmd/cryptshift").CombinedOutput(); err != nil {
			vmCLIErr = fmt.Errorf("%v\n%s", err, out)
			return
		}
		vmCLIErr = os.Rename(tmp, bin)
	})
	if vmCLIErr != nil {
		t.Fatalf("cannot build cryptshift: %v", vmCLIErr)
	}
	return bin
}

var (
	vmCLIOnce sync.Once
	vmCLIErr  error
)

// sh runs a command in the guest and returns its standard output.
func sh(t *testing.T, stdin []byte, prog string, args ...string) string {
	t.Helper()
	cmd := exec.Command(prog, args...)
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s %s: %v\n%s%s", prog, strings.Join(args, " "), err, out.String(), errb.String())
	}
	return out.String()
}

func sha(t *testing.T, path string, n int64) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	buf := make([]byte, 1<<20)
	for done := int64(0); done < n; {
		k, err := f.ReadAt(buf[:min(int64(len(buf)), n-done)], done)
		h.Write(buf[:k])
		done += int64(k)
		if err != nil && done < n {
			t.Fatalf("read %s: %v", path, err)
		}
	}
	return hex.EncodeToString(h.Sum(nil))
}

// countIn counts the occurrences of a pattern in a whole file or device.
func countIn(t *testing.T, path string, pattern []byte) int {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return bytes.Count(b, pattern)
}

// guestLibvirtd is libvirtd and virtlogd started in the guest the plain
// way: with the guest's own /etc/libvirt, /run/libvirt and /var/lib/libvirt
// (all in its throwaway overlay root). libvirttest's private daemon does
// not start in the VM: it enters its mount namespace with nsenter --mount,
// and setns(2) puts the process at the namespace's real root, outside the
// chroot the guest runs tests in, where there is no libvirtd to execute.
type guestLibvirtd struct {
	socket string
	done   map[int]chan struct{}
}

const guestQemuConf = `user = "root"
group = "root"
namespaces = []
cgroup_controllers = []
security_driver = "none"
`

func startGuestLibvirtd(t *testing.T) *guestLibvirtd {
	t.Helper()
	must(t, libvirttest.EnsureUsers())
	dir := t.TempDir()
	for _, d := range []string{"/etc/libvirt", "/run/libvirt", "/var/lib/libvirt/qemu", "/var/log/libvirt/qemu", "/var/cache/libvirt"} {
		must(t, os.MkdirAll(d, 0o755))
	}
	// ENVIRONMENT.md's settings: qemu as root, no cgroups, namespaces or
	// security driver (there is no systemd in the guest).
	must(t, os.WriteFile("/etc/libvirt/qemu.conf", []byte(guestQemuConf), 0o644))
	conf := filepath.Join(dir, "libvirtd.conf")
	must(t, os.WriteFile(conf, []byte("unix_sock_rw_perms = \"0700\"\nauth_unix_rw = \"none\"\nauth_unix_ro = \"none\"\n"), 0o644))
	g := &guestLibvirtd{socket: "/run/libvirt/libvirt-sock", done: map[int]chan struct{}{}}
	spawn := func(name string, args ...string) int {
		log, err := os.Create(filepath.Join(dir, name+".log"))
		must(t, err)
		cmd := exec.Command(name, args...)
		cmd.Stdout, cmd.Stderr = log, log
		must(t, cmd.Start())
		done := make(chan struct{})
		go func() { cmd.Wait(); log.Close(); close(done) }()
		g.done[cmd.Process.Pid] = done
		t.Cleanup(func() {
			cmd.Process.Signal(os.Interrupt)
			select {
			case <-done:
			case <-time.After(15 * time.Second):
				cmd.Process.Kill()
				<-done
			}
		})
		return cmd.Process.Pid
	}
	spawn("virtlogd", "--pid-file", filepath.Join(dir, "virtlogd.pid"))
	lvd := spawn("libvirtd", "--config", conf, "--pid-file", filepath.Join(dir, "libvirtd.pid"))
	deadline := time.Now().Add(60 * time.Second)
	for {
		if c, err := libvirt.Dial(g.socket); err == nil {
			c.Close()
			// Runs before the daemons stop (cleanups run last first): the
			// next test in the same boot starts without this one's domains.
			t.Cleanup(func() { g.forgetDomains(t) })
			return g
		}
		select {
		case <-g.done[lvd]:
			b, _ := os.ReadFile(filepath.Join(dir, "libvirtd.log"))
			t.Fatalf("libvirtd exited at start:\n%s", b)
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatal("libvirtd did not answer within 60s")
		}
	}
}

func (g *guestLibvirtd) forgetDomains(t *testing.T) {
	c, err := libvirt.Dial(g.socket)
	if err != nil {
		t.Logf("cleanup: %v", err)
		return
	}
	defer c.Close()
	names, _ := c.DomainNames()
	for _, n := range names {
		if st, err := c.DomainState(n); err == nil && st != libvirt.ShutOff {
			c.DestroyDomain(n)
		}
		exec.Command("virsh", "-c", "qemu:///system?socket="+g.socket, "undefine", n).Run()
	}
}

func (g *guestLibvirtd) virsh(t *testing.T, args ...string) string {
	t.Helper()
	return sh(t, nil, "virsh", append([]string{"-c", "qemu:///system?socket=" + g.socket}, args...)...)
}

type vgVM struct {
	t       *testing.T
	bin     string
	d       *guestLibvirtd
	c       *libvirt.Conn
	dir     string
	keyDir  string
	want    map[string]string // disk → sha256 of its guest-visible data before the migration
	wantRaw map[string]string // disk → plaintext reference image
	raw     string
	qcow2   string
	base    string
	srcLV   string
}

func (e *vgVM) cli(args ...string) (string, error) {
	cmd := exec.Command(e.bin, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.String(), err
}

func (e *vgVM) migrateArgs(journalPath, rkFile string, extra ...string) []string {
	return append([]string{"migrate", "mail", "--connect", e.d.socket, "--to", "vg:encvg", "--mode", "offline",
		"--yes", "--journal", journalPath, "--key-dir", e.keyDir, "--recovery-key-file", rkFile,
		"--pbkdf-force-iterations", "4", "--pbkdf-memory", "1024", "--pbkdf-parallel", "1", "--progress", "none"}, extra...)
}

// TestVMMigrateToVG migrates a shut-off domain with three disks (a raw
// image file, a qcow2 image with a backing file and a raw LV) onto LUKS2
// LVs with the real binary, then checks the result independently of
// cryptshift: data with cmp and sha256 through the mappings, headers with
// luks.go and cryptsetup luksDump, the key files and the recovery key
// against the headers, the crypttab entries by closing every mapping and
// opening it with systemd-cryptsetup from the line's fields alone, and
// that nothing of the target disk's past survives in the LVs. Rollback
// must give back the original definition and remove LVs (headers zeroed
// first), key files and the crypttab block; a second migration with
// --retire-source removes the plaintext sources, the LV by blkdiscard and
// lvremove.
func TestVMMigrateToVG(t *testing.T) {
	testtier.VM(t, "qemu-system-x86_64")
	bin := vmCLI(t)
	if !vmtest.InGuest(t) {
		return
	}
	start := time.Now()
	phase := func(what string) { t.Logf("%s done at %s", what, time.Since(start).Round(100*time.Millisecond)) }
	e := &vgVM{t: t, bin: bin, dir: t.TempDir(), want: map[string]string{}, wantRaw: map[string]string{}}
	var err error

	// The target VG on a disk that held plaintext before; the source VG;
	// the encrypted filesystem for key files on the spare virtio disk.
	loops := vmtest.LoopDevices(t, 112*vmtest.MiB, 40*vmtest.MiB)
	fillMarker(t, loops[0])
	sh(t, nil, "pvcreate", "-q", loops[0], loops[1])
	sh(t, nil, "vgcreate", "-q", "encvg", loops[0])
	sh(t, nil, "vgcreate", "-q", "srcvg", loops[1])
	t.Cleanup(func() { deactivate(t, "encvg", "srcvg") })
	e.keyDir = encryptedDir(t, "/dev/vda", filepath.Join(e.dir, "secure"))
	e.setupSources()
	phase("devices and sources")

	// libvirtd inside the guest (libvirt's packages are in the shared
	// host root); the domain is defined, not started.
	e.d = startGuestLibvirtd(t)
	e.c, err = libvirt.Dial(e.d.socket)
	must(t, err)
	t.Cleanup(func() { e.c.Close() })
	must(t, e.c.DefineDomain(e.domain()))
	before, err := e.c.DomainXML("mail", libvirt.XMLFlags{Inactive: true})
	must(t, err)
	beforeXML, _ := before.Marshal()
	// The guest's /etc is its own (a tmpfs overlay); put crypttab back as
	// it was for the next test in the same boot.
	oldTab, tabErr := os.ReadFile("/etc/crypttab")
	t.Cleanup(func() {
		if tabErr != nil {
			os.Remove("/etc/crypttab")
		} else {
			os.WriteFile("/etc/crypttab", oldTab, 0o644)
		}
		files, _ := filepath.Glob("/etc/crypttab.cryptshift-*")
		for _, f := range files {
			os.Remove(f)
		}
	})
	adminTab := "# admin's own line\nhome_crypt UUID=0000 none luks\n"
	must(t, os.WriteFile("/etc/crypttab", []byte(adminTab), 0o644))
	phase("libvirtd and domain")

	// Bad input first: the default key directory is on the guest's
	// overlay root (tmpfs), not encrypted storage: refused, nothing made.
	j1 := filepath.Join(e.dir, "j1", "mail.journal")
	rk1 := filepath.Join(e.dir, "rk1")
	args := e.migrateArgs(j1, rk1)
	for i, a := range args {
		if a == "--key-dir" {
			args = append(args[:i:i], args[i+2:]...)
			break
		}
	}
	if out, err := e.cli(args...); err == nil || !strings.Contains(out, "the key directory /etc/cryptsetup-keys.d is on") || !strings.Contains(out, "--key-dir") {
		t.Fatalf("a key directory on the overlay root: %v\n%s", err, out)
	}
	if _, err := os.Stat(rk1); !os.IsNotExist(err) {
		t.Fatal("a refused migration wrote the recovery key file")
	}
	// --dry-run changes nothing either.
	if out, err := e.cli(append(e.migrateArgs(j1, rk1), "--dry-run")...); err != nil || !strings.Contains(out, `"luks-format"`) {
		t.Fatalf("dry-run: %v\n%s", err, out)
	}
	if lvs := strings.TrimSpace(sh(t, nil, "lvs", "--noheadings", "-o", "lv_name", "encvg")); lvs != "" {
		t.Fatalf("refused or dry runs created LVs: %s", lvs)
	}

	// The migration.
	stop := vmtest.WatchCmdlines()
	t0 := time.Now()
	out, err := e.cli(e.migrateArgs(j1, rk1)...)
	cmdlines := stop()
	if err != nil {
		t.Fatalf("migrate: %v\n%s", err, out)
	}
	t.Logf("migrate took %s under TCG:\n%s", time.Since(t0).Round(100*time.Millisecond), out)
	phase("migration")
	h := readJournalHeader(t, j1, 3)
	recovery := bytes.TrimSpace(readFileT(t, rk1))
	e.checkDefinition(t, h)
	e.checkData(t, h)
	e.checkHeaders(t, h, recovery)
	e.checkSecrets(t, h, j1, out, cmdlines, recovery)
	e.checkCrypttab(t, h, adminTab)
	phase("checks")

	// Rollback through the CLI: the original definition back, every
	// object of the migration gone, the sources untouched.
	if out, err := e.cli("rollback", j1); err != nil {
		t.Fatalf("rollback: %v\n%s", err, out)
	}
	after, err := e.c.DomainXML("mail", libvirt.XMLFlags{Inactive: true})
	must(t, err)
	afterXML, _ := after.Marshal()
	if afterXML != beforeXML {
		t.Errorf("definition after rollback:\n%s\nwant:\n%s", afterXML, beforeXML)
	}
	if lvs := strings.TrimSpace(sh(t, nil, "lvs", "--noheadings", "-o", "lv_name", "encvg")); lvs != "" {
		t.Errorf("LVs left after rollback: %s", lvs)
	}
	for _, d := range h.Disks {
		if _, err := os.Stat(d.TargetPath); !os.IsNotExist(err) {
			t.Errorf("%s left after rollback", d.TargetPath)
		}
		if _, err := os.Stat(d.KeyFile); !os.IsNotExist(err) {
			t.Errorf("%s left after rollback", d.KeyFile)
		}
	}
	if got := string(readFileT(t, "/etc/crypttab")); got != adminTab {
		t.Errorf("crypttab after rollback:\n%s\nwant:\n%s", got, adminTab)
	}
	// LVM does not clear freed extents: the headers must have been zeroed,
	// or the recovery key would still open the ciphertext left there.
	for _, magic := range []string{"LUKS\xba\xbe", "SKUL\xba\xbe"} {
		if n := countIn(t, loops[0], []byte(magic)); n != 0 {
			t.Errorf("%d LUKS header(s) (%q) left on %s after rollback", n, magic, loops[0])
		}
	}
	e.checkSourcesUnchanged(t)
	phase("rollback")

	// Again, retiring the sources: the image files are overwritten and
	// removed, the LV source discarded and removed.
	j2 := filepath.Join(e.dir, "j2", "mail.journal")
	out, err = e.cli(e.migrateArgs(j2, filepath.Join(e.dir, "rk2"), "--retire-source")...)
	if err != nil {
		t.Fatalf("migrate --retire-source: %v\n%s", err, out)
	}
	for _, p := range []string{e.raw, e.qcow2, e.base, e.srcLV} {
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			t.Errorf("%s was not retired: %v", p, err)
		}
	}
	if lvs := strings.TrimSpace(sh(t, nil, "lvs", "--noheadings", "-o", "lv_name", "srcvg")); lvs != "" {
		t.Errorf("source LVs left: %s", lvs)
	}
	for _, w := range []string{"discarded and removed logical volume srcvg/mail-c", "blkdiscard", "secure erase"} {
		if !strings.Contains(out, w) {
			t.Errorf("the output does not say %q:\n%s", w, out)
		}
	}
	h2 := readJournalHeader(t, j2, 3)
	e.checkData(t, h2)
	states := journalStates(t, j2)
	for _, d := range h2.Disks {
		if got := states[d.Target]; got != migrate.StateRetired {
			t.Errorf("%s: state %s, want %s", d.Target, got, migrate.StateRetired)
		}
	}
	phase("second migration with --retire-source")
}

// deactivate closes the crypt mappings on the VGs' LVs and deactivates the
// VGs, before the loop devices go: without udev, LVM removes its /dev/VG
// links itself only when it deactivates, and a later test in the same
// boot could not create a VG of the same name.
func deactivate(t *testing.T, vgs ...string) {
	maps, _ := filepath.Glob("/dev/mapper/*_crypt")
	for _, m := range maps {
		if filepath.Base(m) != "vmroot_crypt" {
			exec.Command("cryptsetup", "close", filepath.Base(m)).Run()
		}
	}
	if out, err := exec.Command("vgchange", append([]string{"-an"}, vgs...)...).CombinedOutput(); err != nil {
		t.Errorf("cleanup: vgchange -an: %v %s", err, out)
	}
}

// fillMarker writes the marker over a whole device: the disk's past.
func fillMarker(t *testing.T, dev string) {
	t.Helper()
	f, err := os.OpenFile(dev, os.O_WRONLY, 0)
	must(t, err)
	defer f.Close()
	buf := bytes.Repeat([]byte(oldMarker), (1<<20)/len(oldMarker)+1)[:1<<20]
	for {
		if _, err := f.Write(buf); err != nil {
			break // end of the device
		}
	}
	must(t, f.Sync())
}

// encryptedDir makes an ext4 filesystem on LUKS2 on dev, mounts it at dir
// and returns a key directory on it (the "encrypted root" of the host).
func encryptedDir(t *testing.T, dev, dir string) string {
	t.Helper()
	key := []byte("vm test: the key of the encrypted root")
	sh(t, key, "cryptsetup", "luksFormat", "--batch-mode", "--type", "luks2", "--pbkdf", "argon2id", "--pbkdf-force-iterations", "4",
		"--pbkdf-memory", "1024", "--pbkdf-parallel", "1", "--key-file", "-", dev)
	sh(t, key, "cryptsetup", "open", "--key-file", "-", dev, "vmroot_crypt")
	t.Cleanup(func() {
		exec.Command("umount", dir).Run()
		exec.Command("cryptsetup", "close", "vmroot_crypt").Run()
	})
	sh(t, nil, "mkfs.ext4", "-q", "/dev/mapper/vmroot_crypt")
	must(t, os.MkdirAll(dir, 0o755))
	sh(t, nil, "mount", "/dev/mapper/vmroot_crypt", dir)
	return filepath.Join(dir, "etc", "cryptsetup-keys.d")
}

// setupSources makes the three source disks with data in several places
// and a plaintext reference of each one's guest-visible content.
func (e *vgVM) setupSources() {
	t := e.t
	r := rand.New(rand.NewSource(42))
	noise := make([]byte, 3<<20)
	r.Read(noise)
	e.raw = filepath.Join(e.dir, "mail-a.raw")
	e.base = filepath.Join(e.dir, "mail-base.raw")
	e.qcow2 = filepath.Join(e.dir, "mail-b.qcow2")
	writeSparse(t, e.raw, vgDiskSize, map[int64][]byte{0: []byte("MAIL-VDA first sector"), 1 << 20: noise, vgDiskSize - 4096: []byte("MAIL-VDA last block")})
	writeSparse(t, e.base, vgDiskSize, map[int64][]byte{2 << 20: bytes.Repeat([]byte("MAIL-VDB base "), 20000)})
	sh(t, nil, "qemu-img", "create", "-q", "-f", "qcow2", "-b", e.base, "-F", "raw", e.qcow2, fmt.Sprint(vgDiskSize))
	sh(t, nil, "qemu-io", "-f", "qcow2", "-c", "write -P 0x43 5M 256k", "-c", "write -z 2M 64k", e.qcow2)
	sh(t, nil, "lvcreate", "-q", "--yes", "-n", "mail-c", "-L", "16m", "srcvg")
	e.srcLV = "/dev/srcvg/mail-c"
	f, err := os.OpenFile(e.srcLV, os.O_WRONLY, 0)
	must(t, err)
	f.WriteAt(bytes.Repeat([]byte("MAIL-VDC lv "), 100000), 4<<20)
	f.WriteAt(noise[:1<<20], 10<<20)
	must(t, f.Close())
	for dev, src := range map[string][]string{"vda": {"raw", e.raw}, "vdb": {"qcow2", e.qcow2}, "vdc": {"raw", e.srcLV}} {
		ref := filepath.Join(e.dir, dev+".want")
		sh(t, nil, "qemu-img", "convert", "-f", src[0], "-O", "raw", src[1], ref)
		e.wantRaw[dev] = ref
		e.want[dev] = sha(t, ref, vgDiskSize)
	}
}

func writeSparse(t *testing.T, path string, size int64, at map[int64][]byte) {
	t.Helper()
	f, err := os.Create(path)
	must(t, err)
	must(t, f.Truncate(size))
	for off, b := range at {
		_, err := f.WriteAt(b, off)
		must(t, err)
	}
	must(t, f.Close())
}

func (e *vgVM) domain() *libvirtxml.Domain {
	lvDisk := libvirtxml.DomainDisk{Device: "disk",
		Driver: &libvirtxml.DomainDiskDriver{Name: "qemu", Type: "raw"},
		Source: &libvirtxml.DomainDiskSource{Block: &libvirtxml.DomainDiskSourceBlock{Dev: e.srcLV}},
		Target: &libvirtxml.DomainDiskTarget{Dev: "vdc", Bus: "virtio"}}
	return libvirttest.Domain("mail",
		libvirttest.FileDisk("vda", e.raw, "raw"),
		libvirttest.FileDisk("vdb", e.qcow2, "qcow2"),
		lvDisk)
}

func readFileT(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func readJournalHeader(t *testing.T, path string, disks int) *migrate.Header {
	t.Helper()
	l, err := engine.Read(path)
	if err != nil {
		t.Fatal(err)
	}
	var h migrate.Header
	if json.Unmarshal(l.Header, &h) != nil || len(h.Disks) != disks {
		t.Fatalf("journal %s has no header with %d disks", path, disks)
	}
	return &h
}

func journalStates(t *testing.T, path string) map[string]string {
	t.Helper()
	l, err := engine.Read(path)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, raw := range l.Events {
		var s struct{ Event, Disk, State string }
		if json.Unmarshal(raw, &s) == nil && s.Event == "state" {
			out[s.Disk] = s.State
		}
	}
	return out
}

// checkDefinition: each disk is now a raw block disk on its mapping.
func (e *vgVM) checkDefinition(t *testing.T, h *migrate.Header) {
	t.Helper()
	dom, err := e.c.DomainXML("mail", libvirt.XMLFlags{Inactive: true})
	must(t, err)
	for _, dev := range []string{"vda", "vdb", "vdc"} {
		x := libvirt.FindDisk(dom, dev)
		want := "/dev/mapper/mail-" + dev + "_crypt"
		if x == nil || x.Source == nil || x.Source.Block == nil || x.Source.Block.Dev != want || x.Driver == nil || x.Driver.Type != "raw" ||
			x.Source.Encryption != nil || x.BackingStore != nil || x.Target.Bus != "virtio" {
			doc, _ := dom.Marshal()
			t.Fatalf("%s is not a raw block disk on %s:\n%s", dev, want, doc)
		}
	}
	xml := e.d.virsh(t, "dumpxml", "--inactive", "mail")
	if strings.Count(xml, "<disk type='block' device='disk'>") != 3 {
		t.Errorf("virsh dumpxml does not show three block disks:\n%s", xml)
	}
}

// checkData: the mappings, read through dm-crypt, hold each disk's data
// (cmp and sha256, independent of cryptshift's copier), are exactly the
// disk's size, and nothing of the target disk's past or of the plaintext
// is on the LVs themselves.
func (e *vgVM) checkData(t *testing.T, h *migrate.Header) {
	t.Helper()
	for _, d := range h.Disks {
		if size := strings.TrimSpace(sh(t, nil, "blockdev", "--getsize64", d.TargetPath)); size != fmt.Sprint(vgDiskSize) {
			t.Errorf("%s has %s bytes, want %d", d.TargetPath, size, vgDiskSize)
		}
		if out, err := exec.Command("cmp", d.TargetPath, e.wantRaw[d.Target]).CombinedOutput(); err != nil {
			t.Errorf("cmp %s %s: %v %s", d.TargetPath, e.wantRaw[d.Target], err, out)
		}
		if got := strings.Fields(sh(t, nil, "sha256sum", d.TargetPath))[0]; got != e.want[d.Target] {
			t.Errorf("%s: sha256 %s, want %s", d.TargetPath, got, e.want[d.Target])
		}
		lv := "/dev/" + d.TargetVolume
		for _, p := range []string{oldMarker, "MAIL-VD"} {
			if n := countIn(t, lv, []byte(p)); n != 0 {
				t.Errorf("%s holds %q %d times: plaintext on the encrypted volume", lv, p, n)
			}
		}
	}
}

// checkHeaders reads each LV's header with luks.go and with cryptsetup
// luksDump, and opens its keyslots with the key file and the recovery key.
func (e *vgVM) checkHeaders(t *testing.T, h *migrate.Header, recovery []byte) {
	t.Helper()
	for _, d := range h.Disks {
		lv := "/dev/" + d.TargetVolume
		argon := luks.KDF{PBKDF: "argon2id", Iterations: 4, MemoryKiB: 1024, Parallel: 1}
		want := luks.Params{Cipher: "aes-xts-plain64", KeySize: 512, SectorSize: 4096, UUID: d.LUKSUUID, Offset: d.DataOffset / 512}
		hdr, err := luks.ReadHeader(lv)
		must(t, err)
		if err := luks.CheckVolume(hdr, want); err != nil {
			t.Errorf("%s: %v", lv, err)
		}
		for slot, kdf := range []luks.KDF{argon, argon} {
			if err := luks.CheckKeyslot(hdr, slot, kdf); err != nil {
				t.Errorf("%s: %v", lv, err)
			}
		}
		dump := sh(t, nil, "cryptsetup", "luksDump", lv)
		for _, w := range []string{"Version:       \t2", "UUID:          \t" + d.LUKSUUID, "offset: " + fmt.Sprint(d.DataOffset) + " [bytes]",
			"cipher: aes-xts-plain64", "sector: 4096 [bytes]", "  0: luks2", "  1: luks2", "PBKDF:      argon2id"} {
			if !strings.Contains(dump, w) {
				t.Errorf("%s: luksDump lacks %q:\n%s", lv, w, dump)
			}
		}
		if strings.Contains(dump, "  2: luks2") {
			t.Errorf("%s has more than two keyslots", lv)
		}
		st, err := os.Stat(d.KeyFile)
		must(t, err)
		if st.Mode().Perm() != 0o400 || st.Size() != 4096 || filepath.Dir(d.KeyFile) != e.keyDir {
			t.Errorf("key file %s: mode %v, %d bytes", d.KeyFile, st.Mode(), st.Size())
		}
		if slot, err := luks.Unseal(lv, readFileT(t, d.KeyFile)); err != nil || slot != 0 {
			t.Errorf("%s: the key file opens slot %d: %v", lv, slot, err)
		}
		if slot, err := luks.Unseal(lv, recovery); err != nil || slot != 1 {
			t.Errorf("%s: the recovery key opens slot %d: %v", lv, slot, err)
		}
		sh(t, recovery, "cryptsetup", "open", "--test-passphrase", "--key-file", "-", lv)
	}
	st, err := os.Stat(e.keyDir)
	must(t, err)
	if st.Mode().Perm() != 0o700 {
		t.Errorf("key directory mode %v", st.Mode())
	}
}

// checkSecrets: no key file and no recovery key in any process's command
// line, the journal, the saved definition or cryptshift's output.
func (e *vgVM) checkSecrets(t *testing.T, h *migrate.Header, journalPath, out string, cmdlines []string, recovery []byte) {
	t.Helper()
	sawFormat := false
	for _, c := range cmdlines {
		sawFormat = sawFormat || strings.Contains(c, "luksFormat")
	}
	if !sawFormat {
		t.Fatalf("the command line watcher saw no luksFormat among %d command lines", len(cmdlines))
	}
	secrets := map[string][]byte{"recovery key": recovery}
	for _, d := range h.Disks {
		k := readFileT(t, d.KeyFile)
		secrets["key file of "+d.Target] = k[:64]
		secrets["key file of "+d.Target+" (hex)"] = []byte(hex.EncodeToString(k[:32]))
	}
	places := map[string][]byte{"command lines": []byte(strings.Join(cmdlines, "\n")), "output": []byte(out),
		"journal": readFileT(t, journalPath), "saved definition": readFileT(t, h.OrigXMLPath)}
	for what, s := range secrets {
		for where, b := range places {
			if bytes.Contains(b, s) {
				t.Errorf("the %s is in the %s", what, where)
			}
		}
	}
}

// checkCrypttab closes every mapping and opens it again from its crypttab
// line alone, with systemd-cryptsetup (what opens it at boot): the device
// from the UUID= field (blkid resolves it, as udev's by-uuid link would),
// the key file field and the options field; then the data must still be
// there.
func (e *vgVM) checkCrypttab(t *testing.T, h *migrate.Header, adminTab string) {
	t.Helper()
	tab := string(readFileT(t, "/etc/crypttab"))
	if !strings.HasPrefix(tab, adminTab) {
		t.Errorf("the admin's lines are gone from crypttab:\n%s", tab)
	}
	begin := strings.Index(tab, "# BEGIN cryptshift migrate mail\n")
	end := strings.Index(tab, "# END cryptshift migrate mail\n")
	if begin < 0 || end < begin {
		t.Fatalf("crypttab has no migrate block:\n%s", tab)
	}
	var lines [][]string
	sc := bufio.NewScanner(strings.NewReader(tab[begin:end]))
	for sc.Scan() {
		if f := strings.Fields(sc.Text()); len(f) > 0 && !strings.HasPrefix(f[0], "#") {
			lines = append(lines, f)
		}
	}
	if len(lines) != len(h.Disks) {
		t.Fatalf("crypttab block has %d entries:\n%s", len(lines), tab)
	}
	sort.Slice(lines, func(i, j int) bool { return lines[i][0] < lines[j][0] })
	for i, f := range lines {
		d := h.Disks[i]
		if len(f) != 4 || f[0] != d.Mapping || f[1] != "UUID="+d.LUKSUUID || f[2] != d.KeyFile || f[3] != "luks" {
			t.Errorf("crypttab entry %q, want %s UUID=%s %s luks", strings.Join(f, " "), d.Mapping, d.LUKSUUID, d.KeyFile)
			continue
		}
		sh(t, nil, "cryptsetup", "close", f[0])
		dev := strings.TrimSpace(sh(t, nil, "blkid", "-U", strings.TrimPrefix(f[1], "UUID=")))
		sh(t, nil, "/lib/systemd/systemd-cryptsetup", "attach", f[0], dev, f[2], f[3])
		if got := sha(t, "/dev/mapper/"+f[0], vgDiskSize); got != e.want[d.Target] {
			t.Errorf("%s reopened from crypttab: sha256 %s, want %s", f[0], got, e.want[d.Target])
		}
	}
}

func (e *vgVM) checkSourcesUnchanged(t *testing.T) {
	t.Helper()
	for dev, src := range map[string][]string{"vda": {"raw", e.raw}, "vdb": {"qcow2", e.qcow2}, "vdc": {"raw", e.srcLV}} {
		if out, err := exec.Command("qemu-img", "compare", "-f", src[0], "-F", "raw", src[1], e.wantRaw[dev]).CombinedOutput(); err != nil {
			t.Errorf("%s changed: %v %s", src[1], err, out)
		}
	}
}

// TestVMMigrateToVGLive migrates a running domain (nested TCG, no OS: the
// firmware idles) to vg: in live mode: the overlays that take the guest's
// writes meanwhile are qemu-encrypted qcow2 files on the encrypted
// filesystem, the guest never stops and ends on the mappings; a write the
// guest makes afterwards (qemu-io through the monitor) lands on the
// mapping; a live rollback brings the guest back onto its sources with
// that write, and removes LVs, key files, overlays and secrets.
func TestVMMigrateToVGLive(t *testing.T) {
	testtier.VM(t, "qemu-system-x86_64")
	bin := vmCLI(t)
	if !vmtest.InGuest(t) {
		return
	}
	start := time.Now()
	phase := func(what string) { t.Logf("%s done at %s", what, time.Since(start).Round(100*time.Millisecond)) }
	e := &vgVM{t: t, bin: bin, dir: t.TempDir(), want: map[string]string{}, wantRaw: map[string]string{}}
	loops := vmtest.LoopDevices(t, 72*vmtest.MiB)
	sh(t, nil, "pvcreate", "-q", loops[0])
	sh(t, nil, "vgcreate", "-q", "livevg", loops[0])
	t.Cleanup(func() { deactivate(t, "livevg") })
	secure := filepath.Join(e.dir, "secure")
	e.keyDir = encryptedDir(t, "/dev/vda", secure)
	overlays := filepath.Join(secure, "var", "lib", "cryptshift", "overlays")
	e.setupFileSources()
	// No /dev/fd here (udev and systemd make that symlink; the guest's bare
	// devtmpfs lacks it): qemuimg and luks pass secrets as /proc/self/fd/N.
	e.d = startGuestLibvirtd(t)
	c, err := libvirt.Dial(e.d.socket)
	must(t, err)
	e.c = c
	t.Cleanup(func() { c.Close() })
	dom := libvirttest.Domain("mail", libvirttest.FileDisk("vda", e.raw, "raw"), libvirttest.FileDisk("vdb", e.qcow2, "qcow2"))
	must(t, c.DefineDomain(dom))
	must(t, c.StartDomain("mail"))
	t.Cleanup(func() { c.DestroyDomain("mail") })
	liveBefore := e.d.virsh(t, "domblklist", "mail")
	phase("setup, domain running")

	j := filepath.Join(e.dir, "j", "mail.journal")
	args := e.migrateArgs(j, filepath.Join(e.dir, "rk"), "--overlay-dir", overlays, "--crypttab", filepath.Join(secure, "etc", "crypttab"))
	for i, a := range args {
		switch a {
		case "offline":
			args[i] = "live"
		case "vg:encvg":
			args[i] = "vg:livevg"
		}
	}
	out, err := e.cli(args...)
	if err != nil {
		t.Fatalf("migrate: %v\n%s", err, out)
	}
	t.Logf("live migration output:\n%s", out)
	phase("live migration")
	if st, err := c.DomainState("mail"); err != nil || st != libvirt.Running {
		t.Fatalf("the guest is %s (%v)", st, err)
	}
	h := readJournalHeader(t, j, 2)
	for _, inactive := range []bool{false, true} {
		x, err := c.DomainXML("mail", libvirt.XMLFlags{Inactive: inactive})
		must(t, err)
		for _, d := range h.Disks {
			if chain := libvirt.Chain(libvirt.FindDisk(x, d.Target)); len(chain) != 1 || chain[0] != d.TargetPath {
				t.Errorf("%s (inactive=%v): chain %v, want [%s]", d.Target, inactive, chain, d.TargetPath)
			}
		}
	}
	for _, d := range h.Disks {
		if got := sha(t, d.TargetPath, vgDiskSize); got != e.want[d.Target] {
			t.Errorf("%s: sha256 %s, want %s", d.TargetPath, got, e.want[d.Target])
		}
	}
	if ents, _ := os.ReadDir(overlays); len(ents) != 0 {
		t.Errorf("overlays left: %v", ents)
	}
	if s, err := c.SecretUUIDs(); err != nil || len(s) != 0 {
		t.Errorf("libvirt secrets left: %v %v", s, err)
	}
	if !strings.Contains(out, "overlays in "+overlays+" (checked to be on encrypted storage)") {
		t.Errorf("the output does not say where the overlays were:\n%s", out)
	}

	// The running guest writes to its disk, now the mapping.
	// HMP's qemu-io writes through the guest's disk device (its virtio
	// backend holds the block backend), like the guest would.
	hmp := e.d.virsh(t, "qemu-monitor-command", "mail", "--hmp", `qemu-io -d virtio-disk0/virtio-backend "write -P 0x77 1M 64k"`)
	if strings.Contains(hmp, "rror") { // qemu-io's own report goes to qemu's log, not the monitor
		t.Fatalf("qemu-io: %s", hmp)
	}
	pattern := bytes.Repeat([]byte{0x77}, 64<<10)
	if got := readAt(t, "/dev/mapper/mail-vda_crypt", 1<<20, 64<<10); !bytes.Equal(got, pattern) {
		t.Fatal("the guest's write is not on the mapping")
	}
	phase("checks")

	if out, err := e.cli("rollback", j); err != nil {
		t.Fatalf("rollback: %v\n%s", err, out)
	}
	phase("live rollback")
	if st, err := c.DomainState("mail"); err != nil || st != libvirt.Running {
		t.Fatalf("after rollback the guest is %s (%v)", st, err)
	}
	if got := e.d.virsh(t, "domblklist", "mail"); got != liveBefore {
		t.Errorf("domblklist after rollback:\n%s\nwant:\n%s", got, liveBefore)
	}
	if got := readAt(t, e.raw, 1<<20, 64<<10); !bytes.Equal(got, pattern) {
		t.Error("the guest's write after the migration did not come back to the source")
	}
	if lvs := strings.TrimSpace(sh(t, nil, "lvs", "--noheadings", "-o", "lv_name", "livevg")); lvs != "" {
		t.Errorf("LVs left after rollback: %s", lvs)
	}
	keys, _ := filepath.Glob(filepath.Join(e.keyDir, "*"))
	ovl, _ := os.ReadDir(overlays)
	if len(keys) != 0 || len(ovl) != 0 {
		t.Errorf("left after rollback: key files %v, overlays %v", keys, ovl)
	}
	if s, err := c.SecretUUIDs(); err != nil || len(s) != 0 {
		t.Errorf("libvirt secrets left: %v %v", s, err)
	}
}

// setupFileSources makes the raw and the qcow2 source of the live test.
func (e *vgVM) setupFileSources() {
	t := e.t
	e.raw = filepath.Join(e.dir, "mail-a.raw")
	e.base = filepath.Join(e.dir, "mail-base.raw")
	e.qcow2 = filepath.Join(e.dir, "mail-b.qcow2")
	writeSparse(t, e.raw, vgDiskSize, map[int64][]byte{0: []byte("MAIL-VDA first sector"), 6 << 20: bytes.Repeat([]byte("MAIL-VDA "), 50000)})
	writeSparse(t, e.base, vgDiskSize, map[int64][]byte{2 << 20: bytes.Repeat([]byte("MAIL-VDB base "), 20000)})
	sh(t, nil, "qemu-img", "create", "-q", "-f", "qcow2", "-b", e.base, "-F", "raw", e.qcow2, fmt.Sprint(vgDiskSize))
	sh(t, nil, "qemu-io", "-f", "qcow2", "-c", "write -P 0x43 5M 256k", e.qcow2)
	for dev, src := range map[string][]string{"vda": {"raw", e.raw}, "vdb": {"qcow2", e.qcow2}} {
		ref := filepath.Join(e.dir, dev+".want")
		sh(t, nil, "qemu-img", "convert", "-f", src[0], "-O", "raw", src[1], ref)
		e.wantRaw[dev] = ref
		e.want[dev] = sha(t, ref, vgDiskSize)
	}
}

func readAt(t *testing.T, path string, off int64, n int) []byte {
	t.Helper()
	f, err := os.Open(path)
	must(t, err)
	defer f.Close()
	b := make([]byte, n)
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatalf("read %s: %v", path, err)
	}
	return b
}
