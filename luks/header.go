// Package luks reads LUKS headers and drives cryptsetup.
//
// Header reading never needs a secret: ReadHeader validates the header with
// github.com/anatol/luks.go (magic, version, LUKS2 checksum, active keyslots)
// and then decodes the parameters a reviewer cares about (cipher, key size,
// PBKDF and its cost, sector size, label, flags) from the same bytes. Keyslot
// material, salts and digests are never copied out.
package luks

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strconv"

	luksgo "github.com/anatol/luks.go"
)

// Header is the secret-free metadata of a LUKS1 or LUKS2 header.
type Header struct {
	Version    int       `json:"version"`
	UUID       string    `json:"uuid"`
	Label      string    `json:"label,omitempty"`
	Cipher     string    `json:"cipher"`     // e.g. aes-xts-plain64
	KeySize    int       `json:"keySize"`    // volume key, bits
	SectorSize int       `json:"sectorSize"` // encryption sector, bytes
	DataOffset uint64    `json:"dataOffset"` // bytes from the start of the device
	Flags      []string  `json:"flags,omitempty"`
	Keyslots   []Keyslot `json:"keyslots"`
	Tokens     []string  `json:"tokens,omitempty"` // token types, e.g. systemd-tpm2
	// TokenInfo says what each token unlocks and how (token.go).
	TokenInfo []Token `json:"tokenInfo,omitempty"`
}

// Keyslot describes one active keyslot: how its key is stretched.
type Keyslot struct {
	ID         int    `json:"id"`
	KDF        string `json:"kdf"`                  // pbkdf2, argon2i, argon2id
	Hash       string `json:"hash,omitempty"`       // pbkdf2 hash
	Iterations int    `json:"iterations,omitempty"` // pbkdf2 iterations
	Time       int    `json:"time,omitempty"`       // argon2 time cost
	MemoryKiB  int    `json:"memoryKiB,omitempty"`  // argon2 memory cost
	Parallel   int    `json:"parallel,omitempty"`   // argon2 threads
	KeySize    int    `json:"keySize"`              // bits
}

// ErrNotLUKS is returned for devices that carry no LUKS magic.
var ErrNotLUKS = errors.New("no LUKS header")

var magic = []byte("LUKS\xba\xbe")

// IsLUKS reports whether the first bytes carry the LUKS magic.
// ErrMalformed marks a header that is not what cryptsetup writes (a
// crafted one): readers refuse it rather than guess.
var ErrMalformed = errors.New("invalid LUKS2 header")

func IsLUKS(first []byte) bool { return len(first) >= 6 && bytes.Equal(first[:6], magic) }

// ReadHeader reads and validates the LUKS header at the start of path (a
// block device, an image file or a detached header backup).
func ReadHeader(path string) (*Header, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("cannot read LUKS header of %s: %w", path, err)
	}
	defer f.Close()
	return ReadHeaderFile(f, path)
}

// ReadHeaderFile is ReadHeader on a file the caller opened (verify opens
// device nodes and header backups confined to a root, and only regular
// files and block devices); name is used in errors. The third-party parser
// reopens the same file through /proc/self/fd.
func ReadHeaderFile(f *os.File, name string) (*Header, error) {
	first := make([]byte, 8)
	if _, err := f.ReadAt(first, 0); err != nil {
		return nil, fmt.Errorf("cannot read LUKS header of %s: %w", name, err)
	}
	if !IsLUKS(first) {
		return nil, fmt.Errorf("cannot read LUKS header of %s: %w", name, ErrNotLUKS)
	}
	// Our own parse first: it bounds and checks what luks.go would index
	// without checking (a LUKS2 JSON area without a NUL makes luks.go
	// panic), and fails cleanly on anything malformed.
	h, err := parse(f)
	if err != nil {
		return nil, fmt.Errorf("cannot read LUKS header of %s: %w", name, err)
	}
	slots, uuid, err := thirdParty(fmt.Sprintf("/proc/self/fd/%d", f.Fd()))
	if err != nil {
		return nil, fmt.Errorf("cannot read LUKS header of %s: %w", name, err)
	}
	// luks.go is the authority on which keyslots are active and on the UUID.
	if h.UUID != uuid {
		return nil, fmt.Errorf("cannot read LUKS header of %s: UUID mismatch between parsers", name)
	}
	active := map[int]bool{}
	for _, s := range slots {
		active[s] = true
	}
	kept := h.Keyslots[:0]
	for _, k := range h.Keyslots {
		if active[k.ID] {
			kept = append(kept, k)
		}
	}
	h.Keyslots = kept
	return h, nil
}

// thirdParty runs luks.go's header validation (magic, version, LUKS2
// checksum) and turns any panic inside it into an error: its input may come
// from a compromised host.
func thirdParty(p string) (slots []int, uuid string, err error) {
	defer func() {
		if r := recover(); r != nil {
			slots, uuid, err = nil, "", fmt.Errorf("malformed header (the LUKS parser gave up: %v)", r)
		}
	}()
	dev, err := luksgo.Open(p)
	if err != nil {
		return nil, "", err
	}
	defer dev.Close()
	return dev.Slots(), dev.UUID(), nil
}

// Parse decodes header metadata from r without validating checksums; it is
// meant for fuzzing and for headers that ReadHeader already validated.
func Parse(r io.ReaderAt) (*Header, error) { return parse(r) }

func parse(r io.ReaderAt) (*Header, error) {
	first := make([]byte, 8)
	if _, err := r.ReadAt(first, 0); err != nil {
		return nil, err
	}
	if !IsLUKS(first) {
		return nil, ErrNotLUKS
	}
	switch v := binary.BigEndian.Uint16(first[6:8]); v {
	case 1:
		return parseV1(r)
	case 2:
		return parseV2(r)
	default:
		return nil, fmt.Errorf("unsupported LUKS version %d", v)
	}
}

func cstr(b []byte) string {
	if i := bytes.IndexByte(b, 0); i >= 0 {
		b = b[:i]
	}
	return string(b)
}

// LUKS1 on-disk layout (cryptsetup docs/on-disk-format.pdf): fixed 592-byte
// header, eight 48-byte keyslots from offset 208.
func parseV1(r io.ReaderAt) (*Header, error) {
	b := make([]byte, 592)
	if _, err := r.ReadAt(b, 0); err != nil {
		return nil, err
	}
	h := &Header{
		Version:    1,
		Cipher:     cstr(b[8:40]) + "-" + cstr(b[40:72]),
		DataOffset: uint64(binary.BigEndian.Uint32(b[104:108])) * 512,
		KeySize:    int(binary.BigEndian.Uint32(b[108:112])) * 8,
		UUID:       cstr(b[168:208]),
		SectorSize: 512,
		Keyslots:   []Keyslot{},
	}
	hash := cstr(b[72:104])
	for i := 0; i < 8; i++ {
		s := b[208+48*i : 208+48*(i+1)]
		if binary.BigEndian.Uint32(s[0:4]) != 0x00AC71F3 { // LUKS_KEY_ENABLED
			continue
		}
		h.Keyslots = append(h.Keyslots, Keyslot{
			ID: i, KDF: "pbkdf2", Hash: hash,
			Iterations: int(binary.BigEndian.Uint32(s[4:8])), KeySize: h.KeySize,
		})
	}
	return h, nil
}

// LUKS2 binary header (cryptsetup docs/on-disk-format-luks2.pdf): 4096-byte
// binary part with label at 24 and UUID at 168, then the JSON area up to
// hdr_size (offset 8).
type v2JSON struct {
	Keyslots map[string]struct {
		Type    string `json:"type"`
		KeySize int    `json:"key_size"`
		KDF     struct {
			Type       string `json:"type"`
			Hash       string `json:"hash"`
			Iterations int    `json:"iterations"`
			Time       int    `json:"time"`
			Memory     int    `json:"memory"`
			CPUs       int    `json:"cpus"`
		} `json:"kdf"`
	} `json:"keyslots"`
	Segments map[string]struct {
		Type       string      `json:"type"`
		Offset     json.Number `json:"offset"`
		Encryption string      `json:"encryption"`
		SectorSize int         `json:"sector_size"`
	} `json:"segments"`
	Tokens map[string]json.RawMessage `json:"tokens"`
	Config struct {
		Flags []string `json:"flags"`
	} `json:"config"`
}

func parseV2(r io.ReaderAt) (*Header, error) {
	bin := make([]byte, 4096)
	if _, err := r.ReadAt(bin, 0); err != nil {
		return nil, err
	}
	size := binary.BigEndian.Uint64(bin[8:16])
	// cryptsetup allows metadata areas of 16 KiB to 4 MiB (LUKS2_HDR_BIN_LEN..).
	if size < 16384 || size > 4<<20 {
		return nil, fmt.Errorf("invalid LUKS2 header size %d", size)
	}
	area := make([]byte, size-4096)
	if _, err := r.ReadAt(area, 4096); err != nil {
		return nil, err
	}
	// The JSON text ends with a NUL inside the area (cryptsetup pads the
	// rest with zeros); without one the header is malformed.
	i := bytes.IndexByte(area, 0)
	if i < 0 {
		return nil, fmt.Errorf("%w: JSON area not terminated by a NUL", ErrMalformed)
	}
	area = area[:i]
	var j v2JSON
	if err := json.Unmarshal(area, &j); err != nil {
		return nil, fmt.Errorf("invalid LUKS2 JSON metadata: %w", err)
	}
	h := &Header{
		Version:  2,
		Label:    cstr(bin[24:72]),
		UUID:     cstr(bin[168:208]),
		Flags:    j.Config.Flags,
		Keyslots: []Keyslot{},
	}
	segIDs := sortedKeys(j.Segments)
	for _, id := range segIDs {
		s := j.Segments[strconv.Itoa(id)]
		if s.Type != "crypt" {
			continue
		}
		h.Cipher = s.Encryption
		h.SectorSize = s.SectorSize
		off, _ := strconv.ParseUint(s.Offset.String(), 10, 64)
		h.DataOffset = off
		break
	}
	for _, id := range sortedKeys(j.Keyslots) {
		k := j.Keyslots[strconv.Itoa(id)]
		h.Keyslots = append(h.Keyslots, Keyslot{
			ID: id, KDF: k.KDF.Type, Hash: k.KDF.Hash, Iterations: k.KDF.Iterations,
			Time: k.KDF.Time, MemoryKiB: k.KDF.Memory, Parallel: k.KDF.CPUs, KeySize: k.KeySize * 8,
		})
		if h.KeySize == 0 {
			h.KeySize = k.KeySize * 8
		}
	}
	for _, id := range sortedKeys(j.Tokens) {
		t := parseToken(id, j.Tokens[strconv.Itoa(id)])
		h.Tokens = append(h.Tokens, t.Type)
		h.TokenInfo = append(h.TokenInfo, t)
	}
	return h, nil
}

func sortedKeys[V any](m map[string]V) []int {
	ids := make([]int, 0, len(m))
	for k := range m {
		if n, err := strconv.Atoi(k); err == nil {
			ids = append(ids, n)
		}
	}
	sort.Ints(ids)
	return ids
}
