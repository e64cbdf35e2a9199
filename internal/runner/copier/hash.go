package copier

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"time"

	"golang.org/x/sys/unix"
)

// HashOptions tune Hash; the zero value is the fast default.
type HashOptions struct {
	ChunkSize int  // default 4 MiB, a multiple of 4096
	Depth     int  // chunks in flight; default 8
	Readers   int  // concurrent reads; default 2
	Buffered  bool // no O_DIRECT; see below
	Progress  func(Progress)
}

// Hash returns the hex SHA-256 of the first size bytes of the file or block
// device at path (the whole of it when size < 0), with holes hashed as zeros
// without reading them. It uses O_DIRECT by default, so that re-reading a
// target through a dm-crypt mapping reads and decrypts what is on the disk,
// not plaintext left in the page cache by the copy.
func Hash(ctx context.Context, path string, size int64, opt HashOptions) (string, error) {
	o := Options{ChunkSize: opt.ChunkSize, Depth: opt.Depth, Readers: opt.Readers}
	if err := o.check(); err != nil {
		return "", fmt.Errorf("cannot hash %s: %w", path, err)
	}
	s, err := open(path, false, !opt.Buffered)
	if err != nil {
		return "", err
	}
	defer s.close()
	if size < 0 {
		size = s.size
	}
	if size > s.size {
		return "", fmt.Errorf("cannot hash %s: it has %d bytes, %d fewer than the %d to hash", path, s.size, size-s.size, size)
	}
	if int64(o.ChunkSize)%s.align != 0 {
		return "", fmt.Errorf("cannot hash %s: chunk size %d is not a multiple of its logical block size %d", path, o.ChunkSize, s.align)
	}
	if !s.direct.Load() && size > 0 {
		// Read the device, not pages a buffered copy left in the cache.
		if err := unix.Fdatasync(s.fd); err != nil {
			return "", fmt.Errorf("cannot hash %s: cannot sync it: %w", path, err)
		}
		if err := s.dropCache(0, size); err != nil {
			return "", fmt.Errorf("cannot hash %s: %w", path, err)
		}
	}
	r := newReader(s, size, o.ChunkSize, o.Depth)
	p := newPipe()
	defer context.AfterFunc(ctx, p.stop)()
	planned := make(chan *chunk, chanCap)
	p.wg.Go(func() { r.plan(p, 0, planned) })
	read := p.parallel(planned, o.Readers, chanCap, r.read)

	h := sha256.New()
	var pr Progress
	pr.Total = size
	var last time.Time
	report := func(force bool) {
		if opt.Progress != nil && (force || time.Since(last) >= 50*time.Millisecond) {
			last = time.Now()
			opt.Progress(pr)
		}
	}
	report(true)
	for c := range read {
		if !p.stopped() && c.done&stRead != 0 {
			h.Write(r.bytes(c))
			pr.Done += int64(c.n)
			pr.Data += c.dataB
			pr.Zero += c.zeroB
			pr.Hole += c.holeB
			report(pr.Done == size)
		}
		r.pool.put(c.buf)
	}
	p.wg.Wait()
	if p.err != nil {
		return "", fmt.Errorf("cannot hash %s: %w", path, p.err)
	}
	if pr.Done < size {
		return "", fmt.Errorf("cannot hash %s: interrupted after %d of %d bytes: %w", path, pr.Done, size, context.Cause(ctx))
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
