package copier

import (
	"bytes"
	"sync"
)

// chunk is one piece of the copy, at most ChunkSize bytes, never straddling
// a multiple of ChunkSize nor the end of the source. Ownership passes from
// stage to stage through channels, so a chunk is touched by one goroutine at
// a time.
type chunk struct {
	seq  int64
	off  int64
	n    int
	kind kind
	// spans are the source's data extents inside the chunk.
	spans []span
	buf   []byte // a pool buffer while the chunk holds source data
	data  []byte // the chunk's bytes inside buf
	vbuf  []byte // a pool buffer for verification
	back  []byte // the chunk's bytes read back from the target, in vbuf
	sum   uint64 // maphash of data, taken when it was hashed
	// Byte accounting: data + zero + hole == n for source chunks.
	dataB, zeroB, holeB int64
	state               []byte // source hash state after this chunk
	done                stage  // stages that finished their work on it
}

type kind uint8

const (
	kindHole kind = iota // no data extent: zeros, nothing read
	kindData             // read; at least one non-zero block
	kindZero             // read; all zero
	kindTail             // target beyond the source end: zeros, not hashed
)

type stage uint8

const (
	stRead stage = 1 << iota
	stHash
	stWrite
	stVerify
)

// pipe runs the stages of one copy or hash. The first error aborts it: every
// stage then stops working but keeps draining its input, so no goroutine is
// left blocked and every buffer returns to its pool.
//
// The caller's context ending halts it: chunks not yet worked on are skipped
// as on an error, so a cancellation waits only for the system calls under
// way, and the work that finished in order up to there is what counts.
type pipe struct {
	abort    chan struct{} // closed on the first error
	halt     chan struct{} // closed when the context ends
	once     sync.Once
	haltOnce sync.Once
	err      error
	wg       sync.WaitGroup
}

// chanCap is the capacity of the channels between stages. Source data in
// flight is bounded by the buffer pool; small channels keep zero and hole
// chunks (which need no buffer) from piling up, which would delay a
// cancellation without making anything faster.
const chanCap = 2

func newPipe() *pipe {
	return &pipe{abort: make(chan struct{}), halt: make(chan struct{})}
}

func (p *pipe) stop() { p.haltOnce.Do(func() { close(p.halt) }) }

func (p *pipe) fail(err error) {
	p.once.Do(func() {
		p.err = err
		close(p.abort)
	})
}

// stopped reports whether the pipe failed or was halted.
func (p *pipe) stopped() bool {
	select {
	case <-p.abort:
		return true
	case <-p.halt:
		return true
	default:
		return false
	}
}

// parallel runs f on each chunk from in with the given number of workers
// and delivers the chunks in sequence order, starting at sequence 0. Chunks
// are delivered even when f fails or the pipe is stopped, so that later
// stages release their buffers.
func (p *pipe) parallel(in <-chan *chunk, workers, outCap int, f func(*chunk) error) <-chan *chunk {
	mid := make(chan *chunk, workers)
	out := make(chan *chunk, outCap)
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for c := range in {
				if !p.stopped() {
					if err := f(c); err != nil {
						p.fail(err)
					}
				}
				mid <- c
			}
		})
	}
	p.wg.Go(func() {
		wg.Wait()
		close(mid)
	})
	p.wg.Go(func() {
		defer close(out)
		pending := make(map[int64]*chunk)
		var next int64
		for c := range mid {
			pending[c.seq] = c
			for {
				c, ok := pending[next]
				if !ok {
					break
				}
				delete(pending, next)
				out <- c
				next++
			}
		}
	})
	return out
}

// serial runs f on each chunk in order in one goroutine.
func (p *pipe) serial(in <-chan *chunk, f func(*chunk) error) <-chan *chunk {
	out := make(chan *chunk, chanCap)
	p.wg.Go(func() {
		defer close(out)
		for c := range in {
			if !p.stopped() {
				if err := f(c); err != nil {
					p.fail(err)
				}
			}
			out <- c
		}
	})
	return out
}

// pool is a fixed set of aligned buffers. Buffers are taken in sequence order
// by a single goroutine (the planner, or the verify dispatcher): if workers
// took them, a worker holding an early chunk could starve while later chunks
// hold every buffer waiting in a reorder stage.
type pool chan []byte

func newPool(n, size int) pool {
	p := make(pool, n)
	for range n {
		p <- alloc(size)
	}
	return p
}

func (pl pool) put(b []byte) {
	if b != nil {
		pl <- b
	}
}

// zeroBlock is the granularity at which allocated data is recognised as
// zero: the page and filesystem block size, the unit a guest filesystem
// writes in.
const zeroBlock = 4096

// countZero returns how many bytes of c's data spans lie in all-zero blocks.
// Blocks follow absolute 4 KiB boundaries so that the result does not depend
// on the chunk size.
func countZero(c *chunk, zero []byte) int64 {
	var z int64
	for _, s := range c.spans {
		for p := s.off; p < s.end; {
			q := min((p+zeroBlock)&^(zeroBlock-1), s.end)
			b := c.data[p-c.off : q-c.off]
			if bytes.Equal(b, zero[:len(b)]) {
				z += q - p
			}
			p = q
		}
	}
	return z
}

// allZero reports whether b holds only zero bytes.
func allZero(b, zero []byte) bool {
	for len(b) > 0 {
		k := min(len(b), len(zero))
		if !bytes.Equal(b[:k], zero[:k]) {
			return false
		}
		b = b[k:]
	}
	return true
}
