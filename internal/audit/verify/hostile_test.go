package verify

import (
	"bytes"
	"os"
	"path/filepath"
	"runtime"
	"runtime/metrics"
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
// stay within bounded memory (the peak heap, sampled every millisecond
// during the run, against maxHeap; the limits are in docs/verify.md).
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
			runtime.GC()
			stop := sampleHeap()
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
			if peak := stop(); peak > maxHeap {
				t.Errorf("peak heap in use %d MiB during the run, limit %d MiB", peak>>20, maxHeap>>20)
			}
			if got.err != nil {
				t.Fatalf("verify refused the tree as a whole: %v", got.err)
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
			// What was refused as unsafe is listed in coverage.refused,
			// not only in some check's evidence. A crafted backing chain is
			// a verdict (WARN on the disk), not a refused input.
			if c.Refused != "" && c.Name != "qcow2-crafted" && !strings.Contains(strings.Join(got.r.Coverage.Refused, "\n"), c.Refused) {
				t.Errorf("coverage.refused does not list %q: %q", c.Refused, got.r.Coverage.Refused)
			}
			if got.r.Summary.Verdict == Pass && c.Refused != "" {
				t.Errorf("verdict PASS although an input was refused")
			}
			t.Logf("%s: %s; %s", c.Name, Headline(got.r), strings.Join(got.r.Coverage.Refused, "; "))
		})
	}
}

// maxHeap bounds the heap verify may hold at its peak on a hostile tree
// (docs/verify.md, limits): the largest single buffers are a 16 MiB
// file read and the initramfs reader's window.
const maxHeap = 1 << 30

// sampleHeap samples the heap in use every millisecond until the returned
// function is called, which returns the peak seen: a spike freed before
// the run ends counts, unlike a reading taken afterwards.
func sampleHeap() (stop func() uint64) {
	sample := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
	quit, peak := make(chan struct{}), make(chan uint64)
	go func() {
		var max uint64
		tick := time.NewTicker(time.Millisecond)
		defer tick.Stop()
		for {
			metrics.Read(sample)
			if v := sample[0].Value.Uint64(); v > max {
				max = v
			}
			select {
			case <-quit:
				peak <- max
				return
			case <-tick.C:
			}
		}
	}()
	return func() uint64 { close(quit); return <-peak }
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
