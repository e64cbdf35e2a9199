package migrate

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cryptshift/cryptshift/internal/doors/execx"
	"github.com/cryptshift/cryptshift/internal/doors/files"
	"github.com/cryptshift/cryptshift/internal/exitcode"
	"github.com/cryptshift/cryptshift/internal/runner/engine"
	"github.com/cryptshift/cryptshift/libvirt"
	"github.com/cryptshift/cryptshift/luks"
)

const testRecoveryKey = "RECOV-ERYKE-YFORT-HEUNI-TTEST-SONLY-00000-11111"

// vgFixture is the fake domain of newFixture migrated to vg:vg0, with a
// fake host (fakeSys) under dir/root, key files in dir/keys and crypttab
// in dir/etc/crypttab. The raw disk vda is a real 32 MiB sparse file with
// data, so the copier runs for real; vdb (qcow2) goes through the
// recorded qemu-img.
type vgFixture struct {
	*fixture
	sys        *fakeSys
	recoveries int // how often the recovery key was asked for
}

func newVGFixture(t *testing.T, state libvirt.State, mode string) *vgFixture {
	t.Helper()
	f := &vgFixture{fixture: newFixture(t, state, mode)}
	f.sys = newFakeSys(t, filepath.Join(f.dir, "root"), 100)
	fh, err := os.OpenFile(f.raw, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	fh.Truncate(32 << 20)
	fh.WriteAt(bytes.Repeat([]byte("mail vda "), 5000), 1<<20)
	fh.WriteAt([]byte("last block of vda"), 32<<20-4096)
	fh.Close()
	f.opts.To = "vg:vg0"
	f.opts.KeyDir = filepath.Join(f.dir, "keys")
	f.opts.Crypttab = filepath.Join(f.dir, "etc", "crypttab")
	f.opts.OverlayDir = filepath.Join(f.dir, "overlays")
	f.opts.Runner = f.sys
	f.opts.Root = f.sys.root
	f.opts.PBKDFIterations, f.opts.PBKDFMemoryKiB, f.opts.PBKDFParallel = 4, 1024, 1
	f.opts.RecoveryKey = func(resume bool, file string) ([]byte, error) {
		f.recoveries++
		return []byte(testRecoveryKey), nil
	}
	return f
}

func (f *vgFixture) rollback(t *testing.T) error {
	t.Helper()
	return Rollback(context.Background(), f.opts.JournalPath, RollbackOptions{Hypervisor: f.hv, Images: f.img, Out: f.out,
		Runner: f.sys, Root: f.sys.root})
}

// mutatingCommands are the recorded cryptsetup/lvm commands that change
// something (everything but reports).
func (f *vgFixture) mutatingCommands() []string {
	var out []string
	for _, l := range f.sys.lines() {
		if !strings.HasPrefix(l, "lvm vgs") && !strings.HasPrefix(l, "lvm lvs") {
			out = append(out, f.scrub(l))
		}
	}
	return out
}

// checkNoVGSecret asserts that neither a key file's bytes nor the recovery
// key appear in any argv, the journal, the saved definition or the output,
// and that the secrets went where they belong (stdin, fd 3).
func (f *vgFixture) checkNoVGSecret(t *testing.T) {
	t.Helper()
	secrets := map[string][]byte{"recovery key": []byte(testRecoveryKey)}
	keys, _ := filepath.Glob(filepath.Join(f.opts.KeyDir, "*.key"))
	for _, k := range keys {
		b, err := os.ReadFile(k)
		if err != nil {
			t.Fatal(err)
		}
		secrets[k] = b
		secrets[k+" (hex)"] = []byte(hex.EncodeToString(b))
	}
	j, _ := os.ReadFile(f.opts.JournalPath)
	orig, _ := os.ReadFile(strings.TrimSuffix(f.opts.JournalPath, ".journal") + ".orig.xml")
	hay := map[string][]byte{"journal": j, "saved definition": orig, "output": f.out.Bytes(),
		"cryptsetup/lvm argv": []byte(strings.Join(f.sys.lines(), "\n")), "qemu-img argv": []byte(strings.Join(f.img.rec.Lines(), "\n"))}
	for what, s := range secrets {
		for where, h := range hay {
			if bytes.Contains(h, s[:min(len(s), 32)]) {
				t.Errorf("the %s is in the %s", what, where)
			}
		}
	}
	for _, c := range f.sys.cmds {
		if c.Tool == "cryptsetup" && strings.HasPrefix(c.Args[0], "luksAddKey") && (len(c.ExtraFiles) != 1 || string(c.ExtraFiles[0]) != testRecoveryKey) {
			t.Errorf("luksAddKey did not get the recovery key on fd 3")
		}
	}
}

func TestVGDryRunGolden(t *testing.T) {
	tests := []struct {
		name   string
		state  libvirt.State
		mode   string
		adjust func(o *Options)
	}{
		{name: "vg-offline", state: libvirt.ShutOff, mode: ModeOffline, adjust: func(o *Options) { o.RecoveryKeyFile = "/media/usb/recovery.key" }},
		{name: "vg-live", state: libvirt.Running, mode: ModeLive},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newVGFixture(t, tt.state, tt.mode)
			f.opts.DryRun = true
			if tt.adjust != nil {
				tt.adjust(&f.opts)
			}
			res, err := Run(context.Background(), f.opts)
			if err != nil {
				t.Fatal(err)
			}
			got := checkDryRunGolden(t, tt.name, res, f.scrub)
			if m := f.mutatingCommands(); len(m) != 0 {
				t.Errorf("dry-run ran %v", m)
			}
			if m := f.hv.mutations(); len(m) != 0 {
				t.Errorf("dry-run changed libvirt: %v", m)
			}
			if f.recoveries != 0 {
				t.Error("dry-run asked for the recovery key")
			}
			for _, p := range []string{f.opts.JournalPath, f.opts.KeyDir, f.opts.Crypttab, f.opts.OverlayDir} {
				if _, err := os.Stat(p); !os.IsNotExist(err) {
					t.Errorf("dry-run created %s", p)
				}
			}
			if !strings.Contains(got, `"--offset"`) || !strings.Contains(got, `"--pbkdf-force-iterations"`) {
				t.Errorf("the format command lacks the explicit data offset or the PBKDF cost")
			}
		})
	}
}

func TestVGOfflineRun(t *testing.T) {
	f := newVGFixture(t, libvirt.ShutOff, ModeOffline)
	res, err := Run(context.Background(), f.opts)
	if err != nil {
		t.Fatalf("%v\n%s", err, f.out)
	}
	lvFormat := "cryptsetup luksFormat --batch-mode --type luks2 --cipher aes-xts-plain64 --key-size 512 --hash sha256 --pbkdf argon2id --pbkdf-force-iterations 4 --pbkdf-memory 1024 --pbkdf-parallel 1 --sector-size 4096 --uuid "
	want := []string{
		"lvm lvcreate --yes --wipesignatures y --zero y --name mail-vda --extents 12 vg0",
		lvFormat + "04eed48b-bd61-4294-b241-ae294c9187c5 --offset 32768 --key-file - /dev/vg0/mail-vda",
		"cryptsetup luksAddKey --batch-mode --pbkdf argon2id --pbkdf-force-iterations 4 --pbkdf-memory 1024 --pbkdf-parallel 1 --key-file - /dev/vg0/mail-vda /proc/self/fd/3",
		"cryptsetup open --type luks2 --key-file - /dev/vg0/mail-vda mail-vda_crypt",
		"lvm lvcreate --yes --wipesignatures y --zero y --name mail-vdb --extents 12 vg0",
		lvFormat + "027d31c8-3e42-4051-bc48-7657c979ab22 --offset 32768 --key-file - /dev/vg0/mail-vdb",
		"cryptsetup luksAddKey --batch-mode --pbkdf argon2id --pbkdf-force-iterations 4 --pbkdf-memory 1024 --pbkdf-parallel 1 --key-file - /dev/vg0/mail-vdb /proc/self/fd/3",
		"cryptsetup open --type luks2 --key-file - /dev/vg0/mail-vdb mail-vdb_crypt",
	}
	if got := f.mutatingCommands(); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("cryptsetup/lvm calls:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	// vda (raw) went through the copier; only vdb (qcow2) through qemu-img,
	// onto the mapping as a raw block device.
	wantImg := []string{
		"qemu-img convert -q -n --image-opts --target-image-opts driver=qcow2,file.filename=$DIR/src/mail-b.qcow2 driver=raw,file.filename=$DIR/root/dev/mapper/mail-vdb_crypt",
		"qemu-img compare --image-opts driver=qcow2,file.filename=$DIR/src/mail-b.qcow2 driver=raw,file.filename=$DIR/root/dev/mapper/mail-vdb_crypt",
	}
	if got := f.scrub(strings.Join(f.img.rec.Lines(), "\n")); got != strings.Join(wantImg, "\n") {
		t.Errorf("qemu-img calls:\n%s\nwant:\n%s", got, strings.Join(wantImg, "\n"))
	}
	src, _ := os.ReadFile(f.raw)
	dst, _ := os.ReadFile(f.sys.host("/dev/mapper/mail-vda_crypt"))
	if sha256.Sum256(src) != sha256.Sum256(dst) {
		t.Errorf("the mapping of vda does not hold the source (%d vs %d bytes)", len(dst), len(src))
	}
	for _, dev := range []string{"vda", "vdb"} {
		d := res.Plan.Disks[map[string]int{"vda": 0, "vdb": 1}[dev]]
		if d.LVSize != 48<<20 || d.DataOffset != 16<<20 || d.TargetPath != "/dev/mapper/mail-"+dev+"_crypt" {
			t.Errorf("%s: LV %d bytes, data offset %d, target %s", dev, d.LVSize, d.DataOffset, d.TargetPath)
		}
		h, err := luks.ReadHeader(f.sys.host("/dev/vg0/mail-" + dev))
		if err != nil {
			t.Fatal(err)
		}
		if h.UUID != d.LUKSUUID || len(h.Keyslots) != 2 || h.DataOffset != 16<<20 {
			t.Errorf("%s: header UUID %s (want %s), %d keyslots, data offset %d", dev, h.UUID, d.LUKSUUID, len(h.Keyslots), h.DataOffset)
		}
		st, err := os.Stat(d.KeyFile)
		if err != nil || st.Mode().Perm() != 0o400 || st.Size() != 4096 {
			t.Errorf("%s: key file %s: %v %v", dev, d.KeyFile, st, err)
		}
	}
	if st, err := os.Stat(f.opts.KeyDir); err != nil || st.Mode().Perm() != 0o700 {
		t.Errorf("key directory: %v %v", st, err)
	}
	crypttab, _ := os.ReadFile(f.opts.Crypttab)
	wantTab := "# BEGIN cryptshift migrate mail\n# <name> <device> <key file> <options>\n" +
		"mail-vda_crypt UUID=04eed48b-bd61-4294-b241-ae294c9187c5 $DIR/keys/mail-vda_crypt.key luks\n" +
		"mail-vdb_crypt UUID=027d31c8-3e42-4051-bc48-7657c979ab22 $DIR/keys/mail-vdb_crypt.key luks\n" +
		"# END cryptshift migrate mail\n"
	if got := f.scrub(string(crypttab)); got != wantTab {
		t.Errorf("crypttab:\n%s\nwant:\n%s", got, wantTab)
	}
	wantDefine := "DefineDomain mail vda=/dev/mapper/mail-vda_crypt vdb=/dev/mapper/mail-vdb_crypt sda=$DIR/src/debian.iso"
	if got := f.scrub(strings.Join(f.hv.mutations(), "\n")); got != wantDefine {
		t.Errorf("libvirt calls:\n%s\nwant:\n%s", got, wantDefine)
	}
	x := libvirt.FindDisk(f.hv.doms["mail"].inactive, "vda")
	if x.Source.Block == nil || x.Driver.Type != "raw" || x.Source.Encryption != nil || x.Target.Bus != "virtio" {
		t.Errorf("vda in the new definition: %+v %+v", x.Source, x.Driver)
	}
	wantStates := "planned target-created copied verified switched"
	for dev, states := range journalStates(t, f.opts.JournalPath) {
		if got := strings.Join(states, " "); got != wantStates {
			t.Errorf("%s: journal states %q, want %q", dev, got, wantStates)
		}
	}
	if f.recoveries != 1 {
		t.Errorf("the recovery key was asked for %d times, want once", f.recoveries)
	}
	if !strings.Contains(f.out.String(), "vda: the source and the decrypted /dev/mapper/mail-vda_crypt have the same SHA-256") {
		t.Errorf("output does not report the hash comparison:\n%s", f.out)
	}
	f.checkNoVGSecret(t)

	// Resuming a finished migration changes nothing.
	before := len(f.sys.cmds)
	o := f.opts
	o.Resume = true
	if _, err := Run(context.Background(), o); err != nil {
		t.Fatal(err)
	}
	if m := f.mutatingCommands(); len(m) != len(want) {
		t.Errorf("resuming a finished migration ran %v", f.sys.lines()[before:])
	}
}

func TestVGRollbackKeepsOtherCrypttabEntries(t *testing.T) {
	for _, before := range []string{"", "admin", "admin+apply"} {
		t.Run("crypttab="+before, func(t *testing.T) {
			f := newVGFixture(t, libvirt.ShutOff, ModeOffline)
			os.MkdirAll(filepath.Dir(f.opts.Crypttab), 0o755)
			var want string
			switch before {
			case "admin":
				want = "# admin\nhome_crypt /dev/sdz none luks" // no final newline
				os.WriteFile(f.opts.Crypttab, []byte(want), 0o640)
			case "admin+apply":
				os.WriteFile(f.opts.Crypttab, []byte("# admin\n"), 0o640)
				if err := files.WriteBlock(f.opts.Crypttab, "# BEGIN cryptshift layout host\nvar_crypt UUID=1 /k luks\n# END cryptshift layout host\n"); err != nil {
					t.Fatal(err)
				}
				b, _ := os.ReadFile(f.opts.Crypttab)
				want = string(b)
			}
			if _, err := Run(context.Background(), f.opts); err != nil {
				t.Fatalf("%v\n%s", err, f.out)
			}
			if err := f.rollback(t); err != nil {
				t.Fatalf("rollback: %v\n%s", err, f.out)
			}
			got, err := os.ReadFile(f.opts.Crypttab)
			switch {
			case before == "" && !os.IsNotExist(err):
				t.Errorf("crypttab was absent, rollback left %q", got)
			case before != "" && string(got) != want:
				t.Errorf("crypttab after rollback:\n%q\nwant:\n%q", got, want)
			}
			left, _ := filepath.Glob(f.opts.Crypttab + ".cryptshift-*")
			if wantLeft := map[string]int{"": 0, "admin": 0, "admin+apply": 1}[before]; len(left) != wantLeft {
				t.Errorf("backups left: %v, want %d (apply's own stays for apply's rollback)", left, wantLeft)
			}
			f.checkRolledBack(t)
		})
	}
}

// checkRolledBack asserts the original definition and that nothing the
// migration made is left: LVs, mappings, key files, libvirt secrets; and
// that each LUKS header was zeroed before its LV was removed.
func (f *vgFixture) checkRolledBack(t *testing.T) {
	t.Helper()
	if got := f.chainsOf(true); got != "vda=$DIR/src/mail-a.raw vdb=$DIR/src/mail-b.qcow2 sda=$DIR/src/debian.iso" {
		t.Errorf("definition after rollback: %s", got)
	}
	if len(f.sys.lvs) != 0 || len(f.sys.maps) != 0 {
		t.Errorf("left after rollback: LVs %v, mappings %v", f.sys.lvs, f.sys.maps)
	}
	if keys, _ := filepath.Glob(filepath.Join(f.opts.KeyDir, "*")); len(keys) != 0 {
		t.Errorf("key files left: %v", keys)
	}
	if len(f.hv.secrets) != 0 {
		t.Errorf("libvirt secrets left: %v", f.hv.secrets)
	}
	if ents, _ := os.ReadDir(f.opts.OverlayDir); len(ents) != 0 {
		t.Errorf("overlays left: %v", ents)
	}
	var creates, removes int
	for _, l := range f.sys.lines() {
		if strings.HasPrefix(l, "lvm lvcreate") {
			creates++
		}
		if strings.HasPrefix(l, "lvm lvremove") {
			removes++
		}
	}
	if removes != creates {
		t.Errorf("%d LVs created, %d removed", creates, removes)
	}
}

func TestVGValidationErrors(t *testing.T) {
	tests := []struct {
		name   string
		mode   string
		adjust func(f *vgFixture)
		want   []string
		code   int
	}{
		{name: "wrong VG", mode: ModeOffline, adjust: func(f *vgFixture) { f.opts.To = "vg:nope" },
			want: []string{`cannot find volume group "nope"`, "volume groups: [vg0]", "vgcreate"}, code: exitcode.Invalid},
		{name: "VG too small", mode: ModeOffline, adjust: func(f *vgFixture) { f.sys.free = 20 },
			// 2 × (32 MiB + 16 MiB header) = 96 MiB; 20 extents = 80 MiB.
			want: []string{`volume group "vg0" is too small`, "need 96.0 MiB", "4.0 MiB extents", "80.0 MiB free", "16.0 MiB missing"}, code: exitcode.Invalid},
		{name: "LV exists", mode: ModeOffline, adjust: func(f *vgFixture) {
			f.sys.Run(context.Background(), execx.Cmd{Tool: "lvm", Args: []string{"lvcreate", "--name", "mail-vdb", "--extents", "1", "vg0"}})
		}, want: []string{"logical volume vg0/mail-vdb already exists", "never overwrites"}, code: exitcode.Invalid},
		{name: "mapping open", mode: ModeOffline, adjust: func(f *vgFixture) {
			f.sys.tree.DM("dm-90", "253:90", "mail-vda_crypt", "CRYPT-PLAIN-mail-vda_crypt", 1<<20, "sdc")
		}, want: []string{"mail-vda_crypt is already open", "cryptsetup close mail-vda_crypt"}, code: exitcode.Invalid},
		{name: "key file exists", mode: ModeOffline, adjust: func(f *vgFixture) {
			os.MkdirAll(f.opts.KeyDir, 0o700)
			os.WriteFile(filepath.Join(f.opts.KeyDir, "mail-vda_crypt.key"), []byte("x"), 0o400)
		}, want: []string{"mail-vda_crypt.key already exists"}, code: exitcode.Invalid},
		{name: "key dir on plaintext", mode: ModeOffline, adjust: func(f *vgFixture) {
			f.sys.tree.Mount(f.opts.KeyDir, "ext4", "/dev/sdc", "8:32", "rw")
			f.sys.tree.Finish()
		}, want: []string{"the key directory $DIR/keys is on plaintext storage", "--key-dir"}, code: exitcode.Invalid},
		{name: "overlay dir in RAM", mode: ModeLive, adjust: func(f *vgFixture) {
			f.sys.tree.Mount(f.opts.OverlayDir, "tmpfs", "tmpfs", "0:50", "rw")
			f.sys.tree.Finish()
		}, want: []string{"the overlay directory $DIR/overlays is on ram storage", "--overlay-dir"}, code: exitcode.Invalid},
		{name: "crypttab block exists", mode: ModeOffline, adjust: func(f *vgFixture) {
			os.MkdirAll(filepath.Dir(f.opts.Crypttab), 0o755)
			os.WriteFile(f.opts.Crypttab, []byte("# BEGIN cryptshift migrate mail\n# END cryptshift migrate mail\n"), 0o644)
		}, want: []string{`already has a block "# BEGIN cryptshift migrate mail"`, "cryptshift rollback"}, code: exitcode.Invalid},
		{name: "size not in 4 KiB", mode: ModeOffline, adjust: func(f *vgFixture) {
			f.img.infos[f.raw] = strings.Replace(f.img.infos[f.raw], "33554432", "33554944", 1)
		}, want: []string{"disk vda: its virtual size 33554944 is not a multiple of 4096", "--to pool:NAME"}, code: exitcode.Invalid},
		{name: "passphrase file", mode: ModeOffline, adjust: func(f *vgFixture) { f.opts.PassphraseFile = "/dev/null" },
			want: []string{"--passphrase-file is for pool: targets", "--recovery-key-file"}, code: exitcode.Usage},
		{name: "no recovery key", mode: ModeOffline, adjust: func(f *vgFixture) {
			f.opts.RecoveryKey = func(bool, string) ([]byte, error) {
				// Nothing is written before the prompt: Ctrl-C here (which
				// ends the process) must leave nothing that blocks the next run.
				if _, err := os.Stat(strings.TrimSuffix(f.opts.JournalPath, ".journal") + ".orig.xml"); !os.IsNotExist(err) {
					t.Errorf("the domain definition was saved before the recovery key was asked for")
				}
				return nil, errors.New("cannot show the recovery key: there is no terminal; pass --recovery-key-file FILE")
			}
		}, want: []string{"--recovery-key-file"}, code: exitcode.Failure},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			state := libvirt.ShutOff
			if tt.mode == ModeLive {
				state = libvirt.Running
			}
			f := newVGFixture(t, state, tt.mode)
			tt.adjust(f)
			before := len(f.mutatingCommands())
			_, err := Run(context.Background(), f.opts)
			if err == nil {
				t.Fatal("got nil error")
			}
			for _, w := range tt.want {
				if !strings.Contains(f.scrub(err.Error()), w) {
					t.Errorf("error %q does not contain %q", f.scrub(err.Error()), w)
				}
			}
			if got := exitcode.Of(err); got != tt.code {
				t.Errorf("exit code %d, want %d", got, tt.code)
			}
			if m := f.mutatingCommands(); len(m) != before {
				t.Errorf("a refused migration ran %v", m[before:])
			}
			if m := f.hv.mutations(); len(m) != 0 {
				t.Errorf("a refused migration changed libvirt: %v", m)
			}
			for _, p := range []string{f.opts.JournalPath, strings.TrimSuffix(f.opts.JournalPath, ".journal") + ".orig.xml"} {
				if _, err := os.Stat(p); !os.IsNotExist(err) {
					t.Errorf("a refused migration wrote %s", p)
				}
			}
		})
	}
}

// TestVGCrashResumeAndRollback: a crash (the process stops dead) at each
// boundary of the vg: steps, then resume finishes with the same result,
// or rollback leaves nothing behind.
func TestVGCrashResumeAndRollback(t *testing.T) {
	points := []string{"begin:vda.lv", "begin:vda.keyfile", "begin:vda.format", "begin:vda.recovery", "begin:vda.open",
		"state:vda:target-created", "begin:vdb.format", "begin:domain.crypttab", "begin:vda.copy", "state:vda:copied",
		"begin:vda.verify", "state:vda:verified", "begin:vdb.copy", "state:vdb:verified", "begin:domain.switch", "state:vda:switched"}
	for _, point := range points {
		for _, then := range []string{"resume", "rollback"} {
			t.Run(point+"/"+then, func(t *testing.T) {
				f := newVGFixture(t, libvirt.ShutOff, ModeOffline)
				if !runUntil(t, f.fixture, point) {
					t.Fatalf("failpoint %s never fired", point)
				}
				switch then {
				case "resume":
					o := f.opts
					o.Resume = true
					res, err := Run(context.Background(), o)
					if err != nil {
						t.Fatalf("resume: %v\n%s", err, f.out)
					}
					if res.States["vda"] != StateSwitched || res.States["vdb"] != StateSwitched {
						t.Fatalf("states after resume: %v", res.States)
					}
					if got := f.chainsOf(true); got != "vda=/dev/mapper/mail-vda_crypt vdb=/dev/mapper/mail-vdb_crypt sda=$DIR/src/debian.iso" {
						t.Fatalf("definition after resume: %s", got)
					}
					var formats, creates int
					for _, l := range f.sys.lines() {
						if strings.HasPrefix(l, "cryptsetup luksFormat") {
							formats++
						}
						if strings.HasPrefix(l, "lvm lvcreate") {
							creates++
						}
					}
					// Repeating a step finds its work done: every LV made
					// once, every header written once (a crash at the
					// format's begin record ran no luksFormat yet).
					if creates != 2 || formats != 2 {
						t.Errorf("%d lvcreate, %d luksFormat; want 2 each", creates, formats)
					}
					src, _ := os.ReadFile(f.raw)
					dst, _ := os.ReadFile(f.sys.host("/dev/mapper/mail-vda_crypt"))
					if !bytes.Equal(src, dst) {
						t.Error("the mapping of vda does not hold the source")
					}
					if strings.Count(mustReadString(t, f.opts.Crypttab), "# BEGIN cryptshift migrate mail") != 1 {
						t.Errorf("crypttab: %s", mustReadString(t, f.opts.Crypttab))
					}
				case "rollback":
					if err := f.rollback(t); err != nil {
						t.Fatalf("rollback: %v\n%s", err, f.out)
					}
					f.checkRolledBack(t)
					if _, err := os.Stat(f.opts.Crypttab); !os.IsNotExist(err) {
						t.Errorf("crypttab left: %v", err)
					}
				}
				f.checkNoVGSecret(t)
			})
		}
	}
}

func mustReadString(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestVGCopyResumesFromCheckpoint: an interrupted copy continues from the
// last checkpoint the journal holds, and ends with the same data and hash.
func TestVGCopyResumesFromCheckpoint(t *testing.T) {
	f := newVGFixture(t, libvirt.ShutOff, ModeOffline)
	// With its default 4 MiB chunks, 8 in flight, the copier can copy this
	// 32 MiB disk whole before a cut at its second checkpoint is seen;
	// 64 KiB chunks leave far more work after the cut than is in flight.
	defer setCopyTuning(64<<10, 1<<20)()
	ctx, cancel := context.WithCancel(context.Background())
	fired := 0
	restore := engine.SetFault(func(p string) {
		if p == "copy:vda" {
			if fired++; fired == 2 {
				cancel()
			}
		}
	})
	_, err := Run(ctx, f.opts)
	restore()
	if exitcode.Of(err) != exitcode.Interrupted {
		t.Fatalf("got %v, want an interruption", err)
	}
	o := f.opts
	o.Resume = true
	if _, err := Run(context.Background(), o); err != nil {
		t.Fatalf("resume: %v\n%s", err, f.out)
	}
	if !strings.Contains(f.out.String(), "vda: continuing the copy at ") || strings.Contains(f.out.String(), "continuing the copy at 0 B") {
		t.Errorf("the resumed copy did not start at the checkpoint:\n%s", f.out)
	}
	src, _ := os.ReadFile(f.raw)
	dst, _ := os.ReadFile(f.sys.host("/dev/mapper/mail-vda_crypt"))
	if !bytes.Equal(src, dst) {
		t.Error("the mapping of vda does not hold the source")
	}
}

// TestVGResumeWithWrongRecoveryKey: after a crash right after the recovery
// keyslot was added (before the step's done record), resume checks that the
// recovery key it is given opens that keyslot instead of adding another.
func TestVGResumeWithWrongRecoveryKey(t *testing.T) {
	f := newVGFixture(t, libvirt.ShutOff, ModeOffline)
	f.sys.after["cryptsetup luksAddKey"] = func() { panic(crash{"after luksAddKey"}) }
	func() {
		defer func() {
			if r := recover(); r == nil {
				t.Fatal("the crash did not happen")
			}
		}()
		Run(context.Background(), f.opts)
	}()
	o := f.opts
	o.Resume = true
	var asked []bool
	o.RecoveryKey = func(resume bool, file string) ([]byte, error) {
		asked = append(asked, resume)
		return []byte("WRONG-KEY"), nil
	}
	_, err := Run(context.Background(), o)
	if err == nil || !strings.Contains(err.Error(), "the recovery key given does not open it") {
		t.Fatalf("got %v", err)
	}
	if len(asked) != 1 || !asked[0] {
		t.Errorf("asked %v, want once for a resume", asked)
	}
	// With the right key it finishes, without adding a third keyslot.
	o.RecoveryKey = f.opts.RecoveryKey
	if _, err := Run(context.Background(), o); err != nil {
		t.Fatal(err)
	}
	h, err := luks.ReadHeader(f.sys.host("/dev/vg0/mail-vda"))
	if err != nil || len(h.Keyslots) != 2 {
		t.Errorf("header: %v, %v", h, err)
	}
}

func TestVGLiveRun(t *testing.T) {
	f := newVGFixture(t, libvirt.Running, ModeLive)
	if _, err := Run(context.Background(), f.opts); err != nil {
		t.Fatalf("%v\n%s", err, f.out)
	}
	var calls []string
	for _, c := range f.hv.mutations() {
		calls = append(calls, f.scrub(c))
	}
	want := []string{
		"DefineSecret 01020304-0506-4708-890a-0b0c0d0e0f10 private=no usage=$DIR/overlays/mail-vda.overlays",
		"SetSecretValue 01020304-0506-4708-890a-0b0c0d0e0f10",
		"DefineSecret 11121314-1516-4718-991a-1b1c1d1e1f20 private=no usage=$DIR/overlays/mail-vdb.overlays",
		"SetSecretValue 11121314-1516-4718-991a-1b1c1d1e1f20",
		"SnapshotDisks mail quiesce=false vda=$DIR/overlays/mail-vda.overlay.qcow2 vdb=$DIR/overlays/mail-vdb.overlay.qcow2 sda=no",
		"DefineDomain mail vda=$DIR/overlays/mail-vda.overlay.qcow2<$DIR/src/mail-a.raw+luks vdb=$DIR/overlays/mail-vdb.overlay.qcow2<$DIR/src/mail-b.qcow2+luks sda=$DIR/src/debian.iso",
		"BlockCopy mail vda -> /dev/mapper/mail-vda_crypt shallow=true",
		"Pivot mail vda",
		"DefineDomain mail vda=/dev/mapper/mail-vda_crypt vdb=$DIR/overlays/mail-vdb.overlay.qcow2<$DIR/src/mail-b.qcow2+luks sda=$DIR/src/debian.iso",
		"UndefineSecret 01020304-0506-4708-890a-0b0c0d0e0f10",
		"BlockCopy mail vdb -> /dev/mapper/mail-vdb_crypt shallow=true",
		"Pivot mail vdb",
		"DefineDomain mail vda=/dev/mapper/mail-vda_crypt vdb=/dev/mapper/mail-vdb_crypt sda=$DIR/src/debian.iso",
		"UndefineSecret 11121314-1516-4718-991a-1b1c1d1e1f20",
	}
	if strings.Join(calls, "\n") != strings.Join(want, "\n") {
		t.Errorf("libvirt calls:\n%s\nwant:\n%s", strings.Join(calls, "\n"), strings.Join(want, "\n"))
	}
	// The overlays were qemu-encrypted qcow2 on top of the sources.
	var creates []string
	for _, l := range f.img.rec.Lines() {
		if strings.HasPrefix(l, "qemu-img create") {
			creates = append(creates, f.scrub(l))
		}
	}
	if len(creates) != 2 || !strings.Contains(creates[0], "-f qcow2 -o encrypt.format=luks,encrypt.key-secret=sec0,encrypt.iter-time=10 -b $DIR/src/mail-a.raw -F raw -u $DIR/overlays/mail-vda.overlay.qcow2 33554432") {
		t.Errorf("overlays: %v", creates)
	}
	if ents, _ := os.ReadDir(f.opts.OverlayDir); len(ents) != 0 {
		t.Errorf("overlays left: %v", ents)
	}
	if len(f.hv.secrets) != 0 || f.hv.doms["mail"].state != libvirt.Running {
		t.Errorf("secrets left %v, state %s", f.hv.secrets, f.hv.doms["mail"].state)
	}
	wantStates := "planned target-created snapshot copied verified switched"
	for dev, states := range journalStates(t, f.opts.JournalPath) {
		if got := strings.Join(states, " "); got != wantStates {
			t.Errorf("%s: journal states %q, want %q", dev, got, wantStates)
		}
	}
	f.checkNoVGSecret(t)

	// Live rollback from the switched state: an encrypted back overlay on
	// the mapping freezes it, it is copied back into the source, and the
	// guest is moved back; then everything goes.
	if err := f.rollback(t); err != nil {
		t.Fatalf("rollback: %v\n%s", err, f.out)
	}
	if got := f.chainsOf(false); got != "vda=$DIR/src/mail-a.raw vdb=$DIR/src/mail-b.qcow2<$DIR/src/mail-base.raw sda=$DIR/src/debian.iso" {
		t.Errorf("running guest after rollback: %s", got)
	}
	var backCreate string
	for _, l := range f.img.rec.Lines() {
		if strings.Contains(l, "mail-vda.back-overlay") && strings.HasPrefix(l, "qemu-img create") {
			backCreate = f.scrub(l)
		}
	}
	if !strings.Contains(backCreate, "-b /dev/mapper/mail-vda_crypt -F raw") {
		t.Errorf("back overlay: %q", backCreate)
	}
	f.checkRolledBack(t)
}

func TestVGMirrorEngine(t *testing.T) {
	f := newVGFixture(t, libvirt.Running, ModeLive)
	f.opts.Engine = EngineMirror
	if _, err := Run(context.Background(), f.opts); err != nil {
		t.Fatalf("%v\n%s", err, f.out)
	}
	if got := f.chainsOf(false); got != "vda=/dev/mapper/mail-vda_crypt vdb=/dev/mapper/mail-vdb_crypt sda=$DIR/src/debian.iso" {
		t.Errorf("running guest: %s", got)
	}
	var compares []string
	for _, l := range f.img.rec.Lines() {
		if strings.HasPrefix(l, "qemu-img compare") {
			compares = append(compares, f.scrub(l))
		}
	}
	want := "qemu-img compare -U --image-opts driver=raw,file.filename=$DIR/src/mail-a.raw,file.locking=off driver=raw,file.filename=$DIR/root/dev/mapper/mail-vda_crypt,file.locking=off"
	if len(compares) != 2 || compares[0] != want {
		t.Errorf("compares: %v", compares)
	}
}

func TestRetireLVSource(t *testing.T) {
	for _, discard := range []bool{true, false} {
		f := newVGFixture(t, libvirt.ShutOff, ModeOffline)
		f.sys.Run(context.Background(), execx.Cmd{Tool: "lvm", Args: []string{"lvcreate", "--name", "old", "--extents", "2", "vg0"}})
		if !discard {
			f.sys.failOn["blkdiscard /dev/vg0/old"] = errors.New("blkdiscard: BLKDISCARD: /dev/vg0/old ioctl failed: Operation not supported")
		}
		rt := &runtime{run: f.sys, h: &Header{}, prog: progressDiscard(), noted: map[string]bool{}, out: f.out}
		done, err := rt.retireLV(context.Background(), Layer{Path: "/dev/vg0/old", Format: "raw", Type: "block", LV: "vg0/old"})
		if err != nil || !done {
			t.Fatalf("retire: %v %v", done, err)
		}
		want := "blkdiscard /dev/vg0/old\nlvm lvremove --yes vg0/old"
		if !discard {
			want = "blkdiscard /dev/vg0/old\nblkdiscard --zeroout /dev/vg0/old\nlvm lvremove --yes vg0/old"
		}
		if got := strings.Join(f.mutatingCommands()[1:], "\n"); got != want {
			t.Errorf("discard=%v: commands:\n%s\nwant:\n%s", discard, got, want)
		}
		// Repeating it (a crash after lvremove) finds the LV gone.
		if done, err := rt.retireLV(context.Background(), Layer{Path: "/dev/vg0/old", LV: "vg0/old"}); done || err != nil {
			t.Errorf("second retire: %v %v", done, err)
		}
	}
	// The plan says what retiring an LV does.
	rt := &runtime{h: &Header{}}
	s := rt.retireStep(&Disk{Target: "vdc", Chain: []Layer{{Path: "/dev/vg0/old", Format: "raw", Type: "block", LV: "vg0/old"}}})
	if got := strings.Join(s.Command, " "); got != "blkdiscard /dev/vg0/old lvm lvremove --yes vg0/old" || !s.Destructive {
		t.Errorf("retire step: %q destructive=%v", got, s.Destructive)
	}
}

// TestVGImageReopensMapping: reading the target (verify, rollback's copy
// back) opens a mapping that is closed, e.g. after a reboot without the
// crypttab entry, with the disk's key file.
func TestVGImageReopensMapping(t *testing.T) {
	f := newVGFixture(t, libvirt.ShutOff, ModeOffline)
	if _, err := Run(context.Background(), f.opts); err != nil {
		t.Fatal(err)
	}
	if _, err := f.sys.Run(context.Background(), execx.Cmd{Tool: "cryptsetup", Args: []string{"close", "mail-vda_crypt"}}); err != nil {
		t.Fatal(err)
	}
	if err := f.rollback(t); err != nil {
		t.Fatalf("rollback: %v\n%s", err, f.out)
	}
	var opens int
	for _, l := range f.sys.lines() {
		if strings.HasPrefix(l, "cryptsetup open --type luks2 --key-file - /dev/vg0/mail-vda") {
			opens++
		}
	}
	if opens != 2 {
		t.Errorf("vda was opened %d times, want twice (migration, rollback's copy back)", opens)
	}
	f.checkRolledBack(t)
}

func TestRemoveBlock(t *testing.T) {
	block := "# BEGIN cryptshift migrate m\nm-vda_crypt UUID=1 /k luks\n# END cryptshift migrate m\n"
	other := "# BEGIN cryptshift layout h\nvar_crypt UUID=2 /k2 luks\n# END cryptshift layout h\n"
	dir := t.TempDir()
	f := filepath.Join(dir, "crypttab")
	os.WriteFile(f, []byte("# admin\n"), 0o640)
	if err := files.WriteBlock(f, block); err != nil {
		t.Fatal(err)
	}
	if err := files.WriteBlock(f, other); err != nil {
		t.Fatal(err)
	}
	// Another block came after ours: only ours goes, the backup stays.
	if err := files.RemoveBlock(f, "# BEGIN cryptshift migrate m", "# END cryptshift migrate m"); err != nil {
		t.Fatal(err)
	}
	if got := mustReadString(t, f); got != "# admin\n"+other {
		t.Errorf("got %q", got)
	}
	if st, _ := os.Stat(f); st.Mode().Perm() != 0o640 {
		t.Errorf("mode %v", st.Mode())
	}
	if _, err := os.Stat(f + ".cryptshift-orig"); err != nil {
		t.Errorf("the backup apply's rollback needs is gone: %v", err)
	}
	// Again: nothing to do.
	if err := files.RemoveBlock(f, "# BEGIN cryptshift migrate m", "# END cryptshift migrate m"); err != nil {
		t.Fatal(err)
	}
	// A block without its end is not guessed at.
	os.WriteFile(f, []byte("# BEGIN cryptshift migrate m\nx\n"), 0o640)
	if err := files.RemoveBlock(f, "# BEGIN cryptshift migrate m", "# END cryptshift migrate m"); err == nil || !strings.Contains(err.Error(), "fix the file by hand") {
		t.Errorf("got %v", err)
	}
}

// TestLVName: names LVM accepts, derived from any domain name.
func TestLVName(t *testing.T) {
	for in, want := range map[string]string{"mail": "mail-vda", "mail server/ä": "mail_server__-vda", "-x": "_x-vda"} {
		if got := lvName(in, "vda"); got != want {
			t.Errorf("lvName(%q): got %q, want %q", in, got, want)
		}
	}
}
