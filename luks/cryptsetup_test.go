package luks

import (
	"strings"
	"testing"
)

// TestOffset: an explicit data offset goes to luksFormat as --offset (in
// 512-byte sectors), comes back from the command line, and Check compares
// it with the header's; without one nothing changes.
func TestOffset(t *testing.T) {
	p := Params{Cipher: "aes-xts-plain64", KeySize: 512, Hash: "sha256", PBKDF: "argon2id", Iterations: 4, MemoryKiB: 1024, Parallel: 1,
		SectorSize: 4096, UUID: "11111111-2222-4333-8444-555555555555", Offset: 32768}
	argv := FormatArgs(p, Stdin, "/dev/vg0/x")
	if got := strings.Join(argv, " "); !strings.Contains(got, " --uuid 11111111-2222-4333-8444-555555555555 --offset 32768 --key-file - /dev/vg0/x") {
		t.Errorf("got %q", got)
	}
	if back := ParamsFromArgs(argv); back != p {
		t.Errorf("ParamsFromArgs: got %+v, want %+v", back, p)
	}
	p.Offset = 0
	if got := strings.Join(FormatArgs(p, Stdin, "/dev/vg0/x"), " "); strings.Contains(got, "--offset") {
		t.Errorf("no offset asked for, got %q", got)
	}
	h := &Header{Version: 2, UUID: p.UUID, Cipher: p.Cipher, KeySize: 512, SectorSize: 4096, DataOffset: 16 << 20,
		Keyslots: []Keyslot{{ID: 0, KDF: "argon2id", Time: 4, MemoryKiB: 1024}}}
	if err := Check(h, p, 1); err != nil {
		t.Errorf("without an offset: %v", err)
	}
	p.Offset = 32768
	if err := Check(h, p, 1); err != nil {
		t.Errorf("matching offset: %v", err)
	}
	p.Offset = 4096
	if err := Check(h, p, 1); err == nil || !strings.Contains(err.Error(), "data offset is 16777216, want 2097152") {
		t.Errorf("wrong offset: got %v", err)
	}
}
