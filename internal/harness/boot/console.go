package boot

import (
	"context"
	"fmt"
	"io"
	"os"
	"regexp"
	"sync"
	"time"
)

// Console is a guest's serial console: everything the guest prints is
// appended to a log file and kept in memory, and Expect waits for a regular
// expression in what arrived since the last match, like expect(1). Send
// types a line.
//
// Secrets typed with SendSecret are never logged; the guest's prompts
// (cryptsetup's askpass, getty) do not echo them.
type Console struct {
	mu      sync.Mutex
	cond    chan struct{} // closed and replaced whenever data arrives or the stream ends
	buf     []byte
	cursor  int // Expect searches buf[cursor:]
	eof     bool
	log     *os.File
	logPath string
	w       io.Writer
	typed   int // lines typed with Send or SendSecret
}

// newConsole reads r (qemu's serial output) until it ends, writing a copy to
// logPath; w is where Send writes (qemu's serial input).
func newConsole(r io.Reader, w io.Writer, logPath string) (*Console, error) {
	lf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("cannot create the console log: %w", err)
	}
	c := &Console{cond: make(chan struct{}), log: lf, logPath: logPath, w: w}
	go c.read(r)
	return c, nil
}

func (c *Console) read(r io.Reader) {
	chunk := make([]byte, 4096)
	for {
		n, err := r.Read(chunk)
		c.mu.Lock()
		if n > 0 {
			c.buf = append(c.buf, chunk[:n]...)
			c.log.Write(chunk[:n])
		}
		if err != nil {
			c.eof = true
			c.log.Close()
			if rc, ok := r.(io.Closer); ok {
				rc.Close()
			}
		}
		close(c.cond)
		c.cond = make(chan struct{})
		c.mu.Unlock()
		if err != nil {
			return
		}
	}
}

// LogPath is the file holding everything the console printed.
func (c *Console) LogPath() string { return c.logPath }

// Expect waits up to timeout for re to match the console output that
// arrived after the previous match, and returns the match and its
// submatches. The search then continues after the match. It fails when the
// guest stops (the console closes) or the time is up, quoting the
// console's last lines.
func (c *Console) Expect(ctx context.Context, re *regexp.Regexp, timeout time.Duration) ([]string, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		c.mu.Lock()
		window := c.buf[c.cursor:]
		if loc := re.FindSubmatchIndex(window); loc != nil {
			m := make([]string, len(loc)/2)
			for i := range m {
				if loc[2*i] >= 0 {
					m[i] = string(window[loc[2*i]:loc[2*i+1]])
				}
			}
			c.cursor += loc[1]
			c.mu.Unlock()
			return m, nil
		}
		eof, wake := c.eof, c.cond
		c.mu.Unlock()
		if eof {
			return nil, fmt.Errorf("cannot find %q on the console: the guest stopped; console tail:\n%s", re, c.Tail(15))
		}
		select {
		case <-wake:
		case <-ctx.Done():
			return nil, fmt.Errorf("cannot find %q on the console within %s: %w; console tail:\n%s", re, timeout, ctx.Err(), c.Tail(15))
		}
	}
}

// ExpectAny waits for the first of several expressions and returns its
// index and submatches.
func (c *Console) ExpectAny(ctx context.Context, timeout time.Duration, res ...*regexp.Regexp) (int, []string, error) {
	alt := ""
	for i, re := range res {
		if i > 0 {
			alt += "|"
		}
		alt += fmt.Sprintf("(?P<alt%d>%s)", i, re.String())
	}
	m, err := c.Expect(ctx, regexp.MustCompile(alt), timeout)
	if err != nil {
		return -1, nil, err
	}
	// m[0] is the whole match; find which alternative group matched.
	all := regexp.MustCompile(alt)
	for i := range res {
		idx := all.SubexpIndex(fmt.Sprintf("alt%d", i))
		if m[idx] != "" {
			return i, res[i].FindStringSubmatch(m[idx]), nil
		}
	}
	return -1, m, nil
}

// Send types line and a carriage return (what a terminal's Enter sends).
func (c *Console) Send(line string) error {
	c.mu.Lock()
	fmt.Fprintf(c.log, "\n[harness typed %q]\n", line)
	c.mu.Unlock()
	return c.write(line)
}

// SendSecret types a secret and Enter without logging it.
func (c *Console) SendSecret(secret []byte) error {
	c.mu.Lock()
	fmt.Fprintf(c.log, "\n[harness typed a secret (%d bytes), not logged]\n", len(secret))
	c.mu.Unlock()
	return c.write(string(secret))
}

func (c *Console) write(s string) error {
	c.mu.Lock()
	c.typed++
	c.mu.Unlock()
	if _, err := io.WriteString(c.w, s+"\r"); err != nil {
		return fmt.Errorf("cannot type on the console: %w", err)
	}
	return nil
}

// Typed is how many lines the harness typed on this console: zero proves
// a boot went without console input.
func (c *Console) Typed() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.typed
}

// Tail returns the console's last n lines.
func (c *Console) Tail(n int) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return lastLines(string(c.buf), n)
}

// Output is everything the console printed so far.
func (c *Console) Output() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return string(c.buf)
}
