// Package playbooks ships the Ansible playbooks that run cryptshift across a
// fleet, and the example layouts (with example inventories) that both the
// playbooks and "cryptshift plan --example NAME" use. The examples are plain
// files under examples/ for admins to copy.
package playbooks

import (
	"embed"
	"fmt"
	"path"
	"sort"
	"strings"
)

//go:embed examples/*.yaml examples/*.inventory.json
var examples embed.FS

// DefaultExample is what "cryptshift plan" with no arguments plans.
const DefaultExample = "mail-host"

// Example is one shipped layout and the inventory it is planned against.
type Example struct {
	Name        string
	File        string // path of the layout inside the repository
	Layout      []byte
	Inventory   []byte
	Description string
}

// Examples lists the shipped examples by name.
func Examples() []string {
	entries, _ := examples.ReadDir("examples")
	var names []string
	for _, e := range entries {
		if n, ok := strings.CutSuffix(e.Name(), ".yaml"); ok {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	return names
}

// Load returns an example by name.
func Load(name string) (*Example, error) {
	l, err := examples.ReadFile(path.Join("examples", name+".yaml"))
	if err != nil {
		return nil, fmt.Errorf("cannot find example %q: the shipped examples are %s", name, strings.Join(Examples(), ", "))
	}
	inv, err := examples.ReadFile(path.Join("examples", name+".inventory.json"))
	if err != nil {
		return nil, fmt.Errorf("cannot find the inventory of example %q: %w", name, err)
	}
	desc := ""
	for _, line := range strings.Split(string(l), "\n") {
		if d, ok := strings.CutPrefix(line, "description: "); ok {
			desc = d
			break
		}
	}
	return &Example{Name: name, File: "playbooks/examples/" + name + ".yaml", Layout: l, Inventory: inv, Description: desc}, nil
}
