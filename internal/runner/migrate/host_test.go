package migrate_test

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"libvirt.org/go/libvirtxml"

	"github.com/cryptshift/cryptshift/internal/doors/qemuimg"
	"github.com/cryptshift/cryptshift/internal/harness/libvirttest"
	"github.com/cryptshift/cryptshift/internal/runner/engine"
	"github.com/cryptshift/cryptshift/internal/runner/migrate"
	"github.com/cryptshift/cryptshift/libvirt"
)

// iterTime keeps LUKS key derivation cheap in tests; production keeps
// qemu's 2000 ms.
const iterTime = 10

const diskSize = 24 << 20

// plaintextStoreOK: the private libvirtd keeps its secrets in a test
// directory on this machine's plaintext disk, and cryptshift checks the
// host's /etc/libvirt/secrets, which is plaintext here too; the tests that
// migrate accept that explicitly (TestHostPlaintextSecretStoreRefused
// checks the refusal).
const plaintextStoreOK = true

// env is one private libvirtd with a target pool and a source directory.
type env struct {
	d       *libvirttest.Daemon
	c       *libvirt.Conn
	dir     string // sources live here
	pool    string // the target pool's directory
	journal string
}

func newEnv(t *testing.T) *env {
	d := libvirttest.Start(t)
	e := &env{d: d, dir: t.TempDir()}
	e.pool = filepath.Join(e.dir, "pool")
	e.c = d.Dial(t)
	d.DefineDirPool(t, "enc", e.pool)
	e.journal = filepath.Join(e.dir, "journal", "j.journal")
	return e
}

// guest is a domain with the two disks of the brief: a raw disk with data
// and a qcow2 disk with a backing file, both with data in several places.
type guest struct {
	name       string
	raw, qcow2 string
	base       string
	// want is a plaintext copy of each disk's guest-visible data, taken
	// before the migration, to compare the targets with.
	want map[string]string
}

func (e *env) newGuest(t *testing.T, name string, start bool) *guest {
	t.Helper()
	ctx := context.Background()
	q := qemuimg.New()
	g := &guest{name: name,
		raw:   filepath.Join(e.dir, name+"-a.raw"),
		base:  filepath.Join(e.dir, name+"-base.raw"),
		qcow2: filepath.Join(e.dir, name+"-b.qcow2"),
		want:  map[string]string{}}
	must(t, q.Create(ctx, qemuimg.CreateOptions{Path: g.raw, Format: "raw", Size: diskSize}))
	must(t, q.Create(ctx, qemuimg.CreateOptions{Path: g.base, Format: "raw", Size: diskSize}))
	writeAt(t, g.raw, 0, "MBR-ish first sector of vda")
	writeAt(t, g.raw, 1<<20, strings.Repeat("mail-vda ", 20000))
	writeAt(t, g.raw, diskSize-4096, "last block of vda")
	writeAt(t, g.base, 2<<20, strings.Repeat("base-vdb ", 20000))
	must(t, q.Create(ctx, qemuimg.CreateOptions{Path: g.qcow2, Format: "qcow2", Size: diskSize, BackingPath: g.base, BackingFormat: "raw"}))
	qemuIO(t, g.qcow2, "write -P 0x43 5M 256k", "write -z 2M 64k")
	// Plaintext references for the comparisons afterwards.
	for dev, src := range map[string]qemuimg.Image{"vda": {Path: g.raw, Format: "raw"}, "vdb": {Path: g.qcow2, Format: "qcow2"}} {
		ref := filepath.Join(e.dir, name+"-"+dev+".want")
		must(t, q.Create(ctx, qemuimg.CreateOptions{Path: ref, Format: "raw", Size: diskSize}))
		must(t, q.Convert(ctx, src, qemuimg.Image{Path: ref, Format: "raw"}))
		g.want[dev] = ref
	}
	e.d.Define(t, libvirttest.Domain(name,
		libvirttest.FileDisk("vda", g.raw, "raw"),
		libvirttest.FileDisk("vdb", g.qcow2, "qcow2")), start)
	return g
}

func (e *env) options(g *guest, mode string) migrate.Options {
	return migrate.Options{Domain: g.name, Connect: e.d.Socket, To: "pool:enc", AllowPlaintextSecretStore: plaintextStoreOK, Mode: mode,
		JournalPath: filepath.Join(e.dir, "journal", g.name+".journal"), IterTimeMS: iterTime}
}

// checkMigrated asserts the brief's end state: each disk's decrypted
// target equals the data before the migration, the domain (live and
// persistent) uses the encrypted volumes, and no overlay or temporary file
// is left in the pool.
func (e *env) checkMigrated(t *testing.T, g *guest, running bool) {
	t.Helper()
	ctx := context.Background()
	q := qemuimg.New()
	for _, inactive := range []bool{false, true} {
		if !running && !inactive {
			continue
		}
		dom, err := e.c.DomainXML(g.name, libvirt.XMLFlags{Inactive: inactive})
		must(t, err)
		for _, dev := range []string{"vda", "vdb"} {
			x := libvirt.FindDisk(dom, dev)
			want := targetOf(e, g, dev)
			if chain := libvirt.Chain(x); len(chain) != 1 || chain[0] != want {
				t.Fatalf("%s (inactive=%v): chain %v, want [%s]", dev, inactive, chain, want)
			}
			if x.Source.Encryption == nil || x.Source.Encryption.Format != "luks" || len(x.Source.Encryption.Secrets) != 1 {
				t.Fatalf("%s (inactive=%v): no luks encryption in the definition: %+v", dev, inactive, x.Source)
			}
			// The default keeps the source's format: vda raw → raw LUKS,
			// vdb qcow2 → encrypted qcow2.
			if wantDriver := map[string]string{"vda": "raw", "vdb": "qcow2"}[dev]; x.Driver == nil || x.Driver.Type != wantDriver {
				t.Fatalf("%s: driver %+v, want %s", dev, x.Driver, wantDriver)
			}
			if inactive {
				key, err := e.c.SecretValue(x.Source.Encryption.Secrets[0].UUID)
				must(t, err)
				// The key is in libvirt only: not in the journal, not in
				// the saved definition.
				for _, f := range []string{e.journalOf(g), strings.TrimSuffix(e.journalOf(g), ".journal") + ".orig.xml"} {
					if b, err := os.ReadFile(f); err != nil || bytes.Contains(b, key) {
						t.Fatalf("%s: unreadable (%v) or holds the key of %s", f, err, dev)
					}
				}
				if err := q.Compare(ctx, qemuimg.Image{Path: g.want[dev], Format: "raw"},
					targetImage(x, key), running); err != nil {
					t.Fatalf("%s: %v", dev, err)
				}
			}
		}
	}
	if running {
		out := e.d.Virsh(t, "domblklist", g.name)
		for _, dev := range []string{"vda", "vdb"} {
			if !strings.Contains(out, targetOf(e, g, dev)) {
				t.Fatalf("domblklist does not show the encrypted volume of %s:\n%s", dev, out)
			}
		}
	}
	e.checkPoolClean(t, g, []string{g.name + "-vda.luks", g.name + "-vdb.qcow2"})
}

// targetOf is the target of a disk of newGuest: vda (raw) becomes raw
// LUKS, vdb (qcow2 over a raw base) an encrypted qcow2.
func targetOf(e *env, g *guest, dev string) string {
	return filepath.Join(e.pool, g.name+"-"+dev+map[string]string{"vda": ".luks", "vdb": ".qcow2"}[dev])
}

// targetImage is how qemu-img opens a migrated disk's target, from its
// libvirt definition: driver raw over qemu's luks, or encrypted qcow2.
func targetImage(x *libvirtxml.DomainDisk, key []byte) qemuimg.Image {
	format := "luks"
	if x.Driver != nil && x.Driver.Type == "qcow2" {
		format = "qcow2"
	}
	return qemuimg.Image{Path: libvirt.SourcePath(x), Format: format, Secret: key}
}

// checkPoolClean asserts that the pool holds exactly want (of this guest)
// and that no stray file appeared next to the sources.
func (e *env) checkPoolClean(t *testing.T, g *guest, want []string) {
	t.Helper()
	got := listDir(t, e.pool, g.name+"-")
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("pool holds %v, want %v (a leftover overlay or temporary file?)", got, want)
	}
	src := listDir(t, e.dir, g.name+"-")
	wantSrc := []string{g.name + "-a.raw", g.name + "-b.qcow2", g.name + "-base.raw", g.name + "-vda.want", g.name + "-vdb.want"}
	if strings.Join(src, " ") != strings.Join(wantSrc, " ") {
		t.Fatalf("source directory holds %v, want %v", src, wantSrc)
	}
}

func listDir(t *testing.T, dir, prefix string) []string {
	ents, err := os.ReadDir(dir)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), prefix) {
			out = append(out, e.Name())
		}
	}
	sort.Strings(out)
	return out
}

// checkOriginal asserts that the guest is back on its original disks with
// their original data and that the migration left nothing behind.
func (e *env) checkOriginal(t *testing.T, g *guest, running bool) {
	t.Helper()
	ctx := context.Background()
	q := qemuimg.New()
	for _, inactive := range []bool{false, true} {
		if !running && !inactive {
			continue
		}
		dom, err := e.c.DomainXML(g.name, libvirt.XMLFlags{Inactive: inactive})
		must(t, err)
		for dev, path := range map[string]string{"vda": g.raw, "vdb": g.qcow2} {
			x := libvirt.FindDisk(dom, dev)
			if libvirt.SourcePath(x) != path || x.Source.Encryption != nil {
				t.Fatalf("%s (inactive=%v): source %q encryption %+v, want plaintext %s", dev, inactive, libvirt.SourcePath(x), x.Source.Encryption, path)
			}
		}
	}
	must(t, q.Compare(ctx, qemuimg.Image{Path: g.want["vda"], Format: "raw"}, qemuimg.Image{Path: g.raw, Format: "raw"}, running))
	must(t, q.Compare(ctx, qemuimg.Image{Path: g.want["vdb"], Format: "raw"}, qemuimg.Image{Path: g.qcow2, Format: "qcow2"}, running))
	e.checkPoolClean(t, g, nil)
	l, err := engine.Read(e.journalOf(g))
	must(t, err)
	var h migrate.Header
	must(t, json.Unmarshal(l.Header, &h))
	for _, d := range h.Disks {
		if ok, err := e.c.SecretExists(d.SecretUUID); err != nil || ok {
			t.Fatalf("secret %s of %s left after rollback (%v)", d.SecretUUID, d.Target, err)
		}
	}
}

func TestHostMigrateOffline(t *testing.T) {
	e := newEnv(t)
	g := e.newGuest(t, "off", false)
	o := e.options(g, migrate.ModeOffline)
	start := time.Now()
	var out bytes.Buffer
	o.Out = &out
	res, err := migrate.Run(context.Background(), o)
	if err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	t.Logf("offline migration of 2 disks: %s", time.Since(start).Round(time.Millisecond))
	for _, dev := range []string{"vda", "vdb"} {
		if res.States[dev] != migrate.StateSwitched {
			t.Fatalf("%s: state %s, want switched", dev, res.States[dev])
		}
	}
	e.checkMigrated(t, g, false)
	if !strings.Contains(out.String(), "plaintext remains") {
		t.Fatalf("the output does not say which plaintext remains:\n%s", out.String())
	}
	// The guest boots on its encrypted disks: libvirt hands qemu the keys.
	must(t, e.c.StartDomain(g.name))
	e.checkMigrated(t, g, true)

	// Retire the plaintext later, as the leftovers note says.
	out.Reset()
	o.Resume, o.RetireSource = true, true
	res, err = migrate.Run(context.Background(), o)
	if err != nil {
		t.Fatalf("retire: %v\n%s", err, out.String())
	}
	for _, f := range []string{g.raw, g.qcow2, g.base} {
		if _, err := os.Stat(f); !os.IsNotExist(err) {
			t.Errorf("%s was not retired", f)
		}
	}
	if res.States["vda"] != migrate.StateRetired || res.States["vdb"] != migrate.StateRetired {
		t.Errorf("states %v, want source-retired", res.States)
	}
	if !strings.Contains(out.String(), "SSDs") || strings.Contains(out.String(), "plaintext remains") {
		t.Errorf("the output does not say what retiring does not guarantee, or still lists leftovers:\n%s", out.String())
	}
	if err := migrate.Rollback(context.Background(), o.JournalPath, migrate.RollbackOptions{}); err == nil || !strings.Contains(err.Error(), "retired") {
		t.Errorf("rollback after retirement: got %v", err)
	}
}

func TestHostMigrateLive(t *testing.T) {
	e := newEnv(t)
	for _, engine := range []string{migrate.EngineSnapshot, migrate.EngineMirror} {
		t.Run(engine, func(t *testing.T) {
			g := e.newGuest(t, "live-"+engine, true)
			pid := e.d.QemuPID(g.name)
			o := e.options(g, migrate.ModeLive)
			o.Engine = engine
			var out bytes.Buffer
			o.Out = &out
			start := time.Now()
			res, err := migrate.Run(context.Background(), o)
			if err != nil {
				t.Fatalf("%v\n%s\n%s", err, out.String(), e.d.DomainLog(g.name))
			}
			t.Logf("live migration (%s engine) of 2 disks: %s", engine, time.Since(start).Round(time.Millisecond))
			if res.States["vda"] != migrate.StateSwitched || res.States["vdb"] != migrate.StateSwitched {
				t.Fatalf("states %v", res.States)
			}
			if st, _ := e.c.DomainState(g.name); st != libvirt.Running || e.d.QemuPID(g.name) != pid {
				t.Fatalf("the guest stopped: state %s, qemu pid %d, want running %d", st, e.d.QemuPID(g.name), pid)
			}
			e.checkMigrated(t, g, true)
			want := "snapshot not quiesced: the domain has no guest agent channel"
			if engine == migrate.EngineMirror {
				want = "the guest was paused for"
			}
			if !strings.Contains(out.String(), want) {
				t.Fatalf("the output does not say %q:\n%s", want, out.String())
			}
		})
	}
}

func TestHostMigrateDryRunTouchesNothing(t *testing.T) {
	e := newEnv(t)
	g := e.newGuest(t, "dry", true)
	before := e.snapshotState(t, g)
	o := e.options(g, migrate.ModeLive)
	o.DryRun = true
	res, err := migrate.Run(context.Background(), o)
	must(t, err)
	b, err := json.Marshal(res.Plan)
	must(t, err)
	var doc struct {
		Steps []struct {
			ID          string   `json:"id"`
			Action      string   `json:"action"`
			Target      string   `json:"target"`
			Command     []string `json:"command"`
			Destructive bool     `json:"destructive"`
		} `json:"steps"`
	}
	must(t, json.Unmarshal(b, &doc))
	if len(doc.Steps) == 0 {
		t.Fatal("no steps")
	}
	for _, s := range doc.Steps {
		if s.ID == "" || s.Action == "" || s.Target == "" || len(s.Command) == 0 {
			t.Fatalf("incomplete step %+v", s)
		}
	}
	if after := e.snapshotState(t, g); after != before {
		t.Fatalf("dry-run changed something:\nbefore %s\nafter  %s", before, after)
	}
	if _, err := os.Stat(o.JournalPath); !os.IsNotExist(err) {
		t.Fatalf("dry-run wrote a journal: %v", err)
	}
}

// snapshotState summarises everything a migration could create or change:
// the domain's definitions, the pool's files, the secrets.
func (e *env) snapshotState(t *testing.T, g *guest) string {
	t.Helper()
	var b strings.Builder
	for _, inactive := range []bool{false, true} {
		dom, err := e.c.DomainXML(g.name, libvirt.XMLFlags{Inactive: inactive})
		must(t, err)
		for _, x := range dom.Devices.Disks {
			b.WriteString(strings.Join(libvirt.Chain(&x), ",") + ";")
		}
	}
	b.WriteString(strings.Join(listDir(t, e.pool, ""), ",") + ";")
	b.WriteString(strings.Join(listDir(t, e.dir, ""), ",") + ";")
	uuids, err := e.c.SecretUUIDs()
	must(t, err)
	b.WriteString(strings.Join(uuids, ","))
	return b.String()
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func writeAt(t *testing.T, path string, off int64, s string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	must(t, err)
	defer f.Close()
	_, err = f.WriteAt([]byte(s), off)
	must(t, err)
}

// qemuIO writes into an image through qemu's block layer (qcow2 clusters,
// zero clusters), as a guest would.
func qemuIO(t *testing.T, path string, cmds ...string) {
	t.Helper()
	args := []string{"-f", "qcow2"}
	for _, c := range cmds {
		args = append(args, "-c", c)
	}
	if out, err := exec.Command("qemu-io", append(args, path)...).CombinedOutput(); err != nil {
		t.Fatalf("qemu-io %v: %v\n%s", cmds, err, out)
	}
}

// TestHostBadInput: each refused migration says what is wrong and what to
// do, and changes nothing: no volume, no secret, no snapshot, no journal.
func TestHostBadInput(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	run := e.newGuest(t, "bad", true)
	off := e.newGuest(t, "badoff", false)
	// A guest whose disk is far larger than any pool (qcow2 allocates
	// nothing up front, so 64 TiB costs a few KiB).
	huge := filepath.Join(e.dir, "huge.qcow2")
	must(t, qemuimg.New().Create(ctx, qemuimg.CreateOptions{Path: huge, Format: "qcow2", Size: 64 << 40}))
	e.d.Define(t, libvirttest.Domain("big", libvirttest.FileDisk("vda", huge, "qcow2")), true)
	shared := libvirttest.FileDisk("vdc", filepath.Join(e.dir, "bad-a.raw"), "raw")
	shared.Target.Dev = "vdc"
	sh := libvirttest.Domain("sh", libvirttest.FileDisk("vda", off.raw, "raw"), shared)
	sh.Devices.Disks[1].Shareable = &libvirtxml.DomainDiskShareable{}
	e.d.Define(t, sh, false)

	tests := []struct {
		name   string
		domain string
		adjust func(o *migrate.Options)
		want   []string
	}{
		{name: "unknown domain", domain: "nope", want: []string{`cannot find domain "nope"`, "virsh list --all"}},
		{name: "running domain offline", domain: run.name, adjust: func(o *migrate.Options) { o.Mode = migrate.ModeOffline },
			want: []string{"domain bad is running", "--shutdown", "--mode live"}},
		// As raw LUKS (the full virtual size); as an encrypted qcow2 the
		// empty disk would need only its metadata.
		{name: "target too small", domain: "big", adjust: func(o *migrate.Options) { o.TargetFormat = migrate.TargetFormatRaw },
			want: []string{`storage pool "enc" is too small`, "missing", "free space in the pool", "raw LUKS targets: virtual sizes"}},
		{name: "shareable disk", domain: "sh", adjust: func(o *migrate.Options) { o.Mode = migrate.ModeOffline },
			want: []string{"disk vdc", "shareable"}},
		{name: "wrong pool", domain: run.name, adjust: func(o *migrate.Options) { o.To = "pool:nope" },
			want: []string{`cannot find storage pool "nope"`, "enc"}},
		{name: "libvirtd unreachable", domain: run.name, adjust: func(o *migrate.Options) { o.Connect = filepath.Join(e.dir, "no-sock") },
			want: []string{"cannot connect to libvirt", "is libvirtd (or virtqemud) running"}},
	}
	doms := []*guest{run, off}
	before := map[string]string{}
	for _, g := range doms {
		before[g.name] = e.snapshotState(t, g)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := migrate.Options{Domain: tt.domain, Connect: e.d.Socket, To: "pool:enc", AllowPlaintextSecretStore: plaintextStoreOK, Mode: migrate.ModeLive,
				JournalPath: filepath.Join(e.dir, "journal", tt.domain+".journal"), IterTimeMS: iterTime}
			if tt.adjust != nil {
				tt.adjust(&o)
			}
			_, err := migrate.Run(ctx, o)
			if err == nil {
				t.Fatal("got nil error")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
			if _, serr := os.Stat(o.JournalPath); !os.IsNotExist(serr) {
				t.Errorf("a refused migration wrote a journal")
			}
			t.Logf("%s: %v", tt.name, err)
		})
	}
	for _, g := range doms {
		if after := e.snapshotState(t, g); after != before[g.name] {
			t.Errorf("%s changed:\nbefore %s\nafter  %s", g.name, before[g.name], after)
		}
	}
	if got := listDir(t, e.pool, ""); len(got) != 0 {
		t.Errorf("the pool holds %v", got)
	}
	if uuids, err := e.c.SecretUUIDs(); err != nil || len(uuids) != 0 {
		t.Errorf("secrets: %v, %v", uuids, err)
	}
	for _, name := range []string{"big", "sh"} {
		dom, err := e.c.DomainXML(name, libvirt.XMLFlags{})
		must(t, err)
		if top := libvirt.Chain(libvirt.FindDisk(dom, "vda"))[0]; strings.HasPrefix(top, e.pool) {
			t.Errorf("%s: vda moved to %s", name, top)
		}
	}
}

// TestHostMigrateBlockAndVolumeDisks covers the other disk kinds discovery
// must understand: a block device (a loop device here) and a volume of a
// libvirt storage pool.
func TestHostMigrateBlockAndVolumeDisks(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	q := qemuimg.New()
	img := filepath.Join(e.dir, "blk-backing.raw")
	must(t, q.Create(ctx, qemuimg.CreateOptions{Path: img, Format: "raw", Size: diskSize}))
	writeAt(t, img, 3<<20, strings.Repeat("block device mail ", 1000))
	out, err := exec.Command("losetup", "--find", "--show", img).CombinedOutput()
	if err != nil {
		t.Fatalf("losetup: %v: %s", err, out)
	}
	loop := strings.TrimSpace(string(out))
	t.Cleanup(func() {
		if out, err := exec.Command("losetup", "-d", loop).CombinedOutput(); err != nil {
			t.Errorf("losetup -d %s: %v: %s", loop, err, out)
		}
	})
	srcPool := filepath.Join(e.dir, "srcpool")
	e.d.DefineDirPool(t, "src", srcPool)
	vol := filepath.Join(srcPool, "spool.qcow2")
	must(t, q.Create(ctx, qemuimg.CreateOptions{Path: vol, Format: "qcow2", Size: diskSize}))
	qemuIO(t, vol, "write -P 0x6d 7M 128k")
	must(t, e.c.RefreshPool("src"))

	blk := libvirtxml.DomainDisk{Device: "disk", Driver: &libvirtxml.DomainDiskDriver{Name: "qemu", Type: "raw"},
		Source: &libvirtxml.DomainDiskSource{Block: &libvirtxml.DomainDiskSourceBlock{Dev: loop}},
		Target: &libvirtxml.DomainDiskTarget{Dev: "vda", Bus: "virtio"}}
	vd := libvirtxml.DomainDisk{Device: "disk", Driver: &libvirtxml.DomainDiskDriver{Name: "qemu", Type: "qcow2"},
		Source: &libvirtxml.DomainDiskSource{Volume: &libvirtxml.DomainDiskSourceVolume{Pool: "src", Volume: "spool.qcow2"}},
		Target: &libvirtxml.DomainDiskTarget{Dev: "vdb", Bus: "virtio"}}
	e.d.Define(t, libvirttest.Domain("kinds", blk, vd), false)

	o := migrate.Options{Domain: "kinds", Connect: e.d.Socket, To: "pool:enc", AllowPlaintextSecretStore: plaintextStoreOK, Mode: migrate.ModeOffline,
		JournalPath: filepath.Join(e.dir, "journal", "kinds.journal"), IterTimeMS: iterTime}
	res, err := migrate.Run(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	src := map[string]qemuimg.Image{"vda": {Path: loop, Format: "raw"}, "vdb": {Path: vol, Format: "qcow2"}}
	for _, d := range res.Plan.Disks {
		if d.Target == "vda" && (d.Chain[0].Type != "block" || d.Chain[0].Path != loop) {
			t.Errorf("vda: chain %+v, want the block device %s", d.Chain, loop)
		}
		if d.Target == "vdb" && d.Chain[0].Path != vol {
			t.Errorf("vdb: chain %+v, want the volume's path %s", d.Chain, vol)
		}
	}
	dom, err := e.c.DomainXML("kinds", libvirt.XMLFlags{Inactive: true})
	must(t, err)
	for dev, s := range src {
		x := libvirt.FindDisk(dom, dev)
		key, err := e.c.SecretValue(x.Source.Encryption.Secrets[0].UUID)
		must(t, err)
		if err := q.Compare(ctx, s, targetImage(x, key), false); err != nil {
			t.Errorf("%s: %v", dev, err)
		}
	}
	must(t, e.c.StartDomain("kinds"))
	must(t, e.c.DestroyDomain("kinds"))
}

// Without --allow-plaintext-secret-store, a pool: migration on a host
// whose /etc/libvirt/secrets is not on encrypted storage (this one) is
// refused before libvirtd is asked for anything: virsh lists no secret
// and the pool holds no image.
func TestHostPlaintextSecretStoreRefused(t *testing.T) {
	e := newEnv(t)
	g := e.newGuest(t, "store", false)
	o := e.options(g, migrate.ModeOffline)
	o.AllowPlaintextSecretStore = false
	_, err := migrate.Run(context.Background(), o)
	if err == nil || !strings.Contains(err.Error(), "the libvirt secret store /etc/libvirt/secrets is on") ||
		!strings.Contains(err.Error(), "--allow-plaintext-secret-store") {
		t.Fatalf("got %v", err)
	}
	if out := e.d.Virsh(t, "secret-list"); strings.Contains(out, e.pool) {
		t.Errorf("virsh lists secrets:\n%s", out)
	}
	if entries, _ := os.ReadDir(e.pool); len(entries) != 0 {
		t.Errorf("the pool holds %d files", len(entries))
	}
}
