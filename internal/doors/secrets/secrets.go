// Package secrets obtains the secrets apply and migrate need, from the
// sources an admin trusts: a terminal without echo, a file, or an inherited
// file descriptor; and generates recovery keys. Secrets are []byte, never
// strings in logs, kept in locked memory outside the Go heap (memory.go),
// and wiped by Wipe when done; the process is made non-dumpable first.
package secrets

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"golang.org/x/term"

	"github.com/cryptshift/cryptshift/internal/doors/files"
)

// MaxLen bounds what is read from a file or descriptor: cryptsetup's key
// files may be 8 MiB, a passphrase never needs that much.
const MaxLen = 8 << 20

// trimNewlines drops trailing CR/LF: a passphrase file written by an editor
// or echo ends in a newline that is not part of the passphrase (what you
// type at the boot prompt has none).
func trimNewlines(b []byte) []byte { return bytes.TrimRight(b, "\r\n") }

// FromFile reads a passphrase from a file (trailing newlines dropped). The
// file must not be readable or writable by group or others; its mode is
// checked on the opened file, so it cannot be swapped in between.
func FromFile(path string) ([]byte, error) {
	return fromFile(path, "passphrase file", "600", true)
}

// KeyFromFile reads a binary key file (random bytes: nothing trimmed)
// into locked memory, with FromFile's checks: group and others must have
// no access (checked on the opened file), at most MaxLen bytes, not empty.
func KeyFromFile(path string) ([]byte, error) {
	return fromFile(path, "key file", "400", false)
}

func fromFile(path, what, mode string, trim bool) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("cannot read %s: %w", what, err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("cannot read %s: %w", what, err)
	}
	if st.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("cannot use %s %s: its mode %04o lets other users read it; chmod %s it", what, path, st.Mode().Perm(), mode)
	}
	return readAll(f, what+" "+path, trim)
}

// FromFD reads a passphrase from an inherited descriptor until EOF.
func FromFD(fd int) ([]byte, error) {
	f := os.NewFile(uintptr(fd), fmt.Sprintf("fd %d", fd))
	if f == nil {
		return nil, fmt.Errorf("cannot read passphrase from fd %d: not open", fd)
	}
	defer f.Close()
	return readAll(f, fmt.Sprintf("fd %d", fd), true)
}

// readAll reads r into locked memory (alloc), growing the buffer by
// doubling and wiping every smaller copy, up to MaxLen bytes; trim drops
// trailing newlines (passphrases, not binary keys).
func readAll(r io.Reader, what string, trim bool) ([]byte, error) {
	b, err := alloc(4096)
	if err != nil {
		return nil, err
	}
	b = b[:0]
	for {
		if len(b) == cap(b) {
			if cap(b) > MaxLen {
				release(b)
				return nil, fmt.Errorf("cannot use %s: longer than %d bytes", what, MaxLen)
			}
			bigger, err := alloc(min(2*cap(b), MaxLen+1))
			if err != nil {
				release(b)
				return nil, err
			}
			bigger = bigger[:copy(bigger, b)]
			release(b)
			b = bigger
		}
		n, err := r.Read(b[len(b):cap(b)])
		b = b[:len(b)+n]
		if err == io.EOF {
			break
		}
		if err != nil {
			release(b)
			return nil, fmt.Errorf("cannot read %s: %w", what, err)
		}
	}
	if len(b) > MaxLen {
		release(b)
		return nil, fmt.Errorf("cannot use %s: longer than %d bytes", what, MaxLen)
	}
	if trim {
		full := len(b)
		b = trimNewlines(b)
		Wipe(b[len(b):full])
	}
	if len(b) == 0 {
		release(b)
		return nil, fmt.Errorf("cannot use %s: it is empty", what)
	}
	return b, nil
}

// locked copies a secret into locked memory and wipes the original.
func locked(src []byte) ([]byte, error) {
	b, err := alloc(len(src))
	if err != nil {
		Wipe(src)
		return nil, err
	}
	copy(b, src)
	Wipe(src)
	return b, nil
}

// ErrNoTerminal is returned when a prompt is needed but there is no tty.
var ErrNoTerminal = errors.New("no terminal to ask on; pass --passphrase-file FILE or --passphrase-fd N")

// Prompt asks on the controlling terminal without echo. With confirm it
// asks twice and insists on equal answers.
func Prompt(prompt string, confirm bool) ([]byte, error) {
	tty, err := os.OpenFile("/dev/tty", os.O_RDWR, 0)
	if err != nil {
		return nil, ErrNoTerminal
	}
	defer tty.Close()
	fd := int(tty.Fd())
	if !term.IsTerminal(fd) {
		return nil, ErrNoTerminal
	}
	if err := Harden(); err != nil {
		return nil, err
	}
	for {
		fmt.Fprint(tty, prompt)
		a, err := term.ReadPassword(fd)
		fmt.Fprintln(tty)
		if err != nil {
			return nil, fmt.Errorf("cannot read passphrase: %w", err)
		}
		if len(a) == 0 {
			fmt.Fprintln(tty, "The passphrase is empty; try again.")
			continue
		}
		if !confirm {
			return locked(a)
		}
		fmt.Fprint(tty, "Repeat it: ")
		b, err := term.ReadPassword(fd)
		fmt.Fprintln(tty)
		if err != nil {
			return nil, fmt.Errorf("cannot read passphrase: %w", err)
		}
		if bytes.Equal(a, b) {
			Wipe(b)
			return locked(a)
		}
		Wipe(a)
		Wipe(b)
		fmt.Fprintln(tty, "The passphrases differ; try again.")
	}
}

// Wipe overwrites a secret in memory.
func Wipe(b []byte) {
	for i := range b {
		b[i] = 0
	}
}

// Crockford's base32 alphabet: no I, L, O or U to misread or mistype.
const recoveryAlphabet = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"

// NewRecoveryKey returns a recovery key of 8 groups of 5 characters
// (200 bits from the kernel's CSPRNG), e.g. 7K2QH-...; easy to write down.
// It lives in locked memory, as do the random bytes it is made from.
func NewRecoveryKey() ([]byte, error) {
	raw, err := lockedRandom(40, "a recovery key")
	if err != nil {
		return nil, err
	}
	defer release(raw)
	k, err := alloc(len(raw) + len(raw)/5 - 1)
	if err != nil {
		return nil, err
	}
	k = k[:0]
	for i, v := range raw {
		if i > 0 && i%5 == 0 {
			k = append(k, '-')
		}
		k = append(k, recoveryAlphabet[int(v)%32]) // 256 is a multiple of 32: no bias
	}
	return k, nil
}

// NewKey returns a random 256-bit key as base64 text (44 characters:
// qemu's secret objects and libvirt's secret store take text), in locked
// memory, as are the random bytes it is made from. Wipe it after use.
func NewKey() ([]byte, error) {
	raw, err := lockedRandom(32, "a key")
	if err != nil {
		return nil, err
	}
	defer release(raw)
	k, err := alloc(base64.StdEncoding.EncodedLen(len(raw)))
	if err != nil {
		return nil, err
	}
	base64.StdEncoding.Encode(k, raw)
	return k, nil
}

// lockedRandom returns n bytes from the kernel's CSPRNG in locked memory
// (release them after use).
func lockedRandom(n int, what string) ([]byte, error) {
	raw, err := alloc(n)
	if err != nil {
		return nil, err
	}
	if _, err := rand.Read(raw); err != nil {
		release(raw)
		return nil, fmt.Errorf("cannot generate %s: %w", what, err)
	}
	return raw, nil
}

// Locked copies a secret that arrived in ordinary memory (a value read
// back from libvirtd) into locked memory and wipes the original.
func Locked(src []byte) ([]byte, error) { return locked(src) }

// WriteNew writes a secret (and a newline) to a new file with mode 0400,
// refusing to overwrite one. The file appears whole or not at all: it is
// written to a temporary file, synced, linked into place and the
// directory synced, so a crash never leaves half a recovery key behind.
func WriteNew(path string, secret []byte) error {
	if _, err := os.Lstat(path); err == nil {
		return fmt.Errorf("cannot write %s: %w", path, os.ErrExist)
	}
	line, err := alloc(len(secret) + 1)
	if err != nil {
		return err
	}
	defer release(line)
	copy(line, secret)
	line[len(secret)] = '\n'
	return files.CreateAtomic(path, line, 0o400)
}

// KeyFile writes n random bytes to path, mode 0400, in a directory of mode
// 0700. It writes a temporary file, syncs it and renames it into place, so
// the key file either exists whole or not at all: a crash can never leave
// a half-written key that a LUKS keyslot was made from.
func KeyFile(path string, n int) error {
	if n <= 0 {
		return fmt.Errorf("cannot create key file %s: size %d", path, n)
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("cannot create key directory %s: %w", dir, err)
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return fmt.Errorf("cannot restrict key directory %s: %w", dir, err)
	}
	if st, err := os.Stat(path); err == nil && st.Size() == int64(n) && st.Mode().Perm() == 0o400 {
		return nil // made by an earlier, interrupted run: keep it, a keyslot may use it
	}
	// The key lives in locked, undumpable memory, only as long as needed.
	key, err := alloc(n)
	if err != nil {
		return fmt.Errorf("cannot generate key file %s: %w", path, err)
	}
	defer release(key)
	if _, err := rand.Read(key); err != nil {
		return fmt.Errorf("cannot generate key file %s: %w", path, err)
	}
	return files.AtomicWrite(path, key, 0o400)
}
