package golden

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

type recorder struct {
	testing.TB
	errs []string
}

func (r *recorder) Helper() {}
func (r *recorder) Errorf(format string, a ...any) {
	r.errs = append(r.errs, strings.TrimSpace(fmt.Sprintf(format, a...)))
}
func (r *recorder) Fatalf(format string, a ...any) { r.Errorf(format, a...) }

func TestCheck(t *testing.T) {
	p := filepath.Join(t.TempDir(), "g.txt")
	os.WriteFile(p, []byte("a\nb\nc\n"), 0o644)
	r := &recorder{TB: t}
	Check(r, p, []byte("a\nb\nc\n"))
	if len(r.errs) != 0 {
		t.Fatalf("equal: %v", r.errs)
	}
	Check(r, p, []byte("a\nB\nc\n"))
	if len(r.errs) != 1 || !strings.Contains(r.errs[0], "line 2:\n  want b\n  got  B") || !strings.Contains(r.errs[0], "-update") {
		t.Fatalf("different: %v", r.errs)
	}
	r.errs = nil
	Check(r, filepath.Join(t.TempDir(), "missing"), nil)
	if len(r.errs) != 1 || !strings.Contains(r.errs[0], "-update") {
		t.Fatalf("missing: %v", r.errs)
	}
}
