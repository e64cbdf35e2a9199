package copier

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"hash/maphash"
	"time"

	"github.com/cryptshift/cryptshift/internal/doors/progress"
)

// Defaults, chosen by measurement (see the package documentation).
const (
	DefaultChunkSize = 4 << 20
	DefaultDepth     = 8
	DefaultReaders   = 2
	DefaultWriters   = 4
	// DefaultCheckpointEvery applies when OnCheckpoint is set and
	// CheckpointEvery is not: at most this much work is lost by a crash,
	// and the fdatasync it costs is noise at this interval.
	DefaultCheckpointEvery = 1 << 30
)

// verifyLag is how many written chunks may wait for verification.
const verifyLag = 256

// Options tune Copy. The zero value is the safe, fast default.
type Options struct {
	// ChunkSize is the unit of I/O and of checkpoints, a multiple of 4096
	// between 4 KiB and 64 MiB; default 4 MiB, the largest request virtio
	// and NVMe queues take whole (max_sectors_kb 4096 on the development
	// VM): 4 GiB of O_DIRECT writes one at a time took 2.43 s in 1 MiB
	// requests, 2.09 s in 4 MiB, 1.99 s in 8 MiB and 2.24 s in 16 MiB.
	ChunkSize int
	// Depth is how many chunks of source data may be in flight between
	// reading and writing (memory use is about 2×Depth×ChunkSize with
	// Verify); default 8.
	Depth int
	// Readers and Writers are the numbers of concurrent reads and writes;
	// default 2 and 4. One request at a time leaves a virtio or NVMe queue
	// idle between requests: 4 GiB of 4 MiB O_DIRECT writes took 2.07 s
	// one at a time, 1.89 s two, 1.74 s four and 1.61 s eight at a time on
	// the development VM; reads gained little beyond two (2.47 s, 2.36 s,
	// 2.34 s with one, two, four) and lost with eight (2.73 s).
	Readers, Writers int
	// Buffered disables O_DIRECT. By default the copier uses O_DIRECT and
	// falls back to buffered I/O by itself where the kernel refuses it.
	Buffered bool
	// Verify re-reads every chunk from the target once it is written and
	// compares it with what was hashed; Copy fails at the first chunk whose
	// bytes differ. See "Verification" in the package documentation.
	Verify bool
	// KeepTail leaves the target's bytes beyond the source size as they
	// are. By default they are overwritten with zeros: a target larger than
	// the source (an LV rounded up to whole extents) can hold old plaintext
	// there, and a guest that is later given the whole device would read it.
	KeepTail bool
	// Progress, when set, is called with the state after each chunk (and
	// once at the start); it runs on the copy's goroutine and must be quick.
	Progress func(Progress)
	// Checkpoint resumes a copy that an earlier Copy returned or reported.
	Checkpoint *Checkpoint
	// OnCheckpoint, when set, is called with a durable checkpoint (the
	// target was fdatasync'd first) every CheckpointEvery bytes; an error
	// aborts the copy. Callers persist it in their journal.
	OnCheckpoint    func(Checkpoint) error
	CheckpointEvery int64
}

// Result describes a copy. On error, Checkpoint says how far it durably got.
type Result struct {
	Size      int64 `json:"size"`       // source size: bytes hashed and copied
	DataBytes int64 `json:"data_bytes"` // allocated, non-zero bytes read
	ZeroBytes int64 `json:"zero_bytes"` // allocated bytes found to be zero
	HoleBytes int64 `json:"hole_bytes"` // unallocated source bytes, not read
	TailBytes int64 `json:"tail_bytes"` // zeros written beyond the source size
	// SHA256 is the hex digest of the source, holes as zeros: what
	// `sha256sum SOURCE` prints. Set only when the copy completed.
	SHA256 string `json:"sha256,omitempty"`
	// Verified says the whole target was read back and equals the bytes
	// hashed into SHA256 (and zeros in the tail).
	Verified     bool       `json:"verified"`
	SourceDirect bool       `json:"source_direct"`
	TargetDirect bool       `json:"target_direct"`
	Checkpoint   Checkpoint `json:"checkpoint"`
}

// Checkpoint is how far a copy durably got. It holds no source bytes: the
// hash state is taken at chunk boundaries, multiples of the 64-byte SHA-256
// block, where the state is only the chaining value and the length. It is
// safe to store in a journal on plaintext storage.
type Checkpoint struct {
	// Offset is where to continue: [0, Offset) of the target is written
	// (and verified when Verified), synced and hashed.
	Offset int64 `json:"offset"`
	// Size is the source size the checkpoint belongs to.
	Size int64 `json:"size"`
	// State is the marshalled SHA-256 state after Offset source bytes,
	// while Offset < Size.
	State []byte `json:"sha256_state,omitempty"`
	// SHA256 is the source digest once Offset >= Size (the tail is being
	// zeroed); a state there could end in a partial block of source bytes.
	SHA256   string `json:"sha256,omitempty"`
	Verified bool   `json:"verified"`
	Data     int64  `json:"data_bytes"`
	Zero     int64  `json:"zero_bytes"`
	Hole     int64  `json:"hole_bytes"`
	Tail     int64  `json:"tail_bytes"`
}

// Progress is the state of a copy or hash for a progress display.
type Progress struct {
	Done  int64 // bytes finished, including those of a resumed checkpoint
	Total int64 // bytes to do: the source size plus a zeroed tail
	Data  int64 // non-zero source bytes read
	Zero  int64 // zero bytes found in allocated source data
	Hole  int64 // source bytes in holes, not read
	Tail  int64 // zero bytes written beyond the source size
}

// Report adapts a progress.Reporter to Options.Progress. The caller calls
// r.Start before and r.Done after the copy.
func Report(r progress.Reporter) func(Progress) {
	return func(p Progress) {
		r.Update(p.Done,
			progress.Counter{Name: "data", Value: p.Data},
			progress.Counter{Name: "zero", Value: p.Zero + p.Hole + p.Tail})
	}
}

// Test hooks: testHookAfterWrite damages the target between the write and
// the read-back, testHookAfterHash damages a source buffer after it was
// hashed (a pipeline bug), to prove that verification catches both.
var (
	testHookAfterWrite func(d *dev, off int64, n int)
	testHookAfterHash  func(off int64, data []byte)
)

// setHookAfterWrite and setHookAfterHash set a test hook and return the
// function that clears it again.
func setHookAfterWrite(h func(d *dev, off int64, n int)) (restore func()) {
	prev := testHookAfterWrite
	testHookAfterWrite = h
	return func() { testHookAfterWrite = prev }
}

func setHookAfterHash(h func(off int64, data []byte)) (restore func()) {
	prev := testHookAfterHash
	testHookAfterHash = h
	return func() { testHookAfterHash = prev }
}

func (o *Options) check() error {
	if o.ChunkSize == 0 {
		o.ChunkSize = DefaultChunkSize
	}
	if o.ChunkSize%ioAlign != 0 || o.ChunkSize < ioAlign || o.ChunkSize > 64<<20 {
		return fmt.Errorf("chunk size %d is not a multiple of 4096 between 4 KiB and 64 MiB", o.ChunkSize)
	}
	if o.Depth <= 0 {
		o.Depth = DefaultDepth
	}
	if o.Readers <= 0 {
		o.Readers = DefaultReaders
	}
	if o.Writers <= 0 {
		o.Writers = DefaultWriters
	}
	if o.CheckpointEvery <= 0 {
		o.CheckpointEvery = DefaultCheckpointEvery
	}
	return nil
}

// Copy copies the source file or block device src onto the target dst,
// which must exist and be at least as large. See the package documentation.
func Copy(ctx context.Context, src, dst string, opt Options) (Result, error) {
	if err := opt.check(); err != nil {
		return Result{}, fmt.Errorf("cannot copy %s to %s: %w", src, dst, err)
	}
	s, err := open(src, false, !opt.Buffered)
	if err != nil {
		return Result{}, err
	}
	defer s.close()
	d, err := open(dst, true, !opt.Buffered)
	if err != nil {
		return Result{}, err
	}
	defer d.close()
	if s.same(d) {
		return Result{}, fmt.Errorf("cannot copy %s to %s: they are the same file or device", src, dst)
	}
	if d.size < s.size {
		return Result{}, fmt.Errorf("cannot copy %s to %s: the target has %d bytes, %d fewer than the source; create a target of at least %d bytes",
			src, dst, d.size, s.size-d.size, s.size)
	}
	if int64(opt.ChunkSize)%d.align != 0 || int64(opt.ChunkSize)%s.align != 0 {
		return Result{}, fmt.Errorf("cannot copy %s to %s: chunk size %d is not a multiple of the devices' logical block size", src, dst, opt.ChunkSize)
	}
	c := &copyRun{
		reader: newReader(s, s.size, opt.ChunkSize, opt.Depth),
		d:      d,
		opt:    opt,
		h:      sha256.New(),
		seed:   maphash.MakeSeed(),
	}
	c.end = s.size
	if !opt.KeepTail {
		c.end = d.size
	}
	return c.run(ctx)
}

// reader produces the chunks of a source: the planning half walks the data
// extents in order and takes buffers, the reading half fills them.
type reader struct {
	s         *dev
	size      int64 // source bytes to read and hash
	end       int64 // where chunks stop (beyond size: tail chunks)
	chunkSize int64
	pool      pool
	zero      []byte
}

func newReader(s *dev, size int64, chunkSize, depth int) *reader {
	return &reader{
		s: s, size: size, end: size, chunkSize: int64(chunkSize),
		pool: newPool(depth, chunkSize+int(s.align)),
		zero: alloc(chunkSize + maxAlign),
	}
}

// plan sends the chunks from start to r.end, in order, until the pipe stops.
func (r *reader) plan(p *pipe, start int64, out chan<- *chunk) {
	defer close(out)
	ext := &extents{fd: r.s.fd, size: r.size}
	var seq int64
	for off := start; off < r.end; seq++ {
		if p.stopped() {
			return
		}
		next := (off/r.chunkSize + 1) * r.chunkSize
		if off < r.size {
			next = min(next, r.size)
		} else {
			next = min(next, r.end)
		}
		c := &chunk{seq: seq, off: off, n: int(next - off)}
		switch {
		case off >= r.size:
			c.kind = kindTail
		default:
			spans, err := ext.data(off, next, nil)
			if err != nil {
				p.fail(fmt.Errorf("cannot find the data extents of %s at offset %d: %w", r.s.name, off, err))
				return
			}
			if len(spans) == 0 {
				c.kind, c.holeB = kindHole, int64(c.n)
				break
			}
			c.kind, c.spans = kindData, spans
			select {
			case c.buf = <-r.pool:
			case <-p.halt:
				return
			case <-p.abort:
				return
			}
		}
		out <- c
		off = next
	}
}

// read fills a data chunk and sorts its bytes into data, zero and hole.
func (r *reader) read(c *chunk) error {
	if c.kind == kindData {
		data, err := r.s.readAt(c.buf, c.off, c.n)
		if err != nil {
			return err
		}
		c.data = data
		var in int64
		for _, s := range c.spans {
			in += s.end - s.off
		}
		c.holeB = int64(c.n) - in
		c.zeroB = countZero(c, r.zero)
		c.dataB = in - c.zeroB
		if c.dataB == 0 {
			// Holes read as zeros too, so the whole chunk is zero: write
			// it from the shared zero buffer and free the buffer now.
			c.kind = kindZero
			r.pool.put(c.buf)
			c.buf, c.data = nil, nil
		}
	}
	c.done |= stRead
	return nil
}

// bytes returns the chunk's content for hashing or writing.
func (r *reader) bytes(c *chunk) []byte {
	if c.data != nil {
		return c.data
	}
	return r.zero[:c.n]
}

type copyRun struct {
	*reader
	d     *dev
	opt   Options
	h     hash.Hash
	seed  maphash.Seed
	vpool pool

	// Owned by the finishing goroutine.
	off         int64 // target bytes finished
	state       []byte
	digest      string // source digest once it is complete
	cnt         Checkpoint
	durable     Checkpoint
	lastCp      int64
	broken      bool
	lastProg    time.Time
	resumedPast bool
}

func (c *copyRun) run(ctx context.Context) (Result, error) {
	res := Result{Size: c.size}
	start := int64(0)
	c.durable = Checkpoint{Size: c.size, Verified: c.opt.Verify}
	if cp := c.opt.Checkpoint; cp != nil {
		if err := c.resume(cp); err != nil {
			return res, fmt.Errorf("cannot resume copy of %s to %s: %w", c.s.name, c.d.name, err)
		}
		start = cp.Offset
		c.durable = *cp
	}
	c.off, c.lastCp = start, start
	c.cnt = c.durable
	if c.size == 0 {
		c.digest = hex.EncodeToString(h0[:])
	}
	res.Checkpoint = c.durable

	p := newPipe()
	defer context.AfterFunc(ctx, p.stop)()
	planned := make(chan *chunk, chanCap)
	p.wg.Go(func() { c.plan(p, start, planned) })
	read := p.parallel(planned, c.opt.Readers, chanCap, c.read)
	hashed := p.serial(read, c.hash)
	// Verification may lag behind the writes by verifyLag chunks. A written
	// chunk waiting for verification holds no buffer, only its offset and
	// hash state, so the lag costs no memory to speak of; it lets the writes
	// run at full speed through data runs while the read-back catches up in
	// zero runs, instead of every stage waiting for the slowest at each step.
	outCap := chanCap
	if c.opt.Verify {
		outCap = verifyLag
	}
	out := p.parallel(hashed, c.opt.Writers, outCap, c.write)
	if c.opt.Verify {
		c.vpool = newPool(c.opt.Readers+2, c.opt.ChunkSize+int(c.d.align))
		take := p.serial(out, func(ch *chunk) error {
			select {
			case ch.vbuf = <-c.vpool:
			case <-p.abort:
			case <-p.halt:
			}
			return nil
		})
		vread := p.parallel(take, c.opt.Readers, chanCap, c.verifyRead)
		out = p.serial(vread, c.verifyCheck)
	}
	c.progress(true)
	for ch := range out {
		c.finish(p, ch)
	}
	p.wg.Wait()
	complete := !c.broken && c.off == c.end

	res.SourceDirect, res.TargetDirect = c.s.direct.Load(), c.d.direct.Load()
	res.DataBytes, res.ZeroBytes, res.HoleBytes, res.TailBytes = c.cnt.Data, c.cnt.Zero, c.cnt.Hole, c.cnt.Tail
	if p.err != nil || !complete {
		// Make what finished durable so that the checkpoint can be trusted;
		// if even that fails, the last durable checkpoint stands.
		if c.off > c.durable.Offset && c.d.sync() == nil {
			if cp, ok := c.checkpoint(); ok {
				c.durable = cp
			}
		}
		res.Checkpoint = c.durable
		if p.err != nil {
			return res, p.err
		}
		return res, fmt.Errorf("cannot copy %s to %s: interrupted after %d of %d bytes; resume from the checkpoint: %w",
			c.s.name, c.d.name, c.durable.Offset, c.end, context.Cause(ctx))
	}
	if err := c.d.sync(); err != nil {
		return res, err
	}
	cp, _ := c.checkpoint()
	c.durable, res.Checkpoint = cp, cp
	res.SHA256 = c.digest
	res.Verified = c.opt.Verify
	return res, nil
}

func (c *copyRun) resume(cp *Checkpoint) error {
	if cp.Size != c.size {
		return fmt.Errorf("the checkpoint is for a source of %d bytes, the source has %d", cp.Size, c.size)
	}
	if cp.Offset < 0 || cp.Offset > c.end {
		return fmt.Errorf("checkpoint offset %d is outside the target's %d bytes", cp.Offset, c.end)
	}
	if c.opt.Verify && !cp.Verified && cp.Offset > 0 {
		return errors.New("the checkpoint was made without verification; restart the copy, or resume without verification and verify with Hash")
	}
	switch {
	case cp.Offset >= c.size:
		if len(cp.SHA256) != 2*sha256.Size {
			return errors.New("the checkpoint is past the source end but has no source digest")
		}
		if _, err := hex.DecodeString(cp.SHA256); err != nil {
			return fmt.Errorf("the checkpoint's source digest is not hex: %w", err)
		}
		c.digest = cp.SHA256
		c.resumedPast = true
	case cp.Offset == 0 && cp.State == nil:
	default:
		if cp.Offset%zeroBlock != 0 {
			return fmt.Errorf("checkpoint offset %d is not a multiple of %d", cp.Offset, zeroBlock)
		}
		if err := c.h.(encoding.BinaryUnmarshaler).UnmarshalBinary(cp.State); err != nil {
			return fmt.Errorf("cannot restore the hash state: %w", err)
		}
		// The state records how many bytes it has hashed; it must be the
		// checkpoint's offset, or the state belongs to another checkpoint.
		if n := binary.BigEndian.Uint64(cp.State[len(cp.State)-8:]); int64(n) != cp.Offset {
			return fmt.Errorf("the hash state covers %d bytes, the checkpoint offset is %d", n, cp.Offset)
		}
		c.state = cp.State
	}
	return nil
}

func (c *copyRun) hash(ch *chunk) error {
	if ch.kind != kindTail {
		c.h.Write(c.bytes(ch))
		st, err := c.h.(encoding.BinaryMarshaler).MarshalBinary()
		if err != nil {
			return fmt.Errorf("cannot save hash state: %w", err)
		}
		ch.state = st
		if c.opt.Verify && ch.data != nil {
			ch.sum = maphash.Bytes(c.seed, ch.data)
		}
		if testHookAfterHash != nil && ch.data != nil {
			testHookAfterHash(ch.off, ch.data)
		}
	}
	ch.done |= stHash
	return nil
}

func (c *copyRun) write(ch *chunk) error {
	err := c.d.writeAt(ch.data, ch.off, ch.n, c.zero)
	if !c.opt.Verify {
		// The hash has the source bytes; nothing else needs them.
		c.pool.put(ch.buf)
		ch.buf, ch.data = nil, nil
	}
	if err != nil {
		return err
	}
	if testHookAfterWrite != nil {
		testHookAfterWrite(c.d, ch.off, ch.n)
	}
	ch.done |= stWrite
	return nil
}

func (c *copyRun) verifyRead(ch *chunk) error {
	if ch.vbuf == nil {
		return nil
	}
	if !c.d.direct.Load() {
		if err := c.d.dropCache(ch.off, int64(ch.n)); err != nil {
			return err
		}
	}
	back, err := c.d.readAt(ch.vbuf, ch.off, ch.n)
	if err != nil {
		return err
	}
	ch.back = back
	return nil
}

// verifyCheck compares what was read back with what was hashed: data
// chunks byte for byte with the source buffer, which the chunk has owned
// since it was read; zero, hole and tail chunks with zeros. A 64-bit hash of
// the buffer, taken right after SHA-256 absorbed it, must also match the
// bytes read back: if a pipeline bug changed the buffer after hashing, the
// write and the comparison would both see the changed bytes, and only this
// catches it. Equal bytes give an equal SHA-256, so the target's digest is
// the source's without hashing the target a second time: on this kind of
// machine SHA-256 is the scarcest resource of a copy.
func (c *copyRun) verifyCheck(ch *chunk) error {
	defer func() {
		c.vpool.put(ch.vbuf)
		c.pool.put(ch.buf)
		ch.vbuf, ch.back, ch.buf, ch.data = nil, nil, nil, nil
	}()
	if ch.back == nil {
		return nil
	}
	if ch.kind == kindData {
		if !bytes.Equal(ch.back, ch.data) || maphash.Bytes(c.seed, ch.back) != ch.sum {
			return c.mismatch(ch)
		}
	} else if !allZero(ch.back, c.zero) {
		return c.mismatch(ch)
	}
	ch.done |= stVerify
	return nil
}

func (c *copyRun) mismatch(ch *chunk) error {
	return fmt.Errorf("cannot verify %s: bytes %d to %d read back differ from what was written; the target is unusable (check the kernel log for I/O errors)",
		c.d.name, ch.off, ch.off+int64(ch.n))
}

// finish accounts for a chunk that went through every stage, in order.
func (c *copyRun) finish(p *pipe, ch *chunk) {
	want := stRead | stHash | stWrite
	if c.opt.Verify {
		want |= stVerify
	}
	c.pool.put(ch.buf)
	c.vpool.put(ch.vbuf)
	ch.buf, ch.vbuf = nil, nil
	if c.broken || ch.done != want {
		// Something before this chunk failed: nothing after it counts.
		c.broken = true
		return
	}
	c.off = ch.off + int64(ch.n)
	c.cnt.Data += ch.dataB
	c.cnt.Zero += ch.zeroB
	c.cnt.Hole += ch.holeB
	if ch.kind == kindTail {
		c.cnt.Tail += int64(ch.n)
	} else {
		c.state = ch.state
		if c.off == c.size {
			c.digest = stateDigest(c.state)
		}
	}
	c.progress(c.off == c.end)
	if c.opt.OnCheckpoint != nil && c.off-c.lastCp >= c.opt.CheckpointEvery && c.off < c.end && !p.stopped() {
		c.lastCp = c.off
		if err := c.d.sync(); err != nil {
			p.fail(err)
			return
		}
		cp, ok := c.checkpoint()
		if !ok {
			return
		}
		if err := c.opt.OnCheckpoint(cp); err != nil {
			p.fail(fmt.Errorf("cannot record the copy's checkpoint at offset %d: %w", cp.Offset, err))
			return
		}
		c.durable = cp
	}
}

// checkpoint describes c.off; ok is false where a checkpoint would have to
// carry source bytes (never, with chunk sizes that are multiples of 4096,
// but the guarantee matters more than the checkpoint).
func (c *copyRun) checkpoint() (Checkpoint, bool) {
	cp := c.cnt
	cp.Offset, cp.Size, cp.Verified = c.off, c.size, c.opt.Verify
	cp.State, cp.SHA256 = nil, ""
	switch {
	case c.off >= c.size:
		cp.SHA256 = c.digest
	case c.off == 0:
	case c.off%sha256.BlockSize != 0:
		return Checkpoint{}, false
	default:
		cp.State = c.state
	}
	return cp, true
}

// progress reports at most every 50 ms (and always at the start and end): a
// 4 MiB chunk takes about 2 ms, and a caller's callback need not throttle.
func (c *copyRun) progress(force bool) {
	if c.opt.Progress == nil {
		return
	}
	now := time.Now()
	if !force && now.Sub(c.lastProg) < 50*time.Millisecond {
		return
	}
	c.lastProg = now
	c.opt.Progress(Progress{Done: c.off, Total: c.end, Data: c.cnt.Data, Zero: c.cnt.Zero, Hole: c.cnt.Hole, Tail: c.cnt.Tail})
}

// h0 is the SHA-256 of nothing, the digest of an empty source.
var h0 = sha256.Sum256(nil)

// stateDigest finishes a copy of a marshalled SHA-256 state.
func stateDigest(state []byte) string {
	h := sha256.New()
	if err := h.(encoding.BinaryUnmarshaler).UnmarshalBinary(state); err != nil {
		panic(err) // the state came from MarshalBinary in this process
	}
	return hex.EncodeToString(h.Sum(nil))
}
