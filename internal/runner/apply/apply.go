// Package apply carries a plan out on real block devices.
//
// Every step is journalled (fsync'd) before and after it runs. After a
// crash, kill -9, power loss or Ctrl-C, Resume continues from the journal:
// the step that was in flight is first checked against its postcondition,
// and only re-run if it did not take effect; every re-run is safe because
// the planner's commands are idempotent or recognise their own results
// (deterministic UUIDs). Rollback undoes completed steps in reverse order
// and never touches data apply did not create.
//
// Secrets reach tools only on stdin or fd 3. They are never written to the
// journal, which holds the plan (secret-free by construction) and step ids.
package apply

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/cryptshift/cryptshift/internal/doors/execx"
	"github.com/cryptshift/cryptshift/internal/doors/probe"
	"github.com/cryptshift/cryptshift/internal/doors/secrets"
	"github.com/cryptshift/cryptshift/internal/hostview/blockstack"
	"github.com/cryptshift/cryptshift/internal/model/plan"
	"github.com/cryptshift/cryptshift/internal/runner/journal"
	"github.com/cryptshift/cryptshift/luks"
	"github.com/cryptshift/cryptshift/lvm"
)

// Journal record types.
const (
	recHeader     = "header"
	recStart      = "start"
	recDone       = "done"
	recFailed     = "failed"
	recStopped    = "stopped"
	recFinished   = "finished"
	recUndone     = "undone"
	recRolledBack = "rolled-back"
)

// Kind identifies apply journals (migrate writes "migrate").
const Kind = "apply"

// Header is the first journal record.
type Header struct {
	Kind    string     `json:"kind"`
	Version int        `json:"version"`
	Plan    *plan.Plan `json:"plan"`
}

type stepRecord struct {
	Step    string `json:"step"`
	N       int    `json:"n,omitempty"`
	Checked bool   `json:"checked,omitempty"` // found done by its postcondition on resume
	Error   string `json:"error,omitempty"`
}

// Secrets are the secret inputs a plan names.
type Secrets struct {
	Passphrase  []byte
	RecoveryKey []byte
}

func (s Secrets) get(name string) ([]byte, error) {
	var v []byte
	switch name {
	case plan.SecretPassphrase:
		v = s.Passphrase
	case plan.SecretRecoveryKey:
		v = s.RecoveryKey
	}
	if len(v) == 0 {
		return nil, fmt.Errorf("the plan needs the %s, and none was given", name)
	}
	return v, nil
}

// Reporter is told about each step.
type Reporter interface {
	StepStart(n, total int, s plan.Step)
	StepDone(n, total int, s plan.Step, took time.Duration, skipped bool, err error)
}

// Options configure a run.
type Options struct {
	JournalPath string
	Secrets     Secrets
	Run         execx.Runner
	LVM         lvm.LVM
	Report      Reporter
	Out         io.Writer   // notices (e.g. from the initramfs step)
	Stop        func() bool // true: stop at the next step boundary
	// AfterStep is called once a step's completion is in the journal
	// (fault injection in tests uses it to die at an exact boundary).
	AfterStep func(n int, id string)
}

// ErrInterrupted is returned when Stop asked to stop between steps.
var ErrInterrupted = errors.New("interrupted at a step boundary")

type engine struct {
	opt  Options
	p    *plan.Plan
	j    *journal.Journal
	done map[string]bool
}

// NeedsSecret reports whether any step of p reads the named secret.
func NeedsSecret(p *plan.Plan, name string) bool {
	for _, s := range p.Steps {
		for _, r := range s.Secrets {
			if r.Secret == name {
				return true
			}
		}
	}
	return false
}

// Run applies p from the start, journalling to opt.JournalPath.
func Run(ctx context.Context, p *plan.Plan, opt Options) error {
	if err := archiveFinished(opt.JournalPath); err != nil {
		return err
	}
	j, err := journal.Create(opt.JournalPath)
	if err != nil {
		return err
	}
	defer j.Close()
	if _, err := j.Append(recHeader, Header{Kind: Kind, Version: 1, Plan: p}); err != nil {
		return err
	}
	e := &engine{opt: opt, p: p, j: j, done: map[string]bool{}}
	return e.execute(ctx, "")
}

// archiveFinished moves a finished or rolled-back journal aside, so a new
// apply can start; an unfinished one is left for --resume or rollback.
func archiveFinished(path string) error {
	recs, err := journal.Read(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if len(recs) == 0 {
		return fmt.Errorf("cannot start: journal %s is empty; remove it", path)
	}
	last := recs[len(recs)-1].Type
	if last != recFinished && last != recRolledBack {
		return fmt.Errorf("cannot start: an unfinished apply is recorded in %s; continue it with --resume or undo it with cryptshift rollback --journal %s", path, path)
	}
	for i := 1; ; i++ {
		dst := fmt.Sprintf("%s.%d", path, i)
		if _, err := os.Stat(dst); os.IsNotExist(err) {
			return os.Rename(path, dst)
		}
	}
}

// State is what a journal says about a plan's progress.
type State struct {
	Header   Header
	Done     map[string]bool
	InFlight string // started, never finished
	Failed   map[string]string
	Finished bool
	RolledBk bool
}

// ReadState parses a journal.
func ReadState(recs []journal.Record) (*State, error) {
	if len(recs) == 0 || recs[0].Type != recHeader {
		return nil, fmt.Errorf("cannot read journal: it does not start with a header")
	}
	st := &State{Done: map[string]bool{}, Failed: map[string]string{}}
	if err := json.Unmarshal(recs[0].Data, &st.Header); err != nil {
		return nil, fmt.Errorf("cannot read journal header: %w", err)
	}
	if st.Header.Kind != Kind || st.Header.Plan == nil {
		return nil, fmt.Errorf("cannot read journal: it is a %q journal, not an apply journal", st.Header.Kind)
	}
	for _, r := range recs[1:] {
		var sr stepRecord
		_ = json.Unmarshal(r.Data, &sr)
		switch r.Type {
		case recStart:
			st.InFlight = sr.Step
		case recDone:
			st.Done[sr.Step] = true
			delete(st.Failed, sr.Step)
			if st.InFlight == sr.Step {
				st.InFlight = ""
			}
		case recFailed:
			st.Failed[sr.Step] = sr.Error
			if st.InFlight == sr.Step {
				st.InFlight = ""
			}
		case recFinished:
			st.Finished = true
		case recRolledBack:
			st.RolledBk = true
		case recUndone:
			delete(st.Done, sr.Step)
		}
	}
	return st, nil
}

// Resume continues the apply recorded in opt.JournalPath.
func Resume(ctx context.Context, opt Options) error {
	j, recs, err := journal.Open(opt.JournalPath)
	if err != nil {
		return err
	}
	defer j.Close()
	st, err := ReadState(recs)
	if err != nil {
		return err
	}
	if st.Finished {
		return fmt.Errorf("cannot resume: the apply in %s already finished", opt.JournalPath)
	}
	if st.RolledBk {
		return fmt.Errorf("cannot resume: the apply in %s was rolled back", opt.JournalPath)
	}
	e := &engine{opt: opt, p: st.Header.Plan, j: j, done: st.Done}
	if err := e.checkResumable(ctx); err != nil {
		return err
	}
	return e.execute(ctx, st.InFlight)
}

// PlanOf returns the plan recorded in a journal.
func PlanOf(path string) (*plan.Plan, error) {
	recs, err := journal.Read(path)
	if err != nil {
		return nil, err
	}
	st, err := ReadState(recs)
	if err != nil {
		return nil, err
	}
	return st.Header.Plan, nil
}

// checkResumable refuses to continue with the wrong secrets, or when a
// device that earlier steps changed has vanished, before anything runs.
func (e *engine) checkResumable(ctx context.Context) error {
	cs := luks.Cryptsetup{Run: e.opt.Run}
	checked := map[string]bool{}
	for _, s := range e.p.Steps {
		if !e.done[s.ID] {
			continue
		}
		switch s.Action {
		case plan.ActPartition, plan.ActPVCreate, plan.ActLVCreate, plan.ActLUKSFormat:
			if _, err := os.Stat(s.Target); err != nil {
				return fmt.Errorf("cannot resume: %s, which step %s already changed, is gone (%v); reattach it and run --resume again, or roll back", s.Target, s.ID, err)
			}
		}
		if s.Action == plan.ActKeyFile {
			path := argAfter(s.Command, "--path")
			if _, err := os.Stat(path); err != nil {
				return fmt.Errorf("cannot resume: key file %s, made by step %s, is missing; restore it from a backup (a volume may already use it), or roll back and apply again", path, s.ID)
			}
		}
		var secret string
		switch {
		case s.Action == plan.ActLUKSFormat && len(s.Secrets) > 0:
			secret = plan.SecretPassphrase
		case s.Action == plan.ActAddRecovery:
			secret = plan.SecretRecoveryKey
		default:
			continue
		}
		if checked[secret] {
			continue
		}
		key, err := e.opt.Secrets.get(secret)
		if err != nil {
			return fmt.Errorf("cannot resume: %w", err)
		}
		if err := cs.TestKey(ctx, s.Target, key); err != nil {
			return fmt.Errorf("cannot resume: the %s given does not open %s, which this apply set up with it; give the same %s as before", secret, s.Target, secret)
		}
		checked[secret] = true
	}
	return nil
}

func (e *engine) execute(ctx context.Context, inFlight string) error {
	total := len(e.p.Steps)
	for i, s := range e.p.Steps {
		if e.done[s.ID] {
			continue
		}
		if e.opt.Stop != nil && e.opt.Stop() {
			e.j.Append(recStopped, stepRecord{Step: s.ID, N: i + 1})
			return ErrInterrupted
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if e.opt.Report != nil {
			e.opt.Report.StepStart(i+1, total, s)
		}
		start := time.Now()
		skipped := false
		var err error
		if s.ID == inFlight {
			// It may have finished before the crash; look before redoing.
			skipped, err = e.satisfied(ctx, s)
		}
		if _, jerr := e.j.Append(recStart, stepRecord{Step: s.ID, N: i + 1}); jerr != nil {
			return jerr
		}
		if err == nil && !skipped {
			err = e.do(ctx, s)
		}
		if err == nil {
			err = e.verify(ctx, s)
		}
		if e.opt.Report != nil {
			e.opt.Report.StepDone(i+1, total, s, time.Since(start), skipped, err)
		}
		if err != nil {
			e.j.Append(recFailed, stepRecord{Step: s.ID, N: i + 1, Error: err.Error()})
			return fmt.Errorf("step %d/%d %s failed: %w\nthe journal %s records everything up to here; fix the cause and run apply --resume, or undo with cryptshift rollback --journal %s",
				i+1, total, s.ID, err, e.opt.JournalPath, e.opt.JournalPath)
		}
		if _, jerr := e.j.Append(recDone, stepRecord{Step: s.ID, N: i + 1, Checked: skipped}); jerr != nil {
			return jerr
		}
		e.done[s.ID] = true
		if e.opt.AfterStep != nil {
			e.opt.AfterStep(i+1, s.ID)
		}
	}
	_, err := e.j.Append(recFinished, nil)
	return err
}

// command turns a step into the exec door's Cmd, with its secrets and
// input on the right descriptors.
func (e *engine) command(s plan.Step) (execx.Cmd, error) {
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

func (e *engine) do(ctx context.Context, s plan.Step) error {
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
func (e *engine) verify(ctx context.Context, s plan.Step) error {
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
func (e *engine) keyOf(s plan.Step) ([]byte, bool, error) {
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
func (e *engine) satisfied(ctx context.Context, s plan.Step) (bool, error) {
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
func (e *engine) backupComplete(s plan.Step) (bool, error) {
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
