// Package tangtest serves a recorded Tang advertisement over HTTP for unit
// tests of code that checks a server's pinned thumbprint before binding.
package tangtest

import (
	_ "embed"
	"net/http"
	"net/http/httptest"
	"testing"
)

// adv is a real tangd advertisement (a JWS over its JWK set), the same as
// internal/doors/clevis/testdata/adv.json.
//
//go:embed adv.json
var adv []byte

// Thumbprint is the S256 thumbprint of adv's signing key.
const Thumbprint = "voU6475c-6TIakg7U7LoBHrS9ESNwU98S-1Gr2IDA2k"

// Server answers every request with the advertisement and returns its
// URL; it is closed when the test ends.
func Server(t testing.TB) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.Write(adv) }))
	t.Cleanup(srv.Close)
	return srv.URL
}
