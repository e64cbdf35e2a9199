package planner

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/cryptshift/cryptshift/internal/model/layout"
)

// FuzzPlan: any layout that validates plans against the mail-host
// inventory without panicking, and a plan with no error has no
// destructive step unless allowed.
func FuzzPlan(f *testing.F) {
	files, _ := filepath.Glob("../../playbooks/examples/*.yaml")
	for _, file := range files {
		b, _ := os.ReadFile(file)
		f.Add(b)
	}
	_, inv := loadExample(f, "mail-host")
	f.Fuzz(func(t *testing.T, b []byte) {
		file, rep := layout.Parse("fuzz.yaml", b)
		if rep.HasErrors() {
			return
		}
		p, _, err := Plan(file, inv, Options{})
		if err == nil && len(p.Destructive()) > 0 {
			t.Fatal("destructive steps without a refusal")
		}
	})
}
