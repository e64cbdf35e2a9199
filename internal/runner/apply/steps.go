package apply

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/cryptshift/cryptshift/internal/doors/execx"
	"github.com/cryptshift/cryptshift/internal/doors/probe"
	"github.com/cryptshift/cryptshift/internal/doors/secrets"
	"github.com/cryptshift/cryptshift/internal/hostview/blockstack"
	"github.com/cryptshift/cryptshift/internal/model/plan"
	"github.com/cryptshift/cryptshift/internal/runner/engine"
	"github.com/cryptshift/cryptshift/luks"
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
	if err := st.e.do(ctx, st.s); err != nil {
		return err
	}
	return st.e.verify(ctx, st.s)
}

func (st *step) Done(ctx context.Context) (bool, error) { return st.e.satisfied(ctx, st.s) }

// Undo reverses the step with its recorded undo command, unless its effect
// is already gone (a rollback that was interrupted runs again).
func (st *step) Undo(ctx context.Context) error {
	s := st.s
	switch {
	case s.Destructive:
		return fmt.Errorf("%s: what was on %s before (%s) is gone; rollback cannot bring it back: %w", s.ID, s.Target, s.Destroys, engine.ErrIrreversible)
	case len(s.Undo) == 0:
		return fmt.Errorf("%s: %w", s.ID, engine.ErrNothingToUndo)
	}
	if !st.e.undoNeeded(ctx, s) {
		return nil
	}
	fmt.Fprintf(st.e.opt.Out, "undo %s: %s\n", s.ID, strings.Join(s.Undo, " "))
	if err := st.e.do(ctx, plan.Step{ID: "undo:" + s.ID, Command: s.Undo}); err != nil {
		return fmt.Errorf("%s: %w", strings.Join(s.Undo, " "), err)
	}
	return nil
}

// Check looks, on resume, at what a completed step left that later steps
// rely on.
func (st *step) Check(ctx context.Context) error { return st.e.check(ctx, st.s) }

// Reestablish redoes a step whose effect a reboot ended: opening a
// mapping, mounting, turning swap on, and making swap again on a
// random-key mapping that was just reopened.
func (st *step) Reestablish(ctx context.Context) error { return st.Do(ctx) }

// command turns a step into the exec door's Cmd, with its secrets and
// input on the right descriptors.
func (e *env) command(s plan.Step) (execx.Cmd, error) {
	c := execx.Cmd{Tool: s.Command[0], Args: s.Command[1:]}
	if s.Input != "" {
		c.Stdin = []byte(s.Input)
	}
	for _, r := range s.Secrets {
		v, err := e.opt.Secrets.get(r.Secret)
		if err != nil {
			return c, err
		}
		switch r.FD {
		case 0:
			c.Stdin = v
		case 3:
			c.ExtraFiles = [][]byte{v}
		default:
			return c, fmt.Errorf("step %s reads a secret on fd %d; only 0 and 3 are supported", s.ID, r.FD)
		}
	}
	return c, nil
}

func (e *env) do(ctx context.Context, s plan.Step) error {
	if len(s.Command) >= 2 && s.Command[0] == "cryptshift" && s.Command[1] == "step" {
		out := e.opt.Out
		if out == nil {
			out = io.Discard
		}
		return Internal(ctx, e.opt.Run, s.Command[2:], strings.NewReader(s.Input), out)
	}
	c, err := e.command(s)
	if err != nil {
		return err
	}
	_, err = e.opt.Run.Run(ctx, c)
	return err
}

// verify checks what a step made, independently of the tool that made it.
func (e *env) verify(ctx context.Context, s plan.Step) error {
	switch s.Action {
	case plan.ActLUKSFormat, plan.ActAddRecovery:
		dev := s.Target
		h, err := luks.ReadHeader(dev)
		if err != nil {
			return err
		}
		p := luks.ParamsFromArgs(s.Command)
		slots := 1
		if s.Action == plan.ActAddRecovery {
			// luksAddKey sets only the new keyslot's PBKDF; the rest
			// was checked when the header was formatted.
			slots = 2
			p.UUID, p.Label = "", ""
			p.Cipher, p.KeySize, p.SectorSize = h.Cipher, h.KeySize, h.SectorSize
		}
		if err := luks.Check(h, p, slots); err != nil {
			return fmt.Errorf("%s: %w", dev, err)
		}
		key, wipe, err := e.keyOf(s)
		if err != nil {
			return err
		}
		if wipe {
			defer secrets.Wipe(key)
		}
		if _, err := luks.Unseal(dev, key); err != nil {
			return fmt.Errorf("the key just enrolled does not open %s (checked with luks.go): %w", dev, err)
		}
	case plan.ActKeyFile:
		path := argAfter(s.Command, "--path")
		st, err := os.Stat(path)
		if err != nil || st.Mode().Perm() != 0o400 || st.Size() <= 0 {
			return fmt.Errorf("key file %s is missing or not mode 0400", path)
		}
	}
	return nil
}

// keyOf returns the key a LUKS step enrolls: the passphrase or key file
// for luksFormat, the recovery key for addRecoveryKey.
func (e *env) keyOf(s plan.Step) ([]byte, bool, error) {
	if s.Action == plan.ActAddRecovery {
		k, err := e.opt.Secrets.get(plan.SecretRecoveryKey)
		return k, false, err
	}
	kf := argAfter(s.Command, "--key-file")
	if kf == luks.Stdin {
		k, err := e.opt.Secrets.get(plan.SecretPassphrase)
		return k, false, err
	}
	k, err := os.ReadFile(kf)
	if err != nil {
		return nil, false, fmt.Errorf("cannot read key file %s: %w", kf, err)
	}
	return k, true, nil
}

func argAfter(argv []string, flag string) string {
	for i := 0; i+1 < len(argv); i++ {
		if argv[i] == flag {
			return argv[i+1]
		}
	}
	return ""
}

// satisfied reports whether an interrupted step already took effect.
// Steps whose commands are idempotent simply run again.
func (e *env) satisfied(ctx context.Context, s plan.Step) (bool, error) {
	switch s.Action {
	case plan.ActLUKSFormat:
		h, err := luks.ReadHeader(s.Target)
		return err == nil && h.UUID == argAfter(s.Command, "--uuid") && len(h.Keyslots) > 0, nil
	case plan.ActAddRecovery:
		k, err := e.opt.Secrets.get(plan.SecretRecoveryKey)
		if err != nil {
			return false, err
		}
		return luks.Cryptsetup{Run: e.opt.Run}.TestKey(ctx, s.Target, k) == nil, nil
	case plan.ActMkfs, plan.ActMkswap, plan.ActPVCreate:
		r, err := probeDevice(s.Target)
		if err != nil || r == nil {
			return false, nil
		}
		switch s.Action {
		case plan.ActPVCreate:
			return r.Type == "LVM2_member", nil
		case plan.ActMkswap:
			return r.Type == "swap", nil
		}
		want := argAfter(s.Command, "-U")
		if s.Command[0] == "mkfs.vfat" {
			v := argAfter(s.Command, "-i")
			want = v[:4] + "-" + v[4:]
		}
		if s.Command[0] == "mkfs.xfs" {
			want = strings.TrimPrefix(argAfter(s.Command, "-m"), "uuid=")
		}
		return strings.EqualFold(r.UUID, want), nil
	case plan.ActVGCreate, plan.ActLVCreate, plan.ActLVRemove:
		vgs, err := e.opt.LVM.VGs(ctx)
		if err != nil {
			return false, err
		}
		if s.Action == plan.ActVGCreate {
			for _, v := range vgs {
				if v.Name == s.Target {
					return true, nil
				}
			}
			return false, nil
		}
		lvs, err := e.opt.LVM.LVs(ctx)
		if err != nil {
			return false, err
		}
		exists := false
		for _, l := range lvs {
			if l.Path == s.Target {
				exists = true
			}
		}
		return exists == (s.Action == plan.ActLVCreate), nil
	case plan.ActOpen, plan.ActOpenPlain:
		_, err := os.Stat(s.Target)
		return err == nil, nil
	case plan.ActSwapon:
		return swapActive(s.Target), nil
	case plan.ActMount:
		return mounted(s.Target), nil
	case plan.ActHeaderBackup:
		return e.backupComplete(s)
	case plan.ActMkdir:
		st, err := os.Stat(s.Target)
		return err == nil && st.IsDir(), nil
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
func (e *env) backupComplete(s plan.Step) (bool, error) {
	dev := argAfter(s.Command, "luksHeaderBackup")
	if dev == "--batch-mode" {
		dev = argAfter(s.Command, "--batch-mode")
	}
	file := argAfter(s.Command, "--header-backup-file")
	got, err := os.ReadFile(file)
	if os.IsNotExist(err) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	h, err := luks.ReadHeader(dev)
	if err != nil {
		return false, err
	}
	f, err := os.Open(dev)
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
	return false, os.Remove(file)
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

func mounted(target string) bool {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return false
	}
	defer f.Close()
	ms, err := blockstack.ParseMountInfo(f)
	if err != nil {
		return false
	}
	for _, m := range ms {
		if m.MountPoint == target {
			return true
		}
	}
	return false
}

// check looks at what a completed step left, on resume.
func (e *env) check(ctx context.Context, s plan.Step) error {
	switch s.Action {
	case plan.ActPartition, plan.ActPVCreate, plan.ActLVCreate, plan.ActLUKSFormat:
		if _, err := os.Stat(s.Target); err != nil {
			return fmt.Errorf("%s, which step %s already changed, is gone (%v); reattach it (a logical volume: activate its volume group with vgchange -ay) and run --resume again", s.Target, s.ID, err)
		}
	case plan.ActKeyFile:
		path := argAfter(s.Command, "--path")
		if _, err := os.Stat(path); err != nil {
			return fmt.Errorf("key file %s, made by step %s, is missing; restore it from a backup (a volume may already use it)", path, s.ID)
		}
	case plan.ActOpen, plan.ActOpenPlain:
		if _, err := os.Stat(s.Target); err != nil {
			return fmt.Errorf("%s is not open: %w", s.Target, engine.ErrLapsed)
		}
	case plan.ActMount:
		if !mounted(s.Target) {
			return fmt.Errorf("%s is not mounted: %w", s.Target, engine.ErrLapsed)
		}
	case plan.ActSwapon:
		if !swapActive(s.Target) {
			return fmt.Errorf("swap on %s is off: %w", s.Target, engine.ErrLapsed)
		}
	}
	var secret string
	switch {
	case s.Action == plan.ActLUKSFormat && len(s.Secrets) > 0:
		secret = plan.SecretPassphrase
	case s.Action == plan.ActAddRecovery:
		secret = plan.SecretRecoveryKey
	default:
		return nil
	}
	if e.keyChecked[secret] {
		return nil
	}
	key, err := e.opt.Secrets.get(secret)
	if err != nil {
		return err
	}
	if err := (luks.Cryptsetup{Run: e.opt.Run}).TestKey(ctx, s.Target, key); err != nil {
		return fmt.Errorf("the %s given does not open %s, which this apply set up with it; give the same %s as before", secret, s.Target, secret)
	}
	e.keyChecked[secret] = true
	return nil
}
