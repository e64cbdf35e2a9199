package unlock

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cryptshift/cryptshift/internal/doors/execx"
	"github.com/cryptshift/cryptshift/internal/harness/tangtest"
	"github.com/cryptshift/cryptshift/luks"
)

const thp = tangtest.Thumbprint

var pass = []byte("correct horse battery staple")

func tangServer(t *testing.T) string { return tangtest.Server(t) }

func header(tokens ...luks.Token) func(string) (*luks.Header, error) {
	return func(string) (*luks.Header, error) {
		h := &luks.Header{Version: 2, Keyslots: []luks.Keyslot{{ID: 0}, {ID: 1}}, TokenInfo: tokens}
		for _, t := range tokens {
			for _, s := range t.Keyslots {
				h.Keyslots = append(h.Keyslots, luks.Keyslot{ID: s})
			}
		}
		return h, nil
	}
}

func opts(rec *execx.Recorder, method string) Options {
	return Options{Volume: "root_crypt", Method: method, Passphrase: pass, Run: rec, ReadHeader: header(),
		SysRoot: "/nonexistent"}
}

func statusRec() *execx.Recorder {
	return &execx.Recorder{Responses: map[string]execx.Result{
		"cryptsetup status root_crypt": {Stdout: []byte("/dev/mapper/root_crypt is active.\n  type:    LUKS2\n  device:  /dev/mapper/vg0-root\n")},
	}}
}

func TestAddTang(t *testing.T) {
	rec := statusRec()
	o := opts(rec, Tang)
	o.URL, o.Thumbprint = tangServer(t), thp
	res, err := Add(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	lines := rec.Lines()
	want := `clevis luks bind -y -d /dev/mapper/vg0-root -k - tang '{"thp":"` + thp + `","url":"` + o.URL + `"}'`
	if len(lines) != 2 || lines[1] != want {
		t.Fatalf("ran %q, want status then %s", lines, want)
	}
	if string(rec.Cmds[1].Stdin) != string(pass) {
		t.Error("the passphrase did not go on stdin")
	}
	for _, s := range res.Steps {
		if strings.Contains(strings.Join(s.Command, " "), string(pass)) || strings.Contains(s.Description, string(pass)) {
			t.Error("the passphrase is in the step")
		}
	}
}

func TestAddRefusesBeforeAnythingChanges(t *testing.T) {
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	closed := "http://" + l.Addr().String()
	l.Close()
	for _, tc := range []struct {
		name, want string
		edit       func(o *Options)
	}{
		{"unreachable tang", "cannot reach tang server", func(o *Options) { o.Method, o.URL, o.Thumbprint = Tang, closed, thp }},
		{"thumbprint mismatch", "does not advertise the pinned thumbprint", func(o *Options) { o.Method, o.Thumbprint = Tang, "AAAA" }},
		{"no thumbprint", "--thumbprint", func(o *Options) { o.Method, o.Thumbprint = Tang, "" }},
		{"no TPM", "has no TPM", func(o *Options) { o.Method = TPM2 }},
		{"bad PCRs", "PCR numbers", func(o *Options) { o.Method, o.PCRs = TPM2, "7;reboot" }},
		{"LUKS1", "Clevis tokens need LUKS2", func(o *Options) {
			o.ReadHeader = func(string) (*luks.Header, error) { return &luks.Header{Version: 1}, nil }
		}},
		{"unknown method", "use tang or tpm2", func(o *Options) { o.Method = "fido2" }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := statusRec()
			o := opts(rec, Tang)
			o.URL, o.Thumbprint = tangServer(t), thp
			tc.edit(&o)
			_, err := Add(context.Background(), o)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error naming %q", err, tc.want)
			}
			for _, l := range rec.Lines() {
				if strings.HasPrefix(l, "clevis") {
					t.Errorf("ran %s although refused", l)
				}
			}
		})
	}
}

func TestAddTPM2WithATPM(t *testing.T) {
	sys := t.TempDir()
	if err := os.MkdirAll(filepath.Join(sys, "sys/class/tpm/tpm0"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(sys, "sys/class/tpm/tpm0/tpm_version_major"), []byte("2\n"), 0o444); err != nil {
		t.Fatal(err)
	}
	rec := statusRec()
	o := opts(rec, TPM2)
	o.SysRoot = sys
	if _, err := Add(context.Background(), o); err != nil {
		t.Fatal(err)
	}
	if got, want := rec.Lines()[1], `clevis luks bind -y -d /dev/mapper/vg0-root -k - tpm2 '{"pcr_bank":"sha256","pcr_ids":"7"}'`; got != want {
		t.Errorf("got %s, want %s", got, want)
	}
}

func TestDryRunRunsNoClevis(t *testing.T) {
	rec := statusRec()
	o := opts(rec, Tang)
	o.URL, o.Thumbprint, o.DryRun, o.Passphrase = tangServer(t), thp, true, nil
	res, err := Add(context.Background(), o)
	if err != nil || len(res.Steps) != 1 || res.Steps[0].Command[0] != "clevis" {
		t.Fatalf("%v %+v", err, res)
	}
	if len(rec.Lines()) != 1 {
		t.Errorf("a dry run ran %q", rec.Lines())
	}
}

func TestRemove(t *testing.T) {
	tang := luks.Token{ID: 0, Type: "clevis", Keyslots: []int{2}, Clevis: &luks.ClevisPin{Pin: "tang", URLs: []string{"http://t"}}}
	tpm := luks.Token{ID: 1, Type: "clevis", Keyslots: []int{3}, Clevis: &luks.ClevisPin{Pin: "tpm2", PCRIDs: "7"}}
	rec := statusRec()
	o := opts(rec, Tang)
	o.ReadHeader = header(tang, tpm)
	if _, err := Remove(context.Background(), o); err != nil {
		t.Fatal(err)
	}
	if got := rec.Lines(); len(got) != 2 || got[1] != "clevis luks unbind -f -d /dev/mapper/vg0-root -s 2" {
		t.Errorf("ran %q", got)
	}
	// Nothing bound: refused.
	o.ReadHeader = header(tpm)
	if _, err := Remove(context.Background(), o); err == nil || !strings.Contains(err.Error(), "has no tang binding") {
		t.Errorf("got %v", err)
	}
	// Only Clevis keyslots: refused, the passphrase slot must stay.
	o.ReadHeader = func(string) (*luks.Header, error) {
		return &luks.Header{Version: 2, Keyslots: []luks.Keyslot{{ID: 2}}, TokenInfo: []luks.Token{tang}}, nil
	}
	if _, err := Remove(context.Background(), o); err == nil || !strings.Contains(err.Error(), "no passphrase keyslot would remain") {
		t.Errorf("got %v", err)
	}
	// An unknown mapping.
	rec = &execx.Recorder{Errors: map[string]error{"cryptsetup status": errors.New("not active")}}
	o = opts(rec, Tang)
	if _, err := Remove(context.Background(), o); err == nil || !strings.Contains(err.Error(), "cannot find volume root_crypt") {
		t.Errorf("got %v", err)
	}
}
