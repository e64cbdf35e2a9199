package apply

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"reflect"

	"github.com/cryptshift/cryptshift/internal/exitcode"
	"github.com/cryptshift/cryptshift/internal/model/inventory"
	"github.com/cryptshift/cryptshift/internal/model/layout"
	"github.com/cryptshift/cryptshift/internal/model/plan"
	"github.com/cryptshift/cryptshift/internal/planner"
)

// Reviewed reads a plan that was reviewed earlier (plan -o json) and
// checks that it still holds: re-planning its layout against the live
// system (gather) must give the very same steps, files and disks.
// Otherwise the system drifted since the review (exit status 5) and
// nothing is changed. A plan with destructive steps needs allowDestroy
// (or the plan's own AllowDestroy).
func Reviewed(planFile string, allowDestroy bool, gather func(l *layout.Layout, root string) (*inventory.Inventory, error)) (*plan.Plan, error) {
	b, err := os.ReadFile(planFile)
	if err != nil {
		return nil, exitcode.With(exitcode.Invalid, fmt.Errorf("cannot read plan: %w", err))
	}
	reviewed, err := plan.Parse(planFile, b)
	if err != nil {
		return nil, exitcode.With(exitcode.Invalid, err)
	}
	if err := checkPlan(reviewed); err != nil {
		return nil, exitcode.With(exitcode.Invalid, err)
	}
	inv, err := gather(reviewed.Spec, reviewed.Root)
	if err != nil {
		return nil, err
	}
	f := &layout.File{Name: planFile, Layout: reviewed.Spec, Pos: map[string]layout.Pos{}}
	fresh, _, err := planner.Plan(f, inv, planner.Options{Root: reviewed.Root, AllowDestroy: reviewed.AllowDestroy || allowDestroy, Devices: reviewed.Devices})
	var refused *planner.RefusedError
	if err != nil && !errors.As(err, &refused) {
		return nil, exitcode.With(exitcode.Drift, fmt.Errorf("the system has drifted since %s was made: re-planning it fails: %w", planFile, err))
	}
	if d := Drift(reviewed, fresh); d != "" {
		return nil, exitcode.With(exitcode.Drift, fmt.Errorf("the system has drifted since %s was made; nothing was changed. Re-plan and review again. First difference: %s", planFile, d))
	}
	if len(reviewed.Destructive()) > 0 && !reviewed.AllowDestroy && !allowDestroy {
		return nil, exitcode.With(exitcode.Refused, &planner.RefusedError{Steps: reviewed.Destructive()})
	}
	return reviewed, nil
}

// Drift names the first difference between a reviewed plan and a fresh
// one (steps, crypttab, fstab, the disks' identities), or "".
func Drift(a, b *plan.Plan) string {
	if len(a.Steps) != len(b.Steps) {
		return fmt.Sprintf("the reviewed plan has %d steps, a fresh one %d", len(a.Steps), len(b.Steps))
	}
	for i := range a.Steps {
		if !reflect.DeepEqual(a.Steps[i], b.Steps[i]) {
			ja, _ := json.Marshal(a.Steps[i])
			jb, _ := json.Marshal(b.Steps[i])
			return fmt.Sprintf("step %d was %s, is now %s", i+1, ja, jb)
		}
	}
	switch {
	case !reflect.DeepEqual(a.Crypttab, b.Crypttab):
		return "the crypttab entries differ"
	case !reflect.DeepEqual(a.Fstab, b.Fstab):
		return "the fstab entries differ"
	case !reflect.DeepEqual(a.DiskIDs, b.DiskIDs):
		ja, _ := json.Marshal(a.DiskIDs)
		jb, _ := json.Marshal(b.DiskIDs)
		return fmt.Sprintf("the disks were %s, are now %s", ja, jb)
	}
	return ""
}
