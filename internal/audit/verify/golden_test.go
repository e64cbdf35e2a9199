package verify

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cryptshift/cryptshift/internal/harness/golden"
)

// fixtureDir is where the captured-style trees live (shared with other
// packages' tests, so outside this package).
const fixtureDir = "../../../testdata/verify"

// TestFixtures builds every fixture, checks that the committed tree is
// exactly what its definition builds (so trees and definitions cannot
// drift), verifies the committed tree and compares the JSON report with
// the golden file. With -update it rewrites trees and goldens instead.
func TestFixtures(t *testing.T) {
	if len(fixtures) < 12 {
		t.Fatalf("got %d fixtures, the issue asks for at least 12", len(fixtures))
	}
	for _, fx := range fixtures {
		t.Run(fx.name, func(t *testing.T) {
			dir := filepath.Join(fixtureDir, fx.name)
			root := filepath.Join(dir, "root")
			gen := filepath.Join(t.TempDir(), "root")
			if err := buildFixture(fx, gen); err != nil {
				t.Fatal(err)
			}
			if golden.Updating() {
				if err := os.RemoveAll(root); err != nil {
					t.Fatal(err)
				}
				if err := os.MkdirAll(dir, 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.Rename(gen, root); err != nil {
					t.Fatal(err)
				}
			} else if diffs := compareTrees(gen, root); len(diffs) > 0 {
				t.Fatalf("committed tree differs from its definition (run go test ./verify -run TestFixtures -update):\n%s", strings.Join(diffs[:min(len(diffs), 20)], "\n"))
			}
			r, err := Run(Options{Root: root, Version: "test"})
			if err != nil {
				t.Fatal(err)
			}
			r.Header.Root = "testdata/verify/" + fx.name + "/root" // independent of where the test runs
			var got bytes.Buffer
			if err := Render(&got, r, "json"); err != nil {
				t.Fatal(err)
			}
			golden.Check(t, filepath.Join(dir, "report.json"), got.Bytes())
			checkWants(t, r, fx)
		})
	}
}

func buildFixture(fx fixture, dir string) error {
	f := newFx(dir, "", fx.comment)
	fx.build(f)
	f.m.Host = hostOf(f)
	return f.finish()
}

// hostOf reads back the host name the fixture wrote.
func hostOf(f *fx) string {
	b, _ := os.ReadFile(filepath.Join(f.Dir, "etc", "hostname"))
	return strings.TrimSpace(string(b))
}

// checkWants asserts the verdicts a fixture exists to show.
func checkWants(t *testing.T, r *Report, fx fixture) {
	t.Helper()
	for _, w := range fx.want {
		found := false
		worst := Pass
		for _, c := range r.Checks {
			if c.ID != w.id || w.subject != "" && c.Subject != w.subject {
				continue
			}
			found = true
			if c.Status.rank() > worst.rank() {
				worst = c.Status
			}
		}
		if !found {
			t.Errorf("%s %q: no result", w.id, w.subject)
			continue
		}
		if worst != w.status {
			t.Errorf("%s %q: got %s, want %s", w.id, w.subject, worst, w.status)
		}
	}
	if fx.noFail && r.Summary.Fail > 0 {
		for _, c := range r.Checks {
			if c.Status == Fail {
				t.Errorf("unexpected FAIL %s %s: %v", c.ID, c.Subject, c.Evidence)
			}
		}
	}
}
