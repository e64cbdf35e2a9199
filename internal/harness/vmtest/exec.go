package vmtest

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"strings"
)

// run runs a build or guest-side helper tool and returns its stdout. The
// harness does not go through internal/execx on purpose: it builds and drives
// the test machine, it is not cryptshift, and its commands carry no secrets.
func run(ctx context.Context, prog string, args ...string) ([]byte, error) {
	return runDir(ctx, "", prog, args...)
}

// runDir is run in the working directory dir.
func runDir(ctx context.Context, dir, prog string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, prog, args...)
	cmd.Dir = dir
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		msg := strings.TrimSpace(stderr.String())
		if msg == "" {
			msg = err.Error()
		}
		return stdout.Bytes(), fmt.Errorf("cannot run %s: %s", quote(append([]string{prog}, args...)), msg)
	}
	return stdout.Bytes(), nil
}

// ShellQuote quotes s for POSIX sh, for the other harness packages (boot).
func ShellQuote(s string) string { return shellQuote(s) }

// Quote renders argv as one shell command line, for logs.
func Quote(argv []string) string { return quote(argv) }

// shellQuote quotes s for POSIX sh (dash, busybox ash): single quotes, with
// embedded single quotes closed, escaped and reopened.
func shellQuote(s string) string {
	if s != "" && strings.IndexFunc(s, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("@%+=:,./_-", r))
	}) < 0 {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

func quote(argv []string) string {
	q := make([]string, len(argv))
	for i, a := range argv {
		q[i] = shellQuote(a)
	}
	return strings.Join(q, " ")
}
