package luks

import (
	"encoding/base64"
	"encoding/json"
	"slices"
	"sort"
	"strconv"
	"strings"
)

// Token is the secret-free description of a LUKS2 token: what unlocks
// which keyslots. Clevis bindings are read from the JWE protected header
// (RFC 7516), which names the pin and its public configuration; sealed
// blobs, keys and advertisements are never copied out.
type Token struct {
	ID       int    `json:"id"`
	Type     string `json:"type"` // clevis, systemd-tpm2, systemd-fido2, systemd-recovery, ...
	Keyslots []int  `json:"keyslots"`
	// Clevis is the binding of a "clevis" token.
	Clevis *ClevisPin `json:"clevis,omitempty"`
	// TPM2 is the policy of a "systemd-tpm2" token.
	TPM2 *TPM2Policy `json:"tpm2,omitempty"`
}

// ClevisPin is one Clevis pin: tang (with its server URLs), tpm2 (with its
// PCRs) or sss (a threshold over other pins).
type ClevisPin struct {
	Pin       string      `json:"pin"`
	URLs      []string    `json:"urls,omitempty"`      // tang
	PCRIDs    string      `json:"pcrIds,omitempty"`    // tpm2: "0,7"
	PCRBank   string      `json:"pcrBank,omitempty"`   // tpm2: "sha256"
	Threshold int         `json:"threshold,omitempty"` // sss: how many pins must agree
	Pins      []ClevisPin `json:"pins,omitempty"`      // sss: the pins it combines
}

// TPM2Policy is what a systemd-tpm2 token binds to.
type TPM2Policy struct {
	PCRs []int  `json:"pcrs"`
	Bank string `json:"bank,omitempty"`
	PIN  bool   `json:"pin"` // tpm2-pin: a PIN is asked besides the TPM
}

// maxClevisDepth bounds sss nesting (clevis itself nests sss in sss rarely).
const maxClevisDepth = 4

func parseToken(id int, raw json.RawMessage) Token {
	var t struct {
		Type     string        `json:"type"`
		Keyslots []json.Number `json:"keyslots"`
		JWE      struct {
			Protected string `json:"protected"`
		} `json:"jwe"`
		PCRs []int  `json:"tpm2-pcrs"`
		Bank string `json:"tpm2-pcr-bank"`
		PIN  bool   `json:"tpm2-pin"`
	}
	tok := Token{ID: id, Keyslots: []int{}}
	if json.Unmarshal(raw, &t) != nil {
		tok.Type = "?"
		return tok
	}
	tok.Type = t.Type
	for _, k := range t.Keyslots {
		if n, err := strconv.Atoi(k.String()); err == nil {
			tok.Keyslots = append(tok.Keyslots, n)
		}
	}
	sort.Ints(tok.Keyslots)
	switch t.Type {
	case "clevis":
		if p, ok := clevisHeader(t.JWE.Protected, 0); ok {
			tok.Clevis = &p
		}
	case "systemd-tpm2":
		tok.TPM2 = &TPM2Policy{PCRs: append([]int{}, t.PCRs...), Bank: t.Bank, PIN: t.PIN}
	}
	return tok
}

// clevisHeader decodes a base64url JWE protected header and the clevis
// pin configuration in it.
func clevisHeader(protected string, depth int) (ClevisPin, bool) {
	if depth > maxClevisDepth || len(protected) > 1<<20 {
		return ClevisPin{}, false
	}
	b, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(protected, "="))
	if err != nil {
		return ClevisPin{}, false
	}
	var h struct {
		Clevis struct {
			Pin  string `json:"pin"`
			Tang struct {
				URL string `json:"url"`
			} `json:"tang"`
			TPM2 struct {
				PCRIDs  json.RawMessage `json:"pcr_ids"`
				PCRBank string          `json:"pcr_bank"`
			} `json:"tpm2"`
			SSS struct {
				T   int      `json:"t"`
				JWE []string `json:"jwe"`
			} `json:"sss"`
		} `json:"clevis"`
	}
	if json.Unmarshal(b, &h) != nil || h.Clevis.Pin == "" {
		return ClevisPin{}, false
	}
	p := ClevisPin{Pin: h.Clevis.Pin}
	switch p.Pin {
	case "tang":
		if h.Clevis.Tang.URL != "" {
			p.URLs = []string{h.Clevis.Tang.URL}
		}
	case "tpm2":
		p.PCRBank = h.Clevis.TPM2.PCRBank
		var s string
		if json.Unmarshal(h.Clevis.TPM2.PCRIDs, &s) != nil {
			var ids []int
			if json.Unmarshal(h.Clevis.TPM2.PCRIDs, &ids) == nil {
				parts := make([]string, len(ids))
				for i, x := range ids {
					parts[i] = strconv.Itoa(x)
				}
				s = strings.Join(parts, ",")
			}
		}
		p.PCRIDs = s
	case "sss":
		p.Threshold = h.Clevis.SSS.T
		for i, c := range h.Clevis.SSS.JWE {
			if i >= 16 {
				break
			}
			// A compact JWE: the protected header is its first part.
			head, _, _ := strings.Cut(c, ".")
			if child, ok := clevisHeader(head, depth+1); ok {
				p.Pins = append(p.Pins, child)
			}
		}
	}
	return p, true
}

// String renders a pin for reports: "tang(http://tang.example)",
// "tpm2(pcr 7, sha256)", "sss(t=2: tang(...), tpm2(...))".
func (p ClevisPin) String() string {
	switch p.Pin {
	case "tang":
		return "tang(" + strings.Join(p.URLs, ", ") + ")"
	case "tpm2":
		s := "tpm2(pcr " + orNone(p.PCRIDs)
		if p.PCRBank != "" {
			s += ", " + p.PCRBank
		}
		return s + ")"
	case "sss":
		parts := make([]string, len(p.Pins))
		for i, c := range p.Pins {
			parts[i] = c.String()
		}
		return "sss(t=" + strconv.Itoa(p.Threshold) + ": " + strings.Join(parts, ", ") + ")"
	}
	return p.Pin
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}

// Walk calls f for p and every pin below it.
func (p ClevisPin) Walk(f func(ClevisPin)) {
	f(p)
	for _, c := range p.Pins {
		c.Walk(f)
	}
}

// TokenKeyslots returns the keyslots that tokens of the given types
// unlock (for example "clevis": the keyslots Clevis bound).
func (h *Header) TokenKeyslots(types ...string) map[int]bool {
	slots := map[int]bool{}
	for _, t := range h.TokenInfo {
		if slices.Contains(types, t.Type) {
			for _, ks := range t.Keyslots {
				slots[ks] = true
			}
		}
	}
	return slots
}
