package verify

import (
	"bytes"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/cryptshift/cryptshift/internal/audit/verify/hostiletest"
)

// TestHostileTrees runs verify on each hostile tree (and on one with every
// hostile change at once): it must end (a hang is reported after two
// minutes, far above the seconds each takes), never panic, read nothing
// outside the root (the canary next to the root never shows up; the FIFO
// canary would block a blocking open forever), say what it refused, and
// stay within bounded memory (the heap in use after the run is checked
// against 1 GiB; the limits are in docs/verify.md).
func TestHostileTrees(t *testing.T) {
	cases := hostiletest.Cases()
	all := hostiletest.Case{Name: "all-at-once", Apply: func(root, out string) error {
		for _, c := range cases {
			if c.Name == "gzip-bomb-initramfs" {
				continue // nested-gzip replaces the same file
			}
			if err := c.Apply(root, out); err != nil {
				return err
			}
		}
		return nil
	}}
	for _, c := range append(cases, all) {
		t.Run(c.Name, func(t *testing.T) {
			root, _, err := hostiletest.Tree(t.TempDir(), c)
			if err != nil {
				t.Fatal(err)
			}
			type res struct {
				r   *Report
				err error
			}
			done := make(chan res, 1)
			go func() {
				r, err := Run(Options{Root: root, Version: "test"})
				done <- res{r, err}
			}()
			var got res
			select {
			case got = <-done:
			case <-time.After(2 * time.Minute):
				t.Fatal("verify did not end: it hangs on this tree")
			}
			if got.err != nil {
				t.Fatalf("verify refused the tree as a whole: %v", got.err)
			}
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			if ms.HeapInuse > 1<<30 {
				t.Errorf("heap in use %d MiB after the run", ms.HeapInuse>>20)
			}
			var all bytes.Buffer
			for _, f := range Formats {
				if err := Render(&all, got.r, f); err != nil {
					t.Fatal(err)
				}
			}
			text := all.String()
			if strings.Contains(text, "CANARY") || strings.Contains(text, "/canary") {
				t.Errorf("the report shows what lies outside the root")
			}
			if strings.ContainsAny(text, "\x1b\a") {
				t.Errorf("a control character reached the rendered report")
			}
			if c.Refused != "" && !strings.Contains(text, c.Refused) {
				t.Errorf("the report does not say it refused this (%q):\n%s", c.Refused, coverageText(got.r))
			}
			if got.r.Summary.Verdict == Pass && c.Refused != "" {
				t.Errorf("verdict PASS although an input was refused")
			}
			t.Logf("%s: %s; %s", c.Name, Headline(got.r), strings.Join(got.r.Coverage.Refused, "; "))
		})
	}
}

func coverageText(r *Report) string { return strings.Join(coverageLines(r), "\n") }

// TestHostileImages: an all-zero, a random and a truncated-qcow2 image
// given to --image end with a report or a clean error, never a panic.
func TestHostileImages(t *testing.T) {
	dir := t.TempDir()
	rnd := make([]byte, 4<<20)
	for i := range rnd {
		rnd[i] = byte(i*7919 + i>>9)
	}
	for name, b := range map[string][]byte{
		"zero.img": make([]byte, 4<<20), "random.img": rnd,
		"trunc.qcow2": hostiletest.QCOW2("x", 0)[:30], "luks-no-nul.img": hostiletest.LUKS2WithoutNUL(),
		"empty.img": nil,
	} {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		r, err := Run(Options{Image: p, Version: "test"})
		if err == nil && r.Summary.Verdict == Pass {
			t.Errorf("%s: PASS for an image without a readable system", name)
		}
		t.Logf("%s: %v", name, err)
	}
}
