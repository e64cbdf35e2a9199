package copier

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

const (
	kiB = 1 << 10
	miB = 1 << 20
)

// seg is a piece of a test image; everything not covered by a seg is a hole.
type seg struct {
	off, n int64
	fill   byte // 'r' random, 'z' explicit (allocated) zeros
}

// image writes a sparse file of the given size and returns its path and
// content.
func image(t testing.TB, dir, name string, size int64, segs []seg, seed uint64) (string, []byte) {
	t.Helper()
	path := filepath.Join(dir, name)
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	want := make([]byte, size)
	rng := rand.New(rand.NewPCG(seed, 1))
	for _, s := range segs {
		b := want[s.off : s.off+s.n]
		switch s.fill {
		case 'r':
			for i := range b {
				b[i] = byte(rng.Uint32())
			}
		case 'z':
			clear(b)
		}
		if _, err := f.WriteAt(b, s.off); err != nil {
			t.Fatal(err)
		}
	}
	return path, want
}

// oldPlaintext makes a target full of random bytes, standing for whatever a
// recycled disk held before.
func oldPlaintext(t testing.TB, dir, name string, size int64) (string, []byte) {
	t.Helper()
	old := make([]byte, size)
	rng := rand.New(rand.NewPCG(uint64(size), 99))
	for i := range old {
		old[i] = byte(rng.Uint32()) | 1 // never zero, so a missed block shows
	}
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, old, 0o600); err != nil {
		t.Fatal(err)
	}
	return path, old
}

func sum(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// checkTarget compares the target with the source and its tail with zeros
// (or with the old bytes when the tail was kept).
func checkTarget(t *testing.T, dst string, want, old []byte, keepTail bool) {
	t.Helper()
	got, err := os.ReadFile(dst)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(old) {
		t.Fatalf("target has %d bytes, want %d", len(got), len(old))
	}
	if i := firstDiff(got[:len(want)], want); i >= 0 {
		t.Fatalf("target differs from the source at byte %d: got %#x, want %#x", i, got[i], want[i])
	}
	tail := got[len(want):]
	wantTail := make([]byte, len(tail))
	if keepTail {
		wantTail = old[len(want):]
	}
	if i := firstDiff(tail, wantTail); i >= 0 {
		t.Fatalf("target tail differs at byte %d: got %#x, want %#x (keepTail %v)", len(want)+i, tail[i], wantTail[i], keepTail)
	}
}

func firstDiff(a, b []byte) int {
	for i := range a {
		if a[i] != b[i] {
			return i
		}
	}
	return -1
}

var layouts = []struct {
	name string
	size int64
	segs []seg
	// minZero is the least number of allocated zero bytes the copier must
	// recognise.
	minZero int64
}{
	{"holes at start, middle and end", 1 * miB, []seg{{200 * kiB, 100 * kiB, 'r'}, {600 * kiB, 100 * kiB, 'r'}}, 0},
	{"data at start and end", 1 * miB, []seg{{0, 64 * kiB, 'r'}, {1*miB - 8*kiB, 8 * kiB, 'r'}}, 0},
	{"unaligned size, data to the end", 1*miB + 1000, []seg{{1 * miB, 1000, 'r'}, {100 * kiB, 3000, 'r'}}, 0},
	{"size not a multiple of the chunk", 5*64*kiB + 12345, []seg{{64 * kiB, 5*64*kiB + 12345 - 64*kiB, 'r'}}, 0},
	{"hole at the unaligned end", 3*miB + 4097, []seg{{0, 1 * miB, 'r'}}, 0},
	{"zero blocks inside data", 2 * miB, []seg{
		{0, 2 * miB, 'r'},
		{64 * kiB, 4 * kiB, 'z'},       // one zero block
		{256 * kiB, 64 * kiB, 'z'},     // a whole zero chunk
		{512*kiB + 100, 10 * kiB, 'z'}, // unaligned: only whole blocks count
		{1 * miB, 1 * miB, 'z'},        // zeros to the end
	}, 4*kiB + 64*kiB + 4*kiB + 1*miB},
	{"all holes", 3 * miB, nil, 0},
	{"all data", 1*miB + 512, []seg{{0, 1*miB + 512, 'r'}}, 0},
	{"one byte", 1, []seg{{0, 1, 'r'}}, 0},
	{"empty", 0, nil, 0},
}

func TestCopy(t *testing.T) {
	tails := []struct {
		name     string
		extra    int64
		keepTail bool
	}{
		{"same size", 0, false},
		{"larger target, tail zeroed", 100*kiB + 7, false},
		{"larger target, tail kept", 100*kiB + 7, true},
	}
	opts := []struct {
		name string
		opt  Options
	}{
		{"64k chunks", Options{ChunkSize: 64 * kiB}},
		{"4k chunks, depth 1, serial, verify", Options{ChunkSize: 4 * kiB, Depth: 1, Readers: 1, Writers: 1, Verify: true}},
		{"64k chunks, verify, 3 writers", Options{ChunkSize: 64 * kiB, Verify: true, Writers: 3, Readers: 3}},
		{"defaults, buffered", Options{Buffered: true, Verify: true}},
	}
	for _, l := range layouts {
		for _, tl := range tails {
			for _, o := range opts {
				t.Run(l.name+"/"+tl.name+"/"+o.name, func(t *testing.T) {
					dir := t.TempDir()
					src, want := image(t, dir, "src", l.size, l.segs, 1)
					dst, old := oldPlaintext(t, dir, "dst", l.size+tl.extra)
					opt := o.opt
					opt.KeepTail = tl.keepTail
					var last Progress
					opt.Progress = func(p Progress) {
						if p.Done < last.Done {
							t.Errorf("progress went back from %d to %d", last.Done, p.Done)
						}
						last = p
					}
					res, err := Copy(context.Background(), src, dst, opt)
					if err != nil {
						t.Fatalf("Copy: %v", err)
					}
					checkTarget(t, dst, want, old, tl.keepTail)
					if got, w := res.SHA256, sum(want); got != w {
						t.Errorf("SHA256 = %s, want %s", got, w)
					}
					if got := res.DataBytes + res.ZeroBytes + res.HoleBytes; got != l.size || res.Size != l.size {
						t.Errorf("data %d + zero %d + hole %d = %d, size %d; want %d", res.DataBytes, res.ZeroBytes, res.HoleBytes, got, res.Size, l.size)
					}
					if res.ZeroBytes < l.minZero {
						t.Errorf("ZeroBytes = %d, want at least %d", res.ZeroBytes, l.minZero)
					}
					wantTail := tl.extra
					if tl.keepTail {
						wantTail = 0
					}
					if res.TailBytes != wantTail {
						t.Errorf("TailBytes = %d, want %d", res.TailBytes, wantTail)
					}
					if res.Verified != opt.Verify {
						t.Errorf("Verified = %v, want %v", res.Verified, opt.Verify)
					}
					if res.TargetDirect == opt.Buffered {
						t.Errorf("TargetDirect = %v with Buffered %v on %s", res.TargetDirect, opt.Buffered, dir)
					}
					if last.Done != last.Total || last.Total != l.size+wantTail {
						t.Errorf("last progress %+v, want done = total = %d", last, l.size+wantTail)
					}
					if cp := res.Checkpoint; cp.Offset != l.size+wantTail || cp.SHA256 != res.SHA256 {
						t.Errorf("final checkpoint %+v, want offset %d and the digest", cp, l.size+wantTail)
					}
				})
			}
		}
	}
}

// TestCopyOracles checks the copy with tools that share no code with it:
// cmp(1) for the bytes, sha256sum(1) for the digest.
func TestCopyOracles(t *testing.T) {
	for _, tool := range []string{"cmp", "sha256sum"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed (package diffutils / coreutils)", tool)
		}
	}
	dir := t.TempDir()
	size := int64(24*miB + 4321)
	var segs []seg
	for off := int64(0); off+miB < size; off += 3 * miB {
		segs = append(segs, seg{off + 123*kiB, miB, 'r'}, seg{off + 500*kiB, 256 * kiB, 'z'})
	}
	segs = append(segs, seg{size - 4321, 4321, 'r'})
	src, _ := image(t, dir, "src.img", size, segs, 7)
	dst, _ := oldPlaintext(t, dir, "dst.img", size)
	res, err := Copy(context.Background(), src, dst, Options{Verify: true})
	if err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("cmp", src, dst).CombinedOutput(); err != nil {
		t.Fatalf("cmp %s %s: %v: %s", src, dst, err, out)
	}
	for _, p := range []string{src, dst} {
		out, err := exec.Command("sha256sum", p).Output()
		if err != nil {
			t.Fatalf("sha256sum %s: %v", p, err)
		}
		if got := strings.Fields(string(out))[0]; got != res.SHA256 {
			t.Errorf("sha256sum %s = %s, Copy says %s", p, got, res.SHA256)
		}
	}
	got, err := Hash(context.Background(), dst, -1, HashOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got != res.SHA256 {
		t.Errorf("Hash(target) = %s, Copy says %s", got, res.SHA256)
	}
}

// resumeImage is a source with data, allocated zeros and holes in every
// region that the resume tests cut.
func resumeImage(t *testing.T, dir string) (string, []byte) {
	size := int64(8*miB + 3000)
	var segs []seg
	for off := int64(0); off < size-300*kiB; off += 400 * kiB {
		segs = append(segs, seg{off, 100 * kiB, 'r'}, seg{off + 150*kiB, 70 * kiB, 'z'}, seg{off + 230*kiB, 64 * kiB, 'r'})
	}
	segs = append(segs, seg{size - 3000, 3000, 'r'})
	return image(t, dir, "src", size, segs, 3)
}

// TestCopyResume cancels a copy at several offsets and resumes it from the
// checkpoint it returned, after a JSON round trip as a journal would do.
func TestCopyResume(t *testing.T) {
	for _, verify := range []bool{false, true} {
		// The tail starts at 8 MiB + 3000 and ends 64 MiB later, so every
		// cut leaves far more work than can be in flight when it is seen
		// (a copy cut within its last few chunks may finish first: that
		// is a completed copy, not a flaky one).
		for _, stop := range []int64{0, 64 * kiB, 1 * miB, 5*miB + 128*kiB, 8 * miB, 9 * miB} {
			name := map[bool]string{false: "plain", true: "verify"}[verify]
			t.Run(fmt.Sprintf("%s/at %d KiB", name, stop/kiB), func(t *testing.T) {
				dir := t.TempDir()
				src, want := resumeImage(t, dir)
				dst, old := oldPlaintext(t, dir, "dst", int64(len(want))+64*miB)
				opt := Options{ChunkSize: 64 * kiB, Verify: verify, CheckpointEvery: 64 * kiB}
				ctx, cancel := context.WithCancel(context.Background())
				defer cancel()
				opt.OnCheckpoint = func(cp Checkpoint) error {
					if cp.Offset >= stop {
						cancel()
					}
					return nil
				}
				if stop == 0 {
					cancel()
				}
				res, err := Copy(ctx, src, dst, opt)
				if !errors.Is(err, context.Canceled) {
					t.Fatalf("Copy = %v, want an interruption", err)
				}
				cp := res.Checkpoint
				// The checkpoint is at or after the cut and before the end.
				// How far after depends on how late the checkpoint callback
				// ran (scheduling), not on the copier; what matters is that
				// resuming from it gives the right target and digest.
				if cp.Offset < stop || cp.Offset >= int64(len(want))+64*miB {
					t.Fatalf("checkpoint at %d, want at or after %d and before the end", cp.Offset, stop)
				}
				raw, err := json.Marshal(cp)
				if err != nil {
					t.Fatal(err)
				}
				var back Checkpoint
				if err := json.Unmarshal(raw, &back); err != nil {
					t.Fatal(err)
				}
				// Resume with another chunk size: checkpoints do not depend on it.
				res2, err := Copy(context.Background(), src, dst, Options{ChunkSize: 128 * kiB, Verify: verify, Checkpoint: &back})
				if err != nil {
					t.Fatalf("resumed Copy: %v", err)
				}
				checkTarget(t, dst, want, old, false)
				if res2.SHA256 != sum(want) {
					t.Errorf("resumed SHA256 = %s, want %s", res2.SHA256, sum(want))
				}
				full, err := Copy(context.Background(), src, filepath.Join(dir, "dst"), Options{})
				if err != nil {
					t.Fatal(err)
				}
				if res2.DataBytes != full.DataBytes || res2.ZeroBytes != full.ZeroBytes || res2.HoleBytes != full.HoleBytes || res2.TailBytes != full.TailBytes {
					t.Errorf("resumed counts %+v differ from an uninterrupted copy's %+v", res2, full)
				}
			})
		}
	}
}

// TestCopyCrashResume stands for kill -9: the copy dies at a checkpoint
// (OnCheckpoint fails) and the next run starts from the last checkpoint that
// was persisted, repeatedly, until it completes.
func TestCopyCrashResume(t *testing.T) {
	dir := t.TempDir()
	src, want := resumeImage(t, dir)
	dst, old := oldPlaintext(t, dir, "dst", int64(len(want)))
	var saved *Checkpoint
	crash := errors.New("simulated crash")
	for run := 0; ; run++ {
		if run > 40 {
			t.Fatal("copy never completed")
		}
		n := 0
		res, err := Copy(context.Background(), src, dst, Options{
			ChunkSize: 64 * kiB, Verify: true, CheckpointEvery: 256 * kiB, Checkpoint: saved,
			OnCheckpoint: func(cp Checkpoint) error {
				if n++; n == 3 {
					return crash
				}
				saved = &cp
				return nil
			},
		})
		if err == nil {
			checkTarget(t, dst, want, old, false)
			if res.SHA256 != sum(want) {
				t.Errorf("SHA256 = %s, want %s", res.SHA256, sum(want))
			}
			if run < 2 {
				t.Errorf("completed after %d runs; the test should cut it more often", run+1)
			}
			return
		}
		if !errors.Is(err, crash) {
			t.Fatalf("run %d: %v", run, err)
		}
	}
}

func TestCheckpointHoldsNoSourceBytes(t *testing.T) {
	dir := t.TempDir()
	size := int64(2*miB + 33) // the last block is partial
	src := filepath.Join(dir, "src")
	if err := os.WriteFile(src, bytes.Repeat([]byte{0xAB}, int(size)), 0o600); err != nil {
		t.Fatal(err)
	}
	dst, _ := oldPlaintext(t, dir, "dst", size+1*miB)
	var cps []Checkpoint
	res, err := Copy(context.Background(), src, dst, Options{ChunkSize: 64 * kiB, CheckpointEvery: 64 * kiB,
		OnCheckpoint: func(cp Checkpoint) error { cps = append(cps, cp); return nil }})
	if err != nil {
		t.Fatal(err)
	}
	cps = append(cps, res.Checkpoint)
	pastEnd := 0
	for _, cp := range cps {
		raw, _ := json.Marshal(cp)
		if bytes.Contains(raw, []byte{0xAB, 0xAB}) || bytes.Contains(raw, []byte("q6ur")) { // 0xABABAB in base64
			t.Errorf("checkpoint at %d holds source bytes: %s", cp.Offset, raw)
		}
		if cp.Offset >= size {
			pastEnd++
			if cp.State != nil || cp.SHA256 != res.SHA256 {
				t.Errorf("checkpoint at %d past the source end has state %x, digest %q", cp.Offset, cp.State, cp.SHA256)
			}
			continue
		}
		// Go's SHA-256 state: magic(4) h(32) block(64) length(8).
		if block := cp.State[36:100]; !bytes.Equal(block, make([]byte, 64)) {
			t.Errorf("checkpoint at %d buffers source bytes: %x", cp.Offset, block)
		}
	}
	if pastEnd < 2 {
		t.Errorf("only %d checkpoints while zeroing the tail, want several", pastEnd)
	}
}

// TestCopyVerifyCatchesDamage damages the target between the write and the
// read-back, in a data chunk, a hole chunk and the tail.
func TestCopyVerifyCatchesDamage(t *testing.T) {
	for _, tc := range []struct {
		name string
		at   int64
	}{
		{"data chunk", 200*kiB + 5},
		{"hole chunk", 2*miB + 64*kiB},
		{"tail", 5 * miB},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			src, _ := image(t, dir, "src", 4*miB, []seg{{128 * kiB, 256 * kiB, 'r'}}, 5)
			dst, _ := oldPlaintext(t, dir, "dst", 6*miB)
			defer setHookAfterWrite(func(d *dev, off int64, n int) {
				if tc.at >= off && tc.at < off+int64(n) {
					if _, err := unix.Pwrite(d.bfd, []byte{0x5A}, tc.at); err != nil {
						t.Error(err)
					}
				}
			})()
			res, err := Copy(context.Background(), src, dst, Options{ChunkSize: 64 * kiB, Verify: true})
			if err == nil || !strings.Contains(err.Error(), "differ") {
				t.Fatalf("Copy = %v, want a verification error", err)
			}
			if res.SHA256 != "" || res.Verified {
				t.Errorf("a failed copy reports digest %q, verified %v", res.SHA256, res.Verified)
			}
			if cp := res.Checkpoint.Offset; cp > tc.at {
				t.Errorf("checkpoint at %d is past the damage at %d", cp, tc.at)
			}
			t.Log(err)
		})
	}
}

// TestCopyVerifyCatchesChangedBuffer changes a source buffer after it was
// hashed, as a pipeline bug would: the target then equals the changed
// buffer, and only the check against what was hashed can notice.
func TestCopyVerifyCatchesChangedBuffer(t *testing.T) {
	dir := t.TempDir()
	src, _ := image(t, dir, "src", 2*miB, []seg{{0, 2 * miB, 'r'}}, 5)
	dst, _ := oldPlaintext(t, dir, "dst", 2*miB)
	defer setHookAfterHash(func(off int64, data []byte) {
		if off == miB {
			data[100] ^= 0xFF
		}
	})()
	_, err := Copy(context.Background(), src, dst, Options{ChunkSize: 64 * kiB, Verify: true})
	if err == nil || !strings.Contains(err.Error(), "bytes 1048576 to 1114112 read back differ") {
		t.Fatalf("Copy = %v, want a verification error for the changed chunk", err)
	}
}

func TestCopyErrors(t *testing.T) {
	dir := t.TempDir()
	src, _ := image(t, dir, "src", 1*miB, []seg{{0, 64 * kiB, 'r'}}, 1)
	small, oldSmall := oldPlaintext(t, dir, "small", 1*miB-512)
	dst, _ := oldPlaintext(t, dir, "dst", 1*miB)
	stateAt := func(n int) []byte {
		h := sha256.New()
		h.Write(make([]byte, n))
		b, _ := h.(interface{ MarshalBinary() ([]byte, error) }).MarshalBinary()
		return b
	}
	for _, tc := range []struct {
		name     string
		src, dst string
		opt      Options
		want     string
	}{
		{"target too small", src, small, Options{}, "the target has 1048064 bytes, 512 fewer than the source"},
		{"missing source", filepath.Join(dir, "nope"), dst, Options{}, "cannot open source"},
		{"missing target", src, filepath.Join(dir, "nope"), Options{}, "cannot open target"},
		{"directory source", dir, dst, Options{}, "not a regular file or block device"},
		{"same file", src, src, Options{}, "same file"},
		{"chunk size", src, dst, Options{ChunkSize: 1000}, "chunk size 1000"},
		{"checkpoint of another source", src, dst, Options{Checkpoint: &Checkpoint{Offset: 4096, Size: 2 * miB}}, "source of 2097152 bytes"},
		{"checkpoint state of another offset", src, dst, Options{Checkpoint: &Checkpoint{Offset: 8192, Size: miB, State: stateAt(4096)}}, "covers 4096 bytes"},
		{"checkpoint state garbage", src, dst, Options{Checkpoint: &Checkpoint{Offset: 4096, Size: miB, State: []byte("junk")}}, "cannot restore the hash state"},
		{"checkpoint unaligned", src, dst, Options{Checkpoint: &Checkpoint{Offset: 100, Size: miB, State: stateAt(100)}}, "not a multiple of 4096"},
		{"checkpoint beyond the end", src, dst, Options{Checkpoint: &Checkpoint{Offset: 2 * miB, Size: miB}}, "outside the target"},
		{"checkpoint without digest", src, dst, Options{Checkpoint: &Checkpoint{Offset: miB, Size: miB}}, "no source digest"},
		{"unverified checkpoint", src, dst, Options{Verify: true, Checkpoint: &Checkpoint{Offset: 4096, Size: miB, State: stateAt(4096)}}, "without verification"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Copy(context.Background(), tc.src, tc.dst, tc.opt)
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.HasPrefix(err.Error(), "cannot ") {
				t.Fatalf("Copy = %v, want an error starting with \"cannot\" containing %q", err, tc.want)
			}
		})
	}
	got, err := os.ReadFile(small)
	if err != nil || !bytes.Equal(got, oldSmall) {
		t.Errorf("a refused copy changed the target (err %v)", err)
	}
}

// TestCopyTmpfs copies on tmpfs, which refused O_DIRECT until Linux 6.6
// and accepts it since; either way the copy must be right.
func TestCopyTmpfs(t *testing.T) {
	const shm = "/dev/shm"
	var fs unix.Statfs_t
	if err := unix.Statfs(shm, &fs); err != nil || fs.Type != unix.TMPFS_MAGIC {
		t.Skipf("%s is not a tmpfs here (statfs: %v); the fallback needs a filesystem without O_DIRECT", shm, err)
	}
	dir, err := os.MkdirTemp(shm, "copier-test-")
	if err != nil {
		t.Skipf("cannot use %s: %v", shm, err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	for _, buffered := range []bool{false, true} {
		src, want := image(t, dir, "src", 3*miB+100, []seg{{miB, miB, 'r'}, {3 * miB, 100, 'r'}}, 9)
		dst, old := oldPlaintext(t, dir, "dst", 4*miB)
		res, err := Copy(context.Background(), src, dst, Options{ChunkSize: 64 * kiB, Verify: true, Buffered: buffered})
		if err != nil {
			t.Fatalf("buffered %v: %v", buffered, err)
		}
		t.Logf("buffered %v: O_DIRECT on tmpfs: source %v, target %v", buffered, res.SourceDirect, res.TargetDirect)
		checkTarget(t, dst, want, old, false)
		if res.SHA256 != sum(want) {
			t.Errorf("buffered %v: SHA256 = %s, want %s", buffered, res.SHA256, sum(want))
		}
		got, err := Hash(context.Background(), src, -1, HashOptions{ChunkSize: 64 * kiB, Buffered: buffered})
		if err != nil || got != sum(want) {
			t.Errorf("buffered %v: Hash on tmpfs = %s, %v; want %s", buffered, got, err, sum(want))
		}
	}
}

func TestHash(t *testing.T) {
	dir := t.TempDir()
	for _, l := range layouts {
		t.Run(l.name, func(t *testing.T) {
			path, want := image(t, dir, strings.ReplaceAll(l.name, " ", "_"), l.size, l.segs, 11)
			for _, tc := range []struct {
				size int64
				opt  HashOptions
			}{
				{-1, HashOptions{}},
				{l.size, HashOptions{ChunkSize: 4 * kiB, Depth: 1, Readers: 1}},
				{l.size / 2, HashOptions{ChunkSize: 64 * kiB, Readers: 3}},
				{l.size, HashOptions{ChunkSize: 64 * kiB, Buffered: true}},
			} {
				var last Progress
				tc.opt.Progress = func(p Progress) { last = p }
				got, err := Hash(context.Background(), path, tc.size, tc.opt)
				if err != nil {
					t.Fatal(err)
				}
				n := tc.size
				if n < 0 {
					n = l.size
				}
				if w := sum(want[:n]); got != w {
					t.Errorf("Hash(%d, %+v) = %s, want %s", tc.size, tc.opt, got, w)
				}
				if last.Done != n || last.Data+last.Zero+last.Hole != n {
					t.Errorf("Hash(%d) last progress %+v, want done %d", tc.size, last, n)
				}
			}
		})
	}
}

func TestHashErrors(t *testing.T) {
	dir := t.TempDir()
	path, _ := image(t, dir, "img", miB, []seg{{0, miB, 'r'}}, 1)
	canceled, cancel := context.WithCancel(context.Background())
	cancel()
	for _, tc := range []struct {
		name string
		ctx  context.Context
		path string
		size int64
		want string
	}{
		{"longer than the file", context.Background(), path, miB + 1, "1 fewer than the 1048577 to hash"},
		{"missing", context.Background(), filepath.Join(dir, "nope"), 1, "cannot open source"},
		{"canceled", canceled, path, miB, "interrupted"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Hash(tc.ctx, tc.path, tc.size, HashOptions{})
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.HasPrefix(err.Error(), "cannot ") {
				t.Fatalf("Hash = %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

// TestCopyDirectRefused makes the kernel refuse O_DIRECT, at open as tmpfs
// did before Linux 6.6 and some FUSE filesystems still do, or per request
// with EINVAL as some network filesystems do, and checks that the copy falls
// back to buffered I/O and stays right.
func TestCopyDirectRefused(t *testing.T) {
	isDirect := func(fd int) bool {
		fl, err := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0)
		return err == nil && fl&unix.O_DIRECT != 0
	}
	for _, tc := range []struct {
		name   string
		open   func(string, int, os.FileMode) (*os.File, error)
		pread  func(int, []byte, int64) (int, error)
		pwrite func(int, []byte, int64) (int, error)
	}{
		{"at open", func(name string, flag int, perm os.FileMode) (*os.File, error) {
			if flag&unix.O_DIRECT != 0 {
				return nil, &os.PathError{Op: "open", Path: name, Err: unix.EINVAL}
			}
			return os.OpenFile(name, flag, perm)
		}, unix.Pread, unix.Pwrite},
		{"per request", os.OpenFile, func(fd int, p []byte, off int64) (int, error) {
			if isDirect(fd) {
				return 0, unix.EINVAL
			}
			return unix.Pread(fd, p, off)
		}, func(fd int, p []byte, off int64) (int, error) {
			if isDirect(fd) {
				return 0, unix.EINVAL
			}
			return unix.Pwrite(fd, p, off)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			defer setIO(tc.open, tc.pread, tc.pwrite)()
			dir := t.TempDir()
			src, want := image(t, dir, "src", 2*miB+100, []seg{{miB, miB, 'r'}, {2 * miB, 100, 'r'}}, 9)
			dst, old := oldPlaintext(t, dir, "dst", 3*miB)
			res, err := Copy(context.Background(), src, dst, Options{ChunkSize: 64 * kiB, Verify: true})
			if err != nil {
				t.Fatal(err)
			}
			if res.SourceDirect || res.TargetDirect {
				t.Errorf("O_DIRECT reported although refused: source %v, target %v", res.SourceDirect, res.TargetDirect)
			}
			checkTarget(t, dst, want, old, false)
			if res.SHA256 != sum(want) {
				t.Errorf("SHA256 = %s, want %s", res.SHA256, sum(want))
			}
			got, err := Hash(context.Background(), dst, res.Size, HashOptions{})
			if err != nil || got != sum(want) {
				t.Errorf("Hash = %s, %v; want %s", got, err, sum(want))
			}
		})
	}
}
