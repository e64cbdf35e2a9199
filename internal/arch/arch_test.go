package arch

import (
	"bytes"
	"encoding/json"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
)

const module = "github.com/cryptshift/cryptshift"

// The groups, bottom up. A package may import packages of its own group
// and of groups below it, never above. The order is the data flow: tools'
// doors at the bottom; the host read through a root; the model (layout,
// inventory, plan); the planner (layout + inventory -> plan); the audit
// (host root -> block stack -> checks -> report); the runners (the step
// engine and its clients apply, migrate; the copier), which may use the
// audit's checks on what they made; the test harness; the CLI on top.
var groups = []struct {
	name     string
	prefixes []string
}{
	{"base", []string{"internal/exitcode", "internal/deps", "internal/textfmt", "playbooks"}},
	{"doors", []string{"lvm", "luks", "libvirt", "internal/doors/"}},
	{"hostview", []string{"internal/hostview/"}},
	{"model", []string{"internal/model/"}},
	{"planner", []string{"internal/planner"}},
	{"audit", []string{"internal/audit/"}},
	{"runner", []string{"internal/runner/"}},
	{"harness", []string{"internal/harness/"}},
	{"cmd", []string{"cmd/", "internal/arch"}},
}

func groupOf(pkg string) int {
	rel := strings.TrimPrefix(strings.TrimPrefix(pkg, module), "/")
	for i, g := range groups {
		for _, p := range g.prefixes {
			if rel == strings.TrimSuffix(p, "/") || strings.HasPrefix(rel, p) || strings.HasPrefix(rel, p+"/") {
				return i
			}
		}
	}
	return -1
}

type listed struct {
	ImportPath   string
	Dir          string
	GoFiles      []string
	Imports      []string
	TestImports  []string
	XTestImports []string
}

func goList(t *testing.T) []listed {
	t.Helper()
	cmd := exec.Command("go", "list", "-json", module+"/...")
	cmd.Dir = "../.."
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	var pkgs []listed
	dec := json.NewDecoder(bytes.NewReader(out))
	for dec.More() {
		var p listed
		if err := dec.Decode(&p); err != nil {
			t.Fatal(err)
		}
		pkgs = append(pkgs, p)
	}
	if len(pkgs) < 30 {
		t.Fatalf("go list found %d packages; is this the module root?", len(pkgs))
	}
	return pkgs
}

// Every package belongs to a group, and imports nothing from a group
// above its own: the doors import no model, planner or runner; nothing
// imports the CLI; there is no import cycle between the groups.
func TestLayering(t *testing.T) {
	for _, p := range goList(t) {
		g := groupOf(p.ImportPath)
		if g < 0 {
			t.Errorf("%s belongs to no group: add it to the groups in internal/arch and docs/DEVELOPING.md", p.ImportPath)
			continue
		}
		for _, imp := range p.Imports {
			if !strings.HasPrefix(imp, module) {
				continue
			}
			if gi := groupOf(imp); gi > g {
				t.Errorf("%s (%s) imports %s (%s), a group above it", p.ImportPath, groups[g].name, imp, groups[gi].name)
			}
		}
	}
}

// TestNoFolderCycles: folders are read as units (a package and the
// packages in folders below it, e.g. internal/audit/capture and
// internal/audit/capture/x): no two units import each other, directly or
// around a loop. Go forbids package cycles; this forbids the ones a folder
// hides (capture imported verify while verify imported capture/manifest).
func TestNoFolderCycles(t *testing.T) {
	pkgs := goList(t)
	isPkg := map[string]bool{}
	for _, p := range pkgs {
		isPkg[p.ImportPath] = true
	}
	unit := func(pkg string) string {
		u := pkg
		for d := pkg; strings.HasPrefix(d, module+"/"); d = d[:strings.LastIndexByte(d, '/')] {
			if isPkg[d] {
				u = d
			}
		}
		return u
	}
	edges := map[string]map[string]bool{}
	for _, p := range pkgs {
		from := unit(p.ImportPath)
		for _, imp := range p.Imports {
			if !isPkg[imp] {
				continue
			}
			if to := unit(imp); to != from {
				if edges[from] == nil {
					edges[from] = map[string]bool{}
				}
				edges[from][to] = true
			}
		}
	}
	state := map[string]int{} // 1: on the current path, 2: done
	var path []string
	var visit func(u string)
	visit = func(u string) {
		state[u] = 1
		path = append(path, u)
		var next []string
		for v := range edges[u] {
			next = append(next, v)
		}
		sort.Strings(next)
		for _, v := range next {
			switch state[v] {
			case 1:
				i := len(path) - 1
				for path[i] != v {
					i--
				}
				t.Errorf("folder cycle: %s -> %s", strings.Join(path[i:], " -> "), v)
			case 0:
				visit(v)
			}
		}
		path = path[:len(path)-1]
		state[u] = 2
	}
	var units []string
	for u := range edges {
		units = append(units, u)
	}
	sort.Strings(units)
	for _, u := range units {
		if state[u] == 0 {
			visit(u)
		}
	}
}

// The journal is read and written by the step engine alone: apply,
// migrate and every later runner go through it (one vocabulary, one
// resume, one rollback).
func TestOnlyTheEngineImportsTheJournal(t *testing.T) {
	const journal = module + "/internal/runner/journal"
	var importers []string
	for _, p := range goList(t) {
		if p.ImportPath == journal {
			continue
		}
		for _, imps := range [][]string{p.Imports, p.TestImports, p.XTestImports} {
			for _, imp := range imps {
				if imp == journal {
					importers = append(importers, p.ImportPath)
				}
			}
		}
	}
	sort.Strings(importers)
	importers = compact(importers)
	if len(importers) != 1 || importers[0] != module+"/internal/runner/engine" {
		t.Errorf("the journal is imported by %v, want only internal/runner/engine", importers)
	}
}

func compact(s []string) []string {
	var out []string
	for i, x := range s {
		if i == 0 || x != s[i-1] {
			out = append(out, x)
		}
	}
	return out
}

// cryptsetup's and lvm's command lines are spelled in their doors only:
// everyone else hands them typed parameters. A string literal outside the
// door (and outside tests, which play the tools) that is one of these
// options (an element of an argv) is a command line built by hand; prose
// that names an option (help texts, advice in reports) is not.
//
// The same holds for the tools below, by name: a literal that starts a
// []string (an argv), is a Tool of an execx.Cmd, or is the program of
// exec.Command outside the tool's door is a command line built by hand.
// Only there, because a tool's name is also a word: hostmove's step IDs
// "update-initramfs" and "update-grub", the table of tool paths in execx.
// The harness may run virsh itself, as an oracle independent of the door.
func TestToolArgumentsOnlyInTheirDoors(t *testing.T) {
	doors := map[string][]string{
		"luks": {"--pbkdf", "--pbkdf-memory", "--pbkdf-parallel", "--pbkdf-force-iterations", "--iter-time", "--sector-size",
			"--key-size", "--key-file", "--allow-discards", "--header-backup-file", "--test-passphrase", "--batch-mode"},
		"lvm": {"--reportformat", "--wipesignatures", "--physicalextentsize", "--extents", "--nosuffix"},
	}
	tools := []struct {
		door  string
		names []string
		also  []string // packages that may name the tool too
	}{
		{"internal/doors/fs", []string{"blkdiscard", "wipefs", "mkfs.ext4", "mkfs.xfs", "mkfs.vfat", "mkswap", "swapon", "swapoff"}, nil},
		{"internal/doors/chroot", []string{"chroot", "update-initramfs", "grub-install", "update-grub"}, nil},
		{"internal/doors/files", []string{"rm"}, nil},
		{"libvirt", []string{"virsh"}, []string{"internal/harness/libvirttest"}},
	}
	fset := token.NewFileSet()
	checked := 0
	for _, p := range goList(t) {
		rel := strings.TrimPrefix(strings.TrimPrefix(p.ImportPath, module), "/")
		for _, f := range p.GoFiles {
			path := filepath.Join(p.Dir, f)
			file, err := parser.ParseFile(fset, path, nil, 0)
			if err != nil {
				t.Fatal(err)
			}
			checked++
			ast.Inspect(file, func(n ast.Node) bool {
				for _, lit := range programs(n) {
					v, err := strconv.Unquote(lit.Value)
					if err != nil {
						continue
					}
					for _, tl := range tools {
						if rel == tl.door || slices.Contains(tl.also, rel) || !slices.Contains(tl.names, v) {
							continue
						}
						t.Errorf("%s: %q starts a command line; render it in package %s", fset.Position(lit.Pos()), v, tl.door)
					}
				}
				lit, ok := n.(*ast.BasicLit)
				if !ok || lit.Kind != token.STRING {
					return true
				}
				v, err := strconv.Unquote(lit.Value)
				if err != nil {
					return true
				}
				// The libvirt calls plans show ("libvirt:DomainCreate") are
				// rendered by the libvirt door's ops.
				if rel != "libvirt" && strings.HasPrefix(v, "libvirt:") {
					t.Errorf("%s: %q is a libvirt call as plans show it; render it with an op of package libvirt", fset.Position(lit.Pos()), v)
				}
				for door, flags := range doors {
					if rel == door {
						continue
					}
					for _, fl := range flags {
						if v == fl || strings.HasPrefix(v, fl+"=") {
							t.Errorf("%s: %q is %s's argument; render it in package %s", fset.Position(lit.Pos()), fl, door, door)
						}
					}
				}
				return true
			})
		}
	}
	if checked < 100 {
		t.Fatalf("checked only %d files", checked)
	}
}

// programs returns the string literals n names as the program of a
// command line: the first element of a []string, the Tool of a composite
// literal (execx.Cmd), the program of exec.Command(Context).
func programs(n ast.Node) []*ast.BasicLit {
	str := func(e ast.Expr) *ast.BasicLit {
		if l, ok := e.(*ast.BasicLit); ok && l.Kind == token.STRING {
			return l
		}
		return nil
	}
	var out []*ast.BasicLit
	switch x := n.(type) {
	case *ast.CompositeLit:
		if a, ok := x.Type.(*ast.ArrayType); ok {
			if id, ok := a.Elt.(*ast.Ident); ok && id.Name == "string" && len(x.Elts) > 0 {
				if l := str(x.Elts[0]); l != nil {
					out = append(out, l)
				}
			}
		}
		for _, e := range x.Elts {
			if kv, ok := e.(*ast.KeyValueExpr); ok {
				if k, ok := kv.Key.(*ast.Ident); ok && k.Name == "Tool" {
					if l := str(kv.Value); l != nil {
						out = append(out, l)
					}
				}
			}
		}
	case *ast.CallExpr:
		if sel, ok := x.Fun.(*ast.SelectorExpr); ok {
			if pkg, ok := sel.X.(*ast.Ident); ok && pkg.Name == "exec" {
				switch {
				case sel.Sel.Name == "Command" && len(x.Args) > 0:
					if l := str(x.Args[0]); l != nil {
						out = append(out, l)
					}
				case sel.Sel.Name == "CommandContext" && len(x.Args) > 1:
					if l := str(x.Args[1]); l != nil {
						out = append(out, l)
					}
				}
			}
		}
	}
	return out
}

// The groups named here are the ones docs/DEVELOPING.md describes.
func TestDevelopingNamesTheGroups(t *testing.T) {
	b, err := os.ReadFile("../../docs/DEVELOPING.md")
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, g := range groups {
		names = append(names, g.name)
	}
	want := "doors < hostview < model < planner < audit < runner < harness < cmd"
	if !strings.Contains(string(b), want) {
		t.Errorf("docs/DEVELOPING.md does not state the group order %q (groups here: %s)", want, fmt.Sprint(names))
	}
	// Every package is named in its group's row of the table, so the
	// table cannot fall behind a package added later.
	rows := map[string]string{}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Split(l, "|"); len(f) > 3 && l[0] == '|' {
			rows[strings.TrimSpace(f[1])] = f[2]
		}
	}
	word := func(row, name string) bool {
		return regexp.MustCompile(`(^|[^a-z0-9])` + regexp.QuoteMeta(name) + `([^a-z0-9]|$)`).MatchString(row)
	}
	for _, p := range goList(t) {
		g := groupOf(p.ImportPath)
		if g < 0 {
			continue // TestLayering reports it
		}
		if name := path.Base(p.ImportPath); !word(rows[groups[g].name], name) {
			t.Errorf("docs/DEVELOPING.md: the %s row of the package table does not name %s (%s)", groups[g].name, name, p.ImportPath)
		}
	}
}
