package copier

import (
	"context"
	"testing"
)

// benchImage is a 256 MiB source with 25% allocated random data in 4 MiB
// extents, the shape of scripts/bench-copy.sh's sparse4g at 1/16 the size.
func benchImage(b *testing.B, dense bool) (src, dst string, size int64) {
	dir := b.TempDir()
	size = 256 * miB
	var segs []seg
	if dense {
		size = 64 * miB
		segs = []seg{{0, size, 'r'}}
	} else {
		for off := int64(0); off < size; off += 16 * miB {
			segs = append(segs, seg{off + (off/(16*miB)*5%12)*miB, 4 * miB, 'r'})
		}
	}
	src, _ = image(b, dir, "src", size, segs, 1)
	dst, _ = oldPlaintext(b, dir, "dst", size)
	return src, dst, size
}

func benchCopy(b *testing.B, dense bool, opt Options) {
	src, dst, size := benchImage(b, dense)
	b.SetBytes(size)
	for b.Loop() {
		if _, err := Copy(context.Background(), src, dst, opt); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkCopySparse(b *testing.B)       { benchCopy(b, false, Options{}) }
func BenchmarkCopySparseVerify(b *testing.B) { benchCopy(b, false, Options{Verify: true}) }
func BenchmarkCopyDense(b *testing.B)        { benchCopy(b, true, Options{}) }
func BenchmarkCopyDenseVerify(b *testing.B)  { benchCopy(b, true, Options{Verify: true}) }
func BenchmarkCopySparseBuffered(b *testing.B) {
	benchCopy(b, false, Options{Buffered: true})
}

func BenchmarkHashSparse(b *testing.B) {
	src, _, size := benchImage(b, false)
	b.SetBytes(size)
	for b.Loop() {
		if _, err := Hash(context.Background(), src, -1, HashOptions{}); err != nil {
			b.Fatal(err)
		}
	}
}
