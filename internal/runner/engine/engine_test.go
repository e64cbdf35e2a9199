package engine

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cryptshift/cryptshift/internal/exitcode"
	"github.com/cryptshift/cryptshift/internal/model/plan"
)

// world is what fake steps act on: a set of effects, and a log of calls.
type world struct {
	effects map[string]bool // step id -> its effect is in place
	lapsed  map[string]bool // effect ended the way a reboot ends it
	calls   []string
	failDo  map[string]error
}

func newWorld() *world {
	return &world{effects: map[string]bool{}, lapsed: map[string]bool{}, failDo: map[string]error{}}
}

type fake struct {
	w             *world
	id            string
	lasting       bool // Check + Reestablish
	checked       bool // Check only
	undo          error
	interruptible bool
	do            func(ctx context.Context) error
}

func (f *fake) Entry() plan.Step {
	return plan.Step{ID: f.id, Action: "fake", Target: f.id, Command: []string{"do", f.id}, Undo: []string{"undo", f.id}}
}

func (f *fake) Do(ctx context.Context) error {
	f.w.calls = append(f.w.calls, "do "+f.id)
	if f.do != nil {
		if err := f.do(ctx); err != nil {
			return err
		}
	}
	if err := f.w.failDo[f.id]; err != nil {
		return err
	}
	f.w.effects[f.id] = true
	return nil
}

func (f *fake) Done(context.Context) (bool, error) {
	f.w.calls = append(f.w.calls, "done? "+f.id)
	return f.w.effects[f.id], nil
}

func (f *fake) Undo(context.Context) error {
	if f.undo != nil {
		return f.undo
	}
	f.w.calls = append(f.w.calls, "undo "+f.id)
	delete(f.w.effects, f.id)
	return nil
}

func (f *fake) Interruptible() bool { return f.interruptible }

type lastingFake struct{ *fake }

func (f lastingFake) Check(context.Context) error {
	f.w.calls = append(f.w.calls, "check "+f.id)
	switch {
	case f.w.lapsed[f.id]:
		return fmt.Errorf("%s is closed: %w", f.id, ErrLapsed)
	case !f.w.effects[f.id]:
		return fmt.Errorf("%s, made by step %s, is gone", f.id, f.id)
	}
	return nil
}

func (f lastingFake) Reestablish(context.Context) error {
	f.w.calls = append(f.w.calls, "reestablish "+f.id)
	delete(f.w.lapsed, f.id)
	return nil
}

type checkedFake struct{ *fake }

func (f checkedFake) Check(context.Context) error {
	f.w.calls = append(f.w.calls, "check "+f.id)
	if !f.w.effects[f.id] {
		return fmt.Errorf("%s, made by step %s, is gone", f.id, f.id)
	}
	return nil
}

func steps(w *world, specs ...string) []Step {
	var out []Step
	for _, s := range specs {
		id, kind, _ := strings.Cut(s, "/")
		f := &fake{w: w, id: id}
		switch kind {
		case "lasting":
			out = append(out, lastingFake{f})
		case "checked":
			out = append(out, checkedFake{f})
		case "irreversible":
			f.undo = fmt.Errorf("what was on %s is gone: %w", id, ErrIrreversible)
			out = append(out, f)
		case "keep":
			f.undo = fmt.Errorf("step %s: %w", id, ErrNothingToUndo)
			out = append(out, f)
		default:
			out = append(out, f)
		}
	}
	return out
}

type header struct {
	Kind    string `json:"kind"`
	Version int    `json:"version"`
	Name    string `json:"name"`
}

func newJournal(t *testing.T) (*Journal, string) {
	t.Helper()
	p := filepath.Join(t.TempDir(), "j", "test.journal")
	j, err := Create(p, header{Kind: "test", Version: 1, Name: "n"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { j.Close() })
	return j, p
}

func reopen(t *testing.T, j *Journal) *Journal {
	t.Helper()
	p := j.Path()
	j.Close()
	j2, err := Open(p)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { j2.Close() })
	return j2
}

// records lists a journal's records as "type step" strings.
func records(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		typ := between(l, `"type":"`, `"`)
		if step := between(l, `"step":"`, `"`); step != "" {
			typ += " " + step
		}
		out = append(out, typ)
	}
	return strings.Join(out, ", ")
}

func between(s, a, b string) string {
	_, rest, ok := strings.Cut(s, a)
	if !ok {
		return ""
	}
	v, _, _ := strings.Cut(rest, b)
	return v
}

type crash struct{ point string }

// crashAt runs fn and stops it at a fault point the way kill -9 would: the
// journal keeps what was written.
func crashAt(t *testing.T, point string, fn func()) {
	t.Helper()
	restore := SetFault(func(p string) {
		if p == point {
			panic(crash{p})
		}
	})
	defer restore()
	defer func() {
		r := recover()
		if c, ok := r.(crash); !ok || c.point != point {
			t.Fatalf("fault point %s: got %v", point, r)
		}
	}()
	fn()
}

func TestStopAtBoundaryThenResume(t *testing.T) {
	w := newWorld()
	j, p := newJournal(t)
	st := steps(w, "a", "b", "c")
	calls := 0
	_, err := j.Execute(context.Background(), st, Options{Stop: func() bool { calls++; return calls == 2 }, Resume: "cryptshift x --resume"})
	if !errors.Is(err, ErrInterrupted) || exitcode.Of(err) != exitcode.Interrupted || !strings.Contains(err.Error(), "before step 2/3 b; nothing is half done; continue with: cryptshift x --resume") {
		t.Fatalf("got %v (exit %d)", err, exitcode.Of(err))
	}
	if got := records(t, p); got != "header, start a, done a, stopped b" {
		t.Fatalf("journal: %s", got)
	}
	j = reopen(t, j)
	res, err := j.Execute(context.Background(), st, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if res.Ran != 2 || res.Skipped != 1 {
		t.Errorf("result %+v", res)
	}
	if got := strings.Join(w.calls, ", "); got != "do a, do b, do c" {
		t.Errorf("calls: %s", got)
	}
	if got := records(t, p); got != "header, start a, done a, stopped b, start b, done b, start c, done c, finished" {
		t.Fatalf("journal: %s", got)
	}
	// Going over a finished journal again changes nothing.
	before, _ := os.ReadFile(p)
	j = reopen(t, j)
	if res, err := j.Execute(context.Background(), st, Options{}); err != nil || res.Changed {
		t.Fatalf("re-run of a finished journal: %+v %v", res, err)
	}
	if after, _ := os.ReadFile(p); !bytes.Equal(before, after) {
		t.Error("a re-run of a finished journal wrote to it")
	}
}

// The step a crash interrupted is checked against its postcondition: run
// again when it did not take effect, recorded as done (checked) when it did.
func TestResumeChecksTheInterruptedStep(t *testing.T) {
	for _, tookEffect := range []bool{false, true} {
		t.Run(fmt.Sprint("took effect ", tookEffect), func(t *testing.T) {
			w := newWorld()
			j, p := newJournal(t)
			st := steps(w, "a", "b", "c")
			crashAt(t, "begin:b", func() { j.Execute(context.Background(), st, Options{}) })
			if got := records(t, p); got != "header, start a, done a, start b" {
				t.Fatalf("journal after the crash: %s", got)
			}
			if tookEffect {
				w.effects["b"] = true
			}
			w.calls = nil
			j = reopen(t, j)
			if j.Log().InFlight != "b" {
				t.Fatalf("in flight: %q", j.Log().InFlight)
			}
			if _, err := j.Execute(context.Background(), st, Options{}); err != nil {
				t.Fatal(err)
			}
			want := "done? b, do b, do c"
			if tookEffect {
				want = "done? b, do c"
			}
			if got := strings.Join(w.calls, ", "); got != want {
				t.Errorf("calls %q, want %q", got, want)
			}
			if tookEffect && !strings.Contains(string(mustRead(t, p)), `"step":"b","n":2,"checked":true`) {
				t.Error("the skipped step is not recorded as checked")
			}
		})
	}
}

func mustRead(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestFailureIsRecordedAndRetried(t *testing.T) {
	w := newWorld()
	j, p := newJournal(t)
	st := steps(w, "a", "b", "c")
	w.failDo["b"] = errors.New("volume group vg0 not found")
	_, err := j.Execute(context.Background(), st, Options{Resume: "R", Rollback: "B"})
	if err == nil || exitcode.Of(err) != exitcode.Failure ||
		!strings.Contains(err.Error(), "cannot finish step 2/3 b: volume group vg0 not found") ||
		!strings.Contains(err.Error(), "fix the cause and continue with: R; or undo with: B") {
		t.Fatalf("got %v", err)
	}
	if got := records(t, p); got != "header, start a, done a, start b, failed b" {
		t.Fatalf("journal: %s", got)
	}
	delete(w.failDo, "b")
	j = reopen(t, j)
	if _, err := j.Execute(context.Background(), st, Options{}); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(w.calls, ", "); got != "do a, do b, do b, do c" {
		t.Errorf("calls: %s", got)
	}
}

// Resume re-checks the lasting effects of completed steps in order: a
// lapsed one (a reboot closed the mapping) is re-established before
// anything new runs; a vanished one refuses the resume and changes
// nothing in the journal.
func TestResumeReestablishesOrRefuses(t *testing.T) {
	w := newWorld()
	j, p := newJournal(t)
	st := steps(w, "lv/checked", "open/lasting", "mount/lasting", "keyfile", "last")
	crashAt(t, "after:keyfile", func() { j.Execute(context.Background(), st, Options{}) })
	// A reboot: the mapping is closed and the mount gone.
	w.lapsed["open"], w.lapsed["mount"] = true, true
	w.calls = nil
	var out bytes.Buffer
	j = reopen(t, j)
	if _, err := j.Execute(context.Background(), st, Options{Out: &out}); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(w.calls, ", "); got != "check lv, check open, reestablish open, check open, check mount, reestablish mount, check mount, do last" {
		t.Errorf("calls: %s", got)
	}
	if !strings.Contains(out.String(), "resume: open is closed: its effect has lapsed (step open): re-establishing it") {
		t.Errorf("out: %s", out.String())
	}

	// A volume that vanished: refused, nothing runs, the journal unchanged.
	w2 := newWorld()
	j2, p2 := newJournal(t)
	st2 := steps(w2, "lv/checked", "open/lasting", "last")
	crashAt(t, "after:open", func() { j2.Execute(context.Background(), st2, Options{}) })
	delete(w2.effects, "lv")
	before := mustRead(t, p2)
	w2.calls = nil
	j2 = reopen(t, j2)
	_, err := j2.Execute(context.Background(), st2, Options{Rollback: "cryptshift rollback J"})
	if err == nil || err.Error() != "cannot resume: lv, made by step lv, is gone; or undo with: cryptshift rollback J" {
		t.Fatalf("got %v", err)
	}
	if got := strings.Join(w2.calls, ", "); got != "check lv" {
		t.Errorf("calls: %s", got)
	}
	if !bytes.Equal(before, mustRead(t, p2)) {
		t.Error("a refused resume wrote to the journal")
	}
	_ = p
}

func TestRollbackUndoesWhatBeganNewestFirst(t *testing.T) {
	w := newWorld()
	j, p := newJournal(t)
	st := steps(w, "wipe/irreversible", "pv", "vg/keep", "lv", "never")
	w.failDo["lv"] = errors.New("no space")
	if _, err := j.Execute(context.Background(), st, Options{}); err == nil {
		t.Fatal("want the lv step to fail")
	}
	w.calls = nil
	undo := Reverse(st, j.Log())
	var ids []string
	for _, u := range undo {
		ids = append(ids, u.Entry().ID)
	}
	// The failed step began: it may have left something, so it is undone too.
	if got := strings.Join(ids, " "); got != "lv vg pv wipe" {
		t.Fatalf("undo steps %s", got)
	}
	if u := undo[0].Entry(); u.Action != "undo fake" || strings.Join(u.Command, " ") != "undo lv" {
		t.Errorf("undo entry %+v", u)
	}
	// Interrupted after the first undo, then run again.
	crashAt(t, "undone:lv", func() { j.Rollback(context.Background(), undo, Options{}) })
	j = reopen(t, j)
	rep, err := j.Rollback(context.Background(), Reverse(st, j.Log()), Options{})
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(w.calls, ", "); got != "undo lv, undo pv" {
		t.Errorf("calls: %s", got)
	}
	if fmt.Sprint(rep.Undone, rep.Kept, rep.NotUndone) != "[pv] [vg] [what was on wipe is gone: cannot be undone]" {
		t.Errorf("report %+v", rep)
	}
	if got := records(t, p); !strings.HasSuffix(got, "failed lv, undone lv, undone pv, rolled-back") {
		t.Fatalf("journal: %s", got)
	}
	j = reopen(t, j)
	if _, err := j.Rollback(context.Background(), nil, Options{}); !errors.Is(err, ErrRolledBack) {
		t.Errorf("second rollback: %v", err)
	}
	if _, err := j.Execute(context.Background(), st, Options{}); !errors.Is(err, ErrRolledBack) {
		t.Errorf("resume after rollback: %v", err)
	}
}

// SIGINT and SIGTERM stop at the next boundary; the step in flight runs to
// its end (its tool is not interrupted halfway).
func TestSignalStopsAtTheNextBoundary(t *testing.T) {
	for _, sig := range []syscall.Signal{syscall.SIGINT, syscall.SIGTERM} {
		t.Run(sig.String(), func(t *testing.T) {
			w := newWorld()
			j, p := newJournal(t)
			st := steps(w, "a", "b", "c")
			var out syncBuffer
			st[0].(*fake).do = func(context.Context) error {
				if err := syscall.Kill(os.Getpid(), sig); err != nil {
					return err
				}
				// The step goes on to its end; wait until the handler has
				// seen the signal, so the boundary it stops at is known.
				for deadline := time.Now().Add(10 * time.Second); !strings.Contains(out.String(), "stopping") && time.Now().Before(deadline); {
					time.Sleep(time.Millisecond)
				}
				return nil
			}
			_, err := j.Execute(context.Background(), st, Options{Out: &out})
			if exitcode.Of(err) != exitcode.Interrupted {
				t.Fatalf("got %v", err)
			}
			if got := records(t, p); got != "header, start a, done a, stopped b" {
				t.Fatalf("journal: %s", got)
			}
			if !strings.Contains(out.String(), "stopping after the current step") {
				t.Errorf("out: %q", out.String())
			}
		})
	}
}

// An Interruptible step (a long copy) is cut short: it sees its context
// cancelled, is recorded as stopped, and runs again on resume.
func TestInterruptibleStepIsCutShort(t *testing.T) {
	w := newWorld()
	j, p := newJournal(t)
	st := steps(w, "a", "copy", "c")
	cp := st[1].(*fake)
	cp.interruptible = true
	cp.do = func(ctx context.Context) error {
		if w.effects["copy-resumed"] {
			return nil
		}
		syscall.Kill(os.Getpid(), syscall.SIGTERM)
		<-ctx.Done()
		return ctx.Err()
	}
	var out syncBuffer
	_, err := j.Execute(context.Background(), st, Options{Out: &out, Resume: "R"})
	if exitcode.Of(err) != exitcode.Interrupted || !strings.Contains(err.Error(), "during step 2/3 copy, which runs again on resume; continue with: R") {
		t.Fatalf("got %v", err)
	}
	if got := records(t, p); got != "header, start a, done a, start copy, stopped copy" {
		t.Fatalf("journal: %s", got)
	}
	if !strings.Contains(out.String(), "cut short") {
		t.Errorf("out: %q", out.String())
	}
	w.effects["copy-resumed"] = true
	j = reopen(t, j)
	if j.Log().InFlight != "" {
		t.Errorf("a stopped step is not in flight: %q", j.Log().InFlight)
	}
	if _, err := j.Execute(context.Background(), st, Options{}); err != nil {
		t.Fatal(err)
	}
}

// A cancelled context (the caller's) also stops at a boundary with exit 6.
func TestCancelledContextIsAnInterruption(t *testing.T) {
	w := newWorld()
	j, _ := newJournal(t)
	ctx, cancel := context.WithCancel(context.Background())
	st := steps(w, "a", "b")
	st[0].(*fake).do = func(context.Context) error { cancel(); return nil }
	if _, err := j.Execute(ctx, st, Options{}); exitcode.Of(err) != exitcode.Interrupted {
		t.Fatalf("got %v", err)
	}
}

func TestOnFinishDataAndEvents(t *testing.T) {
	w := newWorld()
	j, p := newJournal(t)
	st := steps(w, "a")
	st[0].(*fake).do = func(context.Context) error { return j.Event(map[string]string{"event": "copied", "disk": "vda"}) }
	_, err := j.Execute(context.Background(), st, Options{OnFinish: func(context.Context) (any, error) {
		return map[string]string{"vda": "switched"}, nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	l, err := Read(p)
	if err != nil {
		t.Fatal(err)
	}
	if !l.Finished || string(l.FinishedData) != `{"vda":"switched"}` || len(l.Events) != 1 || l.Kind != "test" || l.Version != 1 {
		t.Fatalf("log %+v", l)
	}
}

func TestUnreadableJournals(t *testing.T) {
	dir := t.TempDir()
	for name, content := range map[string]string{
		"no header":       `{"seq":1,"time":"2026-01-01T00:00:00Z","type":"start","data":{"step":"a"}}` + "\n",
		"unknown type":    `{"seq":1,"time":"2026-01-01T00:00:00Z","type":"header","data":{"kind":"apply","version":2}}` + "\n" + `{"seq":2,"time":"2026-01-01T00:00:00Z","type":"teleport","data":{}}` + "\n",
		"step without id": `{"seq":1,"time":"2026-01-01T00:00:00Z","type":"header","data":{"kind":"apply","version":2}}` + "\n" + `{"seq":2,"time":"2026-01-01T00:00:00Z","type":"done","data":{}}` + "\n",
	} {
		p := filepath.Join(dir, strings.ReplaceAll(name, " ", "-"))
		os.WriteFile(p, []byte(content), 0o600)
		_, err := Read(p)
		want := map[string]string{"no header": "does not start with a header", "unknown type": `unknown type "teleport"`, "step without id": "names no step"}[name]
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: got %v, want %q", name, err, want)
		}
	}
}

// A migrate journal of version 1 (before the engine) reads as today's
// vocabulary, including what this version appends to it.
func TestLegacyMigrateJournal(t *testing.T) {
	p := filepath.Join(t.TempDir(), "mail.journal")
	lines := []string{
		`{"kind":"migrate","version":1,"domain":"mail"}`,
		`{"id":"vda.key","status":"begin"}`, `{"id":"vda.key","status":"done"}`,
		`{"disk":"vda","state":"target-created"}`,
		`{"id":"vda.copy","status":"begin"}`, `{"id":"vda.copy","status":"failed","error":"disk full"}`,
		`{"event":"copy-checkpoint","disk":"vda"}`,
	}
	types := []string{"header", "step", "step", "state", "step", "step", "event"}
	var b strings.Builder
	for i, l := range lines {
		fmt.Fprintf(&b, `{"seq":%d,"time":"2026-01-01T00:00:00Z","type":%q,"data":%s}`+"\n", i+1, types[i], l)
	}
	os.WriteFile(p, []byte(b.String()), 0o600)
	j, err := Open(p)
	if err != nil {
		t.Fatal(err)
	}
	w := newWorld()
	st := steps(w, "vda.key", "vda.copy")
	if _, err := j.Execute(context.Background(), st, Options{}); err != nil {
		t.Fatal(err)
	}
	j.Close()
	l, err := Read(p)
	if err != nil {
		t.Fatal(err)
	}
	if !l.Done["vda.key"] || !l.Done["vda.copy"] || !l.Finished || len(l.Events) != 2 || l.Kind != "migrate" {
		t.Fatalf("log %+v", l)
	}
	if string(l.Events[0]) != `{"disk":"vda","event":"state","state":"target-created"}` {
		t.Errorf("state record became %s", l.Events[0])
	}
	if got := strings.Join(w.calls, ", "); got != "do vda.copy" {
		t.Errorf("calls %s", got)
	}
}

func TestArchive(t *testing.T) {
	w := newWorld()
	j, p := newJournal(t)
	st := steps(w, "a")
	crashAt(t, "after:a", func() { j.Execute(context.Background(), st, Options{}) })
	err := Archive(p, "cryptshift t --resume", "cryptshift rollback J")
	if err == nil || !strings.Contains(err.Error(), "an unfinished test is recorded in "+p+"; continue it with: cryptshift t --resume; or undo it with: cryptshift rollback J") {
		t.Fatalf("got %v", err)
	}
	j = reopen(t, j)
	if _, err := j.Execute(context.Background(), st, Options{}); err != nil {
		t.Fatal(err)
	}
	j.Close()
	if err := Archive(p, "", ""); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(p + ".1"); err != nil {
		t.Errorf("not archived: %v", err)
	}
	if _, err := Create(p, header{Kind: "test", Version: 1}); err != nil {
		t.Errorf("a new journal after archiving: %v", err)
	}
}

func TestDuplicateStepIDsAreRefused(t *testing.T) {
	j, _ := newJournal(t)
	if _, err := j.Execute(context.Background(), steps(newWorld(), "a", "a"), Options{}); err == nil || !strings.Contains(err.Error(), "not unique") {
		t.Fatalf("got %v", err)
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
