package apply

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/cryptshift/cryptshift/internal/doors/clevis"
	"github.com/cryptshift/cryptshift/internal/doors/execx"
	"github.com/cryptshift/cryptshift/internal/exitcode"
	"github.com/cryptshift/cryptshift/internal/harness/boot"
	"github.com/cryptshift/cryptshift/internal/harness/secretscan"
	"github.com/cryptshift/cryptshift/internal/harness/testtier"
	"github.com/cryptshift/cryptshift/internal/harness/vmtest"
	"github.com/cryptshift/cryptshift/internal/model/plan"
	"github.com/cryptshift/cryptshift/luks"
)

// hostTang starts a real Tang server (tangd behind socat, as the boot
// tier runs it) and returns its URL and signing-key thumbprint.
func hostTang(t *testing.T) (*boot.Tang, string, string) {
	t.Helper()
	ctx := context.Background()
	dir := t.TempDir()
	if err := boot.NewTangKeys(ctx, filepath.Join(dir, "keys")); err != nil {
		t.Fatal(err)
	}
	tg, err := boot.StartTang(ctx, filepath.Join(dir, "keys"), dir, "apply", 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(tg.Stop)
	thp, err := tg.Thumbprint(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return tg, fmt.Sprintf("http://127.0.0.1:%d", tg.Port), thp
}

// cs runs cryptsetup (or clevis) in the test, with stdin.
func cs(t *testing.T, stdin []byte, prog string, args ...string) []byte {
	t.Helper()
	c := exec.Command(prog, args...)
	c.Stdin = bytes.NewReader(stdin)
	var stderr bytes.Buffer
	c.Stderr = &stderr
	out, err := c.Output()
	if err != nil {
		t.Fatalf("%s %s: %v: %s", prog, strings.Join(args, " "), err, stderr.String())
	}
	return out
}

func opens(img string, key []byte) bool {
	c := exec.Command("cryptsetup", "open", "--test-passphrase", "--key-file", "-", img)
	c.Stdin = bytes.NewReader(key)
	return c.Run() == nil
}

// Real cryptsetup, clevis and tangd on a LUKS2 image file (no
// device-mapper needed): apply formats the volume, adds the recovery key
// and binds keyslot 2 to Tang as the planner plans a root with
// keys.unlock.tang. Independent oracles: cryptsetup luksDump (the clevis
// token on keyslot 2), clevis luks list (the server), clevis luks pass
// (the keyslot's key, recovered through tangd, opens the volume), the
// passphrase and recovery key still open it. The JWE holds none of the
// passphrase, the recovery key, the volume key or the bound keyslot's
// key, in any encoding; nothing secret in argv, output or the journal.
func TestHostApplyClevisBinding(t *testing.T) {
	testtier.Host(t, "cryptsetup", "clevis", "clevis-luks-bind", "jose", "socat")
	tg, url, thp := hostTang(t)
	dir := t.TempDir()
	img := filepath.Join(dir, "root.img")
	if err := os.WriteFile(img, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, 32<<20); err != nil {
		t.Fatal(err)
	}
	argon := luks.KDF{PBKDF: "argon2id", Iterations: 4, MemoryKiB: 32768, Parallel: 1}
	params := luks.Params{Cipher: "aes-xts-plain64", KeySize: 512, Hash: "sha256", KDF: argon, SectorSize: 4096,
		UUID: "2d7c1d36-2f6b-4a0e-9d8c-3c2b1a0f9e8d", Label: "root"}
	pass, rk := luks.Key{Secret: plan.SecretPassphrase}, luks.Key{Secret: plan.SecretRecoveryKey}
	bind := clevis.Bind{Device: img, Pin: clevis.Tang(url, thp), Slot: 2}
	p := &plan.Plan{APIVersion: plan.APIVersion, Kind: plan.Kind, Layout: "img", Steps: []plan.Step{
		plan.NewStep(plan.Step{ID: "luksFormat:root", Action: plan.ActLUKSFormat, Target: img}, &plan.Params{LUKSFormat: &luks.Format{Device: img, Params: params, Key: pass}}, nil),
		plan.NewStep(plan.Step{ID: "addRecoveryKey:root", Action: plan.ActAddRecovery, Target: img}, &plan.Params{LUKSAddKey: &luks.AddKey{Device: img, KDF: argon, Key: pass, NewKey: rk}}, nil),
		plan.NewStep(plan.Step{ID: "clevisBind:root:2", Action: plan.ActClevisBind, Target: img},
			&plan.Params{ClevisBind: &bind}, &plan.Params{ClevisUnbind: &clevis.Unbind{Device: img, Slot: 2}}),
	}}
	sec := Secrets{Passphrase: []byte(testPass), RecoveryKey: []byte(testRecovery)}
	jp := filepath.Join(dir, "journal")
	var out bytes.Buffer
	stop := vmtest.WatchCmdlines()
	log := &logRunner{r: execx.Exec{}}
	err := Run(context.Background(), p, Options{JournalPath: jp, Run: log, Secrets: sec, Out: &out})
	cmdlines := stop()
	if err != nil {
		t.Fatal(err)
	}

	// The oracles.
	e := newEnv(p, Options{})
	if ok, err := e.satisfied(context.Background(), p.Steps[2].Params); !ok || err != nil {
		t.Errorf("the bind step's postcondition does not hold after apply (a resume would bind again): %v %v", ok, err)
	}
	var meta struct {
		Keyslots map[string]json.RawMessage `json:"keyslots"`
		Tokens   map[string]struct {
			Type     string   `json:"type"`
			Keyslots []string `json:"keyslots"`
		} `json:"tokens"`
	}
	if err := json.Unmarshal(cs(t, nil, "cryptsetup", "luksDump", "--dump-json-metadata", img), &meta); err != nil {
		t.Fatal(err)
	}
	if len(meta.Keyslots) != 3 || len(meta.Tokens) != 1 || meta.Tokens["0"].Type != "clevis" || strings.Join(meta.Tokens["0"].Keyslots, ",") != "2" {
		t.Fatalf("luksDump: want keyslots 0-2 and one clevis token on keyslot 2, got %d keyslots, tokens %+v", len(meta.Keyslots), meta.Tokens)
	}
	list := string(cs(t, nil, "clevis", "luks", "list", "-d", img))
	if want := `2: tang '{"url":"` + url + `"}'`; strings.TrimSpace(list) != want {
		t.Errorf("clevis luks list: got %q, want %q", list, want)
	}
	before := tg.Requests()
	slotKey := cs(t, nil, "clevis", "luks", "pass", "-d", img, "-s", "2")
	if tg.Requests() <= before {
		t.Errorf("clevis luks pass recovered keyslot 2's key without asking tangd")
	}
	if !opens(img, slotKey) || !opens(img, []byte(testPass)) || !opens(img, []byte(testRecovery)) {
		t.Fatalf("after the bind, one of the keys does not open the volume: tang-recovered %v, passphrase %v, recovery %v",
			opens(img, slotKey), opens(img, []byte(testPass)), opens(img, []byte(testRecovery)))
	}
	t.Logf("clevis luks list: %s; the key recovered through tangd opens the volume; passphrase and recovery keyslots remain", strings.TrimSpace(list))

	// Secrets: the volume key, dumped here from the test's own image.
	mk := volumeKey(t, img)
	secrets := map[string][]byte{"passphrase": []byte(testPass), "recovery key": []byte(testRecovery),
		"volume key": mk, "keyslot 2's key": slotKey}
	checkJWE(t, img, secrets)
	places := map[string][]byte{"output": out.Bytes(), "journal": mustRead(t, jp), "command log": []byte(strings.Join(log.lines, "\n")),
		"process command lines": []byte(strings.Join(cmdlines, "\n"))}
	sawBind := false
	for _, c := range cmdlines {
		sawBind = sawBind || strings.Contains(c, "clevis-luks-bind") || strings.Contains(c, "luks\x00bind")
	}
	if !sawBind {
		t.Fatalf("the command-line watcher never saw clevis luks bind in %d command lines", len(cmdlines))
	}
	for what, s := range secrets {
		for where, b := range places {
			if enc := secretscan.Find(b, s); enc != "" {
				t.Errorf("the %s appears in the %s (%s)", what, where, enc)
			}
		}
	}
	t.Logf("secrets scan: %d secrets in %d places, %d command lines seen (clevis luks bind among them)", len(secrets), len(places), len(cmdlines))

	// Undo: rollback unbinds keyslot 2 and leaves the rest (seen in the
	// header right after the unbind, before the format's undo wipes it).
	log.after = func(c execx.Cmd) {
		if c.Tool == "clevis" && len(c.Args) > 1 && c.Args[1] == "unbind" {
			h, err := luks.ReadHeader(img)
			if err != nil {
				t.Errorf("after unbind: %v", err)
				return
			}
			log.unbound = len(h.TokenInfo) == 0 && len(h.Keyslots) == 2 && opens(img, []byte(testPass)) && opens(img, []byte(testRecovery))
		}
	}
	_, err = Rollback(context.Background(), jp, Options{Run: log, Secrets: sec, Out: &out},
		RollbackOptions{AllowDestroy: true, Confirm: func(string) error { return nil }})
	if err != nil {
		t.Fatal(err)
	}
	if !log.unbound {
		t.Errorf("rollback's clevis luks unbind did not leave exactly the passphrase and recovery keyslots; commands: %q", log.lines)
	}
}

// Refused on real tools: a thumbprint mismatch and an unreachable server
// leave the volume's header byte for byte as it was, and no journal.
func TestHostApplyClevisRefusals(t *testing.T) {
	testtier.Host(t, "cryptsetup", "clevis", "jose", "socat")
	tg, url, thp := hostTang(t)
	dir := t.TempDir()
	img := filepath.Join(dir, "root.img")
	os.WriteFile(img, nil, 0o600)
	if err := os.Truncate(img, 32<<20); err != nil {
		t.Fatal(err)
	}
	cs(t, []byte(testPass), "cryptsetup", "luksFormat", "--batch-mode", "--type", "luks2", "--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000", "--key-file", "-", img)
	sum := func() [32]byte { return sha256.Sum256(mustRead(t, img)[:16<<20]) }
	was := sum()
	wrong := base64.RawURLEncoding.EncodeToString(make([]byte, 32))
	for _, c := range []struct {
		name string
		pin  clevis.Pin
		want string
		stop bool
	}{
		{"thumbprint mismatch", clevis.Tang(url, wrong), "does not advertise the pinned thumbprint " + wrong + " (it signs with " + thp + ")", false},
		{"unreachable", clevis.Tang(url, thp), "cannot reach tang server " + url, true},
	} {
		if c.stop {
			tg.Stop()
		}
		jp := filepath.Join(dir, c.name+".journal")
		err := Run(context.Background(), bindPlan(img, c.pin), Options{JournalPath: jp, Run: execx.Exec{}, Secrets: Secrets{Passphrase: []byte(testPass)}})
		if err == nil || !strings.Contains(err.Error(), c.want) || exitcode.Of(err) != exitcode.Refused {
			t.Errorf("%s: got %v (exit %d), want refused with %q", c.name, err, exitcode.Of(err), c.want)
		}
		if _, err := os.Stat(jp); err == nil {
			t.Errorf("%s: a journal was made", c.name)
		}
		if sum() != was {
			t.Errorf("%s: the LUKS header changed", c.name)
		}
	}
}

// volumeKey dumps the volume key of the test's own image (cryptsetup
// luksDump --dump-volume-key, the passphrase on stdin).
func volumeKey(t *testing.T, img string) []byte {
	t.Helper()
	out := string(cs(t, []byte(testPass), "cryptsetup", "luksDump", "--dump-volume-key", "--batch-mode", "--key-file", "-", img))
	i := strings.Index(out, "MK dump:")
	if i < 0 {
		t.Fatalf("no MK dump in luksDump --dump-volume-key")
	}
	hexDigits := regexp.MustCompile(`[0-9a-f]{2}`).FindAllString(out[i+len("MK dump:"):], -1)
	key := make([]byte, len(hexDigits))
	for j, h := range hexDigits {
		var b byte
		for _, c := range h {
			b = b<<4 | byte(strings.IndexRune("0123456789abcdef", c))
		}
		key[j] = b
	}
	if len(key) != 64 {
		t.Fatalf("volume key is %d bytes, want 64 (aes-xts 512 bits)", len(key))
	}
	return key
}

// checkJWE reads each Clevis token's JWE (cryptsetup token export) and
// checks that it is a JWE encrypted to the pin: a protected header naming
// the clevis pin and an ECDH-ES key agreement, an encrypted payload, and
// none of the secrets in the token JSON, the decoded header or the
// decoded ciphertext, in any encoding secretscan knows.
func checkJWE(t *testing.T, img string, secrets map[string][]byte) {
	t.Helper()
	raw := cs(t, nil, "cryptsetup", "token", "export", "--token-id", "0", img)
	var tok struct {
		Type string `json:"type"`
		JWE  struct {
			Protected  string `json:"protected"`
			Ciphertext string `json:"ciphertext"`
			IV         string `json:"iv"`
			Tag        string `json:"tag"`
		} `json:"jwe"`
	}
	if err := json.Unmarshal(raw, &tok); err != nil || tok.Type != "clevis" {
		t.Fatalf("token 0 is not a clevis token: %v %s", err, raw)
	}
	dec := func(s string) []byte {
		b, err := base64.RawURLEncoding.DecodeString(s)
		if err != nil {
			t.Fatalf("JWE member is not base64url: %v", err)
		}
		return b
	}
	hdr, ct := dec(tok.JWE.Protected), dec(tok.JWE.Ciphertext)
	var h struct {
		Alg    string `json:"alg"`
		Enc    string `json:"enc"`
		Clevis struct {
			Pin string `json:"pin"`
		} `json:"clevis"`
	}
	if err := json.Unmarshal(hdr, &h); err != nil || h.Alg != "ECDH-ES" || h.Enc == "" || h.Clevis.Pin != "tang" {
		t.Fatalf("JWE protected header is not an ECDH-ES JWE for the tang pin: %v %s", err, hdr)
	}
	if len(ct) == 0 || len(dec(tok.JWE.Tag)) == 0 {
		t.Fatalf("JWE has no ciphertext or tag")
	}
	meta := cs(t, nil, "cryptsetup", "luksDump", "--dump-json-metadata", img)
	for what, s := range secrets {
		for where, b := range map[string][]byte{"token JSON": raw, "JWE protected header": hdr, "JWE ciphertext": ct, "LUKS2 metadata": meta} {
			if enc := secretscan.Find(b, s); enc != "" {
				t.Errorf("the %s is in the %s (%s)", what, where, enc)
			}
		}
	}
	t.Logf("JWE: alg %s, enc %s, pin %s, %d-byte ciphertext; none of %d secrets in it", h.Alg, h.Enc, h.Clevis.Pin, len(ct), len(secrets))
}

// logRunner runs commands and keeps their command lines (what -v logs),
// calling after once each has run.
type logRunner struct {
	r       execx.Runner
	lines   []string
	after   func(execx.Cmd)
	unbound bool
}

func (l *logRunner) Run(ctx context.Context, c execx.Cmd) (execx.Result, error) {
	l.lines = append(l.lines, c.String())
	res, err := l.r.Run(ctx, c)
	if l.after != nil {
		l.after(c)
	}
	return res, err
}
