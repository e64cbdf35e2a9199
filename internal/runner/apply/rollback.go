package apply

import (
	"context"
	"fmt"
	"io"

	"github.com/cryptshift/cryptshift/internal/runner/engine"
)

// RollbackReport says what rollback did and could not do.
type RollbackReport = engine.RollbackReport

// Rollback undoes the steps of the apply recorded in journalPath that
// began, newest first, each with its recorded undo command. It only
// reverses what apply did: it removes volumes, headers, filesystems and
// files apply created and restores files it edited; a destructive wipe
// cannot be undone and is reported as such.
func Rollback(ctx context.Context, journalPath string, opt Options, w io.Writer) (*RollbackReport, error) {
	j, err := engine.Open(journalPath)
	if err != nil {
		return nil, err
	}
	defer j.Close()
	h, err := readHeader(j.Log())
	if err != nil {
		return nil, err
	}
	if j.Log().RolledBack {
		return nil, fmt.Errorf("cannot roll back: %s was already rolled back", journalPath)
	}
	if err := sameDisks(h); err != nil {
		return nil, fmt.Errorf("cannot roll back: %w", err)
	}
	opt.JournalPath, opt.Out = journalPath, w
	e := newEnv(h.Plan, opt)
	return j.Rollback(ctx, engine.Reverse(e.steps(), j.Log()), opt.engine())
}
