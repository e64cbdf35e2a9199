package luks

import (
	"bytes"
	"reflect"
	"strings"
	"testing"
	"unsafe"

	luksgo "github.com/anatol/luks.go"
)

var testParams = Params{Cipher: "aes-xts-plain64", KeySize: 512, Hash: "sha256",
	KDF:        KDF{PBKDF: "argon2id", Iterations: 4, MemoryKiB: 1024, Parallel: 1},
	SectorSize: 4096, UUID: "11111111-2222-4333-8444-555555555555", Offset: 32768}

// TestOffset: an explicit data offset goes to luksFormat as --offset (in
// 512-byte sectors), and CheckVolume compares it with the header's;
// without one nothing changes.
func TestOffset(t *testing.T) {
	p := testParams
	if got := strings.Join(Format{Device: "/dev/vg0/x", Params: p}.Argv(), " "); !strings.Contains(got, " --uuid 11111111-2222-4333-8444-555555555555 --offset 32768 --key-file - /dev/vg0/x") {
		t.Errorf("got %q", got)
	}
	p.Offset = 0
	if got := strings.Join(Format{Device: "/dev/vg0/x", Params: p}.Argv(), " "); strings.Contains(got, "--offset") {
		t.Errorf("no offset asked for, got %q", got)
	}
	h := &Header{Version: 2, UUID: p.UUID, Cipher: p.Cipher, KeySize: 512, SectorSize: 4096, DataOffset: 16 << 20,
		Keyslots: []Keyslot{{ID: 0, KDF: "argon2id", Time: 4, MemoryKiB: 1024}}}
	if err := CheckVolume(h, p); err != nil {
		t.Errorf("without an offset: %v", err)
	}
	p.Offset = 32768
	if err := CheckVolume(h, p); err != nil {
		t.Errorf("matching offset: %v", err)
	}
	p.Offset = 4096
	if err := CheckVolume(h, p); err == nil || !strings.Contains(err.Error(), "data offset is 16777216, want 2097152") {
		t.Errorf("wrong offset: got %v", err)
	}
}

// Every operation is rendered in one place; a key is a file or a pipe.
func TestArgv(t *testing.T) {
	for _, tt := range []struct {
		op   Op
		want string
	}{
		{Format{Device: "/dev/vg0/root", Params: testParams, Key: Key{Secret: "passphrase"}},
			"cryptsetup luksFormat --batch-mode --type luks2 --cipher aes-xts-plain64 --key-size 512 --hash sha256 --pbkdf argon2id --pbkdf-force-iterations 4 --pbkdf-memory 1024 --pbkdf-parallel 1 --sector-size 4096 --uuid 11111111-2222-4333-8444-555555555555 --offset 32768 --key-file - /dev/vg0/root"},
		{Format{Device: "/dev/vg0/var", Params: Params{Cipher: "aes-xts-plain64", KeySize: 512, Hash: "sha256", KDF: KDF{PBKDF: "pbkdf2", Iterations: 1000}, SectorSize: 4096, Label: "var"}, Key: Key{File: "/target/etc/keys/var.key"}},
			"cryptsetup luksFormat --batch-mode --type luks2 --cipher aes-xts-plain64 --key-size 512 --hash sha256 --pbkdf pbkdf2 --pbkdf-force-iterations 1000 --sector-size 4096 --label var --key-file /target/etc/keys/var.key /dev/vg0/var"},
		{AddKey{Device: "/dev/vg0/var", KDF: KDF{PBKDF: "argon2id", IterTimeMs: 2000, MemoryKiB: 1048576, Parallel: 4}, Key: Key{File: "/k"}, NewKey: Key{Secret: "recovery-key"}},
			"cryptsetup luksAddKey --batch-mode --pbkdf argon2id --iter-time 2000 --pbkdf-memory 1048576 --pbkdf-parallel 4 --key-file /k /dev/vg0/var /proc/self/fd/3"},
		{Open{Device: "/dev/vg0/var", Name: "var_crypt", Key: Key{Secret: "passphrase"}, Discard: true},
			"cryptsetup open --type luks2 --key-file - --allow-discards /dev/vg0/var var_crypt"},
		{OpenPlain{Device: "/dev/vg0/swap", Name: "swap_crypt", Cipher: "aes-xts-plain64", KeySize: 512, SectorSize: 4096},
			"cryptsetup open --type plain --cipher aes-xts-plain64 --key-size 512 --sector-size 4096 --key-file /dev/urandom /dev/vg0/swap swap_crypt"},
		{Close{Name: "var_crypt"}, "cryptsetup close var_crypt"},
		{Resize{Name: "var_crypt", Key: Key{File: "/k"}}, "cryptsetup resize --key-file /k var_crypt"},
		{HeaderBackup{Device: "/dev/vg0/var", File: "/b"}, "cryptsetup luksHeaderBackup --batch-mode /dev/vg0/var --header-backup-file /b"},
		{TestKey{Device: "/dev/vg0/var"}, "cryptsetup open --test-passphrase --key-file - /dev/vg0/var"},
	} {
		if got := strings.Join(tt.op.Argv(), " "); got != tt.want {
			t.Errorf("%T:\ngot  %s\nwant %s", tt.op, got, tt.want)
		}
	}
}

// Each keyslot is checked against its own KDF: a random-key slot with
// pbkdf2 and a passphrase slot with argon2id on one volume are both right.
func TestCheckKeyslot(t *testing.T) {
	h := &Header{Keyslots: []Keyslot{
		{ID: 0, KDF: "pbkdf2", Iterations: 1000},
		{ID: 1, KDF: "argon2id", Time: 4, MemoryKiB: 1024},
	}}
	argon := KDF{PBKDF: "argon2id", Iterations: 4, MemoryKiB: 1024, Parallel: 1}
	for _, tt := range []struct {
		id   int
		k    KDF
		want string
	}{
		{0, KDF{PBKDF: "pbkdf2", Iterations: 1000}, ""},
		{1, argon, ""},
		{0, argon, "keyslot 0 does not match the plan: PBKDF is pbkdf2, want argon2id"},
		{1, KDF{PBKDF: "argon2id", Iterations: 5, MemoryKiB: 512}, "argon2 time cost is 4, want 5; argon2 memory is 1024 KiB, more than the 512 planned"},
		{0, KDF{PBKDF: "pbkdf2", Iterations: 2000}, "pbkdf2 iterations are 1000, want 2000"},
		{2, argon, "no active keyslot 2"},
	} {
		err := CheckKeyslot(h, tt.id, tt.k)
		if (tt.want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tt.want)) {
			t.Errorf("slot %d %+v: got %v, want %q", tt.id, tt.k, err, tt.want)
		}
	}
}

// A key-file keyslot gets argon2id at its least cost, never more than the
// passphrase slots; a layout that chose pbkdf2 keeps it.
func TestKeyFileKDF(t *testing.T) {
	for _, tt := range []struct{ pass, want KDF }{
		{KDF{PBKDF: "argon2id", IterTimeMs: 2000, MemoryKiB: 1 << 20, Parallel: 4}, KDF{PBKDF: "argon2id", Iterations: 4, MemoryKiB: 65536, Parallel: 1}},
		{KDF{PBKDF: "argon2i", Iterations: 4, MemoryKiB: 1024, Parallel: 1}, KDF{PBKDF: "argon2id", Iterations: 4, MemoryKiB: 1024, Parallel: 1}},
		{KDF{PBKDF: "pbkdf2", IterTimeMs: 2000}, KDF{PBKDF: "pbkdf2", IterTimeMs: 2000}},
	} {
		if got := KeyFileKDF(tt.pass); got != tt.want {
			t.Errorf("KeyFileKDF(%+v) = %+v, want %+v", tt.pass, got, tt.want)
		}
	}
}

// Unseal zeroes the volume key luks.go returns; the field it reaches by
// reflection must exist in the pinned luks.go, or the wipe silently does
// nothing: this test fails first.
func TestWipeVolumeKey(t *testing.T) {
	v := &luksgo.Volume{}
	f := reflect.ValueOf(v).Elem().FieldByName("key")
	if !f.IsValid() {
		t.Fatal("luks.go's Volume has no key field any more: wipeVolumeKey wipes nothing")
	}
	key := []byte("0123456789abcdef0123456789abcdef")
	reflect.NewAt(f.Type(), unsafe.Pointer(f.UnsafeAddr())).Elem().Set(reflect.ValueOf(key))
	if !wipeVolumeKey(v) {
		t.Fatal("wipeVolumeKey reported the field missing")
	}
	if !bytes.Equal(key, make([]byte, len(key))) {
		t.Fatalf("volume key after the wipe: %q, want zeros", key)
	}
	if wipeVolumeKey(nil) {
		t.Error("a nil volume reported wiped")
	}
}
