// Package execx is cryptshift's one door to external programs.
//
// Every tool cryptshift trusts (cryptsetup, lvm, qemu-img, mkfs, mount, ...)
// is named in Tools, runs through a Runner, and is logged as an operation:
// the quoted command line, its duration and, on failure, its stderr with
// every secret scrubbed. Secrets travel only on stdin or on extra file
// descriptors, never in argv, so /proc/PID/cmdline never shows them.
package execx

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Tools maps the tool names cryptshift uses to the programs it runs.
// Tests and packagers may repoint an entry; nothing else names a path.
var Tools = map[string]string{
	"cryptsetup": "cryptsetup",
	"lvm":        "lvm",
	"qemu-img":   "qemu-img",
	"mkfs.ext4":  "mkfs.ext4",
	"mkfs.xfs":   "mkfs.xfs",
	"mkfs.vfat":  "mkfs.vfat",
	"mkswap":     "mkswap",
	"mount":      "mount",
	"umount":     "umount",
	"swapon":     "swapon",
	"swapoff":    "swapoff",
	"wipefs":     "wipefs",
	"blkdiscard": "blkdiscard",
	"resize2fs":  "resize2fs",
	"losetup":    "losetup",
	"chroot":     "chroot",
	"virsh":      "virsh",
	"udevadm":    "udevadm",
	"rsync":      "rsync",
	"systemctl":  "systemctl",
	"clevis":     "clevis",
}

// SetTool points the tool name at prog (tests: a stub) and returns the
// function that puts the previous entry back (or removes a new one).
func SetTool(name, prog string) (restore func()) {
	prev, had := Tools[name]
	Tools[name] = prog
	return func() {
		if had {
			Tools[name] = prev
		} else {
			delete(Tools, name)
		}
	}
}

// Cmd is one invocation of a tool.
type Cmd struct {
	Tool string   // key into Tools, e.g. "cryptsetup"
	Args []string // never a secret
	// Stdin is written to the tool's standard input. It may be a secret.
	Stdin []byte
	// ExtraFiles become file descriptors 3, 4, ... of the child, each a pipe
	// carrying the given bytes. They may be secrets.
	ExtraFiles [][]byte
	// Redact lists further values (for example a passphrase that a tool might
	// echo) that must be scrubbed from anything logged or returned.
	Redact [][]byte
	Env    []string // extra environment, appended to the process's own
	Dir    string
}

// Argv is the command line as it would be typed: the tool's program and its
// arguments. It holds no secrets by construction.
func (c Cmd) Argv() []string {
	prog := Tools[c.Tool]
	if prog == "" {
		prog = c.Tool
	}
	return append([]string{prog}, c.Args...)
}

// String quotes the command line for logs and scripts.
func (c Cmd) String() string { return Quote(c.Argv()) }

// Result is what a finished tool reported.
type Result struct {
	Stdout   []byte
	Stderr   []byte
	ExitCode int
	Duration time.Duration
}

// Runner runs tools. Exec runs them for real; Recorder records them in tests.
type Runner interface {
	Run(ctx context.Context, c Cmd) (Result, error)
}

// Error is returned when a tool exits non-zero or cannot be started.
type Error struct {
	Cmd      string // quoted command line, no secrets
	ExitCode int
	Stderr   string // already redacted
	Err      error
}

func (e *Error) Error() string {
	msg := strings.TrimSpace(e.Stderr)
	if msg == "" {
		msg = e.Err.Error()
	}
	return fmt.Sprintf("cannot run %s: %s", e.Cmd, msg)
}

func (e *Error) Unwrap() error { return e.Err }

// Exec runs tools on this machine.
type Exec struct {
	Log *slog.Logger // nil: slog.Default()
}

// Run starts the tool, feeds stdin and extra descriptors, and waits.
func (x Exec) Run(ctx context.Context, c Cmd) (Result, error) {
	log := x.Log
	if log == nil {
		log = slog.Default()
	}
	argv := c.Argv()
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Dir = c.Dir
	// Own process group: a Ctrl-C on the terminal goes to cryptshift
	// alone, which stops at the next step boundary instead of killing
	// cryptsetup or mkfs halfway through a write.
	// Pdeathsig: if cryptshift is killed (kill -9, OOM), the tool dies with
	// it rather than running on as an orphan that a resumed apply would
	// race; for the step, that is the same as a power loss, which resume
	// handles.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if len(c.Env) > 0 {
		cmd.Env = append(os.Environ(), c.Env...)
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if c.Stdin != nil {
		cmd.Stdin = bytes.NewReader(c.Stdin)
	}
	var writers sync.WaitGroup
	var parentEnds []*os.File
	for _, data := range c.ExtraFiles {
		r, w, err := os.Pipe()
		if err != nil {
			return Result{}, fmt.Errorf("cannot create pipe for %s: %w", argv[0], err)
		}
		cmd.ExtraFiles = append(cmd.ExtraFiles, r)
		parentEnds = append(parentEnds, r)
		writers.Add(1)
		go func(w *os.File, data []byte) {
			defer writers.Done()
			defer w.Close()
			_, _ = w.Write(data) // EPIPE when the tool does not read it all is fine
		}(w, data)
	}
	start := time.Now()
	err := cmd.Start()
	for _, r := range parentEnds {
		r.Close()
	}
	if err == nil {
		err = cmd.Wait()
	}
	writers.Wait()
	res := Result{
		Stdout:   Scrub(stdout.Bytes(), c.secrets()),
		Stderr:   Scrub(stderr.Bytes(), c.secrets()),
		Duration: time.Since(start),
	}
	line := Quote(argv)
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			res.ExitCode = ee.ExitCode()
		} else {
			res.ExitCode = -1
		}
		log.Warn("command failed", "cmd", line, "exit", res.ExitCode,
			"duration", res.Duration.Round(time.Millisecond), "stderr", strings.TrimSpace(string(res.Stderr)))
		return res, &Error{Cmd: line, ExitCode: res.ExitCode, Stderr: string(res.Stderr), Err: err}
	}
	log.Debug("command", "cmd", line, "duration", res.Duration.Round(time.Millisecond))
	return res, nil
}

func (c Cmd) secrets() [][]byte {
	var s [][]byte
	if len(c.Stdin) > 0 {
		s = append(s, c.Stdin)
	}
	s = append(s, c.ExtraFiles...)
	return append(s, c.Redact...)
}

// Scrub replaces every occurrence of each secret (and of each of its lines,
// since tools may echo a passphrase without its newline) with "<redacted>".
func Scrub(b []byte, secrets [][]byte) []byte {
	if len(secrets) == 0 || len(b) == 0 {
		return b
	}
	out := b
	for _, s := range secrets {
		for _, part := range append([][]byte{s}, bytes.Split(s, []byte("\n"))...) {
			part = bytes.TrimSpace(part)
			if len(part) < 4 { // too short to be a secret worth scrubbing; avoids mangling output
				continue
			}
			out = bytes.ReplaceAll(out, part, []byte("<redacted>"))
		}
	}
	return out
}

// Quote renders argv as a shell-safe command line.
func Quote(argv []string) string {
	q := make([]string, len(argv))
	for i, a := range argv {
		q[i] = QuoteArg(a)
	}
	return strings.Join(q, " ")
}

// QuoteArg quotes one argument for POSIX shells when it needs it.
func QuoteArg(a string) string {
	if a == "" {
		return "''"
	}
	safe := true
	for _, r := range a {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("-_./=:,+@%", r)) {
			safe = false
			break
		}
	}
	if safe {
		return a
	}
	return "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
}

// Recorder is a Runner for unit tests: it records every command and answers
// from Responses (matched by the quoted command line prefix), else succeeds
// with empty output.
type Recorder struct {
	mu        sync.Mutex
	Cmds      []Cmd
	Responses map[string]Result // key: prefix of Cmd.String()
	Errors    map[string]error  // key: prefix of Cmd.String()
}

// Run records c and returns the scripted answer.
func (r *Recorder) Run(_ context.Context, c Cmd) (Result, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.Cmds = append(r.Cmds, c)
	line := c.String()
	for prefix, err := range r.Errors {
		if strings.HasPrefix(line, prefix) {
			return Result{ExitCode: 1}, &Error{Cmd: line, ExitCode: 1, Err: err}
		}
	}
	for prefix, res := range r.Responses {
		if strings.HasPrefix(line, prefix) {
			return res, nil
		}
	}
	return Result{}, nil
}

// Lines returns the recorded command lines.
func (r *Recorder) Lines() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]string, len(r.Cmds))
	for i, c := range r.Cmds {
		out[i] = c.String()
	}
	return out
}
