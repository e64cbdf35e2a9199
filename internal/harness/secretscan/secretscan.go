// Package secretscan finds a secret in bytes a test collected (output,
// journals, command lines, LUKS token JSON) in every encoding a leak
// could plausibly take: raw, hex (both cases), and base64 in its standard
// and URL alphabets (padded or not: the padding is not looked for). A JWE carries base64url without
// padding; cryptsetup dumps keys as hex.
package secretscan

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"strings"
)

// minLen: shorter forms match by chance in any large output.
const minLen = 8

// Forms are the encodings of secret that Find looks for, by name.
func Forms(secret []byte) map[string][]byte {
	h := hex.EncodeToString(secret)
	return map[string][]byte{
		"raw":       secret,
		"hex":       []byte(h),
		"HEX":       []byte(strings.ToUpper(h)),
		"base64":    []byte(base64.StdEncoding.EncodeToString(secret)),
		"base64url": []byte(base64.URLEncoding.EncodeToString(secret)),
	}
}

// Find returns the name of the first form of secret found in hay, or "".
// In base64 the secret may start at any byte offset of a longer encoded
// value: the characters that encode its whole 3-byte groups alone are
// looked for, for each of the three alignments.
func Find(hay, secret []byte) string {
	if len(secret) == 0 {
		return ""
	}
	for _, name := range []string{"raw", "hex", "HEX"} {
		if form := Forms(secret)[name]; len(form) >= minLen && bytes.Contains(hay, form) {
			return name
		}
	}
	for skip := 0; skip < 3 && skip < len(secret); skip++ {
		part := secret[skip:]
		for _, name := range []string{"base64", "base64url"} {
			form := Forms(part)[name][:len(part)/3*4]
			if len(form) >= minLen && bytes.Contains(hay, form) {
				return name
			}
		}
	}
	return ""
}
