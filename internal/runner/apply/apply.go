// Package apply carries a plan out on real block devices. It is a client
// of the step engine (internal/runner/engine): each plan step becomes an
// engine step whose Do runs it and checks what it made, whose Done is its
// postcondition, whose Undo reverses it and whose Check and Reestablish
// look after its lasting effect when an apply is resumed.
//
// Every step is journalled (fsync'd) before and after it runs. After a
// crash, kill -9, power loss or Ctrl-C, Resume continues from the journal:
// completed steps' effects are checked and re-established (after a reboot:
// mappings opened, filesystems mounted), the step that was in flight is
// checked against its postcondition and only re-run if it did not take
// effect; every re-run is safe because the planner's commands are
// idempotent or recognise their own results (deterministic UUIDs).
// Rollback undoes the steps that began in reverse order and never touches
// data apply did not create.
//
// Secrets reach tools only on stdin or fd 3. They are never written to the
// journal, which holds the plan (secret-free by construction) and step ids.
package apply

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sort"

	"github.com/cryptshift/cryptshift/internal/doors/execx"
	"github.com/cryptshift/cryptshift/internal/exitcode"
	"github.com/cryptshift/cryptshift/internal/model/plan"
	"github.com/cryptshift/cryptshift/internal/runner/engine"
	"github.com/cryptshift/cryptshift/internal/runner/guard"
	"github.com/cryptshift/cryptshift/lvm"
)

// Kind identifies apply journals (migrate writes "migrate").
const Kind = "apply"

// journalVersion 2: plans with typed step parameters (version 1 plans had
// only command lines; such journals are refused with a message saying
// which cryptshift finishes or rolls them back).
const journalVersion = 2

// Header is the first journal record.
type Header struct {
	Kind    string     `json:"kind"`
	Version int        `json:"version"`
	Plan    *plan.Plan `json:"plan"`
	// Disks are the plan's disks as apply found them when it started:
	// resume and rollback refuse to touch a device name that has come to
	// mean another disk since.
	Disks map[string]guard.Identity `json:"disks,omitempty"`
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
type Reporter = engine.Reporter

// Options configure a run.
type Options struct {
	JournalPath string
	Secrets     Secrets
	Run         execx.Runner
	LVM         lvm.LVM
	Report      Reporter
	Out         io.Writer   // notices (e.g. from the initramfs step, re-established effects)
	Stop        func() bool // test seam: true stops at the next step boundary (SIGINT/SIGTERM do that for real)
	// HTTP fetches Tang advertisements (nil: a client with a timeout).
	HTTP *http.Client
	// SysRoot is where /sys and /dev are read for the TPM ("" = "/").
	SysRoot string
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

func (o *Options) engine() engine.Options {
	return engine.Options{Report: o.Report, Out: o.Out, Stop: o.Stop,
		Resume:   "cryptshift apply --resume --journal " + execx.QuoteArg(o.JournalPath),
		Rollback: "cryptshift rollback --journal " + execx.QuoteArg(o.JournalPath)}
}

// Run applies p from the start, journalling to opt.JournalPath. A
// finished or rolled-back journal there is moved aside first.
func Run(ctx context.Context, p *plan.Plan, opt Options) error {
	if err := checkPlan(p); err != nil {
		return err
	}
	disks, err := identifyDisks(p)
	if err != nil {
		return err
	}
	if err := preflightBindings(ctx, p, opt); err != nil {
		return err
	}
	eo := opt.engine()
	if err := engine.Archive(opt.JournalPath, eo.Resume, eo.Rollback); err != nil {
		return err
	}
	j, err := engine.Create(opt.JournalPath, Header{Kind: Kind, Version: journalVersion, Plan: p, Disks: disks})
	if err != nil {
		return err
	}
	defer j.Close()
	e := newEnv(p, opt)
	_, err = j.Execute(ctx, e.steps(), eo)
	return err
}

// readHeader decodes an apply journal's header.
func readHeader(l *engine.Log) (*Header, error) {
	if l.Kind != Kind {
		return nil, fmt.Errorf("cannot read journal %s: it is a %q journal, not an apply journal", l.Path, l.Kind)
	}
	if l.Version == 1 {
		return nil, fmt.Errorf("cannot use journal %s: it was written by a cryptshift before the step engine (apply journal format 1, plans without typed parameters); resume or roll it back with the cryptshift that started it", l.Path)
	}
	if l.Version != journalVersion {
		return nil, fmt.Errorf("cannot use journal %s: apply journal format %d, this cryptshift reads format %d", l.Path, l.Version, journalVersion)
	}
	var h Header
	if err := json.Unmarshal(l.Header, &h); err != nil || h.Plan == nil {
		return nil, fmt.Errorf("cannot read journal %s: its header holds no plan (%v)", l.Path, err)
	}
	if err := checkPlan(h.Plan); err != nil {
		return nil, fmt.Errorf("cannot use journal %s: %w", l.Path, err)
	}
	return &h, nil
}

// Resume continues the apply recorded in opt.JournalPath. Before anything
// new runs, every completed step's lasting effect is checked (a volume
// that vanished, a key file that went missing, a secret that does not
// open what this apply made refuse the resume) and re-established where a
// reboot ended it (mappings opened, filesystems mounted, swap on again).
func Resume(ctx context.Context, opt Options) error {
	j, err := engine.Open(opt.JournalPath)
	if err != nil {
		return err
	}
	defer j.Close()
	h, err := readHeader(j.Log())
	if err != nil {
		return err
	}
	if j.Log().Finished {
		return fmt.Errorf("cannot resume: the apply in %s already finished", opt.JournalPath)
	}
	if j.Log().RolledBack {
		return fmt.Errorf("cannot resume: the apply in %s was rolled back", opt.JournalPath)
	}
	if err := sameDisks(h); err != nil {
		return fmt.Errorf("cannot resume: %w", err)
	}
	e := newEnv(h.Plan, opt)
	_, err = j.Execute(ctx, e.steps(), opt.engine())
	return err
}

// identify reads a disk's identity; tests replace it with setIdentify.
var identify = func(path string) (guard.Identity, error) { return guard.Identify("/", path) }

func setIdentify(f func(string) (guard.Identity, error)) (restore func()) {
	prev := identify
	identify = f
	return func() { identify = prev }
}

// identifyDisks reads the identity of every disk the plan names and
// refuses a device that is not the disk the plan was made for: its size,
// WWID, serial or udev by-id links differ from the inventory's.
func identifyDisks(p *plan.Plan) (map[string]guard.Identity, error) {
	out := map[string]guard.Identity{}
	for _, name := range sortedKeys(p.Devices) {
		path := p.Devices[name]
		id, err := identify(path)
		if err != nil {
			return nil, fmt.Errorf("cannot apply: disk %s: %w", name, err)
		}
		if want, ok := p.DiskIDs[name]; ok {
			// What the inventory did not know (an old inventory without
			// serial or WWID) is unknown, not a mismatch: Same compares
			// only identifiers both sides have.
			was := guard.Identity{Path: path, Size: want.Size, Serial: want.Serial, WWID: want.WWID, ByID: want.ByID}
			if err := was.Same(id); err != nil {
				return nil, exitcode.With(exitcode.Drift, fmt.Errorf("cannot apply: disk %s: %w since the plan was made; nothing was changed; check which disk this is, and plan again", name, err))
			}
		}
		out[name] = id
	}
	return out, nil
}

// sameDisks refuses to go on when a device name of the journal now names
// another disk (after a reboot the kernel may number disks differently).
func sameDisks(h *Header) error {
	for _, name := range sortedKeys(h.Disks) {
		was := h.Disks[name]
		now, err := identify(was.Path)
		if err != nil {
			return fmt.Errorf("disk %s (%s) is gone: %w; attach it again", name, was, err)
		}
		if err := was.Same(now); err != nil {
			return fmt.Errorf("disk %s: %w since this apply started; nothing was changed. Find the disk %s (ls -l /dev/disk/by-id) and make %s name it again, or roll back once it does", name, err, was, was.Path)
		}
	}
	return nil
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// PlanOf returns the plan recorded in a journal.
func PlanOf(path string) (*plan.Plan, error) {
	l, err := engine.Read(path)
	if err != nil {
		return nil, err
	}
	h, err := readHeader(l)
	if err != nil {
		return nil, err
	}
	return h.Plan, nil
}
