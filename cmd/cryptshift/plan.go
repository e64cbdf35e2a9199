package main

import (
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/cryptshift/cryptshift/internal/exitcode"
	"github.com/cryptshift/cryptshift/internal/model/inventory"
	"github.com/cryptshift/cryptshift/internal/model/layout"
	"github.com/cryptshift/cryptshift/internal/model/plan"
	"github.com/cryptshift/cryptshift/internal/planner"
	"github.com/cryptshift/cryptshift/internal/textfmt"
	"github.com/cryptshift/cryptshift/playbooks"
)

type planOptions struct {
	layoutFile    string
	inventoryFile string
	example       string
	output        string
	root          string
	allowDestroy  bool
	devices       []string
}

func newPlanCmd() *cobra.Command {
	var o planOptions
	cmd := &cobra.Command{
		Use:   "plan [-f LAYOUT | --example NAME] [--inventory INV.json]",
		Short: "Show the exact steps that would put a layout in place; changes nothing",
		Long: `plan compares a layout (what the host should have) with an inventory (what
it has) and prints the ordered steps that would get there: partitioning,
LVM, LUKS2 formatting with the exact parameters, key files, filesystems,
mounts, crypttab and fstab. It never touches a device.

Without -f it plans the embedded example "mail-host" against an example
inventory of two disks, so it runs anywhere, without root.

A step that would overwrite existing data (a partition table, a filesystem,
a LUKS header, a PV in use, a shrinking volume) makes plan refuse with exit
status 4 and name each device and what is on it, unless --allow-destroy.`,
		Example: `  # The embedded mail-host example, as a table
  cryptshift plan

  # List the shipped examples, and print one to start your own layout from
  cryptshift plan --example list
  cryptshift plan --example kvm-host -o layout > my-host.yaml

  # Plan a layout against a saved inventory (made on the host with
  # "cryptshift inventory -o json > host.json"), as JSON for review tools
  cryptshift plan -f my-host.yaml --inventory host.json -o json

  # The bash script that does exactly what apply would do
  cryptshift plan -f my-host.yaml --inventory host.json -o script

  # Use /dev/loop0 for the layout's disk "disk0"
  cryptshift plan -f my-host.yaml --device disk0=/dev/loop0`,
		Args:    cobra.NoArgs,
		PreRunE: func(*cobra.Command, []string) error { return o.validate() },
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runPlan(cmd.OutOrStdout(), cmd.ErrOrStderr(), o)
		},
	}
	f := cmd.Flags()
	f.StringVarP(&o.layoutFile, "file", "f", "", "layout `FILE` (YAML); default: the example")
	f.StringVar(&o.inventoryFile, "inventory", "", "plan against a saved inventory `FILE` instead of this machine")
	f.StringVar(&o.example, "example", "", "plan a shipped example `NAME`, or \"list\" them")
	outputFlag(cmd, &o.output, "text", []string{"text", "json", "script", "layout"}, "output format (text: a table, alias table; script: bash; layout: the example's layout file)")
	targetFlag(f, &o.root, "`DIR` the layout's root filesystem is mounted on while applying")
	f.BoolVar(&o.allowDestroy, "allow-destroy", false, "permit steps that overwrite existing data")
	f.StringArrayVar(&o.devices, "device", nil, "use device `NAME=PATH` for the layout's disk NAME (repeatable)")
	markInput(f, "file", "inventory")
	completeExamples(cmd)
	return cmd
}

func parseDeviceFlags(flags []string) (map[string]string, error) {
	m := map[string]string{}
	for _, d := range flags {
		name, dev, ok := strings.Cut(d, "=")
		if !ok || name == "" || !strings.HasPrefix(dev, "/") {
			return nil, usageError("--device %q: write NAME=/dev/PATH, e.g. --device disk0=/dev/loop0", d)
		}
		m[name] = dev
	}
	return m, nil
}

// validate checks the flags alone (usage errors, exit 2).
func (o planOptions) validate() error {
	switch o.output {
	case "table", "text", "json", "script", "layout":
	default:
		return usageError("unknown output format %q: use text, json, script or layout", o.output)
	}
	if o.example != "" && o.example != "list" && o.layoutFile != "" {
		return usageError("give either -f or --example, not both")
	}
	_, err := parseDeviceFlags(o.devices)
	return err
}

func runPlan(stdout, stderr io.Writer, o planOptions) error {
	if err := o.validate(); err != nil {
		return err
	}
	if o.output == "table" {
		o.output = "text"
	}
	if o.example == "list" {
		for _, n := range playbooks.Examples() {
			e, _ := playbooks.Load(n)
			fmt.Fprintf(stdout, "%-12s %s (%s)\n", n, e.Description, e.File)
		}
		return nil
	}
	if o.example != "" && o.layoutFile != "" {
		return usageError("give either -f or --example, not both")
	}
	devices, err := parseDeviceFlags(o.devices)
	if err != nil {
		return err
	}
	if o.output == "layout" {
		if o.layoutFile != "" {
			return usageError("-o layout prints a shipped example; use it with --example NAME")
		}
		name := o.example
		if name == "" {
			name = playbooks.DefaultExample
		}
		e, err := playbooks.Load(name)
		if err != nil {
			return exitcode.With(exitcode.Usage, err)
		}
		_, err = stdout.Write(e.Layout)
		return err
	}
	f, inv, rep, err := planner.Load(planner.Inputs{
		LayoutFile: o.layoutFile, Example: o.example, InventoryFile: o.inventoryFile, Devices: devices,
		Gather: func(l *layout.Layout) (*inventory.Inventory, error) {
			return inventory.GatherFor(l, o.root, devices)
		},
	})
	if err != nil {
		if rep != nil && rep.HasErrors() {
			printProblems(stderr, rep)
			return exitcode.With(exitcode.Invalid, fmt.Errorf("%s has %s; nothing was planned", f.Name, textfmt.Plural(len(rep.Errors()), "error", "errors")))
		}
		return err
	}
	p, rep, err := planner.Plan(f, inv, planner.Options{Root: o.root, AllowDestroy: o.allowDestroy, Devices: devices})
	var refused *planner.RefusedError
	switch {
	case errors.As(err, &refused):
		return exitcode.With(exitcode.Refused, err)
	case err != nil:
		printProblems(stderr, rep)
		return exitcode.With(exitcode.Invalid, fmt.Errorf("cannot plan %s: %s; nothing was planned", f.Name, textfmt.Plural(len(rep.Errors()), "error", "errors")))
	}
	return renderPlan(stdout, p, o.output)
}

func renderPlan(w io.Writer, p *plan.Plan, output string) error {
	switch output {
	case "json":
		// A file in JSON is named the same whatever path form was typed
		// (host.yaml, ./host.yaml, /root/host.yaml): plans made from the
		// same layout compare equal.
		for i := range p.Warnings {
			if p.Warnings[i].File != "" {
				p.Warnings[i].File = filepath.Base(p.Warnings[i].File)
			}
		}
		b, err := p.JSON()
		if err != nil {
			return err
		}
		_, err = w.Write(b)
		return err
	case "script":
		return p.Script(w)
	default:
		return p.TableStyled(w, textfmt.For(w))
	}
}

// printProblems writes every problem, errors and warnings, in file order.
func printProblems(w io.Writer, rep *layout.Report) {
	for _, pr := range rep.Problems {
		fmt.Fprintln(w, pr.String())
	}
}
