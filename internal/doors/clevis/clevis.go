// Package clevis is cryptshift's one door to Clevis: it binds an unlock
// method (a Tang server, a TPM2) to a LUKS2 keyslot and unbinds it, and
// checks a Tang server's advertisement against the pinned thumbprint
// before anything is bound.
//
// The existing passphrase goes to clevis on stdin (-k -), never in argv.
// The JWE that clevis stores in the LUKS2 token holds the new keyslot's
// key encrypted to the pin; no plaintext key is in it.
package clevis

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/cryptshift/cryptshift/internal/doors/execx"
	"github.com/cryptshift/cryptshift/luks"
)

// Pin is one Clevis pin and its public configuration.
type Pin struct {
	Name   string         `json:"pin"`    // tang or tpm2
	Config map[string]any `json:"config"` // {"url":..,"thp":..} or {"pcr_bank":..,"pcr_ids":..}
}

// Tang pins the server at url by its signing key's S256 thumbprint.
func Tang(url, thumbprint string) Pin {
	return Pin{Name: "tang", Config: map[string]any{"url": url, "thp": thumbprint}}
}

// TPM2 seals to the TPM with a PCR policy (bank "sha256", pcrs "7").
func TPM2(bank, pcrs string) Pin {
	c := map[string]any{}
	if bank != "" {
		c["pcr_bank"] = bank
	}
	if pcrs != "" {
		c["pcr_ids"] = pcrs
	}
	return Pin{Name: "tpm2", Config: c}
}

// JSON is the pin's configuration as clevis takes it (keys sorted).
func (p Pin) JSON() string {
	b, _ := json.Marshal(p.Config) // a map of strings cannot fail
	return string(b)
}

// String names the pin for people: tang(URL) or tpm2(PCRs).
func (p Pin) String() string {
	switch p.Name {
	case "tang":
		return fmt.Sprintf("tang(%v)", p.Config["url"])
	case "tpm2":
		return fmt.Sprintf("tpm2(%v PCRs %v)", orDefault(p.Config["pcr_bank"], "sha256"), orDefault(p.Config["pcr_ids"], "none"))
	}
	return p.Name
}

func orDefault(v any, d string) any {
	if v == nil || v == "" {
		return d
	}
	return v
}

// Op is a Clevis operation with its command line (a plan step's typed
// parameters).
type Op interface {
	Argv() []string
}

// Bind adds a keyslot to Device unlocked by Pin. Existing is a key that
// opens the device now (the passphrase); it goes on stdin.
type Bind struct {
	Device string `json:"device"`
	Pin    Pin    `json:"pin"`
	// Slot is the keyslot to bind (clevis luks bind -s, clevis 12 and
	// later); 0, which is always the passphrase's, lets clevis take the
	// first free one. A plan names it, so that its undo can name it too.
	Slot int `json:"slot,omitempty"`
}

// Args renders the command line: -y answers clevis's own questions (the
// Tang advertisement is trusted only because thp pins it, checked by
// CheckTang first and by clevis again).
func (b Bind) Args() []string {
	args := []string{"luks", "bind", "-y", "-d", b.Device}
	if b.Slot > 0 {
		args = append(args, "-s", strconv.Itoa(b.Slot))
	}
	return append(args, "-k", "-", b.Pin.Name, b.Pin.JSON())
}

// Argv is the whole command line.
func (b Bind) Argv() []string { return append([]string{"clevis"}, b.Args()...) }

// Cmd is the invocation with the existing key on stdin.
func (b Bind) Cmd(existing []byte) execx.Cmd {
	return execx.Cmd{Tool: "clevis", Args: b.Args(), Stdin: existing, Redact: [][]byte{existing}}
}

// Unbind removes the Clevis binding in Slot (keyslot and token).
type Unbind struct {
	Device string `json:"device"`
	Slot   int    `json:"slot"`
}

// Args: -f, no confirmation (the caller has checked that a passphrase
// keyslot remains).
func (u Unbind) Args() []string {
	return []string{"luks", "unbind", "-f", "-d", u.Device, "-s", strconv.Itoa(u.Slot)}
}

// Argv is the whole command line.
func (u Unbind) Argv() []string { return append([]string{"clevis"}, u.Args()...) }

// Cmd is the invocation.
func (u Unbind) Cmd() execx.Cmd { return execx.Cmd{Tool: "clevis", Args: u.Args()} }

// advTimeout bounds the advertisement fetch: an unreachable server is
// refused quickly rather than hanging the plan.
const advTimeout = 15 * time.Second

// CheckTang fetches the server's advertisement (GET URL/adv, a JWS over
// its JWK set) and checks that one of its signing keys has the pinned
// S256 thumbprint (RFC 7638). An unreachable server or a mismatch is an
// error; nothing is bound then.
func CheckTang(ctx context.Context, client *http.Client, server, thumbprint string) error {
	u, err := url.Parse(server)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("cannot use tang server %q: not an http(s) URL", server)
	}
	if client == nil {
		client = &http.Client{Timeout: advTimeout}
	}
	ctx, cancel := context.WithTimeout(ctx, advTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimSuffix(server, "/")+"/adv", nil)
	if err != nil {
		return fmt.Errorf("cannot reach tang server %s: %w", server, err)
	}
	// A fresh connection each time: a pooled one to a server that has
	// since stopped (its forked handler still alive) would answer for it.
	req.Close = true
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("cannot reach tang server %s: %w; check the URL and that the server runs, nothing was bound", server, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("cannot read tang server %s's advertisement: HTTP %s", server, resp.Status)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return fmt.Errorf("cannot read tang server %s's advertisement: %w", server, err)
	}
	thps, err := SigningThumbprints(body)
	if err != nil {
		return fmt.Errorf("cannot read tang server %s's advertisement: %w", server, err)
	}
	if !slices.Contains(thps, thumbprint) {
		return fmt.Errorf("tang server %s does not advertise the pinned thumbprint %s (it signs with %s): a different server or rotated keys; check with the server's admin (tang-show-keys) and fix the layout, nothing was bound",
			server, thumbprint, strings.Join(thps, ", "))
	}
	return nil
}

// SigningThumbprints returns the S256 thumbprints of the verify keys in a
// Tang advertisement (a JWS in flattened or general JSON serialization
// whose payload is a JWK set).
func SigningThumbprints(adv []byte) ([]string, error) {
	var jws struct {
		Payload string `json:"payload"`
	}
	if err := json.Unmarshal(adv, &jws); err != nil || jws.Payload == "" {
		return nil, errors.New("not a JWS")
	}
	payload, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(jws.Payload, "="))
	if err != nil {
		return nil, fmt.Errorf("bad JWS payload: %w", err)
	}
	var set struct {
		Keys []map[string]any `json:"keys"`
	}
	if err := json.Unmarshal(payload, &set); err != nil {
		return nil, fmt.Errorf("bad JWK set: %w", err)
	}
	var out []string
	for _, k := range set.Keys {
		ops, _ := k["key_ops"].([]any)
		if !slices.Contains(ops, any("verify")) {
			continue
		}
		t, err := Thumbprint(k)
		if err != nil {
			return nil, err
		}
		out = append(out, t)
	}
	if len(out) == 0 {
		return nil, errors.New("no signing key in the advertisement")
	}
	return out, nil
}

// Thumbprint is the RFC 7638 S256 thumbprint of an EC or RSA JWK: SHA-256
// over its required members in lexicographic order, without blanks.
func Thumbprint(jwk map[string]any) (string, error) {
	var members []string
	switch jwk["kty"] {
	case "EC":
		members = []string{"crv", "kty", "x", "y"}
	case "RSA":
		members = []string{"e", "kty", "n"}
	default:
		return "", fmt.Errorf("key type %v has no thumbprint here", jwk["kty"])
	}
	var b strings.Builder
	b.WriteByte('{')
	for i, m := range members {
		s, ok := jwk[m].(string)
		if !ok {
			return "", fmt.Errorf("key lacks %s", m)
		}
		if i > 0 {
			b.WriteByte(',')
		}
		q, _ := json.Marshal(s)
		fmt.Fprintf(&b, "%q:%s", m, q)
	}
	b.WriteByte('}')
	sum := sha256.Sum256([]byte(b.String()))
	return base64.RawURLEncoding.EncodeToString(sum[:]), nil
}

// Bound returns the keyslots of h that a Clevis token binds to pin (for
// Tang: to the same server URL), read from the tokens' JWE protected
// headers (luks.Token).
func Bound(h *luks.Header, pin Pin) []int {
	var slots []int
	for _, t := range h.TokenInfo {
		if t.Clevis == nil {
			continue
		}
		match := false
		t.Clevis.Walk(func(c luks.ClevisPin) {
			if c.Pin == pin.Name && (pin.Name != "tang" || slices.Contains(c.URLs, fmt.Sprint(pin.Config["url"]))) {
				match = true
			}
		})
		if match {
			slots = append(slots, t.Keyslots...)
		}
	}
	return slots
}
