package apply

import (
	"context"
	"fmt"
	"io"
	"os"

	"github.com/cryptshift/cryptshift/internal/model/plan"
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
	opt.JournalPath, opt.Out = journalPath, w
	e := newEnv(h.Plan, opt)
	return j.Rollback(ctx, engine.Reverse(e.steps(), j.Log()), opt.engine())
}

// undoNeeded skips undo commands whose effect is already in place, so a
// rollback that was itself interrupted can simply be run again.
func (e *env) undoNeeded(ctx context.Context, s plan.Step) bool {
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
