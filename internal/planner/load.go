package planner

import (
	"fmt"
	"os"

	"github.com/cryptshift/cryptshift/internal/exitcode"
	"github.com/cryptshift/cryptshift/internal/model/inventory"
	"github.com/cryptshift/cryptshift/internal/model/layout"
	"github.com/cryptshift/cryptshift/playbooks"
)

// Inputs names where a planning run's layout and inventory come from.
type Inputs struct {
	LayoutFile    string // a layout file; empty: an example
	Example       string // example name; empty: the default example
	InventoryFile string // a saved inventory; empty: the example's, or Gather
	// Gather reads the live system's inventory for a layout file planned
	// without --inventory.
	Gather func(*layout.Layout) (*inventory.Inventory, error)
	// Devices are the --device NAME=PATH overrides; each must name a disk
	// of the layout (checked before anything is gathered).
	Devices map[string]string
}

// Load reads the layout and the inventory. Invalid input comes back as an
// error carrying exitcode.Invalid; the report lists every layout problem.
func Load(in Inputs) (*layout.File, *inventory.Inventory, *layout.Report, error) {
	var name string
	var data, invData []byte
	invName := in.InventoryFile
	if in.LayoutFile != "" {
		b, err := os.ReadFile(in.LayoutFile)
		if err != nil {
			return nil, nil, nil, exitcode.With(exitcode.Invalid, fmt.Errorf("cannot read layout: %w", err))
		}
		name, data = in.LayoutFile, b
	} else {
		ex := in.Example
		if ex == "" {
			ex = playbooks.DefaultExample
		}
		e, err := playbooks.Load(ex)
		if err != nil {
			return nil, nil, nil, exitcode.With(exitcode.Usage, err)
		}
		name, data = e.File, e.Layout
		if invName == "" {
			invName, invData = "example inventory "+ex, e.Inventory
		}
	}
	f, rep := layout.Parse(name, data)
	if !rep.HasErrors() {
		checkDeviceOverrides(f.Layout, in.Devices, rep)
	}
	if rep.HasErrors() {
		return f, nil, rep, exitcode.With(exitcode.Invalid, rep)
	}
	var inv *inventory.Inventory
	switch {
	case invData != nil:
		i, err := inventory.Parse(invName, invData)
		if err != nil {
			return f, nil, rep, exitcode.With(exitcode.Invalid, err)
		}
		inv = i
	case invName != "":
		b, err := os.ReadFile(invName)
		if err != nil {
			return f, nil, rep, exitcode.With(exitcode.Invalid, fmt.Errorf("cannot read inventory: %w", err))
		}
		i, err := inventory.Parse(invName, b)
		if err != nil {
			return f, nil, rep, exitcode.With(exitcode.Invalid, err)
		}
		inv = i
	default:
		if in.Gather == nil {
			return f, nil, rep, fmt.Errorf("cannot read the live inventory: not supported here; pass --inventory FILE")
		}
		i, err := in.Gather(f.Layout)
		if err != nil {
			return f, nil, rep, err
		}
		inv = i
	}
	return f, inv, rep, nil
}
