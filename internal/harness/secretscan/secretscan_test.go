package secretscan

import (
	"encoding/base64"
	"encoding/hex"
	"strings"
	"testing"
)

func TestFind(t *testing.T) {
	s := []byte("correct horse battery staple")
	for _, c := range []struct {
		name  string
		hay   string
		found bool
	}{
		{"raw", "x correct horse battery staple y", true},
		{"hex", "key: " + hex.EncodeToString(s), true},
		{"HEX", "key: " + strings.ToUpper(hex.EncodeToString(s)), true},
		{"base64url inside a longer value", `{"k":"` + base64.RawURLEncoding.EncodeToString(append(append([]byte{}, s...), 0xff, 0xfe)) + `"}`, true},
		{"base64 after 3 other bytes", base64.StdEncoding.EncodeToString(append([]byte("??>"), s...)), true},
		{"base64url after 1 other byte", base64.RawURLEncoding.EncodeToString(append([]byte{0xfb}, s...)), true},
		{"base64 after 2 other bytes", base64.StdEncoding.EncodeToString(append([]byte{0xfb, 0xff}, s...)), true},
		{"absent", "nothing here " + base64.StdEncoding.EncodeToString([]byte("other words entirely")), false},
	} {
		if got := Find([]byte(c.hay), s); (got != "") != c.found {
			t.Errorf("%s: Find = %q, want found=%v", c.name, got, c.found)
		}
	}
	if got := Find([]byte("anything"), nil); got != "" {
		t.Errorf("an empty secret matched as %s", got)
	}
}
