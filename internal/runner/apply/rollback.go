package apply

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/cryptshift/cryptshift/internal/model/plan"
	"github.com/cryptshift/cryptshift/internal/runner/journal"
)

// RollbackReport says what rollback did and could not do.
type RollbackReport struct {
	Undone    []string // step ids undone
	Kept      []string // completed steps with nothing to undo on their own
	NotUndone []string // steps that cannot be undone, with why
}

// Rollback undoes the completed steps of the apply recorded in
// journalPath, newest first, using each step's recorded undo command. It
// only reverses what apply did: it removes volumes, headers, filesystems
// and files apply created and restores files it edited; a destructive wipe
// cannot be undone and is reported as such.
func Rollback(ctx context.Context, journalPath string, opt Options, w io.Writer) (*RollbackReport, error) {
	j, recs, err := journal.Open(journalPath)
	if err != nil {
		return nil, err
	}
	defer j.Close()
	st, err := ReadState(recs)
	if err != nil {
		return nil, err
	}
	if st.RolledBk {
		return nil, fmt.Errorf("cannot roll back: %s was already rolled back", journalPath)
	}
	e := &engine{opt: opt, p: st.Header.Plan, j: j, done: st.Done}
	rep := &RollbackReport{}
	steps := e.p.Steps
	for i := len(steps) - 1; i >= 0; i-- {
		s := steps[i]
		if !st.Done[s.ID] && s.ID != st.InFlight {
			continue
		}
		switch {
		case s.Destructive:
			rep.NotUndone = append(rep.NotUndone, fmt.Sprintf("%s: what was on %s before (%s) is gone; rollback cannot bring it back", s.ID, s.Target, s.Destroys))
			continue
		case len(s.Undo) == 0:
			rep.Kept = append(rep.Kept, s.ID)
			continue
		}
		if e.undoNeeded(ctx, s) {
			fmt.Fprintf(w, "undo %s: %s\n", s.ID, strings.Join(s.Undo, " "))
			if err := e.do(ctx, plan.Step{ID: "undo:" + s.ID, Command: s.Undo}); err != nil {
				return rep, fmt.Errorf("cannot undo step %s (%s): %w; fix the cause and run rollback again", s.ID, strings.Join(s.Undo, " "), err)
			}
		}
		if _, err := j.Append(recUndone, stepRecord{Step: s.ID}); err != nil {
			return rep, err
		}
		rep.Undone = append(rep.Undone, s.ID)
	}
	if _, err := j.Append(recRolledBack, nil); err != nil {
		return rep, err
	}
	return rep, nil
}

// undoNeeded skips undo commands whose effect is already in place, so a
// rollback that was itself interrupted can simply be run again.
func (e *engine) undoNeeded(ctx context.Context, s plan.Step) bool {
	switch s.Undo[0] {
	case "umount":
		return mounted(s.Undo[len(s.Undo)-1])
	case "swapoff":
		return swapActive(s.Undo[len(s.Undo)-1])
	case "cryptsetup": // close NAME
		_, err := os.Stat("/dev/mapper/" + s.Undo[len(s.Undo)-1])
		return err == nil
	case "wipefs":
		r, err := probeDevice(s.Undo[len(s.Undo)-1])
		return err == nil && r != nil
	case "lvm":
		switch s.Undo[1] {
		case "lvremove", "vgremove", "vgreduce":
			ok, err := e.satisfied(ctx, plan.Step{Action: plan.ActLVCreate, Target: "/dev/" + s.Undo[len(s.Undo)-1]})
			if s.Undo[1] == "lvremove" {
				return err != nil || ok
			}
			vgs, err := e.opt.LVM.VGs(ctx)
			if err != nil {
				return true
			}
			name := s.Undo[2]
			if s.Undo[1] == "vgremove" {
				name = s.Undo[len(s.Undo)-1]
			}
			for _, v := range vgs {
				if v.Name == name {
					return true
				}
			}
			return false
		case "pvremove":
			r, err := probeDevice(s.Undo[len(s.Undo)-1])
			return err == nil && r != nil && r.Type == "LVM2_member"
		}
	}
	return true
}
