package secrets

import (
	"bytes"
	"encoding/base64"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

func TestFromFile(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		content string
		mode    os.FileMode
		want    string
		err     string
	}{
		{"s3cret pass\n", 0o600, "s3cret pass", ""},
		{"s3cret\r\n\n", 0o400, "s3cret", ""},
		{"two\nlines\n", 0o600, "two\nlines", ""},
		{"\n", 0o600, "", "empty"},
		{"x", 0o644, "", "chmod 600"},
	}
	for i, tt := range tests {
		p := filepath.Join(dir, string(rune('a'+i)))
		os.WriteFile(p, []byte(tt.content), tt.mode)
		os.Chmod(p, tt.mode)
		got, err := FromFile(p)
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("%q: got %v, want an error with %q", tt.content, err, tt.err)
			}
			continue
		}
		if err != nil || string(got) != tt.want {
			t.Errorf("%q: got %q, %v; want %q", tt.content, got, err, tt.want)
		}
	}
}

func TestRecoveryKey(t *testing.T) {
	seen := map[string]bool{}
	re := regexp.MustCompile(`^[0-9A-HJKMNP-TV-Z]{5}(-[0-9A-HJKMNP-TV-Z]{5}){7}$`)
	for i := 0; i < 100; i++ {
		k, err := NewRecoveryKey()
		if err != nil {
			t.Fatal(err)
		}
		if !re.Match(k) {
			t.Fatalf("got %q", k)
		}
		if seen[string(k)] {
			t.Fatal("a recovery key repeated")
		}
		seen[string(k)] = true
	}
}

func TestWriteNewRefusesOverwrite(t *testing.T) {
	p := filepath.Join(t.TempDir(), "rk")
	if err := WriteNew(p, []byte("K")); err != nil {
		t.Fatal(err)
	}
	if st, _ := os.Stat(p); st.Mode().Perm() != 0o400 {
		t.Errorf("mode %v", st.Mode())
	}
	if err := WriteNew(p, []byte("K2")); err == nil {
		t.Fatal("overwrote an existing secret file")
	}
}

// WriteNew used to create the file and then write into it: a crash (or a
// reader) in between saw an empty or half-written recovery key. Now the
// file appears complete or not at all: a reader polling it while it is
// written never sees a part of it, and no temporary file is left.
func TestWriteNewIsAtomic(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "rk")
	secret := bytes.Repeat([]byte("K"), 4<<20)
	done := make(chan struct{})
	partial := make(chan int64, 1)
	go func() {
		defer close(partial)
		for {
			select {
			case <-done:
				return
			default:
			}
			if st, err := os.Stat(p); err == nil && st.Size() != int64(len(secret))+1 {
				partial <- st.Size()
				return
			}
		}
	}()
	err := WriteNew(p, secret)
	close(done)
	if err != nil {
		t.Fatal(err)
	}
	if n, ok := <-partial; ok {
		t.Fatalf("a reader saw the key file with %d of %d bytes", n, len(secret)+1)
	}
	if left, _ := filepath.Glob(filepath.Join(dir, ".*")); len(left) != 0 {
		t.Errorf("temporary files left: %v", left)
	}
	if err := WriteNew(p, []byte("K2")); !errors.Is(err, os.ErrExist) {
		t.Errorf("second write: %v", err)
	}
}

func TestNewKey(t *testing.T) {
	a, err := NewKey()
	if err != nil {
		t.Fatal(err)
	}
	b, err := NewKey()
	if err != nil {
		t.Fatal(err)
	}
	raw, err := base64.StdEncoding.DecodeString(string(a))
	if err != nil || len(a) != 44 || len(raw) != 32 {
		t.Fatalf("key %d characters, %d bytes (%v), want 44 characters of base64 for 32 bytes", len(a), len(raw), err)
	}
	if string(a) == string(b) {
		t.Fatal("two keys are equal")
	}
	// Locked copies into locked memory and wipes the original.
	src := []byte("value read from libvirtd")
	k, err := Locked(src)
	if err != nil || string(k) != "value read from libvirtd" || string(src) != string(make([]byte, len(src))) {
		t.Fatalf("Locked: %q %v, original %q", k, err, src)
	}
}

func TestKeyFile(t *testing.T) {
	p := filepath.Join(t.TempDir(), "keys", "var.key")
	if err := KeyFile(p, 4096); err != nil {
		t.Fatal(err)
	}
	st, _ := os.Stat(p)
	dst, _ := os.Stat(filepath.Dir(p))
	if st.Size() != 4096 || st.Mode().Perm() != 0o400 || dst.Mode().Perm() != 0o700 {
		t.Fatalf("size %d mode %v dir %v", st.Size(), st.Mode(), dst.Mode())
	}
	first, _ := os.ReadFile(p)
	if err := KeyFile(p, 4096); err != nil { // a rerun keeps the key a keyslot may use
		t.Fatal(err)
	}
	again, _ := os.ReadFile(p)
	if string(first) != string(again) {
		t.Fatal("a rerun replaced an existing key file")
	}
	if tmp, _ := filepath.Glob(filepath.Join(filepath.Dir(p), ".*tmp*")); len(tmp) != 0 {
		t.Fatalf("temporary files left: %v", tmp)
	}
}

// A key file is random bytes: read whole (a trailing newline is part of
// the key), into locked memory, and refused when others may read it.
func TestKeyFromFile(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "k.key")
	want := []byte("\x00\x01binary\r\n")
	if err := os.WriteFile(p, want, 0o400); err != nil {
		t.Fatal(err)
	}
	got, err := KeyFromFile(p)
	if err != nil || string(got) != string(want) {
		t.Fatalf("got %q, %v; want %q", got, err, want)
	}
	Wipe(got)
	os.Chmod(p, 0o644)
	if _, err := KeyFromFile(p); err == nil || !strings.Contains(err.Error(), "cannot use key file "+p+": its mode 0644 lets other users read it") {
		t.Fatalf("mode 0644: got %v", err)
	}
	empty := filepath.Join(dir, "empty")
	os.WriteFile(empty, nil, 0o400)
	if _, err := KeyFromFile(empty); err == nil || !strings.Contains(err.Error(), "is empty") {
		t.Fatalf("empty key file: got %v", err)
	}
}
