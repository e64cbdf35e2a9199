package planner

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"
)

// Planned identifiers (LUKS, filesystem, GPT UUIDs) are derived from a seed
// made of the layout name and the identities of its disks, so a plan is
// byte-identical across runs, its crypttab/fstab lines can carry the real
// UUID= values before anything exists, and apply can recognise on resume
// that a header or filesystem is the one it created.
type idSource struct{ seed [32]byte }

func newIDSource(parts ...string) idSource {
	return idSource{seed: sha256.Sum256([]byte(strings.Join(parts, "\x00")))}
}

func (s idSource) sum(kind, name string) [32]byte {
	return sha256.Sum256([]byte(string(s.seed[:]) + "\x00" + kind + "\x00" + name))
}

// uuid returns an RFC 4122 UUID (variant 1, version 4 bits set so every
// tool's parser accepts it) for an object.
func (s idSource) uuid(kind, name string) string {
	b := s.sum(kind, name)
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b[:16])
	return fmt.Sprintf("%s-%s-%s-%s-%s", h[0:8], h[8:12], h[12:16], h[16:20], h[20:32])
}

// volumeID returns a FAT volume serial (8 hex digits) for mkfs.vfat -i.
func (s idSource) volumeID(name string) string {
	b := s.sum("vfat", name)
	return strings.ToUpper(hex.EncodeToString(b[:4]))
}

// fatUUID renders a FAT volume serial the way blkid and fstab show it.
func fatUUID(volID string) string { return volID[:4] + "-" + volID[4:] }
