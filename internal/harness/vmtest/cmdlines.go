package vmtest

import (
	"os"
	"path/filepath"
	"sync"
	"time"
)

// WatchCmdlines records every process command line (/proc/PID/cmdline,
// NUL-separated) seen until stop is called, polling every 2 ms, and stop
// returns them. Tests scan the result for secrets, which must never appear
// on a command line; in the guest they see every process there is.
func WatchCmdlines() (stop func() []string) {
	var mu sync.Mutex
	seen := map[string]bool{}
	done := make(chan struct{})
	go func() {
		for {
			select {
			case <-done:
				return
			default:
			}
			pids, _ := filepath.Glob("/proc/[0-9]*/cmdline")
			for _, p := range pids {
				if b, err := os.ReadFile(p); err == nil && len(b) > 0 {
					mu.Lock()
					seen[string(b)] = true
					mu.Unlock()
				}
			}
			time.Sleep(2 * time.Millisecond)
		}
	}()
	return func() []string {
		close(done)
		mu.Lock()
		defer mu.Unlock()
		out := make([]string, 0, len(seen))
		for k := range seen {
			out = append(out, k)
		}
		return out
	}
}
