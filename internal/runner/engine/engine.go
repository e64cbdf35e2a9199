// Package engine runs journalled steps: it is the one engine under apply,
// migrate and every later runner (the host move).
//
// A client hands the engine an ordered list of steps. Each step knows its
// plan entry (what a reviewer sees), how to do it (Do), how to tell that it
// is done (Done, its postcondition) and, optionally, how to undo it, how to
// check on resume that its effect is still there, and how to re-establish
// an effect that a reboot ended (an open mapping, a mount). The engine owns
// everything around that:
//
//   - the journal: one fsync'd record before and after every step, in one
//     vocabulary for every client (header, start, done, failed, stopped,
//     finished, undone, rolled-back, and the client's own events);
//   - resume: completed steps are skipped after their lasting effects are
//     checked (and re-established where a reboot ended them); the step that
//     was in flight is checked against its postcondition and only run again
//     if it did not take effect;
//   - rollback: undo steps run in order, each journalled, so an interrupted
//     rollback is simply run again;
//   - Ctrl-C and SIGTERM: the run stops at the next step boundary (a step
//     that declares itself Interruptible is cut short instead: its Do sees
//     its context cancelled) and exits with status 6;
//   - one fault-injection hook for the crash matrices (CRYPTSHIFT_FAULT);
//   - the exit statuses of these outcomes (internal/exitcode).
//
// Secrets never reach the journal: a step entry names secrets, never holds
// them, and clients' events must be secret-free as well.
package engine

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/cryptshift/cryptshift/internal/model/plan"
)

// Step is one unit of journalled work.
type Step interface {
	// Entry is the step as a plan shows it: id (unique in the list),
	// action, target, description, rendered command.
	Entry() plan.Step
	// Do carries the step out. It must leave the postcondition true or
	// return an error, and be safe to run again after a crash anywhere in
	// it.
	Do(ctx context.Context) error
	// Done reports whether the step's postcondition holds now. The engine
	// asks it before re-running a step that was interrupted or failed; a
	// step that cannot tell cheaply answers false and is run again.
	Done(ctx context.Context) (bool, error)
}

// Undoer is a step that can be reversed. Undo must be idempotent: it is
// run again when a rollback was interrupted. It returns an error wrapping
// ErrNothingToUndo when the step leaves nothing behind of its own, or
// ErrIrreversible when what it did cannot be taken back (a wipe).
type Undoer interface {
	Undo(ctx context.Context) error
}

// Checker is a completed step whose effect later steps rely on and which
// can vanish between two runs (a volume, a key file, an open mapping, a
// mount). On resume the engine calls Check for every completed step, in
// plan order, before running anything new: nil means the effect is there;
// an error wrapping ErrLapsed means it ended in a way Reestablish restores
// (a reboot closed the mapping); any other error refuses the resume.
type Checker interface {
	Check(ctx context.Context) error
}

// Reestablisher restores a lapsed effect of a completed step (opens the
// mapping again, mounts again, turns swap on again).
type Reestablisher interface {
	Reestablish(ctx context.Context) error
}

// Interruptible is a step that Ctrl-C or SIGTERM may cut short: its Do
// sees its context cancelled and the step runs again on resume (a long
// copy that continues from its checkpoint). Other steps always run to
// their end before the engine stops.
type Interruptible interface {
	Interruptible() bool
}

// Sentinel errors of Undo and Check.
var (
	ErrNothingToUndo = errors.New("nothing to undo")
	ErrIrreversible  = errors.New("cannot be undone")
	ErrLapsed        = errors.New("its effect has lapsed")
)

// Reporter is told about each step that runs.
type Reporter interface {
	StepStart(n, total int, s plan.Step)
	StepDone(n, total int, s plan.Step, took time.Duration, skipped bool, err error)
}

// Options configure Execute and Rollback.
type Options struct {
	Report Reporter  // nil: none
	Out    io.Writer // notices for people (stop requests, re-established effects); nil: discard
	// Resume and Rollback are the commands that continue or undo this
	// journal, quoted in errors so the user knows the next move.
	Resume, Rollback string
	// Stop, when set, is asked before every step that would run; true
	// stops the run there, as a signal does (a test seam: real runs are
	// stopped by SIGINT and SIGTERM, which the engine always handles).
	Stop func() bool
	// OnFinish runs after the last step; its result (secret-free) is the
	// data of the "finished" record, which is written only if it succeeds.
	OnFinish func(ctx context.Context) (any, error)
}

func (o *Options) out() io.Writer {
	if o.Out == nil {
		return io.Discard
	}
	return o.Out
}

// hint renders the "what now" part of an error.
func (o *Options) hint() string {
	switch {
	case o.Resume != "" && o.Rollback != "":
		return fmt.Sprintf("fix the cause and continue with: %s; or undo with: %s", o.Resume, o.Rollback)
	case o.Resume != "":
		return "fix the cause and continue with: " + o.Resume
	}
	return "fix the cause and run it again"
}

// Result is what Execute did.
type Result struct {
	Ran     int  // steps run (or found done) in this call
	Skipped int  // completed steps skipped
	Changed bool // the journal was written to
}
