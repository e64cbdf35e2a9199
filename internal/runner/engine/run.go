package engine

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/cryptshift/cryptshift/internal/exitcode"
	"github.com/cryptshift/cryptshift/internal/model/plan"
)

// ErrInterrupted is wrapped by the error of a run that Ctrl-C, SIGTERM,
// Options.Stop or a cancelled context stopped; it carries exit status 6.
var ErrInterrupted = errors.New("interrupted")

// ErrRolledBack is returned when a rolled-back journal is resumed or
// rolled back again.
var ErrRolledBack = errors.New("the journal was rolled back")

// Execute runs the steps in order, journalling each. Steps the journal
// records as done are skipped after their effects are checked (Checker,
// Reestablisher); the step a crash interrupted runs again unless its
// postcondition (Done) already holds. Execute stops at the first failure,
// or at a step boundary on Ctrl-C or SIGTERM.
func (j *Journal) Execute(ctx context.Context, steps []Step, opt Options) (Result, error) {
	var res Result
	if err := unique(steps); err != nil {
		return res, err
	}
	if j.log.RolledBack {
		return res, fmt.Errorf("cannot resume: %w (%s); start afresh", ErrRolledBack, j.log.Path)
	}
	stop := newStopper(ctx, opt)
	defer stop.close()
	total := len(steps)
	for i, s := range steps {
		e := s.Entry()
		n := i + 1
		if j.log.Done[e.ID] {
			if err := j.recheck(ctx, s, e, &opt); err != nil {
				return res, err
			}
			res.Skipped++
			continue
		}
		if stop.requested() {
			if err := j.append(recStopped, stepRecord{Step: e.ID, N: n}); err != nil {
				return res, err
			}
			res.Changed = true
			return res, exitcode.With(exitcode.Interrupted, fmt.Errorf("%w before step %d/%d %s; nothing is half done; continue with: %s",
				ErrInterrupted, n, total, e.ID, orDefault(opt.Resume, "--resume")))
		}
		if opt.Report != nil {
			opt.Report.StepStart(n, total, e)
		}
		start := time.Now()
		skipped := false
		var err error
		if e.ID == j.log.InFlight {
			// It may have finished before the crash: look before redoing.
			skipped, err = s.Done(ctx)
		}
		if jerr := j.append(recStart, stepRecord{Step: e.ID, N: n}); jerr != nil {
			return res, jerr
		}
		res.Changed = true
		Fault("begin:" + e.ID)
		cut := false
		if err == nil && !skipped {
			cut, err = stop.do(ctx, s)
		}
		if opt.Report != nil {
			opt.Report.StepDone(n, total, e, time.Since(start), skipped, err)
		}
		if err != nil {
			if cut {
				if jerr := j.append(recStopped, stepRecord{Step: e.ID, N: n}); jerr != nil {
					return res, jerr
				}
				return res, exitcode.With(exitcode.Interrupted, fmt.Errorf("%w during step %d/%d %s, which runs again on resume; continue with: %s",
					ErrInterrupted, n, total, e.ID, orDefault(opt.Resume, "--resume")))
			}
			if jerr := j.append(recFailed, stepRecord{Step: e.ID, N: n, Error: err.Error()}); jerr != nil {
				return res, jerr
			}
			return res, fmt.Errorf("cannot finish step %d/%d %s: %w\nthe journal %s records everything up to here; %s",
				n, total, e.ID, err, j.log.Path, opt.hint())
		}
		if jerr := j.append(recDone, stepRecord{Step: e.ID, N: n, Checked: skipped}); jerr != nil {
			return res, jerr
		}
		Fault("after:" + e.ID)
		res.Ran++
	}
	var data any
	if opt.OnFinish != nil {
		var err error
		if data, err = opt.OnFinish(ctx); err != nil {
			return res, err
		}
	}
	// Going over a finished journal again changes nothing, not even the
	// journal (configuration management tells "changed" from it).
	if res.Ran > 0 || !j.log.Finished {
		if err := j.append(recFinished, data); err != nil {
			return res, err
		}
		res.Changed = true
	}
	return res, nil
}

// recheck checks a completed step's lasting effect on resume and
// re-establishes it where it lapsed.
func (j *Journal) recheck(ctx context.Context, s Step, e plan.Step, opt *Options) error {
	c, ok := s.(Checker)
	if !ok {
		return nil
	}
	err := c.Check(ctx)
	if err == nil {
		return nil
	}
	r, ok := s.(Reestablisher)
	if !errors.Is(err, ErrLapsed) || !ok {
		return fmt.Errorf("cannot resume: %w%s", err, rollbackHint(opt))
	}
	fmt.Fprintf(opt.out(), "resume: %v (step %s): re-establishing it\n", err, e.ID)
	if rerr := r.Reestablish(ctx); rerr != nil {
		return fmt.Errorf("cannot resume: cannot re-establish what step %s did (%v): %w%s", e.ID, err, rerr, rollbackHint(opt))
	}
	if err := c.Check(ctx); err != nil {
		return fmt.Errorf("cannot resume: step %s was re-established, but %w%s", e.ID, err, rollbackHint(opt))
	}
	return nil
}

func rollbackHint(opt *Options) string {
	if opt.Rollback == "" {
		return ""
	}
	return "; or undo with: " + opt.Rollback
}

func orDefault(s, d string) string {
	if s == "" {
		return d
	}
	return s
}

func unique(steps []Step) error {
	seen := map[string]bool{}
	for _, s := range steps {
		id := s.Entry().ID
		if id == "" || seen[id] {
			return fmt.Errorf("cannot run steps: step id %q is empty or not unique", id)
		}
		seen[id] = true
	}
	return nil
}

// RollbackReport says what a rollback did and could not do.
type RollbackReport struct {
	Undone    []string // undo steps done
	Kept      []string // steps with nothing of their own to undo
	NotUndone []string // steps that cannot be undone, with why
}

// Rollback runs undo steps in order (Reverse makes them from a client's
// steps), journalling each as undone; undo steps already undone are
// skipped, so an interrupted rollback is simply run again. An undo step's
// Do may return an error wrapping ErrNothingToUndo or ErrIrreversible:
// both are reported, neither stops the rollback.
func (j *Journal) Rollback(ctx context.Context, undo []Step, opt Options) (*RollbackReport, error) {
	rep := &RollbackReport{}
	if err := unique(undo); err != nil {
		return rep, err
	}
	if j.log.RolledBack {
		return rep, fmt.Errorf("cannot roll back: %w (%s)", ErrRolledBack, j.log.Path)
	}
	stop := newStopper(ctx, opt)
	defer stop.close()
	total := len(undo)
	for i, s := range undo {
		e := s.Entry()
		if j.log.Undone[e.ID] {
			continue
		}
		if stop.requested() {
			return rep, exitcode.With(exitcode.Interrupted, fmt.Errorf("rollback %w before undoing %s; run the rollback again to finish it", ErrInterrupted, e.ID))
		}
		if opt.Report != nil {
			opt.Report.StepStart(i+1, total, e)
		}
		start := time.Now()
		cut, err := stop.do(ctx, s)
		if opt.Report != nil {
			opt.Report.StepDone(i+1, total, e, time.Since(start), false, err)
		}
		switch {
		case err == nil:
			if jerr := j.append(recUndone, stepRecord{Step: e.ID}); jerr != nil {
				return rep, jerr
			}
			rep.Undone = append(rep.Undone, e.ID)
			Fault("undone:" + e.ID)
		case errors.Is(err, ErrNothingToUndo):
			rep.Kept = append(rep.Kept, e.ID)
		case errors.Is(err, ErrIrreversible):
			rep.NotUndone = append(rep.NotUndone, err.Error())
		case cut:
			return rep, exitcode.With(exitcode.Interrupted, fmt.Errorf("rollback %w while undoing %s; run the rollback again to finish it", ErrInterrupted, e.ID))
		default:
			return rep, fmt.Errorf("cannot undo step %s: %w; fix the cause and run the rollback again", e.ID, err)
		}
	}
	if err := j.append(recRolledBack, nil); err != nil {
		return rep, err
	}
	return rep, nil
}

// Reverse makes the undo steps of a rollback from a client's steps: every
// step that began (done, failed or interrupted, and not undone yet),
// newest first, undone by its Undo.
func Reverse(steps []Step, log *Log) []Step {
	var out []Step
	for i := len(steps) - 1; i >= 0; i-- {
		if log.Began[steps[i].Entry().ID] {
			out = append(out, undoStep{steps[i]})
		}
	}
	return out
}

type undoStep struct{ s Step }

func (u undoStep) Entry() plan.Step {
	e := u.s.Entry()
	return plan.Step{ID: e.ID, Action: "undo " + e.Action, Target: e.Target, Description: "undo: " + e.Description, Command: e.Undo}
}

func (u undoStep) Do(ctx context.Context) error {
	if un, ok := u.s.(Undoer); ok {
		return un.Undo(ctx)
	}
	return fmt.Errorf("step %s: %w", u.s.Entry().ID, ErrNothingToUndo)
}

func (u undoStep) Done(context.Context) (bool, error) { return false, nil }

// stopper turns SIGINT and SIGTERM (and Options.Stop, and a cancelled
// context) into a stop at the next step boundary, cutting an
// Interruptible step short.
type stopper struct {
	ctx     context.Context
	opt     *Options
	sig     chan os.Signal
	done    chan struct{}
	mu      sync.Mutex
	stopped bool
	cancel  context.CancelFunc // of the running step, if it is Interruptible
}

func newStopper(ctx context.Context, opt Options) *stopper {
	s := &stopper{ctx: ctx, opt: &opt, sig: make(chan os.Signal, 2), done: make(chan struct{})}
	signal.Notify(s.sig, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		for {
			select {
			case <-s.done:
				return
			case <-s.sig:
				s.mu.Lock()
				first := !s.stopped
				s.stopped = true
				cancel := s.cancel
				s.mu.Unlock()
				if cancel != nil {
					if first {
						fmt.Fprintln(opt.out(), "\ncryptshift: stopping: the current step is cut short and runs again on --resume")
					}
					cancel()
				} else if first {
					fmt.Fprintln(opt.out(), "\ncryptshift: stopping after the current step (it is not interrupted halfway)")
				}
			}
		}
	}()
	return s
}

func (s *stopper) close() {
	signal.Stop(s.sig)
	close(s.done)
}

// requested reports whether the run should stop before the next step.
func (s *stopper) requested() bool {
	s.mu.Lock()
	stopped := s.stopped
	s.mu.Unlock()
	if stopped || s.ctx.Err() != nil {
		return true
	}
	if s.opt.Stop != nil && s.opt.Stop() {
		s.mu.Lock()
		s.stopped = true
		s.mu.Unlock()
		return true
	}
	return false
}

// do runs a step's Do; an Interruptible step gets a context that a signal
// cancels. cut reports that the step ended because it was stopped (a
// signal or the caller's context), not because it failed.
func (s *stopper) do(ctx context.Context, st Step) (cut bool, err error) {
	if i, ok := st.(Interruptible); !ok || !i.Interruptible() {
		err = st.Do(ctx)
		return err != nil && ctx.Err() != nil, err
	}
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	s.mu.Lock()
	if s.stopped {
		s.mu.Unlock()
		return true, context.Canceled
	}
	s.cancel = cancel
	s.mu.Unlock()
	err = st.Do(sctx)
	s.mu.Lock()
	s.cancel = nil
	s.mu.Unlock()
	return err != nil && sctx.Err() != nil, err
}
