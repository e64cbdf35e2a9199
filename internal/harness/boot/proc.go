package boot

import (
	"context"

	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/cryptshift/cryptshift/internal/harness/vmtest"
)

// proc is a process the harness started: qemu, swtpm, a Tang listener. Its
// stdout and stderr go to a log file; it dies with the test binary
// (PR_SET_PDEATHSIG) and Stop ends it by PID, never by name.
type proc struct {
	name string
	cmd  *exec.Cmd
	log  string
	done chan struct{}
	err  error // valid once done is closed
}

// startProc starts argv with its output in logPath. extra, if set, adjusts
// the command before it starts (stdin, stdout pipes, environment).
func startProc(name, logPath string, argv []string, extra func(*exec.Cmd)) (*proc, error) {
	lf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("cannot create the log of %s: %w", name, err)
	}
	fmt.Fprintf(lf, "%s: started: %s\n", time.Now().Format(time.RFC3339), quote(argv))
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = lf, lf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if extra != nil {
		extra(cmd)
	}
	if err := cmd.Start(); err != nil {
		lf.Close()
		return nil, fmt.Errorf("cannot start %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		fmt.Fprintf(lf, "%s: exited: %v\n", time.Now().Format(time.RFC3339), p.err)
		lf.Close()
		close(p.done)
	}()
	return p, nil
}

// Exited reports whether the process has ended.
func (p *proc) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Wait waits for the process to end, or for ctx.
func (p *proc) Wait(ctx context.Context) error {
	select {
	case <-p.done:
		return p.err
	case <-ctx.Done():
		return fmt.Errorf("cannot wait for %s to exit: %w", p.name, ctx.Err())
	}
}

// Stop sends SIGTERM to the process's PID, then SIGKILL after grace, and
// waits for it. Stopping an exited process is a no-op.
func (p *proc) Stop(grace time.Duration) {
	if p.Exited() {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		return
	case <-time.After(grace):
	}
	_ = p.cmd.Process.Kill()
	<-p.done
}

// freePort asks the kernel for a free TCP port on 127.0.0.1. Another
// process may take it before qemu binds it; qemu then fails to start and
// says so, which is rare enough to accept in a test harness.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("cannot find a free TCP port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// waitForPath waits until path exists (a socket a daemon creates).
func waitForPath(ctx context.Context, path string, p *proc) error {
	for {
		if _, err := os.Stat(path); err == nil {
			return nil
		}
		if p != nil && p.Exited() {
			return fmt.Errorf("cannot start %s: it exited before creating %s (see %s)", p.name, path, p.log)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("cannot wait for %s: %w", path, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// tail returns the last n lines of a file, for failure messages.
func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(cannot read %s: %v)", filepath.Base(path), err)
	}
	return lastLines(string(b), n)
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(strings.ReplaceAll(s, "\r", ""), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// shellQuote and quote are vmtest's: one quoting for the whole harness.
var (
	shellQuote = vmtest.ShellQuote
	quote      = vmtest.Quote
)
