package apply

import (
	"context"
	"fmt"
	"strings"

	"github.com/cryptshift/cryptshift/internal/doors/execx"
	"github.com/cryptshift/cryptshift/internal/exitcode"
	"github.com/cryptshift/cryptshift/internal/model/plan"
	"github.com/cryptshift/cryptshift/internal/runner/engine"
)

// RollbackReport says what rollback did and could not do.
type RollbackReport = engine.RollbackReport

// RollbackOptions guard the rollback of an apply that finished: the
// system has lived on its new volumes since, and undoing the apply wipes
// what was written to them.
type RollbackOptions struct {
	// AllowDestroy permits rolling back a finished apply.
	AllowDestroy bool
	// Confirm is shown what will be wiped before a finished apply is
	// rolled back, and returns nil to go on (the CLI asks on the
	// terminal, or --yes). Nil refuses.
	Confirm func(wiped string) error
}

// Rollback undoes the steps of the apply recorded in journalPath that
// began, newest first, each with its undo operation. It only reverses
// what apply did: it removes volumes, headers, filesystems and files apply
// created and restores files it edited; a destructive wipe cannot be
// undone and is reported as such. An apply that finished is rolled back
// only with ro.AllowDestroy and ro.Confirm's consent, after being told
// exactly what is wiped.
func Rollback(ctx context.Context, journalPath string, opt Options, ro RollbackOptions) (*RollbackReport, error) {
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
	opt.JournalPath = journalPath
	e := newEnv(h.Plan, opt)
	undo := engine.Reverse(e.steps(), j.Log())
	if j.Log().Finished {
		wiped := Wiped(h.Plan, j.Log().Began)
		switch {
		case !ro.AllowDestroy:
			return nil, exitcode.With(exitcode.Refused, fmt.Errorf("refusing to roll back the finished apply in %s without --allow-destroy: the system may have written data to its volumes since, and the rollback wipes:\n%s\ncopy off what you need; then run: cryptshift rollback --allow-destroy %s",
				journalPath, wiped, execx.QuoteArg(journalPath)))
		case ro.Confirm == nil:
			return nil, exitcode.With(exitcode.Refused, fmt.Errorf("refusing to roll back the finished apply in %s without a confirmation", journalPath))
		}
		if err := ro.Confirm(wiped); err != nil {
			return nil, err
		}
	}
	return j.Rollback(ctx, undo, opt.engine())
}

// Wiped lists, one per line, what undoing the steps that began destroys:
// every LUKS volume (and what is mounted from it), every LVM volume and
// group, partition table, unencrypted filesystem and key file the apply
// made.
func Wiped(p *plan.Plan, began map[string]bool) string {
	mounts := map[string][]string{} // device -> mount points
	mapped := map[string]string{}   // LUKS device -> mapping device
	for _, s := range p.Steps {
		switch {
		case s.Params == nil:
		case s.Params.Mount != nil:
			mounts[s.Params.Mount.Device] = append(mounts[s.Params.Mount.Device], s.Params.Mount.Target)
		case s.Params.LUKSOpen != nil:
			mapped[s.Params.LUKSOpen.Device] = "/dev/mapper/" + s.Params.LUKSOpen.Name
		}
	}
	var out []string
	for i := len(p.Steps) - 1; i >= 0; i-- {
		s := p.Steps[i]
		u := s.UndoParams
		if !began[s.ID] || u == nil {
			continue
		}
		switch {
		case u.Wipe != nil && s.Params.LUKSFormat != nil:
			dev := u.Wipe.Device
			what := "everything stored in it"
			if m := mapped[dev]; m != "" {
				what = "everything stored in " + m
				if len(mounts[m]) > 0 {
					what += " (mounted on " + strings.Join(mounts[m], ", ") + ")"
				}
			}
			out = append(out, fmt.Sprintf("  the LUKS2 header of %s: %s becomes unreadable for good", dev, what))
		case u.Wipe != nil:
			what := "the filesystem on " + u.Wipe.Device
			if len(mounts[u.Wipe.Device]) > 0 {
				what += " (mounted on " + strings.Join(mounts[u.Wipe.Device], ", ") + ")"
			}
			out = append(out, "  "+what+" and the files on it")
		case u.LVRemove != nil:
			out = append(out, fmt.Sprintf("  logical volume %s/%s", u.LVRemove.VG, u.LVRemove.Name))
		case u.VGRemove != nil:
			out = append(out, "  volume group "+u.VGRemove.VG)
		case u.VGReduce != nil:
			out = append(out, fmt.Sprintf("  %s, taken out of volume group %s", strings.Join(u.VGReduce.PVs, ", "), u.VGReduce.VG))
		case u.Zero != nil && s.Params.Partition != nil:
			out = append(out, "  the partition table of "+u.Zero.Device)
		case u.Zero != nil:
			out = append(out, "  the LVM label of "+u.Zero.Device)
		case u.Remove != nil && s.Params.KeyFile != nil:
			out = append(out, "  key file "+u.Remove.Path+" (the only key of its volume besides the recovery key)")
		case u.Remove != nil:
			out = append(out, "  "+u.Remove.Path)
		case u.RestoreBlock != nil:
			out = append(out, fmt.Sprintf("  the cryptshift block in %s (its other lines stay)", u.RestoreBlock.File))
		}
	}
	return strings.Join(out, "\n")
}
