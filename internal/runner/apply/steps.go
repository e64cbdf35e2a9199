package apply

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/cryptshift/cryptshift/internal/doors/execx"
	"github.com/cryptshift/cryptshift/internal/doors/fs"
	"github.com/cryptshift/cryptshift/internal/doors/probe"
	"github.com/cryptshift/cryptshift/internal/doors/secrets"
	"github.com/cryptshift/cryptshift/internal/hostview/blockstack"
	"github.com/cryptshift/cryptshift/internal/model/plan"
	"github.com/cryptshift/cryptshift/internal/runner/engine"
	"github.com/cryptshift/cryptshift/internal/runner/guard"
	"github.com/cryptshift/cryptshift/luks"
	"github.com/cryptshift/cryptshift/lvm"
)

// env is what the steps of one apply share: the plan, the doors and the
// secrets.
type env struct {
	opt Options
	p   *plan.Plan
	// keyChecked: secrets found to open what this apply made, on resume.
	keyChecked map[string]bool
}

func newEnv(p *plan.Plan, opt Options) *env {
	if opt.Out == nil {
		opt.Out = io.Discard
	}
	return &env{opt: opt, p: p, keyChecked: map[string]bool{}}
}

// checkPlan refuses a plan whose steps carry no typed parameters (made by
// an older cryptshift) or whose command lines are not what their
// parameters render (edited by hand): apply would run something other
// than what was reviewed.
func checkPlan(p *plan.Plan) error {
	for _, s := range p.Steps {
		if s.Params == nil {
			return fmt.Errorf("cannot apply: step %s has no typed parameters (the plan was made by an older cryptshift); make the plan again with cryptshift plan -o json and review it", s.ID)
		}
		if err := s.CheckRendering(); err != nil {
			return fmt.Errorf("cannot apply: %w; the plan was changed after it was made: make it again with cryptshift plan -o json and review it", err)
		}
	}
	return nil
}

// steps are the plan's steps as the engine runs them.
func (e *env) steps() []engine.Step {
	out := make([]engine.Step, len(e.p.Steps))
	for i, s := range e.p.Steps {
		out[i] = &step{e: e, s: s}
	}
	return out
}

// step is one plan step: Do runs it and checks what it made, Done is its
// postcondition, Undo reverses it, Check and Reestablish look after its
// lasting effect on resume.
type step struct {
	e *env
	s plan.Step
}

func (st *step) Entry() plan.Step { return st.s }

func (st *step) Do(ctx context.Context) error {
	if err := st.e.run(ctx, st.s.Params, st.s.Input); err != nil {
		return err
	}
	return st.e.verify(ctx, st.s)
}

func (st *step) Done(ctx context.Context) (bool, error) { return st.e.satisfied(ctx, st.s.Params) }

// Undo reverses the step with its undo operation, unless that is already
// in effect (a rollback that was interrupted runs again).
func (st *step) Undo(ctx context.Context) error {
	s := st.s
	switch {
	case s.Destructive:
		return fmt.Errorf("%s: what was on %s before (%s) is gone; rollback cannot bring it back: %w", s.ID, s.Target, s.Destroys, engine.ErrIrreversible)
	case s.UndoParams == nil:
		return fmt.Errorf("%s: %w", s.ID, engine.ErrNothingToUndo)
	}
	if !st.e.undoNeeded(ctx, s.UndoParams) {
		return nil
	}
	fmt.Fprintf(st.e.opt.Out, "undo %s: %s\n", s.ID, execx.Quote(s.Undo))
	if err := st.e.run(ctx, s.UndoParams, ""); err != nil {
		return fmt.Errorf("%s: %w", execx.Quote(s.Undo), err)
	}
	return nil
}

// Check looks, on resume, at what a completed step left that later steps
// rely on.
func (st *step) Check(ctx context.Context) error { return st.e.check(ctx, st.s) }

// Reestablish redoes a step whose effect a reboot ended: opening a
// mapping, mounting, turning swap on, and making swap again on a
// random-key mapping that was just reopened. An LV a reboot left
// inactive is activated with its volume group (never created again).
func (st *step) Reestablish(ctx context.Context) error {
	if lv := st.s.Params.LVCreate; lv != nil {
		return st.e.lvm().Do(ctx, lvm.VGActivate{VG: lv.VG})
	}
	return st.Do(ctx)
}

func (e *env) lvm() lvm.LVM { return lvm.LVM{Run: e.opt.Run, Config: e.opt.LVM.Config} }

func (e *env) cs() luks.Cryptsetup { return luks.Cryptsetup{Run: e.opt.Run} }

// keyBytes is what cryptsetup reads on a pipe for a key: a named secret;
// nil for a key file (cryptsetup reads the file itself).
func (e *env) keyBytes(k luks.Key) ([]byte, error) {
	if k.File != "" || k.Secret == "" {
		return nil, nil
	}
	return e.opt.Secrets.get(k.Secret)
}

// run carries out one typed operation through the door that owns its
// tool, or in-process for the actions cryptshift does itself.
func (e *env) run(ctx context.Context, p *plan.Params, input string) error {
	switch {
	case p.LUKSFormat != nil:
		return e.luks(ctx, *p.LUKSFormat, p.LUKSFormat.Key, luks.Key{})
	case p.LUKSAddKey != nil:
		return e.luks(ctx, *p.LUKSAddKey, p.LUKSAddKey.Key, p.LUKSAddKey.NewKey)
	case p.LUKSOpen != nil:
		return e.luks(ctx, *p.LUKSOpen, p.LUKSOpen.Key, luks.Key{})
	case p.CryptResize != nil:
		return e.luks(ctx, *p.CryptResize, p.CryptResize.Key, luks.Key{})
	case p.PlainOpen != nil:
		return e.cs().Do(ctx, *p.PlainOpen, nil, nil)
	case p.Close != nil:
		return e.cs().Do(ctx, *p.Close, nil, nil)
	case p.HeaderBackup != nil:
		// A header backup opens its volume with any of the keys it holds
		// once, and a passphrase's slot stays crackable offline: it
		// belongs on encrypted storage like the key files.
		if err := e.onEncryptedRoot("header backup", p.HeaderBackup.File); err != nil {
			return err
		}
		return e.cs().Do(ctx, *p.HeaderBackup, nil, nil)
	case p.PVCreate != nil:
		return e.lvm().Do(ctx, *p.PVCreate)
	case p.VGCreate != nil:
		return e.lvm().Do(ctx, *p.VGCreate)
	case p.VGExtend != nil:
		return e.lvm().Do(ctx, *p.VGExtend)
	case p.VGReduce != nil:
		return e.lvm().Do(ctx, *p.VGReduce)
	case p.VGRemove != nil:
		return e.lvm().Do(ctx, *p.VGRemove)
	case p.LVCreate != nil:
		return e.lvm().Do(ctx, *p.LVCreate)
	case p.LVExtend != nil:
		return e.lvm().Do(ctx, *p.LVExtend)
	case p.LVRemove != nil:
		return e.lvm().Do(ctx, *p.LVRemove)
	case p.Wipe != nil:
		return fs.Run(ctx, e.opt.Run, *p.Wipe)
	case p.Mkfs != nil:
		return fs.Run(ctx, e.opt.Run, *p.Mkfs)
	case p.Mkswap != nil:
		return fs.Run(ctx, e.opt.Run, *p.Mkswap)
	case p.Mount != nil:
		return fs.Run(ctx, e.opt.Run, *p.Mount)
	case p.Umount != nil:
		return fs.Run(ctx, e.opt.Run, *p.Umount)
	case p.Swapon != nil:
		return fs.Run(ctx, e.opt.Run, *p.Swapon)
	case p.Swapoff != nil:
		return fs.Run(ctx, e.opt.Run, *p.Swapoff)
	case p.ClevisBind != nil:
		return e.bind(ctx, *p.ClevisBind)
	case p.ClevisUnbind != nil:
		_, err := e.opt.Run.Run(ctx, p.ClevisUnbind.Cmd())
		return err
	case p.KeyFile != nil:
		if err := e.onEncryptedRoot("key file", p.KeyFile.Path); err != nil {
			return err
		}
	}
	err := internal(ctx, e.opt.Run, p, strings.NewReader(input), e.opt.Out)
	if errors.Is(err, errNotInternal) {
		return fmt.Errorf("cannot run %+v: apply knows no such operation", p)
	}
	return err
}

// luks runs a cryptsetup operation with its piped keys.
func (e *env) luks(ctx context.Context, op luks.Op, key, newKey luks.Key) error {
	stdin, err := e.keyBytes(key)
	if err != nil {
		return err
	}
	fd3, err := e.keyBytes(newKey)
	if err != nil {
		return err
	}
	return e.cs().Do(ctx, op, stdin, fd3)
}

// verify checks what a step made, independently of the tool that made it.
func (e *env) verify(ctx context.Context, s plan.Step) error {
	p := s.Params
	switch {
	case p.LUKSFormat != nil:
		f := p.LUKSFormat
		h, err := luks.ReadHeader(f.Device)
		if err != nil {
			return err
		}
		if err := luks.CheckVolume(h, f.Params); err != nil {
			return fmt.Errorf("%s: %w", f.Device, err)
		}
		return e.checkSlot(f.Device, h, f.Key, f.KDF)
	case p.LUKSAddKey != nil:
		a := p.LUKSAddKey
		h, err := luks.ReadHeader(a.Device)
		if err != nil {
			return err
		}
		return e.checkSlot(a.Device, h, a.NewKey, a.KDF)
	case p.ClevisBind != nil:
		return verifyBind(*p.ClevisBind)
	case p.KeyFile != nil:
		path := p.KeyFile.Path
		st, err := os.Stat(path)
		if err != nil || st.Mode().Perm() != 0o400 || st.Size() != int64(p.KeyFile.Bytes) {
			return fmt.Errorf("key file %s is missing, not mode 0400 or not %d bytes", path, p.KeyFile.Bytes)
		}
	}
	return nil
}

// checkSlot checks with luks.go, independently of cryptsetup, that key
// opens a keyslot of dev, and that this keyslot has the planned KDF.
func (e *env) checkSlot(dev string, h *luks.Header, k luks.Key, kdf luks.KDF) error {
	key, err := e.keyBytes(k)
	if err != nil {
		return err
	}
	if k.File != "" {
		// Through the secrets reader: locked memory, mode and size
		// checked, nothing trimmed (random bytes), wiped after use.
		if key, err = secrets.KeyFromFile(k.File); err != nil {
			return err
		}
		defer secrets.Wipe(key)
	}
	slot, err := luks.Unseal(dev, key)
	if err != nil {
		return fmt.Errorf("the key just enrolled does not open %s (checked with luks.go): %w", dev, err)
	}
	if err := luks.CheckKeyslot(h, slot, kdf); err != nil {
		return fmt.Errorf("%s: %w", dev, err)
	}
	return nil
}

// satisfied reports whether an interrupted step already took effect.
// Steps whose commands are idempotent simply run again.
func (e *env) satisfied(ctx context.Context, p *plan.Params) (bool, error) {
	switch {
	case p.LUKSFormat != nil:
		h, err := luks.ReadHeader(p.LUKSFormat.Device)
		return err == nil && h.UUID == p.LUKSFormat.UUID && len(h.Keyslots) > 0, nil
	case p.LUKSAddKey != nil:
		k, err := e.keyBytes(p.LUKSAddKey.NewKey)
		if err != nil || k == nil {
			return false, err
		}
		return e.cs().TestKey(ctx, p.LUKSAddKey.Device, k) == nil, nil
	case p.ClevisBind != nil:
		// A crash after clevis bound the keyslot must not bind again.
		ok, err := bound(p.ClevisBind.Device, p.ClevisBind.Slot, &p.ClevisBind.Pin)
		return err == nil && ok, nil
	case p.PVCreate != nil:
		r, err := probeDevice(p.PVCreate.Device)
		return err == nil && r != nil && r.Type == "LVM2_member", nil
	case p.Mkswap != nil:
		r, err := probeDevice(p.Mkswap.Device)
		return err == nil && r != nil && r.Type == "swap", nil
	case p.Mkfs != nil:
		r, err := probeDevice(p.Mkfs.Device)
		return err == nil && r != nil && strings.EqualFold(r.UUID, p.Mkfs.UUID), nil
	case p.VGCreate != nil:
		return e.vgExists(ctx, p.VGCreate.VG)
	case p.LVCreate != nil:
		return e.lvExists(ctx, p.LVCreate.VG, p.LVCreate.Name)
	case p.LVRemove != nil:
		ok, err := e.lvExists(ctx, p.LVRemove.VG, p.LVRemove.Name)
		return !ok && err == nil, err
	case p.LUKSOpen != nil:
		return exists("/dev/mapper/" + p.LUKSOpen.Name), nil
	case p.PlainOpen != nil:
		return exists("/dev/mapper/" + p.PlainOpen.Name), nil
	case p.Swapon != nil:
		return swapActive(p.Swapon.Device), nil
	case p.Mount != nil:
		return mountedFrom(p.Mount.Target, p.Mount.Device) == nil, nil
	case p.HeaderBackup != nil:
		return e.backupComplete(*p.HeaderBackup)
	case p.Mkdir != nil:
		st, err := os.Stat(p.Mkdir.Path)
		return err == nil && st.IsDir(), nil
	}
	return false, nil
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

func (e *env) vgExists(ctx context.Context, name string) (bool, error) {
	vgs, err := e.lvm().VGs(ctx)
	if err != nil {
		return false, err
	}
	for _, v := range vgs {
		if v.Name == name {
			return true, nil
		}
	}
	return false, nil
}

func (e *env) lvExists(ctx context.Context, vg, name string) (bool, error) {
	lvs, err := e.lvm().LVs(ctx)
	if err != nil {
		return false, err
	}
	for _, l := range lvs {
		if l.VG == vg && l.Name == name {
			return true, nil
		}
	}
	return false, nil
}

func probeDevice(dev string) (*probe.Result, error) {
	f, err := os.Open(dev)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return probe.Probe(f)
}

// backupComplete accepts a header backup file only if it equals the
// device's header; a partial file from an interrupted run is removed
// (this step created it) so cryptsetup can write it again.
func (e *env) backupComplete(b luks.HeaderBackup) (bool, error) {
	got, err := os.ReadFile(b.File)
	if os.IsNotExist(err) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	h, err := luks.ReadHeader(b.Device)
	if err != nil {
		return false, err
	}
	f, err := os.Open(b.Device)
	if err != nil {
		return false, err
	}
	defer f.Close()
	want := make([]byte, h.DataOffset)
	if _, err := f.ReadAt(want, 0); err != nil {
		return false, err
	}
	if bytes.Equal(got, want) {
		return true, nil
	}
	return false, os.Remove(b.File)
}

// undoNeeded reports whether an undo operation still has work to do, so a
// rollback that was itself interrupted can simply be run again.
func (e *env) undoNeeded(ctx context.Context, u *plan.Params) bool {
	switch {
	case u.Umount != nil:
		return mountPoint(u.Umount.Target) != nil
	case u.Swapoff != nil:
		return swapActive(u.Swapoff.Device)
	case u.ClevisUnbind != nil:
		ok, err := bound(u.ClevisUnbind.Device, u.ClevisUnbind.Slot, nil)
		return err == nil && ok
	case u.Close != nil:
		return exists("/dev/mapper/" + u.Close.Name)
	case u.Wipe != nil:
		r, err := probeDevice(u.Wipe.Device)
		return err == nil && r != nil
	case u.LVRemove != nil:
		ok, err := e.lvExists(ctx, u.LVRemove.VG, u.LVRemove.Name)
		return err != nil || ok
	case u.VGRemove != nil:
		ok, err := e.vgExists(ctx, u.VGRemove.VG)
		return err != nil || ok
	case u.VGReduce != nil:
		ok, err := e.vgExists(ctx, u.VGReduce.VG)
		return err != nil || ok
	}
	return true
}

func swapActive(dev string) bool {
	b, err := os.ReadFile("/proc/swaps")
	if err != nil {
		return false
	}
	real, _ := filepath.EvalSymlinks(dev)
	for _, line := range strings.Split(string(b), "\n")[1:] {
		f := strings.Fields(line)
		if len(f) > 0 && (f[0] == dev || f[0] == real) {
			return true
		}
	}
	return false
}

// mountPoint returns what is mounted at target in this process's mount
// namespace (the last mount there is the one in effect), or nil.
func mountPoint(target string) *blockstack.Mount {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	defer f.Close()
	ms, err := blockstack.ParseMountInfo(f)
	if err != nil {
		return nil
	}
	var found *blockstack.Mount
	for i := range ms {
		if ms[i].MountPoint == target {
			found = &ms[i]
		}
	}
	return found
}

// mountedFrom reports why device is not what is mounted at target: nothing
// is (an error wrapping engine.ErrLapsed), or another device is.
func mountedFrom(target, device string) error {
	m := mountPoint(target)
	if m == nil {
		return fmt.Errorf("%s is not mounted: %w", target, engine.ErrLapsed)
	}
	var st unix.Stat_t
	if err := unix.Stat(device, &st); err != nil {
		return fmt.Errorf("%s is mounted, but %s, which the plan mounts there, is not there (%v)", target, device, err)
	}
	if fmt.Sprintf("%d:%d", unix.Major(uint64(st.Rdev)), unix.Minor(uint64(st.Rdev))) != m.MajMin() {
		return fmt.Errorf("%s is mounted from %s (%s), not from %s as planned; unmount it", target, m.Source, m.MajMin(), device)
	}
	return nil
}

// check looks at what a completed step left, on resume.
func (e *env) check(ctx context.Context, s plan.Step) error {
	p := s.Params
	gone := func(what string, err error) error {
		return fmt.Errorf("%s, which step %s already changed, is gone (%v); reattach it (a logical volume: activate its volume group with vgchange -ay) and run --resume again", what, s.ID, err)
	}
	switch {
	case p.Partition != nil:
		if _, err := os.Stat(p.Partition.Device); err != nil {
			return gone(p.Partition.Device, err)
		}
	case p.PVCreate != nil:
		if _, err := os.Stat(p.PVCreate.Device); err != nil {
			return gone(p.PVCreate.Device, err)
		}
	case p.LVCreate != nil:
		if _, err := os.Stat(s.Target); err != nil {
			return e.lvLapsed(ctx, *p.LVCreate, gone(s.Target, err))
		}
	case p.LUKSFormat != nil:
		if _, err := os.Stat(p.LUKSFormat.Device); err != nil {
			return gone(p.LUKSFormat.Device, err)
		}
		if k := p.LUKSFormat.Key; k.Secret != "" {
			return e.checkSecret(ctx, k.Secret, p.LUKSFormat.Device)
		}
	case p.LUKSAddKey != nil:
		if k := p.LUKSAddKey.NewKey; k.Secret != "" {
			return e.checkSecret(ctx, k.Secret, p.LUKSAddKey.Device)
		}
	case p.KeyFile != nil:
		if _, err := os.Stat(p.KeyFile.Path); err != nil {
			return fmt.Errorf("key file %s, made by step %s, is missing; restore it from a backup (a volume may already use it)", p.KeyFile.Path, s.ID)
		}
	case p.LUKSOpen != nil:
		if !exists("/dev/mapper/" + p.LUKSOpen.Name) {
			return fmt.Errorf("%s is not open: %w", s.Target, engine.ErrLapsed)
		}
	case p.PlainOpen != nil:
		if !exists("/dev/mapper/" + p.PlainOpen.Name) {
			return fmt.Errorf("%s is not open: %w", s.Target, engine.ErrLapsed)
		}
	case p.Mkswap != nil && e.randomKey(p.Mkswap.Device):
		// A random-key mapping reopened after a reboot holds noise: its
		// swap area is made again (nothing on it survives a reboot).
		if r, err := probeDevice(p.Mkswap.Device); err != nil || r == nil || r.Type != "swap" {
			return fmt.Errorf("%s holds no swap area: %w", p.Mkswap.Device, engine.ErrLapsed)
		}
	case p.Mount != nil:
		return mountedFrom(p.Mount.Target, p.Mount.Device)
	case p.Swapon != nil:
		if !swapActive(p.Swapon.Device) {
			return fmt.Errorf("swap on %s is off: %w", p.Swapon.Device, engine.ErrLapsed)
		}
	}
	return nil
}

// lvLapsed tells, for an LV whose device node is missing, an inactive LV
// (a reboot that left its volume group inactive: a lapsed effect,
// re-established by activating the group) from one that is gone (the
// error gone).
func (e *env) lvLapsed(ctx context.Context, lv lvm.LVCreate, gone error) error {
	lvs, err := e.lvm().LVs(ctx)
	if err != nil {
		return gone
	}
	for _, l := range lvs {
		if l.VG == lv.VG && l.Name == lv.Name && !l.Active {
			return fmt.Errorf("logical volume %s/%s is not active: %w", lv.VG, lv.Name, engine.ErrLapsed)
		}
	}
	return gone
}

// randomKey reports whether the plan opens dev with a fresh random key.
func (e *env) randomKey(dev string) bool {
	for _, s := range e.p.Steps {
		if s.Params.PlainOpen != nil && "/dev/mapper/"+s.Params.PlainOpen.Name == dev {
			return true
		}
	}
	return false
}

// checkSecret confirms, once per secret, that the secret given on resume
// opens a volume this apply set up with it.
func (e *env) checkSecret(ctx context.Context, secret, dev string) error {
	if e.keyChecked[secret] {
		return nil
	}
	key, err := e.opt.Secrets.get(secret)
	if err != nil {
		return err
	}
	if err := e.cs().TestKey(ctx, dev, key); err != nil {
		return fmt.Errorf("the %s given does not open %s, which this apply set up with it; give the same %s as before", secret, dev, secret)
	}
	e.keyChecked[secret] = true
	return nil
}

// onEncryptedRoot refuses to write a key file or a header backup (what)
// into a directory that is not on the encrypted volume the plan mounts
// there (or, when the plan mounts nothing there, not on encrypted storage
// at all): a resume after a reboot once wrote key files onto the
// plaintext root because the target was no longer mounted. Migrate checks
// its key directory the same way (guard.EncryptedDir).
func (e *env) onEncryptedRoot(what, path string) error {
	dir := filepath.Dir(path)
	var want []string
	best := ""
	for _, s := range e.p.Steps {
		if m := s.Params.Mount; m != nil && within(dir, m.Target) && len(m.Target) > len(best) {
			best, want = m.Target, []string{m.Device}
		}
	}
	if err := keyDirCheck(dir, want...); err != nil {
		return fmt.Errorf("cannot write %s %s: %w; the %ss belong on the encrypted root: mount it there (apply --resume re-establishes the plan's mounts) and try again", what, path, err, what)
	}
	return nil
}

// within reports whether p is dir or below it.
func within(p, dir string) bool {
	return p == dir || dir == "/" || strings.HasPrefix(p, strings.TrimSuffix(dir, "/")+"/")
}

// keyDirCheck is the check onEncryptedRoot makes; unit tests, whose key
// files live in temporary directories, replace it with setKeyDirCheck.
var keyDirCheck = func(dir string, mappings ...string) error { return guard.EncryptedDir("/", dir, mappings...) }

// setKeyDirCheck replaces keyDirCheck and returns the function that puts
// it back.
func setKeyDirCheck(f func(dir string, mappings ...string) error) (restore func()) {
	prev := keyDirCheck
	keyDirCheck = f
	return func() { keyDirCheck = prev }
}
