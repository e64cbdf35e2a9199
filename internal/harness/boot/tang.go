package boot

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// TangCommands: Debian's tang package installs tangd for socket activation
// (one HTTP exchange on stdin/stdout per connection, tangd.socket on port
// 80). Without systemd, socat plays the socket unit: it accepts on a port
// and runs tangd per connection.
var (
	Tangd       = "/usr/libexec/tangd"
	TangdKeygen = "/usr/libexec/tangd-keygen"
)

// Tang is a Tang server on the host, listening on 127.0.0.1:Port. Guests
// reach it at GuestFwdAddr:Port through Machine.GuestFwd (Forward).
type Tang struct {
	KeyDir string
	Port   int
	// GuestPort is the port guests use at GuestFwdAddr (0: Port). A fixed
	// one keeps a URL written into a layout valid across runs, whatever
	// free port the host listener got.
	GuestPort int
	Log       string
	p         *proc
}

// NewTangKeys makes a Tang key directory (a signing and an exchange key)
// with tangd-keygen.
func NewTangKeys(ctx context.Context, dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("cannot create the tang key directory: %w", err)
	}
	if out, err := exec.CommandContext(ctx, TangdKeygen, dir).CombinedOutput(); err != nil {
		return fmt.Errorf("cannot generate tang keys (install tang): %v: %s", err, out)
	}
	return nil
}

// StartTang serves the keys in keyDir on 127.0.0.1:port (0: a free port),
// logging every request to runDir/NAME.tang.log. Stop ends it by PID;
// StartTang again with the same keys and port brings the same server back.
func StartTang(ctx context.Context, keyDir, runDir, name string, port int) (*Tang, error) {
	if port == 0 {
		var err error
		if port, err = freePort(); err != nil {
			return nil, err
		}
	}
	log := filepath.Join(runDir, name+".tang.log")
	p, err := startProc("tang", log, []string{"socat", "-d",
		fmt.Sprintf("TCP-LISTEN:%d,bind=127.0.0.1,fork,reuseaddr", port),
		"EXEC:" + Tangd + " " + keyDir}, nil)
	if err != nil {
		return nil, fmt.Errorf("cannot start tang (install socat and tang): %w", err)
	}
	t := &Tang{KeyDir: keyDir, Port: port, Log: log, p: p}
	wctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	for {
		c, err := net.Dial("tcp", "127.0.0.1:"+strconv.Itoa(port))
		if err == nil {
			c.Close()
			return t, nil
		}
		if p.Exited() {
			return nil, fmt.Errorf("cannot start tang on port %d: socat exited: %s", port, tail(log, 5))
		}
		select {
		case <-wctx.Done():
			p.Stop(time.Second)
			return nil, fmt.Errorf("cannot start tang on port %d: %w", port, wctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Stop ends the listener by PID; guests' connections are then refused.
func (t *Tang) Stop() { t.p.Stop(3 * time.Second) }

// Forward is the Machine.GuestFwd entry that lets a guest reach this
// server at GuestFwdAddr:Port: qemu runs one socat per guest connection,
// relaying it to the host's listener.
func (t *Tang) Forward() (int, string) {
	return t.guestPort(), fmt.Sprintf("socat - TCP:127.0.0.1:%d", t.Port)
}

func (t *Tang) guestPort() int {
	if t.GuestPort != 0 {
		return t.GuestPort
	}
	return t.Port
}

// URL is the server's address as a guest sees it.
func (t *Tang) URL() string { return fmt.Sprintf("http://%s:%d", GuestFwdAddr, t.guestPort()) }

// Thumbprint is the SHA-256 thumbprint of the signing key, which
// `clevis luks bind ... tang '{"url":...,"thp":...}'` pins so that the bind
// needs no interactive trust prompt.
func (t *Tang) Thumbprint(ctx context.Context) (string, error) {
	keys, _ := filepath.Glob(filepath.Join(t.KeyDir, "*.jwk"))
	for _, k := range keys {
		// `jose jwk use -u verify` succeeds only for a key that may verify
		// signatures: the signing key, not the exchange key.
		if err := exec.CommandContext(ctx, "jose", "jwk", "use", "-i", k, "-r", "-u", "verify").Run(); err != nil {
			continue
		}
		out, err := exec.CommandContext(ctx, "jose", "jwk", "thp", "-i", k, "-a", "S256").Output()
		if err != nil {
			return "", fmt.Errorf("cannot compute the thumbprint of %s: %w", k, err)
		}
		return strings.TrimSpace(string(out)), nil
	}
	return "", fmt.Errorf("cannot find tang's signing key in %s", t.KeyDir)
}

// Requests counts the key recovery requests (POST /rec/...) tangd logged:
// the evidence that a guest unlocked through this server.
func (t *Tang) Requests() int {
	b, _ := os.ReadFile(t.Log)
	return bytes.Count(b, []byte("POST /rec/"))
}
