package boot

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// SSH runs commands in a guest as root over the forwarded port, with the
// harness's test key. Host keys are not checked: every guest is a throwaway
// booted from the test's own images, and the initramfs's dropbear has
// other host keys than the booted system's sshd on the same port.
type SSH struct {
	Port int
	Key  string // private key file (mode 0600)
	Log  string // every command, its status and stderr are appended here
}

func (s *SSH) argv(command string) []string {
	return []string{"ssh",
		"-i", s.Key, "-p", strconv.Itoa(s.Port),
		"-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes",
		"-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
		"-o", "LogLevel=ERROR", "-o", "ConnectTimeout=10",
		"-o", "ServerAliveInterval=15", "-o", "ServerAliveCountMax=8",
		"root@127.0.0.1", command}
}

// Run runs a shell command in the guest with stdin (nil: none) and returns
// its stdout. A non-zero status is an error carrying stderr.
func (s *SSH) Run(ctx context.Context, command string, stdin io.Reader) (string, error) {
	cmd := exec.CommandContext(ctx, s.argv(command)[0], s.argv(command)[1:]...)
	cmd.Stdin = stdin
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	start := time.Now()
	err := cmd.Run()
	s.logf("$ %s\n# %s, %v\n%s%s", command, time.Since(start).Round(time.Millisecond), errOr(err), indent(out.String()), indent(errb.String()))
	if err != nil {
		return out.String(), fmt.Errorf("cannot run %q in the guest over ssh: %v: %s", command, err, strings.TrimSpace(lastLines(errb.String(), 20)))
	}
	return out.String(), nil
}

// WriteFile copies data to path in the guest (through stdin, so secrets
// never appear in an argument list), with mode.
func (s *SSH) WriteFile(ctx context.Context, path string, data []byte, mode os.FileMode) error {
	_, err := s.Run(ctx, fmt.Sprintf("umask 077; cat > %s && chmod %o %s", shellQuote(path), mode, shellQuote(path)), bytes.NewReader(data))
	return err
}

// CopyFile copies a host file into the guest.
func (s *SSH) CopyFile(ctx context.Context, src, dst string, mode os.FileMode) error {
	f, err := os.Open(src)
	if err != nil {
		return fmt.Errorf("cannot copy %s into the guest: %w", src, err)
	}
	defer f.Close()
	_, err = s.Run(ctx, fmt.Sprintf("cat > %s && chmod %o %s", shellQuote(dst), mode, shellQuote(dst)), f)
	return err
}

// WaitUp polls until a command succeeds over SSH (sshd is up and the
// command, e.g. `systemctl is-system-running --wait`, is happy), or until
// timeout. vm, if set, ends the wait early when qemu exits.
func (s *SSH) WaitUp(ctx context.Context, vm *VM, command string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var last error
	for {
		tctx, tcancel := context.WithTimeout(ctx, 60*time.Second)
		_, err := s.Run(tctx, command, nil)
		tcancel()
		if err == nil {
			return nil
		}
		last = err
		if vm != nil && vm.Exited() {
			return fmt.Errorf("cannot reach the guest over ssh: it powered off; console tail:\n%s", vm.Console.Tail(15))
		}
		select {
		case <-ctx.Done():
			tailText := ""
			if vm != nil {
				tailText = "; console tail:\n" + vm.Console.Tail(15)
			}
			return fmt.Errorf("cannot reach the guest over ssh within %s: %v%s", timeout, last, tailText)
		case <-time.After(2 * time.Second):
		}
	}
}

func (s *SSH) logf(format string, args ...any) {
	if s.Log == "" {
		return
	}
	f, err := os.OpenFile(s.Log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return
	}
	defer f.Close()
	fmt.Fprintf(f, format, args...)
}

// GenerateKey makes an ed25519 key pair (KEY and KEY.pub) with ssh-keygen.
func GenerateKey(ctx context.Context, path string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("cannot create the key directory: %w", err)
	}
	out, err := exec.CommandContext(ctx, "ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "cryptshift-boot-test", "-f", path).CombinedOutput()
	if err != nil {
		return fmt.Errorf("cannot generate the test SSH key (install openssh-client): %v: %s", err, out)
	}
	return nil
}

func errOr(err error) string {
	if err == nil {
		return "ok"
	}
	return err.Error()
}

func indent(s string) string {
	if s == "" {
		return ""
	}
	return "  " + strings.ReplaceAll(strings.TrimRight(s, "\n"), "\n", "\n  ") + "\n"
}
