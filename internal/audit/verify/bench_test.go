package verify

import (
	"io"
	"os"
	"path/filepath"
	"testing"
)

// largestFixture returns the fixture tree with the most files.
func largestFixture(tb testing.TB) (string, int) {
	roots, err := filepath.Glob(filepath.Join(fixtureDir, "*", "root"))
	if err != nil || len(roots) == 0 {
		tb.Fatalf("no fixtures: %v", err)
	}
	best, most := "", 0
	for _, r := range roots {
		n := 0
		filepath.Walk(r, func(_ string, _ os.FileInfo, err error) error {
			n++
			return err
		})
		if n > most {
			best, most = r, n
		}
	}
	return best, most
}

// BenchmarkVerifyLargestFixture is the bound: verify on the
// largest fixture (24 guests, 50 dm devices) takes under 1 s. It includes
// reading every file, walking sysfs and rendering the JSON report.
func BenchmarkVerifyLargestFixture(b *testing.B) {
	root, n := largestFixture(b)
	b.Logf("%s: %d files", root, n)
	for i := 0; i < b.N; i++ {
		r, err := Run(Options{Root: root, Version: "bench"})
		if err != nil {
			b.Fatal(err)
		}
		if err := Render(io.Discard, r, "json"); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkRenderHTML(b *testing.B) {
	root, _ := largestFixture(b)
	r, err := Run(Options{Root: root, Version: "bench", Lang: "de"})
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := Render(io.Discard, r, "html"); err != nil {
			b.Fatal(err)
		}
	}
}
