package apply

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cryptshift/cryptshift/internal/doors/execx"
	"github.com/cryptshift/cryptshift/internal/model/plan"
)

// The script form of a plan writes key files through "cryptshift step
// keyfile"; re-run after a reboot, with the target no longer mounted, it
// wrote the key onto the plaintext root. It is now refused on a directory
// that is not on encrypted storage (a test's temporary directory is not),
// and nothing is written.
func TestStepKeyFileRefusesAPlaintextDirectory(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "keys", "k.key")
	s := plan.NewStep(plan.Step{ID: "keyfile:k", Action: plan.ActKeyFile, Target: "k"},
		&plan.Params{KeyFile: &plan.KeyFile{Path: path, Bytes: 64}}, nil)
	if len(s.Command) < 3 || s.Command[0] != "cryptshift" || s.Command[1] != "step" {
		t.Fatalf("key file step renders as %q, want cryptshift step ...", s.Command)
	}
	var out bytes.Buffer
	err := Step(context.Background(), &execx.Recorder{}, s.Command[2:], strings.NewReader(""), &out)
	if err == nil || !strings.Contains(err.Error(), "cannot write key file "+path+": ") || !strings.Contains(err.Error(), "the key files belong on the encrypted root") {
		t.Fatalf("got %v, want a refusal to write the key file on plaintext storage", err)
	}
	if _, err := os.Stat(path); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("the refused step left %s (stat: %v)", path, err)
	}
	// On encrypted storage (here: the check says so) the same step writes
	// the key.
	t.Cleanup(setKeyDirCheck(func(string, ...string) error { return nil }))
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := Step(context.Background(), &execx.Recorder{}, s.Command[2:], strings.NewReader(""), &out); err != nil {
		t.Fatalf("on encrypted storage: %v", err)
	}
	if fi, err := os.Stat(path); err != nil || fi.Size() != 64 {
		t.Fatalf("key file after the step: %v, %v", fi, err)
	}
}
