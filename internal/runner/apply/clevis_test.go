package apply

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cryptshift/cryptshift/internal/doors/clevis"
	"github.com/cryptshift/cryptshift/internal/doors/execx"
	"github.com/cryptshift/cryptshift/internal/exitcode"
	"github.com/cryptshift/cryptshift/internal/harness/tangtest"
	"github.com/cryptshift/cryptshift/internal/model/plan"
)

const advThp = tangtest.Thumbprint

func bindPlan(dev string, pins ...clevis.Pin) *plan.Plan {
	p := &plan.Plan{APIVersion: plan.APIVersion, Kind: plan.Kind, Layout: "t", Root: "/target"}
	for i, pin := range pins {
		slot := 2 + i
		p.Steps = append(p.Steps, plan.NewStep(plan.Step{ID: "clevisBind:" + pin.Name, Action: plan.ActClevisBind, Target: dev},
			&plan.Params{ClevisBind: &clevis.Bind{Device: dev, Pin: pin, Slot: slot}},
			&plan.Params{ClevisUnbind: &clevis.Unbind{Device: dev, Slot: slot}}))
	}
	return p
}

// A binding step's plan entry names the passphrase by name on stdin and
// its undo by keyslot; the command line holds no secret.
func TestBindStepRendering(t *testing.T) {
	s := bindPlan("/dev/vg0/root", clevis.Tang("http://tang.example:7500", advThp)).Steps[0]
	if got, want := strings.Join(s.Command, " "), `clevis luks bind -y -d /dev/vg0/root -s 2 -k - tang {"thp":"`+advThp+`","url":"http://tang.example:7500"}`; got != want {
		t.Errorf("command: got %s, want %s", got, want)
	}
	if got, want := strings.Join(s.Undo, " "), "clevis luks unbind -f -d /dev/vg0/root -s 2"; got != want {
		t.Errorf("undo: got %s, want %s", got, want)
	}
	if len(s.Secrets) != 1 || s.Secrets[0] != (plan.SecretRef{FD: 0, Secret: plan.SecretPassphrase}) {
		t.Errorf("secrets: got %+v, want the passphrase on fd 0", s.Secrets)
	}
	if err := s.CheckRendering(); err != nil {
		t.Error(err)
	}
	// apply --plan reads the step back from JSON: it must render the same.
	b, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	var back plan.Step
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if err := back.CheckRendering(); err != nil {
		t.Errorf("after a JSON round trip: %v", err)
	}
}

// An unreachable Tang server, a thumbprint mismatch and a missing TPM
// refuse the apply before the journal is created or any tool runs.
func TestApplyRefusesBindingsItCannotMake(t *testing.T) {
	url := tangtest.Server(t)
	dead := httptest.NewServer(http.NotFoundHandler())
	deadURL := dead.URL
	dead.Close()
	noTPM := t.TempDir()
	for _, c := range []struct {
		name string
		pin  clevis.Pin
		want string
	}{
		{"unreachable", clevis.Tang(deadURL, advThp), "cannot reach tang server " + deadURL},
		{"thumbprint mismatch", clevis.Tang(url, strings.Repeat("A", 43)), "does not advertise the pinned thumbprint"},
		{"no tpm", clevis.TPM2("sha256", "7"), "cannot bind tpm2: this machine has no TPM 2.0 (/sys/class/tpm is empty or missing)"},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			rec := &execx.Recorder{}
			jp := filepath.Join(dir, "journal")
			err := Run(context.Background(), bindPlan("/dev/vg0/root", c.pin), Options{JournalPath: jp, Run: rec, SysRoot: noTPM,
				Secrets: Secrets{Passphrase: []byte(testPass)}})
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("got %v, want an error containing %q", err, c.want)
			}
			if exitcode.Of(err) != exitcode.Refused {
				t.Errorf("exit status %d, want %d (refused)", exitcode.Of(err), exitcode.Refused)
			}
			if len(rec.Cmds) != 0 {
				t.Errorf("tools ran: %q", rec.Lines())
			}
			if _, err := os.Stat(jp); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("a journal was created: %v", err)
			}
		})
	}
}

// The bind runs clevis with the passphrase on stdin, never in argv, once
// the pin checked out.
func TestApplyBindRoutesThePassphrase(t *testing.T) {
	url := tangtest.Server(t)
	rec := &execx.Recorder{}
	e := newEnv(bindPlan("/dev/vg0/root"), Options{Run: rec, Secrets: Secrets{Passphrase: []byte(testPass)}})
	b := clevis.Bind{Device: "/dev/vg0/root", Pin: clevis.Tang(url, advThp), Slot: 2}
	if err := e.run(context.Background(), &plan.Params{ClevisBind: &b}, ""); err != nil {
		t.Fatal(err)
	}
	if len(rec.Cmds) != 1 {
		t.Fatalf("ran %q, want one clevis luks bind", rec.Lines())
	}
	c := rec.Cmds[0]
	if string(c.Stdin) != testPass || strings.Contains(c.String(), testPass) {
		t.Errorf("the passphrase is not (only) on stdin: stdin %q, command %s", c.Stdin, c.String())
	}
	if got, want := strings.Join(c.Args[:7], " "), "luks bind -y -d /dev/vg0/root -s 2"; got != want {
		t.Errorf("got %s, want %s", got, want)
	}
}
