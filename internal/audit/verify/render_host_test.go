package verify

import (
	"bytes"
	"context"
	"image/png"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/cryptshift/cryptshift/internal/harness/testtier"
)

// TestHostRenderReports renders the English and German HTML reports with
// headless Chromium (Debian's chromium; scripts/render-reports.sh installs
// it) and checks the pictures: the full width, text on the page, and the
// red FAIL banner where the verdict is. A person still looks at them
// (scripts/render-reports.sh leaves them in .cache/reports).
//
// Chromium is about 350 MB with its libraries, so it is not in
// scripts/deps.sh and this test is opt-in (CRYPTSHIFT_TEST_RENDER=1):
// scripts/render-reports.sh installs chromium and runs it.
func TestHostRenderReports(t *testing.T) {
	if os.Getenv("CRYPTSHIFT_TEST_RENDER") != "1" {
		t.Skip("rendering check not enabled: run scripts/render-reports.sh (installs chromium) or set CRYPTSHIFT_TEST_RENDER=1")
	}
	testtier.Host(t, "chromium")
	r0, err := Run(Options{Root: filepath.Join(fixtureDir, "libvirt-leftover", "root"), Version: "test"})
	if err != nil {
		t.Fatal(err)
	}
	if r0.Summary.Verdict != Fail {
		t.Fatalf("fixture verdict %s, want FAIL for the banner check", r0.Summary.Verdict)
	}
	for _, lang := range []string{"en", "de"} {
		t.Run(lang, func(t *testing.T) {
			dir := t.TempDir()
			r, err := Run(Options{Root: filepath.Join(fixtureDir, "libvirt-leftover", "root"), Version: "test", Lang: lang})
			if err != nil {
				t.Fatal(err)
			}
			var b bytes.Buffer
			if err := Render(&b, r, "html"); err != nil {
				t.Fatal(err)
			}
			html := filepath.Join(dir, "report.html")
			if err := os.WriteFile(html, b.Bytes(), 0o644); err != nil {
				t.Fatal(err)
			}
			pngPath := filepath.Join(dir, "report.png")
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			out, err := exec.CommandContext(ctx, "chromium", "--headless", "--no-sandbox", "--disable-gpu",
				"--disable-background-networking", "--no-first-run", "--disable-component-update", "--disable-sync",
				"--hide-scrollbars", "--user-data-dir="+filepath.Join(dir, "profile"), "--window-size=1200,3000",
				"--screenshot="+pngPath, "file://"+html).CombinedOutput()
			if err != nil {
				t.Fatalf("chromium: %v\n%s", err, out)
			}
			f, err := os.Open(pngPath)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			img, err := png.Decode(f)
			if err != nil {
				t.Fatal(err)
			}
			bnd := img.Bounds()
			if bnd.Dx() != 1200 || bnd.Dy() != 3000 {
				t.Errorf("screenshot is %v, want 1200x3000", bnd)
			}
			dark, red := 0, 0
			for y := bnd.Min.Y; y < bnd.Max.Y; y += 2 {
				for x := bnd.Min.X; x < bnd.Max.X; x += 2 {
					r, g, b, _ := img.At(x, y).RGBA()
					r, g, b = r>>8, g>>8, b>>8
					if r < 100 && g < 100 && b < 100 {
						dark++
					}
					// The FAIL banner (#c62828) in the first 400 pixels.
					if y < 400 && r > 180 && g < 70 && b < 70 {
						red++
					}
				}
			}
			if dark < 5000 {
				t.Errorf("only %d dark pixels: the page shows (almost) no text", dark)
			}
			if red < 2000 {
				t.Errorf("only %d red pixels at the top: no FAIL banner", red)
			}
		})
	}
}
