package migrate

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"libvirt.org/go/libvirtxml"

	"github.com/cryptshift/cryptshift/internal/exitcode"
	"github.com/cryptshift/cryptshift/internal/harness/golden"
	"github.com/cryptshift/cryptshift/internal/hostview/blockstack/blockstacktest"
	"github.com/cryptshift/cryptshift/internal/runner/engine"
	"github.com/cryptshift/cryptshift/libvirt"
)

// seqReader is a deterministic stand-in for crypto/rand (secret UUIDs).
type seqReader struct{ n byte }

func (s *seqReader) Read(p []byte) (int, error) {
	for i := range p {
		s.n++
		p[i] = s.n
	}
	return len(p), nil
}

type fixture struct {
	dir                   string
	hv                    *fakeHV
	img                   *fakeImages
	out                   *bytes.Buffer
	opts                  Options
	raw, qcow2, base, iso string
}

func fileDisk(dev, path, format string) libvirtxml.DomainDisk {
	return libvirtxml.DomainDisk{Device: "disk",
		Driver: &libvirtxml.DomainDiskDriver{Name: "qemu", Type: format},
		Source: &libvirtxml.DomainDiskSource{File: &libvirtxml.DomainDiskSourceFile{File: path}},
		Target: &libvirtxml.DomainDiskTarget{Dev: dev, Bus: "virtio"}}
}

func newFixture(t *testing.T, state libvirt.State, mode string) *fixture {
	t.Helper()
	dir := t.TempDir()
	f := &fixture{dir: dir, hv: newFakeHV(filepath.Join(dir, "pool")), img: newFakeImages(), out: &bytes.Buffer{}}
	f.hv.made = f.img.made
	for _, d := range []string{"pool", "src"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	f.raw = filepath.Join(dir, "src", "mail-a.raw")
	f.qcow2 = filepath.Join(dir, "src", "mail-b.qcow2")
	f.base = filepath.Join(dir, "src", "mail-base.raw")
	f.iso = filepath.Join(dir, "src", "debian.iso")
	for _, p := range []string{f.raw, f.qcow2, f.base, f.iso} {
		if err := os.WriteFile(p, []byte("plaintext mail"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	f.img.infos[f.raw] = fmt.Sprintf(`[{"filename":%q,"format":"raw","virtual-size":33554432,"actual-size":1048576}]`, f.raw)
	f.img.infos[f.qcow2] = fmt.Sprintf(`[{"filename":%q,"format":"qcow2","virtual-size":33554432,"actual-size":262144,"backing-filename":"mail-base.raw","full-backing-filename":%q,"backing-filename-format":"raw"},
{"filename":%q,"format":"raw","virtual-size":33554432,"actual-size":65536}]`, f.qcow2, f.base, f.base)
	cd := fileDisk("sda", f.iso, "raw")
	cd.Device, cd.ReadOnly = "cdrom", &libvirtxml.DomainDiskReadOnly{}
	dom := &libvirtxml.Domain{Type: "kvm", Name: "mail", Devices: &libvirtxml.DomainDeviceList{Disks: []libvirtxml.DomainDisk{
		fileDisk("vda", f.raw, "raw"), fileDisk("vdb", f.qcow2, "qcow2"), cd}}}
	f.hv.addDomain(dom, state)
	// libvirt's running definition shows the whole backing chain.
	libvirt.FindDisk(f.hv.doms["mail"].live, "vdb").BackingStore = &libvirtxml.DomainDiskBackingStore{
		Format: &libvirtxml.DomainDiskFormat{Type: "raw"},
		Source: &libvirtxml.DomainDiskSource{File: &libvirtxml.DomainDiskSourceFile{File: f.base}}}
	f.opts = Options{Domain: "mail", To: "pool:enc", Mode: mode, JournalPath: filepath.Join(dir, "journal", "mail.journal"),
		Hypervisor: f.hv, Images: f.img, Rand: &seqReader{}, Out: f.out, IterTimeMS: 10, Root: encryptedHostRoot(t),
		DirectIO: func(string) bool { return true }}
	return f
}

// encryptedHostRoot is a host tree (sysfs, mountinfo) whose root
// filesystem, and so libvirt's secret store, is on dm-crypt.
func encryptedHostRoot(t *testing.T) string {
	t.Helper()
	root := filepath.Join(t.TempDir(), "host")
	tr := blockstacktest.New(root)
	tr.Disk("sda", "8:0", 20<<30)
	tr.Crypt("dm-0", "253:0", "LUKS2", "root_crypt", 20<<30, "sda")
	tr.Mount("/", "ext4", "/dev/mapper/root_crypt", "253:0", "rw")
	tr.Disk("sdc", "8:32", 1<<30) // plaintext, for tests that mount it
	if err := tr.Finish(); err != nil {
		t.Fatal(err)
	}
	return root
}

// checkCalls compares the libvirt calls that changed something with want.
func (f *fixture) checkCalls(t *testing.T, want []string) {
	t.Helper()
	if got := f.scrub(strings.Join(f.hv.mutations(), "\n")); got != strings.Join(want, "\n") {
		t.Errorf("libvirt calls:\n%s\nwant:\n%s", got, strings.Join(want, "\n"))
	}
}

// scrub makes paths stable for golden files.
func (f *fixture) scrub(s string) string { return strings.ReplaceAll(s, f.dir, "$DIR") }

// checkDryRunGolden compares a dry-run's plan, as JSON with the test's
// directory scrubbed, with testdata/dryrun-NAME.json (rewritten with
// -update) and returns that JSON.
func checkDryRunGolden(t *testing.T, name string, res *Result, scrub func(string) string) string {
	t.Helper()
	b, err := json.MarshalIndent(res.Plan, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	got := scrub(string(b)) + "\n"
	golden.Check(t, filepath.Join("testdata", "dryrun-"+name+".json"), []byte(got))
	return got
}

func TestDryRunGolden(t *testing.T) {
	tests := []struct {
		name   string
		state  libvirt.State
		mode   string
		adjust func(o *Options)
	}{
		// qemu's default iteration time: libvirt creates the targets.
		{name: "offline", state: libvirt.ShutOff, mode: ModeOffline, adjust: func(o *Options) { o.IterTimeMS = 0 }},
		{name: "offline-shutdown-retire", state: libvirt.Running, mode: ModeOffline, adjust: func(o *Options) { o.Shutdown, o.ForceOff, o.RetireSource = true, true, true }},
		{name: "live", state: libvirt.Running, mode: ModeLive},
		{name: "live-mirror", state: libvirt.Running, mode: ModeLive, adjust: func(o *Options) { o.Engine = EngineMirror }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, tt.state, tt.mode)
			f.opts.DryRun = true
			if tt.adjust != nil {
				tt.adjust(&f.opts)
			}
			res, err := Run(context.Background(), f.opts)
			if err != nil {
				t.Fatal(err)
			}
			checkDryRunGolden(t, tt.name, res, f.scrub)
			if m := f.hv.mutations(); len(m) != 0 {
				t.Errorf("dry-run changed something: %v", m)
			}
			if len(f.img.rec.Lines()) != 0 {
				t.Errorf("dry-run ran qemu-img: %v", f.img.rec.Lines())
			}
			if _, err := os.Stat(f.opts.JournalPath); !os.IsNotExist(err) {
				t.Errorf("dry-run wrote a journal")
			}
			if ents, _ := os.ReadDir(filepath.Join(f.dir, "pool")); len(ents) != 0 {
				t.Errorf("dry-run created %v in the pool", ents)
			}
			for _, s := range res.Plan.Steps {
				if s.ID == "" || s.Action == "" || s.Target == "" || len(s.Command) == 0 {
					t.Errorf("incomplete step %+v", s)
				}
				if s.Destructive != (s.Action == "retire-source") {
					t.Errorf("step %s: destructive=%v", s.ID, s.Destructive)
				}
			}
		})
	}
}

func TestValidationErrors(t *testing.T) {
	tests := []struct {
		name   string
		state  libvirt.State
		mode   string
		adjust func(f *fixture)
		want   []string // substrings of the error
		code   int
	}{
		{name: "unknown domain", state: libvirt.Running, mode: ModeLive,
			adjust: func(f *fixture) { f.opts.Domain = "nope" }, want: []string{`cannot find domain "nope"`, "virsh list --all"}, code: exitcode.Invalid},
		{name: "running in offline mode", state: libvirt.Running, mode: ModeOffline,
			want: []string{"domain mail is running", "--shutdown", "--mode live"}, code: exitcode.Invalid},
		{name: "shut off in live mode", state: libvirt.ShutOff, mode: ModeLive,
			want: []string{"needs it running", "--mode offline"}, code: exitcode.Invalid},
		{name: "wrong pool", state: libvirt.Running, mode: ModeLive,
			adjust: func(f *fixture) { f.opts.To = "pool:nope" }, want: []string{`cannot find storage pool "nope"`, "enc"}, code: exitcode.Invalid},
		{name: "pool too small", state: libvirt.Running, mode: ModeLive,
			adjust: func(f *fixture) { f.hv.pool.Available = 40 << 20; f.opts.TargetFormat = TargetFormatRaw },
			// 2×(32 MiB + 2 MiB header) + 2 overlays×3 MiB = 74 MiB; 40 available.
			want: []string{`storage pool "enc" is too small`, "need 74.0 MiB", "has 40.0 MiB available", "34.0 MiB missing"}, code: exitcode.Invalid},
		{name: "pool too small for the data", state: libvirt.Running, mode: ModeLive,
			adjust: func(f *fixture) { f.hv.pool.Available = 40 << 20 },
			// vda raw LUKS: 32 MiB + 2 MiB header; vdb qcow2 from the qcow2
			// source: 320 KiB data + 10 % + metadata (4 KiB + 1 KiB + 1 MiB)
			// + 2 MiB header = 3429 KiB; 2 overlays×3 MiB: 43.3 MiB in all.
			want: []string{`storage pool "enc" is too small`, "need 43.3 MiB", "data allocated in the sources plus 10 %", "3.3 MiB missing"}, code: exitcode.Invalid},
		{name: "qcow2 onto a vg", state: libvirt.Running, mode: ModeLive,
			adjust: func(f *fixture) { f.opts.To, f.opts.TargetFormat = "vg:vg0", TargetFormatQCOW2 }, want: []string{"vg: target with --target-format qcow2"}, code: exitcode.Usage},
		{name: "unknown target format", state: libvirt.Running, mode: ModeLive,
			adjust: func(f *fixture) { f.opts.TargetFormat = "vmdk" }, want: []string{`unknown --target-format "vmdk"`, "raw or qcow2"}, code: exitcode.Usage},
		{name: "inactive pool of the wrong type", state: libvirt.Running, mode: ModeLive,
			adjust: func(f *fixture) { f.hv.pool.Active, f.hv.pool.Type = false, "logical" },
			want:   []string{"not active", "virsh pool-start enc", "type logical", "vg:NAME"}, code: exitcode.Invalid},
		{name: "shareable disk", state: libvirt.Running, mode: ModeLive,
			adjust: func(f *fixture) {
				d := f.hv.doms["mail"]
				for _, def := range []*libvirtxml.Domain{d.live, d.inactive} {
					libvirt.FindDisk(def, "vdb").Shareable = &libvirtxml.DomainDiskShareable{}
				}
			},
			want: []string{"disk vdb", "shareable", "other guests"}, code: exitcode.Invalid},
		{name: "target exists", state: libvirt.Running, mode: ModeLive,
			adjust: func(f *fixture) { os.WriteFile(filepath.Join(f.dir, "pool", "mail-vda.luks"), nil, 0o600) },
			want:   []string{"mail-vda.luks already exists", "never overwrites"}, code: exitcode.Invalid},
		{name: "unreadable image", state: libvirt.Running, mode: ModeLive,
			adjust: func(f *fixture) { delete(f.img.infos, f.qcow2) }, want: []string{"disk vdb", "cannot read image"}, code: exitcode.Invalid},
		{name: "bad target spec", state: libvirt.Running, mode: ModeLive,
			adjust: func(f *fixture) { f.opts.To = "enc" }, want: []string{"want pool:NAME"}, code: exitcode.Usage},
		{name: "mirror offline", state: libvirt.ShutOff, mode: ModeOffline,
			adjust: func(f *fixture) { f.opts.Engine = EngineMirror }, want: []string{"live-mode engine"}, code: exitcode.Usage},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, tt.state, tt.mode)
			if tt.adjust != nil {
				tt.adjust(f)
			}
			_, err := Run(context.Background(), f.opts)
			if err == nil {
				t.Fatal("got nil error")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
			if got := exitcode.Of(err); got != tt.code {
				t.Errorf("exit code %d, want %d", got, tt.code)
			}
			if m := f.hv.mutations(); len(m) != 0 {
				t.Errorf("a refused migration changed something: %v", m)
			}
			if _, err := os.Stat(f.opts.JournalPath); !os.IsNotExist(err) {
				t.Errorf("a refused migration wrote a journal")
			}
		})
	}
}

// TestAllProblemsAtOnce: validation reports every problem, not the first.
func TestAllProblemsAtOnce(t *testing.T) {
	f := newFixture(t, libvirt.Running, ModeOffline)
	f.hv.pool.Available = 1
	_, err := Run(context.Background(), f.opts)
	if err == nil || !strings.Contains(err.Error(), "2 problems") || !strings.Contains(err.Error(), "is running") || !strings.Contains(err.Error(), "too small") {
		t.Fatalf("got %v, want both problems", err)
	}
}

func journalStates(t *testing.T, path string) map[string][]string {
	t.Helper()
	l, err := engine.Read(path)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]string{}
	for _, raw := range l.Events {
		var e event
		if err := json.Unmarshal(raw, &e); err != nil {
			t.Fatal(err)
		}
		if e.Event == "state" {
			out[e.Disk] = append(out[e.Disk], e.State)
		}
	}
	return out
}

// checkNoSecret asserts that no key appears in the journal, the output or
// any qemu-img argv.
func (f *fixture) checkNoSecret(t *testing.T) {
	t.Helper()
	j, _ := os.ReadFile(f.opts.JournalPath)
	for uuid, key := range f.hv.secrets {
		if len(key) == 0 {
			continue
		}
		for what, hay := range map[string]string{"journal": string(j), "output": f.out.String(), "argv": strings.Join(f.img.rec.Lines(), "\n")} {
			if strings.Contains(hay, string(key)) {
				t.Fatalf("the key of secret %s is in the %s", uuid, what)
			}
		}
	}
}

// TestOfflineRunLibvirtCreatesTargets: with qemu's default iteration time
// libvirt creates the targets as volumes (StorageVolCreateXML with the
// disk's secret), never qemu-img with the key on a pipe; on a pool whose
// filesystem has no O_DIRECT the copy and the compare use the page cache.
func TestOfflineRunLibvirtCreatesTargets(t *testing.T) {
	f := newFixture(t, libvirt.ShutOff, ModeOffline)
	f.opts.IterTimeMS = 0
	f.opts.DirectIO = func(string) bool { return false }
	res, err := Run(context.Background(), f.opts)
	if err != nil {
		t.Fatalf("%v\n%s", err, f.out)
	}
	want := []string{
		"DefineSecret 01020304-0506-4708-890a-0b0c0d0e0f10 private=no usage=$DIR/pool/mail-vda.luks",
		"SetSecretValue 01020304-0506-4708-890a-0b0c0d0e0f10",
		"DeleteVolume enc mail-vda.luks",
		"CreateVolume libvirt:StorageVolCreateXML pool=enc name=mail-vda.luks capacity=33554432 format=raw encryption=luks secret=01020304-0506-4708-890a-0b0c0d0e0f10 mode=0600",
		"DefineSecret 11121314-1516-4718-991a-1b1c1d1e1f20 private=no usage=$DIR/pool/mail-vdb.qcow2",
		"SetSecretValue 11121314-1516-4718-991a-1b1c1d1e1f20",
		"DeleteVolume enc mail-vdb.qcow2",
		"CreateVolume libvirt:StorageVolCreateXML pool=enc name=mail-vdb.qcow2 capacity=33554432 format=qcow2 encryption=luks secret=11121314-1516-4718-991a-1b1c1d1e1f20 mode=0600",
		"DefineDomain mail vda=$DIR/pool/mail-vda.luks+luks vdb=$DIR/pool/mail-vdb.qcow2+luks sda=$DIR/src/debian.iso",
	}
	f.checkCalls(t, want)
	cmds := f.scrub(strings.Join(f.img.rec.Lines(), "\n"))
	if strings.Contains(cmds, "qemu-img create") || strings.Contains(cmds, "cache.direct") || strings.Count(cmds, "qemu-img compare") != 2 {
		t.Errorf("qemu-img calls: want no create, no O_DIRECT, two compares:\n%s", cmds)
	}
	for _, s := range res.Plan.Steps {
		if s.Action == "create-target" && (s.Command[0] != "libvirt:StorageVolCreateXML" || len(s.Secrets) != 0) {
			t.Errorf("step %s: command %q, secrets %v: want libvirt's StorageVolCreateXML and no key on a descriptor", s.ID, s.Command, s.Secrets)
		}
		if strings.Contains(s.Description, "O_DIRECT") {
			t.Errorf("step %s promises O_DIRECT on a filesystem without it: %s", s.ID, s.Description)
		}
	}
}

func TestOfflineRun(t *testing.T) {
	f := newFixture(t, libvirt.ShutOff, ModeOffline)
	res, err := Run(context.Background(), f.opts)
	if err != nil {
		t.Fatalf("%v\n%s", err, f.out)
	}
	want := []string{
		"DefineSecret 01020304-0506-4708-890a-0b0c0d0e0f10 private=no usage=$DIR/pool/mail-vda.luks",
		"SetSecretValue 01020304-0506-4708-890a-0b0c0d0e0f10",
		"DefineSecret 11121314-1516-4718-991a-1b1c1d1e1f20 private=no usage=$DIR/pool/mail-vdb.qcow2",
		"SetSecretValue 11121314-1516-4718-991a-1b1c1d1e1f20",
		"DefineDomain mail vda=$DIR/pool/mail-vda.luks+luks vdb=$DIR/pool/mail-vdb.qcow2+luks sda=$DIR/src/debian.iso",
	}
	f.checkCalls(t, want)
	wantCmds := []string{
		"qemu-img create -q --object secret,id=sec0,file=/proc/self/fd/3 -f luks -o key-secret=sec0,iter-time=10 $DIR/pool/mail-vda.luks 33554432",
		"qemu-img create -q --object secret,id=sec0,file=/proc/self/fd/3 -f qcow2 -o encrypt.format=luks,encrypt.key-secret=sec0,encrypt.iter-time=10 $DIR/pool/mail-vdb.qcow2 33554432",
		"qemu-img convert -q --object secret,id=sec0,file=/proc/self/fd/3 -n --image-opts --target-image-opts driver=raw,file.filename=$DIR/src/mail-a.raw driver=luks,key-secret=sec0,file.filename=$DIR/pool/mail-vda.luks,cache.direct=on",
		"qemu-img compare --object secret,id=sec0,file=/proc/self/fd/3 --image-opts driver=raw,file.filename=$DIR/src/mail-a.raw driver=luks,key-secret=sec0,file.filename=$DIR/pool/mail-vda.luks,cache.direct=on",
		"qemu-img convert -q --object secret,id=sec0,file=/proc/self/fd/3 -n --target-is-zero --image-opts --target-image-opts driver=qcow2,file.filename=$DIR/src/mail-b.qcow2 driver=qcow2,encrypt.format=luks,encrypt.key-secret=sec0,file.filename=$DIR/pool/mail-vdb.qcow2,cache.direct=on",
		"qemu-img compare --object secret,id=sec0,file=/proc/self/fd/3 --image-opts driver=qcow2,file.filename=$DIR/src/mail-b.qcow2 driver=qcow2,encrypt.format=luks,encrypt.key-secret=sec0,file.filename=$DIR/pool/mail-vdb.qcow2,cache.direct=on",
	}
	if got := f.scrub(strings.Join(f.img.rec.Lines(), "\n")); got != strings.Join(wantCmds, "\n") {
		t.Errorf("qemu-img calls:\n%s\nwant:\n%s", got, strings.Join(wantCmds, "\n"))
	}
	wantStates := "planned target-created copied verified switched"
	for dev, states := range journalStates(t, f.opts.JournalPath) {
		if got := strings.Join(states, " "); got != wantStates {
			t.Errorf("%s: journal states %q, want %q", dev, got, wantStates)
		}
	}
	if res.States["vda"] != StateSwitched || res.States["vdb"] != StateSwitched {
		t.Errorf("states %v", res.States)
	}
	if !strings.Contains(f.out.String(), "disk sda is skipped: a cdrom") || !strings.Contains(f.out.String(), "plaintext remains") {
		t.Errorf("output misses the skip note or the leftovers:\n%s", f.out)
	}
	f.checkNoSecret(t)
	if _, err := os.Stat(strings.TrimSuffix(f.opts.JournalPath, ".journal") + ".orig.xml"); err != nil {
		t.Errorf("the old definition was not saved: %v", err)
	}
	// The first record identifies the journal for the rollback verb.
	if kind, err := engine.KindOf(f.opts.JournalPath); kind != JournalKind || err != nil {
		t.Errorf("KindOf: %q, %v", kind, err)
	}
}

func TestLiveRun(t *testing.T) {
	for _, agent := range []string{"", "configured", "connected", "connected-failing"} {
		t.Run("agent="+agent, func(t *testing.T) {
			f := newFixture(t, libvirt.Running, ModeLive)
			f.hv.doms["mail"].agent = strings.TrimSuffix(agent, "-failing")
			if agent == "connected-failing" {
				f.hv.failOn["SnapshotDisks:quiesce"] = errors.New("guest agent is not responding")
			}
			if _, err := Run(context.Background(), f.opts); err != nil {
				t.Fatalf("%v\n%s", err, f.out)
			}
			q := "false"
			if agent == "connected" {
				q = "true"
			}
			var snaps []string
			for _, c := range f.hv.mutations() {
				if strings.HasPrefix(c, "SnapshotDisks") {
					snaps = append(snaps, f.scrub(c))
				}
			}
			last := snaps[len(snaps)-1]
			if want := "SnapshotDisks mail quiesce=" + q + " vda=$DIR/pool/mail-vda.overlay.qcow2 vdb=$DIR/pool/mail-vdb.overlay.qcow2 sda=no"; last != want {
				t.Errorf("snapshot: got %q, want %q", last, want)
			}
			wantNote := map[string]string{"": "no guest agent channel", "configured": "no agent answers", "connected": "quiesced through the guest agent",
				"connected-failing": "could not freeze the guest's filesystems: guest agent is not responding"}[agent]
			if !strings.Contains(f.out.String(), wantNote) {
				t.Errorf("output does not say %q:\n%s", wantNote, f.out)
			}
			var jobs []string
			for _, c := range f.hv.mutations() {
				if strings.HasPrefix(c, "Block") || strings.HasPrefix(c, "Pivot") || strings.HasPrefix(c, "DefineDomain") {
					jobs = append(jobs, f.scrub(c))
				}
			}
			want := []string{
				// The persistent definition is defined back after the
				// snapshot (libvirt 9.0 encryption-engine bug).
				"DefineDomain mail vda=$DIR/pool/mail-vda.overlay.qcow2<$DIR/src/mail-a.raw+luks vdb=$DIR/pool/mail-vdb.overlay.qcow2<$DIR/src/mail-b.qcow2+luks sda=$DIR/src/debian.iso",
				"BlockCopy mail vda -> $DIR/pool/mail-vda.luks shallow=true",
				"Pivot mail vda",
				"DefineDomain mail vda=$DIR/pool/mail-vda.luks+luks vdb=$DIR/pool/mail-vdb.overlay.qcow2<$DIR/src/mail-b.qcow2+luks sda=$DIR/src/debian.iso",
				"BlockCopy mail vdb -> $DIR/pool/mail-vdb.qcow2 shallow=true",
				"Pivot mail vdb",
				"DefineDomain mail vda=$DIR/pool/mail-vda.luks+luks vdb=$DIR/pool/mail-vdb.qcow2+luks sda=$DIR/src/debian.iso",
			}
			if strings.Join(jobs, "\n") != strings.Join(want, "\n") {
				t.Errorf("block jobs:\n%s\nwant:\n%s", strings.Join(jobs, "\n"), strings.Join(want, "\n"))
			}
			wantStates := "planned target-created snapshot copied verified switched"
			for dev, states := range journalStates(t, f.opts.JournalPath) {
				if got := strings.Join(states, " "); got != wantStates {
					t.Errorf("%s: journal states %q, want %q", dev, got, wantStates)
				}
			}
			if ents, _ := os.ReadDir(filepath.Join(f.dir, "pool")); len(ents) != 2 {
				t.Errorf("pool holds %v, want only the two targets", ents)
			}
			if f.hv.doms["mail"].state != libvirt.Running {
				t.Error("the guest stopped")
			}
			f.checkNoSecret(t)
		})
	}
}

func TestOfflineShutdownStartAndRetire(t *testing.T) {
	f := newFixture(t, libvirt.Running, ModeOffline)
	f.opts.Shutdown, f.opts.RetireSource = true, true
	// Another guest still uses the base image: it must survive retirement.
	f.hv.addDomain(&libvirtxml.Domain{Type: "kvm", Name: "other", Devices: &libvirtxml.DomainDeviceList{
		Disks: []libvirtxml.DomainDisk{fileDisk("vda", f.base, "raw")}}}, libvirt.ShutOff)
	res, err := Run(context.Background(), f.opts)
	if err != nil {
		t.Fatalf("%v\n%s", err, f.out)
	}
	calls := strings.Join(f.hv.mutations(), "\n")
	for _, want := range []string{"ShutdownDomain mail", "StartDomain mail"} {
		if !strings.Contains(calls, want) {
			t.Errorf("no %q in calls:\n%s", want, calls)
		}
	}
	if strings.Index(calls, "DefineDomain") > strings.Index(calls, "StartDomain") {
		t.Errorf("the guest was started before the switch:\n%s", calls)
	}
	for _, gone := range []string{f.raw, f.qcow2} {
		if _, err := os.Stat(gone); !os.IsNotExist(err) {
			t.Errorf("%s was not retired", gone)
		}
	}
	if _, err := os.Stat(f.base); err != nil {
		t.Errorf("%s is used by domain other and must be kept: %v", f.base, err)
	}
	for _, want := range []string{"kept " + f.base + ": still used by domain other", "SSDs", "secure erase"} {
		if !strings.Contains(f.out.String(), want) {
			t.Errorf("output does not say %q:\n%s", want, f.out)
		}
	}
	if res.States["vda"] != StateRetired || res.States["vdb"] != StateRetired {
		t.Errorf("states %v, want source-retired", res.States)
	}
	// No rollback once the plaintext is gone.
	err = Rollback(context.Background(), f.opts.JournalPath, RollbackOptions{Hypervisor: f.hv, Images: f.img})
	if err == nil || !strings.Contains(err.Error(), "was retired") || exitcode.Of(err) != exitcode.Refused {
		t.Errorf("rollback after retirement: got %v", err)
	}
}

func TestOverwriteAndRemoveZeroesData(t *testing.T) {
	f := newFixture(t, libvirt.ShutOff, ModeOffline)
	p := filepath.Join(f.dir, "sparse.img")
	fh, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	fh.Truncate(64 << 20)
	fh.WriteAt([]byte("secret mail"), 10<<20)
	fh.Close()
	// Keep a hard link to look at the blocks after the removal.
	link := p + ".link"
	if err := os.Link(p, link); err != nil {
		t.Fatal(err)
	}
	rt := &runtime{prog: progressDiscard()}
	if err := rt.overwriteAndRemove(context.Background(), p); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(p); !os.IsNotExist(err) {
		t.Fatal("not removed")
	}
	b, err := os.ReadFile(link)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(b, []byte("secret mail")) || len(b) != 64<<20 {
		t.Fatalf("data survived the overwrite (len %d)", len(b))
	}
}

func TestShutdownTimeout(t *testing.T) {
	f := newFixture(t, libvirt.Running, ModeOffline)
	f.opts.Shutdown = true
	f.hv.stuck = true
	_, err := Run(context.Background(), f.opts)
	if err == nil || !strings.Contains(err.Error(), "did not power off") || !strings.Contains(err.Error(), "--force-off") {
		t.Fatalf("got %v", err)
	}
	// --force-off given when resuming powers it off, and the migration
	// finishes.
	o := f.opts
	o.Resume, o.ForceOff = true, true
	if _, err := Run(context.Background(), o); err != nil {
		t.Fatalf("resume with --force-off: %v", err)
	}
	if calls := strings.Join(f.hv.mutations(), " "); !strings.Contains(calls, "DestroyDomain mail") || !strings.Contains(calls, "StartDomain mail") {
		t.Fatalf("calls: %s", calls)
	}
}

func TestInterruptedExitsResumable(t *testing.T) {
	f := newFixture(t, libvirt.ShutOff, ModeOffline)
	ctx, cancel := context.WithCancel(context.Background())
	restore := engine.SetFault(func(p string) {
		if p == "state:vda:copied" {
			cancel()
		}
	})
	_, err := Run(ctx, f.opts)
	restore()
	if exitcode.Of(err) != exitcode.Interrupted || !strings.Contains(err.Error(), "--resume") {
		t.Fatalf("got %v (exit %d), want status 6 saying --resume", err, exitcode.Of(err))
	}
	o := f.opts
	o.Resume = true
	if _, err := Run(context.Background(), o); err != nil {
		t.Fatal(err)
	}
}

func TestPassphraseFile(t *testing.T) {
	f := newFixture(t, libvirt.ShutOff, ModeOffline)
	pf := filepath.Join(f.dir, "pass")
	if err := os.WriteFile(pf, []byte("correct horse battery staple\n"), 0o400); err != nil {
		t.Fatal(err)
	}
	f.opts.PassphraseFile = pf
	if _, err := Run(context.Background(), f.opts); err != nil {
		t.Fatal(err)
	}
	for uuid, v := range f.hv.secrets {
		if string(v) != "correct horse battery staple" {
			t.Errorf("secret %s holds %q, want the file's passphrase without its newline", uuid, v)
		}
	}
	f.checkNoSecret(t)

	short := newFixture(t, libvirt.ShutOff, ModeOffline)
	os.WriteFile(pf, []byte("short\n"), 0o400)
	short.opts.PassphraseFile = pf
	if _, err := Run(context.Background(), short.opts); err == nil || !strings.Contains(err.Error(), "shorter than 16") {
		t.Errorf("short passphrase: got %v", err)
	}
}

// TestLiveGuestShutDownMidway: a live migration whose guest was shut down
// after the snapshot says what to do, and finishes once it runs again.
func TestLiveGuestShutDownMidway(t *testing.T) {
	f := newFixture(t, libvirt.Running, ModeLive)
	if !runUntil(t, f, "state:vdb:verified") {
		t.Fatal("failpoint did not fire")
	}
	f.hv.doms["mail"].state = libvirt.ShutOff
	o := f.opts
	o.Resume = true
	_, err := Run(context.Background(), o)
	if err == nil || !strings.Contains(err.Error(), "is shut off") || !strings.Contains(err.Error(), "--resume") {
		t.Fatalf("got %v", err)
	}
	if err := f.hv.StartDomain("mail"); err != nil {
		t.Fatal(err)
	}
	if got := f.chainsOf(false); !strings.Contains(got, "mail-vda.overlay.qcow2") {
		t.Fatalf("the restarted guest does not run on its encrypted overlays: %s", got)
	}
	if _, err := Run(context.Background(), o); err != nil {
		t.Fatal(err)
	}
}

// TestResumeFinishedIsNoOp: resuming a finished migration runs nothing and
// leaves the journal byte for byte as it was (the Ansible role relies on
// it to report "unchanged").
func TestResumeFinishedIsNoOp(t *testing.T) {
	f := newFixture(t, libvirt.Running, ModeLive)
	if _, err := Run(context.Background(), f.opts); err != nil {
		t.Fatal(err)
	}
	before, _ := os.ReadFile(f.opts.JournalPath)
	calls := len(f.hv.mutations())
	o := f.opts
	o.Resume = true
	res, err := Run(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	after, _ := os.ReadFile(f.opts.JournalPath)
	if !bytes.Equal(before, after) {
		t.Errorf("the journal changed:\n%s", after[len(before):])
	}
	if got := len(f.hv.mutations()); got != calls {
		t.Errorf("resume changed something: %v", f.hv.mutations()[calls:])
	}
	if res.States["vda"] != StateSwitched {
		t.Errorf("states %v", res.States)
	}
}

// A qcow2 target's unallocated clusters read zeros only when it has no
// backing file: verify refuses one that has (or that is not encrypted)
// before it compares.
func TestVerifyRefusesQcow2TargetWithBacking(t *testing.T) {
	img := newFakeImages()
	rt := &runtime{img: img}
	d := &Disk{Target: "vdb", TargetPath: "/pool/mail-vdb.qcow2", TargetFormat: "qcow2"}
	for name, info := range map[string]string{
		"backing file": `[{"filename":"/pool/mail-vdb.qcow2","format":"qcow2","virtual-size":1,"encrypted":true,"backing-filename":"/src/base.raw"},{"filename":"/src/base.raw","format":"raw","virtual-size":1}]`,
		"plaintext":    `{"filename":"/pool/mail-vdb.qcow2","format":"qcow2","virtual-size":1}`,
	} {
		img.infos[d.TargetPath] = info
		if err := rt.noBacking(context.Background(), d); err == nil || !strings.Contains(err.Error(), "without a backing file") {
			t.Errorf("%s: got %v", name, err)
		}
	}
	img.infos[d.TargetPath] = `{"filename":"/pool/mail-vdb.qcow2","format":"qcow2","virtual-size":1,"encrypted":true}`
	if err := rt.noBacking(context.Background(), d); err != nil {
		t.Errorf("one encrypted image: %v", err)
	}
	if !d.sparse() || (&Disk{TargetFormat: "luks"}).sparse() || (&Disk{}).sparse() {
		t.Error("only qcow2 targets are copied sparsely")
	}
}
