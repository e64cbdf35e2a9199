package planner

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	goldenfile "github.com/cryptshift/cryptshift/internal/harness/golden"
	"github.com/cryptshift/cryptshift/internal/model/inventory"
	"github.com/cryptshift/cryptshift/internal/model/layout"
	"github.com/cryptshift/cryptshift/playbooks"
)

// golden compares with (or, with -update, writes) a golden file.
func golden(t *testing.T, path string, got []byte) {
	t.Helper()
	goldenfile.Check(t, path, got)
}

func loadExample(t testing.TB, name string) (*layout.File, *inventory.Inventory) {
	t.Helper()
	e, err := playbooks.Load(name)
	if err != nil {
		t.Fatal(err)
	}
	f, rep := layout.Parse(e.File, e.Layout)
	if rep.HasErrors() {
		t.Fatalf("example %s does not validate:\n%s", name, rep.Error())
	}
	inv, err := inventory.Parse(name, e.Inventory)
	if err != nil {
		t.Fatal(err)
	}
	return f, inv
}

// Every shipped example plans cleanly against its inventory, and its JSON,
// table and script forms match the goldens byte for byte.
func TestExamplesGolden(t *testing.T) {
	names := playbooks.Examples()
	if len(names) < 4 {
		t.Fatalf("got %d examples, want at least 4", len(names))
	}
	for _, name := range names {
		t.Run(name, func(t *testing.T) {
			f, inv := loadExample(t, name)
			p, rep, err := Plan(f, inv, Options{})
			if err != nil {
				t.Fatalf("plan: %v\n%v", err, rep.Problems)
			}
			if len(p.Steps) == 0 {
				t.Fatal("an example on blank disks planned no steps")
			}
			js, err := p.JSON()
			if err != nil {
				t.Fatal(err)
			}
			var table, script bytes.Buffer
			p.Table(&table)
			p.Script(&script)
			dir := filepath.Join("..", "..", "testdata", "golden", "plans")
			golden(t, filepath.Join(dir, name+".json"), js)
			golden(t, filepath.Join(dir, name+".txt"), table.Bytes())
			golden(t, filepath.Join(dir, name+".sh"), script.Bytes())
		})
	}
}

// Output is byte-identical across runs: plans are diffed and reviewed.
func TestPlanDeterministic(t *testing.T) {
	var first []byte
	for i := 0; i < 5; i++ {
		f, inv := loadExample(t, "mail-host")
		p, _, err := Plan(f, inv, Options{})
		if err != nil {
			t.Fatal(err)
		}
		js, _ := p.JSON()
		if first == nil {
			first = js
		} else if !bytes.Equal(js, first) {
			t.Fatalf("run %d produced different JSON", i)
		}
	}
}

// Each invalid layout reports its problems, with paths and positions, all
// at once; layouts that parse are planned against the mail-host inventory.
func TestInvalidLayoutsGolden(t *testing.T) {
	files, _ := filepath.Glob(filepath.Join("..", "..", "testdata", "layouts", "invalid", "*.yaml"))
	if len(files) < 10 {
		t.Fatalf("got %d invalid layouts, want at least 10", len(files))
	}
	_, inv := loadExample(t, "mail-host")
	for _, file := range files {
		name := filepath.Base(file)
		t.Run(strings.TrimSuffix(name, ".yaml"), func(t *testing.T) {
			data, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			f, rep := layout.Parse(name, data)
			if !rep.HasErrors() {
				_, rep, err = Plan(f, inv, Options{})
				if err == nil {
					t.Fatal("an invalid layout was planned without error")
				}
			}
			if !rep.HasErrors() {
				t.Fatal("no error reported")
			}
			var b strings.Builder
			for _, p := range rep.Problems {
				if p.Line == 0 {
					t.Errorf("problem without a position: %s", p)
				}
				b.WriteString(p.String() + "\n")
			}
			golden(t, strings.TrimSuffix(file, ".yaml")+".golden", []byte(b.String()))
		})
	}
}
