package apply

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/cryptshift/cryptshift/internal/doors/execx"
	"github.com/cryptshift/cryptshift/internal/doors/fs"
	"github.com/cryptshift/cryptshift/internal/exitcode"
	"github.com/cryptshift/cryptshift/internal/harness/secretscan"
	"github.com/cryptshift/cryptshift/internal/harness/testtier"
	"github.com/cryptshift/cryptshift/internal/model/plan"
	"github.com/cryptshift/cryptshift/internal/runner/engine"
	"github.com/cryptshift/cryptshift/internal/runner/guard"
	"github.com/cryptshift/cryptshift/luks"
	"github.com/cryptshift/cryptshift/lvm"
)

const (
	testPass     = "correct horse battery staple"
	testRecovery = "7K2QH-ABCDE-FGHJK-MNPQR-STVWX-YZ012-34567-89ABC"
)

// syntheticPlan's steps run against a recording runner: the lvcreate's
// target is a directory that exists, so a resume finds it there.
func syntheticPlan(dir string) *plan.Plan {
	passphrase := luks.Key{Secret: plan.SecretPassphrase}
	return &plan.Plan{APIVersion: plan.APIVersion, Kind: plan.Kind, Layout: "t", Root: dir, Steps: []plan.Step{
		plan.NewStep(plan.Step{ID: "keyfile:k", Action: plan.ActKeyFile, Target: "k"},
			&plan.Params{KeyFile: &plan.KeyFile{Path: filepath.Join(dir, "keys", "k.key"), Bytes: 64}}, nil),
		plan.NewStep(plan.Step{ID: "lvcreate:/dev/vg0/a", Action: plan.ActLVCreate, Target: filepath.Join(dir, "keys")},
			&plan.Params{LVCreate: &lvm.LVCreate{VG: "vg0", Name: "a", Extents: 10}}, nil),
		plan.NewStep(plan.Step{ID: "open:/dev/mapper/a", Action: plan.ActOpen, Target: "/dev/mapper/a"},
			&plan.Params{LUKSOpen: &luks.Open{Device: "/dev/vg0/a", Name: "a", Key: passphrase}}, nil),
		plan.NewStep(plan.Step{ID: "cryptResize:/dev/mapper/a", Action: plan.ActCryptResize, Target: "/dev/mapper/a"},
			&plan.Params{CryptResize: &luks.Resize{Name: "a", Key: passphrase}}, nil),
		plan.NewStep(plan.Step{ID: "writeFstab:f", Action: plan.ActWriteFstab, Target: "f",
			Input: "# BEGIN cryptshift layout t\nUUID=1 / ext4 defaults 0 1\n# END cryptshift layout t\n"},
			&plan.Params{WriteBlock: &plan.Block{File: filepath.Join(dir, "fstab"), Kind: "fstab", Layout: "t"}}, nil),
	}}
}

// journalTypes lists a journal's record types in order (read as a
// reviewer would: one JSON record per line).
func journalTypes(t *testing.T, path string) []string {
	var out []string
	for _, l := range strings.Split(strings.TrimSpace(string(mustRead(t, path))), "\n") {
		var r struct{ Type string }
		if err := json.Unmarshal([]byte(l), &r); err != nil {
			t.Fatal(err)
		}
		out = append(out, r.Type)
	}
	return out
}

// allowKeyDirs lets key files into the test's temporary directories,
// which are not on encrypted storage.
func allowKeyDirs(t *testing.T) {
	t.Cleanup(setKeyDirCheck(func(string, ...string) error { return nil }))
}

func TestEngineRoutesSecretsAndResumesAfterStop(t *testing.T) {
	allowKeyDirs(t)
	dir := t.TempDir()
	p := syntheticPlan(dir)
	rec := &execx.Recorder{}
	jp := filepath.Join(dir, "j")
	calls := 0
	opt := Options{JournalPath: jp, Run: rec, Secrets: Secrets{Passphrase: []byte(testPass), RecoveryKey: []byte(testRecovery)},
		Stop: func() bool { calls++; return calls == 3 }}
	err := Run(context.Background(), p, opt)
	if !errors.Is(err, engine.ErrInterrupted) || exitcode.Of(err) != exitcode.Interrupted || !strings.Contains(err.Error(), "cryptshift apply --resume --journal "+jp) {
		t.Fatalf("got %v, want an interruption saying how to resume", err)
	}
	if got := strings.Join(journalTypes(t, jp), " "); got != "header start done start done stopped" {
		t.Fatalf("journal after stop: %s", got)
	}
	if len(rec.Cmds) != 1 {
		t.Fatalf("ran %d commands before the stop, want 1", len(rec.Cmds))
	}
	opt.Stop = nil
	if err := Run(context.Background(), p, opt); err == nil {
		t.Fatal("a second Run over an unfinished journal was allowed")
	}
	if err := Resume(context.Background(), opt); err != nil {
		t.Fatal(err)
	}
	if len(rec.Cmds) != 3 {
		t.Fatalf("got %d commands, want 3: %v", len(rec.Cmds), rec.Lines())
	}
	for _, c := range rec.Cmds[1:] {
		if string(c.Stdin) != testPass || len(c.ExtraFiles) != 0 {
			t.Errorf("%s: stdin %q, extra %d", c, c.Stdin, len(c.ExtraFiles))
		}
	}
	for _, c := range rec.Cmds {
		if strings.Contains(c.String(), testPass) || strings.Contains(c.String(), testRecovery) {
			t.Errorf("a secret is in argv: %s", c)
		}
	}
	types := journalTypes(t, jp)
	if types[len(types)-1] != "finished" {
		t.Errorf("journal does not end finished: %v", types)
	}
	assertNoSecrets(t, jp, [][]byte{[]byte(testPass), []byte(testRecovery), mustRead(t, filepath.Join(dir, "keys", "k.key"))})
	if b, _ := os.ReadFile(filepath.Join(dir, "fstab")); !strings.Contains(string(b), "UUID=1 / ext4") {
		t.Errorf("fstab: %q", b)
	}
	// A finished journal is archived by the next run.
	if err := Run(context.Background(), p, Options{JournalPath: jp, Run: &execx.Recorder{}, Secrets: opt.Secrets}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(jp + ".1"); err != nil {
		t.Errorf("the finished journal was not archived: %v", err)
	}
}

func mustRead(t *testing.T, p string) []byte {
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// assertNoSecrets fails if a file holds a secret raw, in hex or in base64.
func assertNoSecrets(t *testing.T, path string, secrets [][]byte) {
	t.Helper()
	b := mustRead(t, path)
	for _, s := range secrets {
		if enc := secretscan.Find(b, s); enc != "" {
			t.Errorf("%s contains a secret (%s)", path, enc)
		}
	}
}

func TestEngineFailureIsRecordedAndRetried(t *testing.T) {
	allowKeyDirs(t)
	dir := t.TempDir()
	p := syntheticPlan(dir)
	rec := &execx.Recorder{Errors: map[string]error{"lvm lvcreate": errors.New("Volume group \"vg0\" not found")}}
	jp := filepath.Join(dir, "j")
	opt := Options{JournalPath: jp, Run: rec, Secrets: Secrets{Passphrase: []byte(testPass), RecoveryKey: []byte(testRecovery)}}
	err := Run(context.Background(), p, opt)
	if err == nil || !strings.Contains(err.Error(), "cannot finish step 2/5 lvcreate:/dev/vg0/a") || !strings.Contains(err.Error(), "--resume") {
		t.Fatalf("got %v", err)
	}
	if got := strings.Join(journalTypes(t, jp), " "); got != "header start done start failed" {
		t.Fatalf("journal: %s", got)
	}
	rec.Errors = nil
	if err := Resume(context.Background(), opt); err != nil {
		t.Fatal(err)
	}
	if n := len(rec.Cmds); n != 4 { // the failed lvcreate, then lvcreate, open, resize
		t.Fatalf("got %d commands: %v", n, rec.Lines())
	}
}

// Real cryptsetup on image files (no device-mapper needed): formatting,
// the recovery keyslot and a header backup, each checked by apply with
// luks.go and here with cryptsetup luksDump; stopping at every step
// boundary and resuming gives the same headers.
func TestHostApplyLUKSOnImageFiles(t *testing.T) {
	testtier.Host(t, "cryptsetup")
	allowKeyDirs(t)
	argon := luks.KDF{PBKDF: "argon2id", Iterations: 4, MemoryKiB: 32768, Parallel: 1}
	params := luks.Params{Cipher: "aes-xts-plain64", KeySize: 512, Hash: "sha256", KDF: argon, SectorSize: 4096}
	mkPlan := func(dir string) *plan.Plan {
		a, b := filepath.Join(dir, "a.img"), filepath.Join(dir, "b.img")
		for _, f := range []string{a, b} {
			os.WriteFile(f, nil, 0o600)
			os.Truncate(f, 32<<20)
		}
		kf := filepath.Join(dir, "keys", "b.key")
		pa, pb := params, params
		pa.UUID, pa.Label = "0d7c1d36-2f6b-4a0e-9d8c-3c2b1a0f9e8d", "a"
		pb.UUID, pb.Label = "1d7c1d36-2f6b-4a0e-9d8c-3c2b1a0f9e8d", "b"
		pass, rk, kfKey := luks.Key{Secret: plan.SecretPassphrase}, luks.Key{Secret: plan.SecretRecoveryKey}, luks.Key{File: kf}
		return &plan.Plan{APIVersion: plan.APIVersion, Kind: plan.Kind, Layout: "img", Steps: []plan.Step{
			plan.NewStep(plan.Step{ID: "luksFormat:a", Action: plan.ActLUKSFormat, Target: a}, &plan.Params{LUKSFormat: &luks.Format{Device: a, Params: pa, Key: pass}}, nil),
			plan.NewStep(plan.Step{ID: "addRecoveryKey:a", Action: plan.ActAddRecovery, Target: a}, &plan.Params{LUKSAddKey: &luks.AddKey{Device: a, KDF: argon, Key: pass, NewKey: rk}}, nil),
			plan.NewStep(plan.Step{ID: "keyfile:b", Action: plan.ActKeyFile, Target: kf}, &plan.Params{KeyFile: &plan.KeyFile{Path: kf, Bytes: 4096}}, nil),
			plan.NewStep(plan.Step{ID: "luksFormat:b", Action: plan.ActLUKSFormat, Target: b}, &plan.Params{LUKSFormat: &luks.Format{Device: b, Params: pb, Key: kfKey}}, nil),
			plan.NewStep(plan.Step{ID: "addRecoveryKey:b", Action: plan.ActAddRecovery, Target: b}, &plan.Params{LUKSAddKey: &luks.AddKey{Device: b, KDF: argon, Key: kfKey, NewKey: rk}}, nil),
			plan.NewStep(plan.Step{ID: "mkdir:h", Action: plan.ActMkdir, Target: filepath.Join(dir, "hdr")}, &plan.Params{Mkdir: &plan.Mkdir{Path: filepath.Join(dir, "hdr"), Mode: 0o700}}, nil),
			plan.NewStep(plan.Step{ID: "luksHeaderBackup:a", Action: plan.ActHeaderBackup, Target: filepath.Join(dir, "hdr", "a")}, &plan.Params{HeaderBackup: &luks.HeaderBackup{Device: a, File: filepath.Join(dir, "hdr", "a")}}, nil),
		}}
	}
	sec := Secrets{Passphrase: []byte(testPass), RecoveryKey: []byte(testRecovery)}
	dumps := func(dir string) string {
		var out []string
		for _, f := range []string{"a.img", "b.img"} {
			js, err := exec.Command("cryptsetup", "luksDump", "--dump-json-metadata", filepath.Join(dir, f)).Output()
			if err != nil {
				t.Fatal(err)
			}
			var m struct {
				Keyslots map[string]struct {
					KDF struct{ Type string } `json:"kdf"`
				} `json:"keyslots"`
				Segments map[string]struct {
					Encryption string `json:"encryption"`
					SectorSize int    `json:"sector_size"`
				} `json:"segments"`
			}
			json.Unmarshal(js, &m)
			out = append(out, f, m.Segments["0"].Encryption, strings.Repeat("k", len(m.Keyslots)), m.Keyslots["1"].KDF.Type)
			for _, key := range [][]byte{[]byte(testPass), []byte(testRecovery)} {
				if f == "b.img" && string(key) == testPass {
					continue
				}
				c := exec.Command("cryptsetup", "open", "--test-passphrase", "--key-file", "-", filepath.Join(dir, f))
				c.Stdin = bytes.NewReader(key)
				out = append(out, f+" opens:"+boolStr(c.Run() == nil))
			}
		}
		return strings.Join(out, " ")
	}
	want := "a.img aes-xts-plain64 kk argon2id a.img opens:true a.img opens:true b.img aes-xts-plain64 kk argon2id b.img opens:true"

	n := len(mkPlan(t.TempDir()).Steps)
	for stopAt := 1; stopAt <= n; stopAt++ {
		dir := t.TempDir()
		p := mkPlan(dir)
		jp := filepath.Join(dir, "journal")
		calls := 0
		opt := Options{JournalPath: jp, Run: execx.Exec{}, Secrets: sec, Stop: func() bool { calls++; return calls == stopAt }}
		err := Run(context.Background(), p, opt)
		if stopAt <= n && !errors.Is(err, engine.ErrInterrupted) {
			t.Fatalf("stop at %d: got %v", stopAt, err)
		}
		opt.Stop = nil
		if err := Resume(context.Background(), opt); err != nil {
			t.Fatalf("resume after stop at %d: %v", stopAt, err)
		}
		if got := dumps(dir); got != want {
			t.Fatalf("stop at %d: got %s\nwant %s", stopAt, got, want)
		}
		hdr, _ := os.ReadFile(filepath.Join(dir, "hdr", "a"))
		if !luks.IsLUKS(hdr) {
			t.Fatalf("stop at %d: no header backup", stopAt)
		}
		assertNoSecrets(t, jp, [][]byte{[]byte(testPass), []byte(testRecovery), mustRead(t, filepath.Join(dir, "keys", "b.key"))})
	}
	// A resume with the wrong passphrase is refused before anything runs.
	dir := t.TempDir()
	p := mkPlan(dir)
	jp := filepath.Join(dir, "journal")
	calls := 0
	Run(context.Background(), p, Options{JournalPath: jp, Run: execx.Exec{}, Secrets: sec, Stop: func() bool { calls++; return calls == 3 }})
	before := journalTypes(t, jp)
	err := Resume(context.Background(), Options{JournalPath: jp, Run: execx.Exec{}, Secrets: Secrets{Passphrase: []byte("wrong"), RecoveryKey: sec.RecoveryKey}})
	if err == nil || !strings.Contains(err.Error(), "does not open") {
		t.Fatalf("wrong passphrase: got %v", err)
	}
	if after := journalTypes(t, jp); len(after) != len(before) {
		t.Errorf("a refused resume wrote to the journal: %v -> %v", before, after)
	}
}

func boolStr(b bool) string {
	if b {
		return "true"
	}
	return "false"
}

// Each key reaches cryptsetup on the descriptor its parameters name: a
// passphrase on stdin, a new recovery key on fd 3, a key file by its path;
// none is ever in argv.
func TestKeysGoOnPipes(t *testing.T) {
	rec := &execx.Recorder{}
	e := newEnv(&plan.Plan{}, Options{Run: rec, Secrets: Secrets{Passphrase: []byte(testPass), RecoveryKey: []byte(testRecovery)}})
	pass, rk := luks.Key{Secret: plan.SecretPassphrase}, luks.Key{Secret: plan.SecretRecoveryKey}
	for _, p := range []*plan.Params{
		{LUKSAddKey: &luks.AddKey{Device: "/dev/vg0/a", KDF: luks.KDF{PBKDF: "pbkdf2", Iterations: 1000}, Key: pass, NewKey: rk}},
		{LUKSAddKey: &luks.AddKey{Device: "/dev/vg0/b", KDF: luks.KDF{PBKDF: "pbkdf2", Iterations: 1000}, Key: luks.Key{File: "/k"}, NewKey: rk}},
		{LUKSOpen: &luks.Open{Device: "/dev/vg0/b", Name: "b", Key: luks.Key{File: "/k"}}},
	} {
		if err := e.run(context.Background(), p, ""); err != nil {
			t.Fatal(err)
		}
	}
	type fds struct{ stdin, fd3 string }
	got := map[string]fds{}
	for _, c := range rec.Cmds {
		f := fds{stdin: string(c.Stdin)}
		if len(c.ExtraFiles) == 1 {
			f.fd3 = string(c.ExtraFiles[0])
		}
		got[c.String()] = f
		if strings.Contains(c.String(), testPass) || strings.Contains(c.String(), testRecovery) {
			t.Errorf("a secret is in argv: %s", c)
		}
	}
	want := map[string]fds{
		"cryptsetup luksAddKey --batch-mode --pbkdf pbkdf2 --pbkdf-force-iterations 1000 --key-file - /dev/vg0/a /proc/self/fd/3":  {testPass, testRecovery},
		"cryptsetup luksAddKey --batch-mode --pbkdf pbkdf2 --pbkdf-force-iterations 1000 --key-file /k /dev/vg0/b /proc/self/fd/3": {"", testRecovery},
		"cryptsetup open --type luks2 --key-file /k /dev/vg0/b b":                                                                  {"", ""},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %+v\nwant %+v", got, want)
	}
	// A secret the plan needs and nobody gave is an error, not an empty key.
	e = newEnv(&plan.Plan{}, Options{Run: rec})
	if err := e.run(context.Background(), &plan.Params{LUKSOpen: &luks.Open{Device: "d", Name: "n", Key: pass}}, ""); err == nil || !strings.Contains(err.Error(), "needs the passphrase") {
		t.Errorf("no passphrase: %v", err)
	}
}

// mountedRootPlan mounts root_crypt on target, then does step.
func mountedRootPlan(target string, step plan.Step) *plan.Plan {
	return &plan.Plan{APIVersion: plan.APIVersion, Kind: plan.Kind, Layout: "t", Root: target, Steps: []plan.Step{
		plan.NewStep(plan.Step{ID: "mount:" + target, Action: plan.ActMount, Target: target},
			&plan.Params{Mount: &fs.Mount{Device: "/dev/mapper/root_crypt", Target: target, FSType: "ext4"}}, &plan.Params{Umount: &fs.Umount{Target: target}}),
		step,
	}}
}

// A resume after a reboot once wrote key files onto the plaintext root:
// the target was no longer mounted, so its key directory was a plain
// directory of the running system. A key file is now written only into a
// directory on the encrypted volume the plan mounts there.
func TestKeyFileRefusedOffTheEncryptedRoot(t *testing.T) {
	dir := t.TempDir()
	target := filepath.Join(dir, "target")
	kf := filepath.Join(target, "etc", "cryptsetup-keys.d", "var_crypt.key")
	p := mountedRootPlan(target, plan.NewStep(plan.Step{ID: "keyfile:" + kf, Action: plan.ActKeyFile, Target: kf},
		&plan.Params{KeyFile: &plan.KeyFile{Path: kf, Bytes: 4096}}, &plan.Params{Remove: &plan.Remove{Path: kf}}))
	// The real check, on this test machine's temporary directory.
	e := newEnv(p, Options{Run: &execx.Recorder{}})
	err := e.run(context.Background(), p.Steps[1].Params, "")
	if err == nil || !strings.Contains(err.Error(), "cannot write key file "+kf+": ") || !strings.Contains(err.Error(), "storage") ||
		!strings.Contains(err.Error(), "the key files belong on the encrypted root") {
		t.Fatalf("got %v", err)
	}
	if _, err := os.Stat(kf); !os.IsNotExist(err) {
		t.Fatalf("a key file was written: %v", err)
	}
	// The check is asked for the planned volume of the covering mount.
	var asked []string
	defer setKeyDirCheck(func(d string, m ...string) error { asked = append([]string{d}, m...); return nil })()
	if err := e.run(context.Background(), p.Steps[1].Params, ""); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(asked, " "); got != filepath.Dir(kf)+" /dev/mapper/root_crypt" {
		t.Errorf("checked %q", got)
	}
}

// A header backup opens its volume with any key it ever held: written
// after a reboot with the target unmounted, it landed on the plaintext
// root unchecked. It is now refused like a key file, before cryptsetup
// runs.
func TestHeaderBackupRefusedOffTheEncryptedRoot(t *testing.T) {
	dir := t.TempDir()
	target := filepath.Join(dir, "target")
	hb := filepath.Join(target, "root", "luks-header-backups", "var_crypt.luksheader")
	p := mountedRootPlan(target, plan.NewStep(plan.Step{ID: "luksHeaderBackup:" + hb, Action: plan.ActHeaderBackup, Target: hb},
		&plan.Params{HeaderBackup: &luks.HeaderBackup{Device: "/dev/vg0/var", File: hb}}, &plan.Params{Remove: &plan.Remove{Path: hb}}))
	rec := &execx.Recorder{}
	e := newEnv(p, Options{Run: rec})
	err := e.run(context.Background(), p.Steps[1].Params, "")
	if err == nil || !strings.Contains(err.Error(), "cannot write header backup "+hb+": ") || !strings.Contains(err.Error(), "storage") ||
		!strings.Contains(err.Error(), "the header backups belong on the encrypted root") {
		t.Fatalf("got %v", err)
	}
	if len(rec.Cmds) != 0 {
		t.Fatalf("cryptsetup ran anyway: %v", rec.Lines())
	}
	var asked []string
	defer setKeyDirCheck(func(d string, m ...string) error { asked = append([]string{d}, m...); return nil })()
	if err := e.run(context.Background(), p.Steps[1].Params, ""); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(asked, " "); got != filepath.Dir(hb)+" /dev/mapper/root_crypt" {
		t.Errorf("checked %q", got)
	}
	if got := strings.Join(rec.Lines(), "\n"); !strings.Contains(got, "luksHeaderBackup") {
		t.Errorf("ran %q, want the luksHeaderBackup", got)
	}
}

// A resume after a reboot must not act on /dev/sdb when the kernel now
// calls another disk so: the journal records the disks as apply found
// them, and a resume (or a rollback) compares.
func TestResumeRefusesAnotherDiskUnderTheSameName(t *testing.T) {
	allowKeyDirs(t)
	dir := t.TempDir()
	p := syntheticPlan(dir)
	p.Devices = map[string]string{"disk0": "/dev/sdb"}
	p.DiskIDs = map[string]plan.DiskID{"disk0": {Size: 100 << 30, ByID: []string{"/dev/disk/by-id/ata-WD-111"}}}
	disk := guard.Identity{Path: "/dev/sdb", Size: 100 << 30, ByID: []string{"/dev/disk/by-id/ata-WD-111"}}
	defer setIdentify(func(string) (guard.Identity, error) { return disk, nil })()
	jp := filepath.Join(dir, "j")
	calls := 0
	opt := Options{JournalPath: jp, Run: &execx.Recorder{}, Secrets: Secrets{Passphrase: []byte(testPass), RecoveryKey: []byte(testRecovery)},
		Stop: func() bool { calls++; return calls == 2 }}
	if err := Run(context.Background(), p, opt); !errors.Is(err, engine.ErrInterrupted) {
		t.Fatal(err)
	}
	before := mustRead(t, jp)
	disk = guard.Identity{Path: "/dev/sdb", Size: 100 << 30, ByID: []string{"/dev/disk/by-id/ata-WD-222"}}
	opt.Stop = nil
	err := Resume(context.Background(), opt)
	if err == nil || !strings.Contains(err.Error(), "cannot resume: disk disk0: /dev/sdb is not the disk it was: known as /dev/disk/by-id/ata-WD-222, was /dev/disk/by-id/ata-WD-111") {
		t.Fatalf("got %v", err)
	}
	if _, err := Rollback(context.Background(), jp, opt, RollbackOptions{}); err == nil || !strings.Contains(err.Error(), "cannot roll back: disk disk0") {
		t.Fatalf("rollback: got %v", err)
	}
	if !bytes.Equal(before, mustRead(t, jp)) {
		t.Error("a refused resume wrote to the journal")
	}
	// The plan itself names the disk by its by-id links: a fresh apply on
	// another disk under the planned name is refused as drift.
	if err := Run(context.Background(), p, Options{JournalPath: filepath.Join(dir, "j2"), Run: &execx.Recorder{}}); exitcode.Of(err) != exitcode.Drift ||
		!strings.Contains(err.Error(), "cannot apply: disk disk0: /dev/sdb is not the disk it was") {
		t.Fatalf("fresh apply on another disk: %v", err)
	}
	disk.ByID = []string{"/dev/disk/by-id/ata-WD-111"}
	// A disk without by-id links (no udev in a rescue system, a virtio
	// disk without a serial link) is told apart by its serial or WWID
	// alone: same size, another disk.
	for _, c := range []struct {
		what string
		id   guard.Identity
		want string
	}{
		{"serial", guard.Identity{Path: "/dev/sdb", Size: 100 << 30, Serial: "WD-222", WWID: "naa.5000c5001"}, "serial WD-222, was WD-111"},
		{"WWID", guard.Identity{Path: "/dev/sdb", Size: 100 << 30, Serial: "WD-111", WWID: "naa.5000c5002"}, "WWID naa.5000c5002, was naa.5000c5001"},
	} {
		saved := disk
		p.DiskIDs = map[string]plan.DiskID{"disk0": {Size: 100 << 30, Serial: "WD-111", WWID: "naa.5000c5001"}}
		disk = c.id
		if err := Run(context.Background(), p, Options{JournalPath: filepath.Join(dir, "j-"+c.what), Run: &execx.Recorder{}}); exitcode.Of(err) != exitcode.Drift ||
			!strings.Contains(err.Error(), "cannot apply: disk disk0: /dev/sdb is not the disk it was: "+c.want) {
			t.Fatalf("fresh apply on a disk with another %s: %v", c.what, err)
		}
		disk = saved
	}
	p.DiskIDs = map[string]plan.DiskID{"disk0": {Size: 100 << 30, ByID: []string{"/dev/disk/by-id/ata-WD-111"}}}
	// The journal recorded the disk as identify read it when the apply
	// started; a resume on a disk whose serial differs is refused even
	// when the by-id links agree.
	disk.Serial = "WD-222"
	saved := disk
	func() {
		recorded := guard.Identity{Path: "/dev/sdb", Size: 100 << 30, Serial: "WD-111", ByID: []string{"/dev/disk/by-id/ata-WD-111"}}
		disk = recorded
		jp3 := filepath.Join(dir, "j3")
		calls = 0
		o3 := opt
		o3.JournalPath = jp3
		o3.Stop = func() bool { calls++; return calls == 2 }
		if err := Run(context.Background(), p, o3); !errors.Is(err, engine.ErrInterrupted) {
			t.Fatal(err)
		}
		disk = saved
		o3.Stop = nil
		if err := Resume(context.Background(), o3); err == nil || !strings.Contains(err.Error(), "cannot resume: disk disk0: /dev/sdb is not the disk it was: serial WD-222, was WD-111") {
			t.Fatalf("resume on a disk with another serial: got %v", err)
		}
	}()
	disk.Serial = ""
	if err := Resume(context.Background(), opt); err != nil {
		t.Fatal(err)
	}
}

// An inventory made before serials and WWIDs were recorded plans disks
// without them: what it does not know is unknown, not a mismatch.
func TestApplyWithoutRecordedSerialComparesWhatIsKnown(t *testing.T) {
	allowKeyDirs(t)
	dir := t.TempDir()
	p := syntheticPlan(dir)
	p.Devices = map[string]string{"disk0": "/dev/sdb"}
	p.DiskIDs = map[string]plan.DiskID{"disk0": {Size: 100 << 30}}
	defer setIdentify(func(string) (guard.Identity, error) {
		return guard.Identity{Path: "/dev/sdb", Size: 100 << 30, Serial: "WD-111", WWID: "naa.5000c5001"}, nil
	})()
	opt := Options{JournalPath: filepath.Join(dir, "j"), Run: &execx.Recorder{}, Secrets: Secrets{Passphrase: []byte(testPass), RecoveryKey: []byte(testRecovery)}}
	if err := Run(context.Background(), p, opt); err != nil {
		t.Fatalf("apply with a plan that knows only the size: %v", err)
	}
}

// Rolling back an apply that finished destroyed everything it made, and
// whatever the system had written there since, without a question. Now it
// is refused without --allow-destroy (exit 4), says what would be wiped,
// and asks (Confirm) before it goes on.
func TestRollbackOfAFinishedApplyNeedsConsent(t *testing.T) {
	allowKeyDirs(t)
	dir := t.TempDir()
	p := syntheticPlan(dir)
	p.Steps[1].UndoParams = &plan.Params{LVRemove: &lvm.LVRemove{VG: "vg0", Name: "a"}}
	p.Steps[1].Render()
	p.Steps[0].UndoParams = &plan.Params{Remove: &plan.Remove{Path: p.Steps[0].Params.KeyFile.Path}}
	p.Steps[0].Render()
	p.Steps[4].UndoParams = &plan.Params{RestoreBlock: p.Steps[4].Params.WriteBlock}
	p.Steps[4].Render()
	jp := filepath.Join(dir, "j")
	rec := &execx.Recorder{}
	opt := Options{JournalPath: jp, Run: rec, Secrets: Secrets{Passphrase: []byte(testPass), RecoveryKey: []byte(testRecovery)}}
	if err := Run(context.Background(), p, opt); err != nil {
		t.Fatal(err)
	}
	before := mustRead(t, jp)
	_, err := Rollback(context.Background(), jp, opt, RollbackOptions{})
	if exitcode.Of(err) != exitcode.Refused || !strings.Contains(err.Error(), "refusing to roll back the finished apply in "+jp+" without --allow-destroy") {
		t.Fatalf("without the flag: %v", err)
	}
	for _, w := range []string{"logical volume vg0/a", "key file " + p.Steps[0].Params.KeyFile.Path, "the cryptshift block in " + filepath.Join(dir, "fstab"), "cryptshift rollback --allow-destroy " + jp} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("the refusal does not say %q:\n%v", w, err)
		}
	}
	var shown string
	_, err = Rollback(context.Background(), jp, opt, RollbackOptions{AllowDestroy: true, Confirm: func(w string) error { shown = w; return errors.New("not confirmed") }})
	if err == nil || err.Error() != "not confirmed" || !strings.Contains(shown, "logical volume vg0/a") {
		t.Fatalf("not confirmed: %v (shown %q)", err, shown)
	}
	if _, err := Rollback(context.Background(), jp, opt, RollbackOptions{AllowDestroy: true}); exitcode.Of(err) != exitcode.Refused {
		t.Fatalf("no way to confirm: %v", err)
	}
	if !bytes.Equal(before, mustRead(t, jp)) {
		t.Fatal("a refused rollback wrote to the journal")
	}
	if _, err := os.Stat(p.Steps[0].Params.KeyFile.Path); err != nil {
		t.Fatalf("a refused rollback removed the key file: %v", err)
	}
	rep, err := Rollback(context.Background(), jp, opt, RollbackOptions{AllowDestroy: true, Confirm: func(string) error { return nil }})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(p.Steps[0].Params.KeyFile.Path); !os.IsNotExist(err) {
		t.Errorf("the key file survived the rollback: %v", err)
	}
	if types := journalTypes(t, jp); types[len(types)-1] != "rolled-back" || len(rep.Undone) == 0 {
		t.Errorf("journal %v, report %+v", types, rep)
	}
}

// A journal from before the step engine (apply format 1: plans without
// typed parameters) is refused with a message saying what to do, not
// misread.
func TestOldJournalIsRefusedClearly(t *testing.T) {
	jp := filepath.Join(t.TempDir(), "old.journal")
	old := `{"seq":1,"time":"2026-01-01T00:00:00Z","type":"header","data":{"kind":"apply","version":1,"plan":{"apiVersion":"cryptshift/v1","kind":"Plan","steps":[{"id":"wipe:/dev/sdb","action":"wipe","command":["wipefs","--all","/dev/sdb"]}]}}}` + "\n" +
		`{"seq":2,"time":"2026-01-01T00:00:01Z","type":"start","data":{"step":"wipe:/dev/sdb","n":1}}` + "\n"
	os.WriteFile(jp, []byte(old), 0o600)
	want := "it was written by a cryptshift before the step engine (apply journal format 1, plans without typed parameters); resume or roll it back with the cryptshift that started it"
	if err := Resume(context.Background(), Options{JournalPath: jp, Run: &execx.Recorder{}}); err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("resume: %v", err)
	}
	if _, err := Rollback(context.Background(), jp, Options{Run: &execx.Recorder{}}, RollbackOptions{}); err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("rollback: %v", err)
	}
	if b, _ := os.ReadFile(jp); string(b) != old {
		t.Error("the old journal was changed")
	}
}
