package secrets

import (
	"fmt"
	"log/slog"
	"sync"

	"golang.org/x/sys/unix"
)

// While a passphrase or key is in memory it must not leave it: not in a
// core dump (of cryptshift, or of a tool it runs), not through ptrace by
// another process of the same user, not into swap. Harden closes the first
// two for the whole process; secrets read or made here live in memory
// outside the Go heap (the garbage collector never copies them), excluded
// from core dumps and locked into RAM where the system allows it.

var (
	hardenOnce sync.Once
	hardenErr  error
	lockOnce   sync.Once

	// Seams for tests (set with setMemoryLock): a system that refuses
	// mlock, and where warnings go.
	mlock = unix.Mlock
	warn  = func(msg string) { slog.Warn(msg) }
)

// setMemoryLock replaces the mlock call and the warning sink, arms the
// once-only lock warning again, and returns the function that puts all
// three back.
func setMemoryLock(lock func([]byte) error, w func(string)) (restore func()) {
	prevLock, prevWarn := mlock, warn
	mlock, warn, lockOnce = lock, w, sync.Once{}
	return func() { mlock, warn, lockOnce = prevLock, prevWarn, sync.Once{} }
}

// Harden sets RLIMIT_CORE to 0 (soft and hard, so no child tool can raise
// it: cryptsetup and qemu-img hold the same keys) and makes the process
// not dumpable (prctl PR_SET_DUMPABLE 0: no core file even from a
// setrlimit-ignoring core pattern pipe, no ptrace attach, /proc/PID/mem
// closed to other processes of the user). It is idempotent; every reader
// and generator here calls it before a secret exists, and the verbs that
// handle keys call it first thing.
func Harden() error {
	hardenOnce.Do(func() {
		if err := unix.Setrlimit(unix.RLIMIT_CORE, &unix.Rlimit{Cur: 0, Max: 0}); err != nil {
			hardenErr = fmt.Errorf("cannot disable core dumps (setrlimit RLIMIT_CORE): %w", err)
			return
		}
		if err := unix.Prctl(unix.PR_SET_DUMPABLE, 0, 0, 0, 0); err != nil {
			hardenErr = fmt.Errorf("cannot make the process non-dumpable (prctl PR_SET_DUMPABLE): %w", err)
		}
	})
	return hardenErr
}

// alloc returns n zeroed bytes for a secret: an anonymous private mapping
// (outside the Go heap), advised not to be dumped (MADV_DONTDUMP) and
// locked into RAM. When the system refuses the lock (RLIMIT_MEMLOCK), the
// secret is still kept apart and out of dumps, and a warning says once that
// it may reach swap. The pages are zeroed by Wipe and go back to the
// system when the process ends.
func alloc(n int) ([]byte, error) {
	if err := Harden(); err != nil {
		return nil, err
	}
	if n <= 0 {
		return []byte{}, nil
	}
	size := (n + unix.Getpagesize() - 1) / unix.Getpagesize() * unix.Getpagesize()
	b, err := unix.Mmap(-1, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		return nil, fmt.Errorf("cannot allocate memory for a secret: %w", err)
	}
	// Not fatal: MADV_DONTDUMP exists since Linux 3.4; RLIMIT_CORE 0 and
	// PR_SET_DUMPABLE 0 already keep dumps away.
	_ = unix.Madvise(b, unix.MADV_DONTDUMP)
	if err := mlock(b); err != nil {
		lockOnce.Do(func() {
			var lim unix.Rlimit
			unix.Getrlimit(unix.RLIMIT_MEMLOCK, &lim)
			warn(fmt.Sprintf("cannot lock secrets into memory (mlock: %v; RLIMIT_MEMLOCK is %d bytes): the kernel may write a passphrase or key to swap; raise the limit (ulimit -l, LimitMEMLOCK=) or run as root, and keep swap encrypted", err, lim.Cur))
		})
	}
	return b[:n], nil // cap is the whole mapping: release needs it
}

// release wipes a buffer from alloc and gives its pages back; only for
// buffers that never left this package (a grown read buffer's old copy).
func release(b []byte) {
	if cap(b) == 0 {
		return
	}
	full := b[:cap(b)]
	Wipe(full)
	unix.Munlock(full)
	unix.Munmap(full)
}
