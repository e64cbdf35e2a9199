package migrate

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/cryptshift/cryptshift/internal/doors/execx"
	"github.com/cryptshift/cryptshift/internal/doors/progress"
	"github.com/cryptshift/cryptshift/internal/doors/qemuimg"
	"github.com/cryptshift/cryptshift/internal/doors/secrets"
	"github.com/cryptshift/cryptshift/internal/exitcode"
	"github.com/cryptshift/cryptshift/internal/model/plan"
	"github.com/cryptshift/cryptshift/internal/runner/copier"
	"github.com/cryptshift/cryptshift/internal/runner/engine"
	"github.com/cryptshift/cryptshift/libvirt"
)

// Options are the inputs of a migration (the CLI's flags).
type Options struct {
	Domain  string
	Connect string // --connect: URI or socket path
	To      string // pool:NAME or vg:NAME
	Mode    string // offline or live
	Engine  string // live mode: snapshot (default) or mirror

	Shutdown        bool // offline: shut a running guest down and start it again afterwards
	ShutdownTimeout time.Duration
	ForceOff        bool

	DryRun bool
	// DomainXML, with DryRun, is a saved domain definition to plan from
	// instead of asking libvirtd for the domain (which may not run here).
	DomainXML    string
	Resume       bool
	JournalPath  string // default DefaultJournalPath(Domain)
	RetireSource bool

	// PassphraseFile, if set, holds the key for every new target (instead
	// of a random one per disk). A trailing newline is not part of it.
	PassphraseFile string
	// TargetFormat is the image format of pool: targets: "raw" (a LUKS
	// image of the full virtual size), "qcow2" (qcow2 with LUKS encryption:
	// only the data is stored, but its allocation tables are not
	// encrypted), or "" to keep each disk's source format (a qcow2 source
	// becomes an encrypted qcow2, a raw one raw LUKS).
	TargetFormat string
	// IterTimeMS is the LUKS PBKDF2 iteration time; 0 keeps qemu's 2000 ms.
	IterTimeMS int
	// AllowPlaintextSecretStore lets pool: targets keep their keys in a
	// libvirt secret store (LibvirtSecretStore) that is not on encrypted
	// storage; without it such a migration is refused.
	AllowPlaintextSecretStore bool

	// vg: targets (VGConfig says what each is for).
	KeyDir     string // default /etc/cryptsetup-keys.d
	Crypttab   string // default /etc/crypttab
	OverlayDir string // live mode; default /var/lib/cryptshift/overlays
	// RecoveryKey supplies the recovery key that vg: targets put into a
	// second keyslot. migrate calls it once: on a fresh run after every
	// check passed and before anything changes (resume false), or on
	// --resume when a recovery keyslot is still to be added or confirmed
	// (resume true; file is RecoveryKeyFile as the journal recorded it).
	RecoveryKey func(resume bool, file string) ([]byte, error)
	// RecoveryKeyFile is where the caller wrote the recovery key; it is
	// recorded in the journal (the path, never the key).
	RecoveryKeyFile string
	LVMConfig       string // extra lvm --config, e.g. for a system without udev
	// PBKDF cost of vg: targets' keyslots; 0 keeps apply's defaults
	// (argon2id, 2000 ms, 1 GiB, 4 threads). Tests under emulation lower it.
	PBKDFIterations, PBKDFMemoryKiB, PBKDFParallel int

	Out      io.Writer         // messages for people; nil: discard
	Progress progress.Reporter // nil: none

	// Test seams; nil means the real thing.
	Hypervisor Hypervisor
	Images     ImageTool
	Rand       io.Reader    // UUIDs of new secrets
	Runner     execx.Runner // cryptsetup, lvm, blkdiscard
	// Root is where /dev, /sys and /proc are read and device nodes opened
	// ("" is "/"), so unit tests replay a machine.
	Root string
	// DirectIO says whether the filesystem of a pool directory takes
	// O_DIRECT; nil: its type decides (directIOFS).
	DirectIO func(dir string) bool
}

// Result is what a migration did.
type Result struct {
	Plan    *Document         `json:"plan"`
	States  map[string]string `json:"states"` // disk → last state
	Notes   []string          `json:"notes"`
	Journal string            `json:"journal,omitempty"`
}

// Document is the plan of a migration as --dry-run prints it: the same step
// shape as the planner's plans (id, action, target, command, destructive).
type Document struct {
	APIVersion string      `json:"apiVersion"`
	Kind       string      `json:"kind"` // MigratePlan
	Domain     string      `json:"domain"`
	To         string      `json:"to"`
	Mode       string      `json:"mode"`
	Engine     string      `json:"engine,omitempty"`
	Disks      []Disk      `json:"disks"`
	Skipped    []Skipped   `json:"skipped,omitempty"`
	Steps      []plan.Step `json:"steps"`
	Notes      []string    `json:"notes"`
}

// --target-format values.
const (
	TargetFormatRaw   = "raw"
	TargetFormatQCOW2 = "qcow2"
)

// DefaultJournalDir is where migrate keeps journals and saved definitions.
const DefaultJournalDir = "/var/lib/cryptshift/migrate"

// DefaultJournalPath is the journal of a domain's migration.
func DefaultJournalPath(domain string) string {
	return filepath.Join(DefaultJournalDir, domain+".journal")
}

// runtime is one migration (or rollback) in progress.
type runtime struct {
	hv         Hypervisor
	img        ImageTool
	t          Target
	h          *Header
	j          *engine.Journal
	out        io.Writer
	prog       progress.Reporter
	keys       map[string][]byte // secret UUID → key, in memory only
	passphrase []byte
	// copyStarted: a shallow copy onto the disk's pivot overlay was
	// started (by this or an earlier process), so the overlay may not be
	// empty any more.
	copyStarted map[string]bool

	states     map[string]string // disk → last recorded state
	verified   map[string]bool
	pausedByUs bool
	noted      map[string]bool
	notes      []string

	shutdownTimeout time.Duration
	lockWait        time.Duration // how long whenUnlocked waits

	run        execx.Runner // cryptsetup, lvm, blkdiscard
	root       string
	recoveryFn func(resume bool, file string) ([]byte, error)
	recovery   []byte // the recovery key, in memory only

	// allowPlaintextSecretStore: Options.AllowPlaintextSecretStore.
	allowPlaintextSecretStore bool
	directIO                  func(dir string) bool // Options.DirectIO

	checkpoints map[string]*copier.Checkpoint // disk → last durable copy checkpoint
	copySums    map[string]string             // disk → SHA-256 of the source as copied
}

func (o *Options) normalize() error {
	if o.Mode == "" {
		return usage(errors.New("cannot migrate: --mode offline or --mode live is required"))
	}
	if o.Mode != ModeOffline && o.Mode != ModeLive {
		return usage(fmt.Errorf("cannot migrate: unknown --mode %q; use offline or live", o.Mode))
	}
	if o.Engine == "" {
		o.Engine = EngineSnapshot
	}
	if o.Engine != EngineSnapshot && o.Engine != EngineMirror {
		return usage(fmt.Errorf("cannot migrate: unknown --engine %q; use snapshot or mirror", o.Engine))
	}
	if o.Mode == ModeOffline && o.Engine == EngineMirror {
		return usage(errors.New("cannot migrate: --engine mirror is a live-mode engine; offline copies always use qemu-img"))
	}
	if o.Mode == ModeLive && (o.Shutdown || o.ForceOff) {
		return usage(errors.New("cannot migrate: --shutdown and --force-off belong to --mode offline"))
	}
	if o.ShutdownTimeout == 0 {
		o.ShutdownTimeout = 5 * time.Minute
	}
	if o.IterTimeMS < 0 {
		return usage(errors.New("cannot migrate: --iter-time must be positive"))
	}
	kind, _, err := parseTo(o.To)
	if err != nil {
		return usage(err)
	}
	if o.PBKDFIterations < 0 || o.PBKDFMemoryKiB < 0 || o.PBKDFParallel < 0 {
		return usage(errors.New("cannot migrate: the PBKDF cost must be positive"))
	}
	switch o.TargetFormat {
	case "", TargetFormatRaw, TargetFormatQCOW2:
	default:
		return usage(fmt.Errorf("cannot migrate: unknown --target-format %q; use raw or qcow2 (or leave it out to keep each disk's source format)", o.TargetFormat))
	}
	if kind == "vg" && o.TargetFormat == TargetFormatQCOW2 {
		return usage(errors.New("cannot migrate to a vg: target with --target-format qcow2: a vg: target is a dm-crypt mapping on a logical volume, always raw; qcow2 targets are for pool: targets"))
	}
	if kind == "vg" && o.PassphraseFile != "" {
		return usage(errors.New("cannot migrate to a vg: target with --passphrase-file: each disk gets a random key file on the encrypted root (--key-dir) and the recovery key a second keyslot (--recovery-key-file); --passphrase-file is for pool: targets"))
	}
	if o.DomainXML != "" && (!o.DryRun || o.Resume) {
		return usage(errors.New("cannot migrate from --domain-xml: it plans only (--dry-run); the migration itself asks libvirtd"))
	}
	if o.JournalPath == "" {
		o.JournalPath = DefaultJournalPath(o.Domain)
	}
	if o.Out == nil {
		o.Out = io.Discard
	}
	if o.Progress == nil {
		o.Progress = progress.Discard
	}
	if o.Rand == nil {
		o.Rand = rand.Reader
	}
	return nil
}

// Validate checks the options without connecting anywhere: the errors a
// user should see before being asked anything.
func (o Options) Validate() error { return o.normalize() }

func usage(err error) error { return exitcode.With(exitcode.Usage, err) }

func newRuntime(o *Options) (*runtime, func(), error) {
	rt := &runtime{hv: o.Hypervisor, img: o.Images, out: o.Out, prog: o.Progress,
		keys: map[string][]byte{}, copyStarted: map[string]bool{}, states: map[string]string{},
		verified: map[string]bool{}, noted: map[string]bool{}, shutdownTimeout: o.ShutdownTimeout,
		lockWait: 30 * time.Minute, run: o.Runner, root: o.Root, recoveryFn: o.RecoveryKey,
		checkpoints: map[string]*copier.Checkpoint{}, copySums: map[string]string{},
		allowPlaintextSecretStore: o.AllowPlaintextSecretStore, directIO: o.DirectIO}
	if rt.directIO == nil {
		rt.directIO = directIOFS
	}
	if rt.run == nil {
		rt.run = execx.Exec{}
	}
	if rt.root == "" {
		rt.root = "/"
	}
	// The disks' keys live in locked memory (secrets.NewKey,
	// secrets.Locked) and are wiped when the migration ends.
	closeFn := func() {
		for _, k := range rt.keys {
			secrets.Wipe(k)
		}
	}
	if rt.hv == nil && o.DomainXML != "" {
		// The daemon, when it answers, still knows the pools.
		var next Hypervisor
		if c, err := libvirt.Dial(o.Connect); err == nil {
			wipe := closeFn
			next, closeFn = c, func() { wipe(); c.Close() }
		}
		hv, err := newXMLHypervisor(o.DomainXML, o.Domain, o.Mode, next)
		if err != nil {
			closeFn()
			return nil, nil, err
		}
		rt.hv = hv
	} else if o.DomainXML != "" {
		hv, err := newXMLHypervisor(o.DomainXML, o.Domain, o.Mode, rt.hv)
		if err != nil {
			return nil, nil, err
		}
		rt.hv = hv
	}
	if rt.hv == nil {
		c, err := libvirt.Dial(o.Connect)
		if err != nil {
			return nil, nil, err
		}
		rt.hv = c
		wipe := closeFn
		closeFn = func() { wipe(); c.Close() }
	}
	if rt.img == nil {
		rt.img = &qemuimg.Driver{Runner: execx.Exec{}}
	}
	if o.PassphraseFile != "" {
		// apply's reader: mode check, size limit, the same trimming, and
		// locked memory.
		b, err := secrets.FromFile(o.PassphraseFile)
		if err != nil {
			closeFn()
			return nil, nil, usage(err)
		}
		if len(b) < 16 {
			secrets.Wipe(b)
			closeFn()
			return nil, nil, usage(errors.New("cannot use --passphrase-file: the passphrase is shorter than 16 characters"))
		}
		rt.passphrase = b
		closeHV := closeFn
		closeFn = func() { secrets.Wipe(b); closeHV() }
	}
	return rt, closeFn, nil
}

// Run plans a migration and, unless DryRun, carries it out (or, with
// Resume, continues the one in the journal). It returns an error unless
// every disk is switched and verified.
func Run(ctx context.Context, o Options) (res *Result, err error) {
	defer recoverJournal(&err)
	if err := o.normalize(); err != nil {
		return nil, err
	}
	rt, closeFn, err := newRuntime(&o)
	if err != nil {
		return nil, err
	}
	defer closeFn()
	if o.Resume {
		return rt.resume(ctx, &o)
	}
	h, err := rt.inspect(ctx, &o)
	if err != nil {
		return nil, err
	}
	rt.h = h
	steps := buildSteps(rt)
	doc := rt.document(steps)
	if o.DomainXML != "" {
		state := libvirt.ShutOff
		if o.Mode == ModeLive {
			state = libvirt.Running
		}
		doc.Notes = append(doc.Notes, fmt.Sprintf(DomainXMLNote, o.DomainXML, o.Mode, state))
	}
	if o.DryRun {
		return &Result{Plan: doc, Notes: doc.Notes}, nil
	}
	if _, err := os.Stat(o.JournalPath); err == nil {
		return nil, fmt.Errorf("cannot create journal %s: it exists; use --resume to continue it or remove it after a rollback", o.JournalPath)
	}
	if _, err := os.Stat(h.OrigXMLPath); err == nil {
		return nil, definitionExists(h)
	}
	if h.VG != nil {
		// Asked for only now that every check passed, and before anything
		// is written: a recovery key written to a file or shown for a
		// migration that then refuses to start would be a stray secret,
		// and Ctrl-C at the prompt leaves nothing behind that would block
		// the next run.
		if _, err := rt.recoveryKey(false); err != nil {
			return nil, err
		}
	}
	if err := saveDefinition(rt, h); err != nil {
		return nil, err
	}
	j, err := engine.Create(o.JournalPath, h)
	if err != nil {
		return nil, err
	}
	defer j.Close()
	rt.j = j
	for _, d := range h.Disks {
		rt.recordState(d.Target, StatePlanned)
	}
	for _, n := range doc.Notes {
		rt.note(n)
	}
	return rt.execute(ctx, steps, doc)
}

// saveDefinition writes the domain's persistent definition before anything
// changes, without its secure parts (graphics passwords), for the user and
// for `virsh define` by hand. Rollback itself restores disk elements from
// the journal.
func saveDefinition(rt *runtime, h *Header) error {
	dom, err := rt.hv.DomainXML(h.Domain, libvirt.XMLFlags{Inactive: h.Persistent})
	if err != nil {
		return err
	}
	doc, err := dom.Marshal()
	if err != nil {
		return fmt.Errorf("cannot encode the definition of domain %s: %w", h.Domain, err)
	}
	if err := os.MkdirAll(filepath.Dir(h.OrigXMLPath), 0o700); err != nil {
		return fmt.Errorf("cannot create %s: %w", filepath.Dir(h.OrigXMLPath), err)
	}
	// O_EXCL: checked before the prompt already, and never overwritten.
	f, err := os.OpenFile(h.OrigXMLPath, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, fs.ErrExist) {
		return definitionExists(h)
	}
	if err == nil {
		_, err = f.WriteString(doc + "\n")
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}
	if err != nil {
		return fmt.Errorf("cannot save the definition of domain %s: %w", h.Domain, err)
	}
	return nil
}

// definitionExists is the refusal when an earlier migration's saved
// definition is still there.
func definitionExists(h *Header) error {
	return fmt.Errorf("cannot save the definition of domain %s: %s exists from an earlier migration; resume it with --resume, or remove it (and its journal) after a rollback", h.Domain, h.OrigXMLPath)
}

func (rt *runtime) resume(ctx context.Context, o *Options) (*Result, error) {
	j, err := engine.Open(o.JournalPath)
	if err != nil {
		return nil, err
	}
	defer j.Close()
	rt.j = j
	h, err := readHeader(j.Log())
	if err != nil {
		return nil, err
	}
	if h.Domain != o.Domain && o.Domain != "" {
		return nil, usage(fmt.Errorf("cannot resume: journal %s is the migration of domain %s, not %s", o.JournalPath, h.Domain, o.Domain))
	}
	rt.h = h
	if err := rt.replay(j.Log()); err != nil {
		return nil, err
	}
	if j.Log().RolledBack {
		return nil, fmt.Errorf("cannot resume: journal %s was rolled back; remove it (and %s) to migrate again", o.JournalPath, h.OrigXMLPath)
	}
	// Operational choices the user may add when continuing: power a guest
	// off that will not shut down, retire the sources after all.
	if o.ForceOff && !h.ForceOff {
		h.ForceOff = true
		rt.event(map[string]any{"event": "force-off-requested"})
	}
	if o.RetireSource && !h.RetireSource {
		h.RetireSource = true
		rt.event(map[string]any{"event": "retire-requested"})
	}
	t, err := newTarget(h.To, rt)
	if err != nil {
		return nil, err
	}
	rt.t = t
	if problems := t.Prepare(ctx, h); len(problems) > 0 {
		return nil, fmt.Errorf("cannot resume the migration of %s: %s", h.Domain, strings.Join(problems, "; "))
	}
	steps := buildSteps(rt)
	doc := rt.document(steps)
	rt.printf("resuming the migration of %s from %s\n", h.Domain, o.JournalPath)
	return rt.execute(ctx, steps, doc)
}

func readHeader(l *engine.Log) (*Header, error) {
	if l.Kind != JournalKind {
		return nil, fmt.Errorf("cannot use journal %s: it is an %q journal, not a migrate journal", l.Path, l.Kind)
	}
	// Version 1 journals (before the step engine) are translated by the
	// engine on read; their header means the same.
	if l.Version != journalVersion && l.Version != 1 {
		return nil, fmt.Errorf("cannot use journal %s: version %d, this cryptshift understands %d", l.Path, l.Version, journalVersion)
	}
	var h Header
	if err := json.Unmarshal(l.Header, &h); err != nil {
		return nil, fmt.Errorf("cannot read journal header: %w", err)
	}
	return &h, nil
}

// event is a migrate journal event: a disk's state, a copy checkpoint, a
// pause, ... (never a secret).
type event struct {
	Event      string             `json:"event"`
	Disk       string             `json:"disk,omitempty"`
	State      string             `json:"state,omitempty"`
	SHA256     string             `json:"sha256,omitempty"`
	Checkpoint *copier.Checkpoint `json:"checkpoint,omitempty"`
}

// replay rebuilds the runtime's view from the journal's events.
func (rt *runtime) replay(l *engine.Log) error {
	for i, raw := range l.Events {
		var e event
		if err := json.Unmarshal(raw, &e); err != nil {
			return fmt.Errorf("cannot read journal %s: event %d: %w", l.Path, i+1, err)
		}
		switch e.Event {
		case "state":
			rt.states[e.Disk] = e.State
			if e.State == StateVerified {
				rt.verified[e.Disk] = true
			}
		case "copy-checkpoint":
			rt.checkpoints[e.Disk] = e.Checkpoint
		case "copied":
			rt.copySums[e.Disk] = e.SHA256
		case "pivot-copy":
			rt.copyStarted[e.Disk] = true
		case "paused":
			rt.pausedByUs = true
		case "resumed":
			rt.pausedByUs = false
		}
	}
	return nil
}

// begun reports whether a step has a start record: it may have created
// something, and rollback removes only such objects.
func (rt *runtime) begun(id string) bool { return rt.j != nil && rt.j.Log().Began[id] }

// execute runs the steps not yet done through the engine.
func (rt *runtime) execute(ctx context.Context, steps []*Step, doc *Document) (*Result, error) {
	l := rt.j.Log()
	var es []engine.Step
	for _, s := range steps {
		if l.Done[s.ID] {
			// Journals written before states preceded done records.
			for _, d := range s.stateDisks() {
				rt.recordState(d, s.State)
			}
		}
		es = append(es, &engineStep{rt: rt, s: s})
	}
	h := rt.h
	opt := engine.Options{Report: stepPrinter{rt}, Out: rt.out,
		Resume:   fmt.Sprintf("cryptshift migrate %s --to %s --mode %s --resume --journal %s", h.Domain, h.To, h.Mode, execx.QuoteArg(l.Path)),
		Rollback: "cryptshift rollback " + execx.QuoteArg(l.Path),
		OnFinish: func(ctx context.Context) (any, error) {
			if err := rt.t.Finish(ctx); err != nil {
				return nil, err
			}
			for _, d := range rt.h.Disks {
				if stateIndex(rt.states[d.Target]) < stateIndex(StateSwitched) || !rt.verified[d.Target] {
					return nil, fmt.Errorf("cannot finish the migration of %s: disk %s is %s, not switched and verified", rt.h.Domain, d.Target, rt.states[d.Target])
				}
			}
			rt.leftovers()
			return map[string]any{"states": rt.states}, nil
		}}
	if _, err := rt.j.Execute(ctx, es, opt); err != nil {
		return rt.result(doc), err
	}
	return rt.result(doc), nil
}

// engineStep is a migrate step as the engine runs it. Every migrate step
// checks where things are before it acts, so Done answers false and the
// step simply runs again after a crash; every step may be cut short by
// Ctrl-C (a copy continues from its checkpoint).
type engineStep struct {
	rt *runtime
	s  *Step
}

func (e *engineStep) Entry() plan.Step { return e.s.Step }

func (e *engineStep) Do(ctx context.Context) error {
	if err := e.s.Run(ctx); err != nil {
		return err
	}
	// States first: a crash between them and the step's done record
	// reruns the (idempotent) step, never skips a disk's state.
	for _, d := range e.s.stateDisks() {
		e.rt.recordState(d, e.s.State)
	}
	return nil
}

func (e *engineStep) Done(context.Context) (bool, error) { return false, nil }

func (e *engineStep) Interruptible() bool { return true }

// stepPrinter says which step runs.
type stepPrinter struct{ rt *runtime }

func (p stepPrinter) StepStart(n, total int, s plan.Step) {
	p.rt.printf("[%d/%d] %s\n", n, total, s.Description)
}

func (p stepPrinter) StepDone(int, int, plan.Step, time.Duration, bool, error) {}

// leftovers says which plaintext remains, and how to retire it.
func (rt *runtime) leftovers() {
	h := rt.h
	var kept []string
	for _, d := range h.Disks {
		if rt.states[d.Target] == StateRetired {
			continue
		}
		for _, l := range d.Chain {
			if _, err := os.Lstat(l.Path); err == nil {
				kept = append(kept, l.Path)
			}
		}
	}
	if len(kept) == 0 {
		return
	}
	rt.note(fmt.Sprintf("plaintext remains: %s still hold(s) the guest's data unencrypted; the guest no longer uses them. "+
		"Keep them until you have checked the guest, then retire them with: cryptshift migrate %s --to %s --mode %s --resume --retire-source --journal %s",
		strings.Join(kept, ", "), h.Domain, h.To, h.Mode, rt.j.Path()))
}

func (rt *runtime) result(doc *Document) *Result {
	r := &Result{Plan: doc, States: map[string]string{}, Notes: rt.notes}
	for k, v := range rt.states {
		r.States[k] = v
	}
	if rt.j != nil {
		r.Journal = rt.j.Path()
	}
	return r
}

func (rt *runtime) document(steps []*Step) *Document {
	h := rt.h
	doc := &Document{APIVersion: plan.APIVersion, Kind: "MigratePlan", Domain: h.Domain, To: h.To,
		Mode: h.Mode, Disks: h.Disks, Skipped: h.Skipped, Steps: []plan.Step{}}
	if h.Mode == ModeLive {
		doc.Engine = h.Engine
	}
	for _, s := range steps {
		doc.Steps = append(doc.Steps, s.Step)
	}
	for _, s := range h.Skipped {
		doc.Notes = append(doc.Notes, fmt.Sprintf("disk %s is skipped: %s", s.Target, s.Reason))
	}
	doc.Notes = append(doc.Notes, rt.t.Notes(h)...)
	if h.Mode == ModeLive && h.Engine == EngineMirror {
		doc.Notes = append(doc.Notes, "mirror engine: the guest is paused while its disks are compared with their targets")
	}
	if !h.RetireSource {
		doc.Notes = append(doc.Notes, "the plaintext sources are kept; --retire-source overwrites and removes them after the switch")
	}
	return doc
}

// append writes a journal event; a journal that cannot be written stops
// the migration at once (continuing would make resume guess).
func (rt *runtime) append(data any) {
	if rt.j == nil {
		return
	}
	if err := rt.j.Event(data); err != nil {
		panic(journalError{err})
	}
}

type journalError struct{ error }

func (rt *runtime) recordState(disk, state string) {
	if stateIndex(state) <= stateIndex(rt.states[disk]) && rt.states[disk] != "" {
		if state == StateVerified {
			rt.verified[disk] = true
		}
		return
	}
	rt.states[disk] = state
	if state == StateVerified {
		rt.verified[disk] = true
	}
	rt.append(event{Event: "state", Disk: disk, State: state})
	engine.Fault("state:" + disk + ":" + state)
}

func (rt *runtime) event(data map[string]any) { rt.append(data) }

func (rt *runtime) note(s string) {
	if rt.noted[s] {
		return
	}
	rt.noted[s] = true
	rt.notes = append(rt.notes, s)
	rt.printf("note: %s\n", s)
}

func (rt *runtime) printf(format string, a ...any) { fmt.Fprintf(rt.out, format, a...) }

// recoveryKey returns the recovery key of vg: targets, asking the caller
// for it the first time.
func (rt *runtime) recoveryKey(resume bool) ([]byte, error) {
	if rt.recovery != nil {
		return rt.recovery, nil
	}
	if rt.recoveryFn == nil {
		return nil, errors.New("cannot add recovery keyslots: no recovery key was given (the CLI generates one, or reads it on --resume from --recovery-key-file)")
	}
	file := ""
	if rt.h != nil && rt.h.VG != nil {
		file = rt.h.VG.RecoveryKeyFile
	}
	k, err := rt.recoveryFn(resume, file)
	if err != nil {
		return nil, err
	}
	if len(k) == 0 {
		return nil, errors.New("cannot add recovery keyslots: the recovery key is empty")
	}
	rt.recovery = k
	return k, nil
}

// hostPath is where this process opens a device path such as
// /dev/mapper/NAME (Options.Root).
func (rt *runtime) hostPath(p string) string {
	if rt.root == "/" {
		return p
	}
	return filepath.Join(rt.root, p)
}

// key returns a disk's key from memory or from its libvirt secret.
func (rt *runtime) key(uuid string) ([]byte, error) {
	if k, ok := rt.keys[uuid]; ok {
		return k, nil
	}
	v, err := rt.hv.SecretValue(uuid)
	if err != nil {
		return nil, err
	}
	k, err := secrets.Locked(v)
	if err != nil {
		return nil, err
	}
	rt.keys[uuid] = k
	return k, nil
}

// recoverJournal turns a journal write failure (raised by append) into an
// error.
func recoverJournal(err *error) {
	if r := recover(); r != nil {
		if je, ok := r.(journalError); ok {
			*err = fmt.Errorf("cannot continue: %w", je.error)
			return
		}
		panic(r)
	}
}
