package luks

import (
	"encoding/base64"
	"encoding/json"
	"strings"
	"testing"
)

func b64(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }

// TestParseTokens decodes what clevis luks bind and systemd-cryptenroll
// write: the pin and its public configuration, never the sealed material.
func TestParseTokens(t *testing.T) {
	tang := b64(`{"alg":"ECDH-ES","clevis":{"pin":"tang","tang":{"adv":{"keys":[]},"url":"http://tang.example:7500"}},"enc":"A256GCM","kid":"x"}`)
	tpm := b64(`{"alg":"dir","clevis":{"pin":"tpm2","tpm2":{"hash":"sha256","jwk_priv":"SECRET","jwk_pub":"PUB","key":"ecc","pcr_bank":"sha256","pcr_ids":"0,7"}},"enc":"A256GCM"}`)
	sss := b64(`{"alg":"dir","clevis":{"pin":"sss","sss":{"t":2,"jwe":["` + tang + `.x.y.z.w","` + tpm + `.a.b.c.d"]}},"enc":"A256GCM"}`)
	tests := []struct {
		raw, want string
	}{
		{`{"type":"clevis","keyslots":["1"],"jwe":{"protected":"` + tang + `","ciphertext":"C"}}`, "tang(http://tang.example:7500)"},
		{`{"type":"clevis","keyslots":["2"],"jwe":{"protected":"` + tpm + `"}}`, "tpm2(pcr 0,7, sha256)"},
		{`{"type":"clevis","keyslots":["3"],"jwe":{"protected":"` + sss + `"}}`, "sss(t=2: tang(http://tang.example:7500), tpm2(pcr 0,7, sha256))"},
	}
	for _, tt := range tests {
		tok := parseToken(0, json.RawMessage(tt.raw))
		if tok.Clevis == nil || tok.Clevis.String() != tt.want || len(tok.Keyslots) != 1 {
			t.Errorf("got %+v, want %s", tok, tt.want)
		}
		b, _ := json.Marshal(tok)
		if s := string(b); strings.Contains(s, "SECRET") || strings.Contains(s, "ciphertext") {
			t.Errorf("token metadata carries secret material: %s", s)
		}
	}
	tok := parseToken(1, json.RawMessage(`{"type":"systemd-tpm2","keyslots":["1"],"tpm2-blob":"B","tpm2-pcrs":[7],"tpm2-pcr-bank":"sha256","tpm2-pin":false}`))
	if tok.TPM2 == nil || tok.TPM2.PIN || len(tok.TPM2.PCRs) != 1 {
		t.Errorf("systemd-tpm2: got %+v", tok)
	}
	if tok := parseToken(2, json.RawMessage(`{"type":"clevis","jwe":{"protected":"!!"}}`)); tok.Clevis != nil {
		t.Errorf("a malformed header gave %+v", tok.Clevis)
	}
}
