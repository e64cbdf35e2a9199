package copier

import (
	"context"
	"encoding/binary"
	"testing"
)

// FuzzCopy copies sources of fuzzed size and layout (data, allocated zeros
// and holes anywhere, unaligned) onto targets of old random bytes, with
// fuzzed chunk size, tail and verification, and checks the target byte for
// byte and the digest.
//
// Layout bytes: size (2), options (1), tail (1), then segments of 4 bytes:
// offset (2, in 61-byte steps, so unaligned), length (1, in 509-byte
// steps), fill (1: even random, odd zeros).
func FuzzCopy(f *testing.F) {
	f.Add([]byte{0x00, 0x10, 0x00, 0x00, 0x00, 0x01, 0x20, 0x00})
	f.Add([]byte{0xff, 0xff, 0x0f, 0x13, 0x10, 0x00, 0xff, 0x00, 0x40, 0x00, 0x10, 0x01})
	f.Add([]byte{0x01, 0x00, 0x05, 0x00})
	f.Fuzz(func(t *testing.T, layout []byte) {
		if len(layout) < 4 {
			return
		}
		size := int64(binary.BigEndian.Uint16(layout)) * 37 // up to 2.3 MiB
		o := layout[2]
		opt := Options{
			ChunkSize: []int{4 * kiB, 8 * kiB, 64 * kiB, miB}[o%4],
			Verify:    o&4 != 0,
			KeepTail:  o&8 != 0,
			Depth:     1 + int(o>>4)%4,
			Writers:   1 + int(o>>6),
		}
		extra := int64(layout[3]) * 333
		var segs []seg
		for b := layout[4:]; len(b) >= 4; b = b[4:] {
			off := int64(binary.BigEndian.Uint16(b)) * 61 % max(size, 1)
			n := min(int64(b[2])*509, size-off)
			fill := byte('r')
			if b[3]%2 == 1 {
				fill = 'z'
			}
			if n > 0 {
				segs = append(segs, seg{off, n, fill})
			}
		}
		dir := t.TempDir()
		src, want := image(t, dir, "src", size, segs, uint64(len(layout)))
		dst, old := oldPlaintext(t, dir, "dst", size+extra)
		res, err := Copy(context.Background(), src, dst, opt)
		if err != nil {
			t.Fatalf("Copy(size %d, %+v): %v", size, opt, err)
		}
		checkTarget(t, dst, want, old, opt.KeepTail)
		if res.SHA256 != sum(want) {
			t.Fatalf("SHA256 = %s, want %s", res.SHA256, sum(want))
		}
		if res.DataBytes+res.ZeroBytes+res.HoleBytes != size {
			t.Fatalf("data %d + zero %d + hole %d != size %d", res.DataBytes, res.ZeroBytes, res.HoleBytes, size)
		}
	})
}
