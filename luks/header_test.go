package luks

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// gunzipFixture writes testdata/NAME.gz to a temp file and returns its path.
// The fixtures are real cryptsetup 2.6 headers with the keyslot areas zeroed.
func gunzipFixture(t *testing.T, name string) string {
	t.Helper()
	f, err := os.Open(filepath.Join("testdata", name+".gz"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestReadHeader(t *testing.T) {
	tests := []struct {
		fixture string
		want    Header
	}{
		{"luks2.hdr", Header{
			Version: 2, UUID: "11111111-2222-4333-8444-555555555555", Label: "testlabel",
			Cipher: "aes-xts-plain64", KeySize: 512, SectorSize: 4096, DataOffset: 2 << 20,
			Keyslots: []Keyslot{
				{ID: 0, KDF: "argon2id", Time: 4, MemoryKiB: 32768, Parallel: 1, KeySize: 512},
				{ID: 1, KDF: "pbkdf2", Hash: "sha512", Iterations: 1000, KeySize: 512},
			},
		}},
		{"luks1.hdr", Header{
			Version: 1, UUID: "66666666-7777-4888-9999-000000000000",
			Cipher: "aes-cbc-essiv:sha256", KeySize: 256, SectorSize: 512, DataOffset: 4096 * 512,
			Keyslots: []Keyslot{{ID: 0, KDF: "pbkdf2", Hash: "sha1", Iterations: 1000, KeySize: 256}},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.fixture, func(t *testing.T) {
			got, err := ReadHeader(gunzipFixture(t, tt.fixture))
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(*got, tt.want) {
				g, _ := json.Marshal(got)
				w, _ := json.Marshal(tt.want)
				t.Errorf("got  %s\nwant %s", g, w)
			}
		})
	}
}

func TestReadHeaderNotLUKS(t *testing.T) {
	p := filepath.Join(t.TempDir(), "plain")
	if err := os.WriteFile(p, make([]byte, 8192), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := ReadHeader(p)
	if err == nil || !bytes.Contains([]byte(err.Error()), []byte("no LUKS header")) {
		t.Fatalf("got %v, want an error naming the missing LUKS header", err)
	}
}

func TestReadHeaderCorruptChecksum(t *testing.T) {
	p := gunzipFixture(t, "luks2.hdr")
	b, _ := os.ReadFile(p)
	b[4096+10] ^= 0xff // inside the checksummed JSON area
	os.WriteFile(p, b, 0o600)
	if _, err := ReadHeader(p); err == nil {
		t.Fatal("a header with a bad checksum was accepted")
	}
}

// addHeaderSeeds seeds a fuzz target with the real LUKS1 and LUKS2 headers.
func addHeaderSeeds(f *testing.F) {
	for _, name := range []string{"luks1.hdr", "luks2.hdr"} {
		zf, err := os.Open(filepath.Join("testdata", name+".gz"))
		if err != nil {
			f.Fatal(err)
		}
		zr, _ := gzip.NewReader(zf)
		b, _ := io.ReadAll(zr)
		zf.Close()
		f.Add(b[:32768])
	}
}

func FuzzParse(f *testing.F) {
	addHeaderSeeds(f)
	f.Fuzz(func(t *testing.T, b []byte) {
		_, _ = Parse(bytes.NewReader(b))
	})
}

// TestThirdPartyPanicGuarded: a LUKS2 header with a right checksum but no
// NUL after its JSON makes github.com/anatol/luks.go panic (it slices with
// bytes.IndexByte(...) == -1). Our parse refuses it first, and the guard
// around luks.go turns its panic into an error.
func TestThirdPartyPanicGuarded(t *testing.T) {
	b := make([]byte, 16384)
	copy(b, "LUKS\xba\xbe")
	b[7] = 2
	binary.BigEndian.PutUint64(b[8:], 16384)
	copy(b[72:], "sha256")
	copy(b[168:], "0b9e3c1e-1d8e-4a55-9b3e-3d2f0c1a2b3c")
	for i := 4096; i < len(b); i++ {
		b[i] = ' '
	}
	sum := sha256.Sum256(b)
	copy(b[448:], sum[:])
	p := filepath.Join(t.TempDir(), "hdr")
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadHeader(p); err == nil || !strings.Contains(err.Error(), "not terminated by a NUL") {
		t.Errorf("ReadHeader: got %v, want our parse to refuse the header", err)
	}
	if _, _, err := thirdParty(p); err == nil || !strings.Contains(err.Error(), "gave up") {
		t.Errorf("luks.go on the header: got %v, want its panic turned into an error", err)
	}
}

// FuzzReadHeader drives the whole header path, the third-party parser
// included (through ReadHeaderFile and its guard), with arbitrary files.
func FuzzReadHeader(f *testing.F) {
	addHeaderSeeds(f)
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) > 1<<20 {
			return
		}
		p := filepath.Join(dir, "hdr")
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		_, _ = ReadHeader(p)
	})
}
