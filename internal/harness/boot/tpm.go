package boot

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// SWTPM is a software TPM 2.0 (swtpm) for one guest boot. Its state
// directory outlives the process, so a key sealed in one boot can be
// unsealed in the next: start a new SWTPM on the same StateDir.
type SWTPM struct {
	StateDir string
	Socket   string
	p        *proc
}

// StartSWTPM starts `swtpm socket --tpm2` with its state in stateDir and
// its control socket (what qemu's tpm emulator backend connects to) and
// log in runDir. Stop ends it by PID.
func StartSWTPM(ctx context.Context, stateDir, runDir, name string) (*SWTPM, error) {
	if err := os.MkdirAll(stateDir, 0o700); err != nil {
		return nil, fmt.Errorf("cannot create the TPM state directory: %w", err)
	}
	sock := filepath.Join(runDir, name+".swtpm.sock")
	_ = os.Remove(sock)
	log := filepath.Join(runDir, name+".swtpm.log")
	p, err := startProc("swtpm", log, []string{"swtpm", "socket", "--tpm2",
		"--tpmstate", "dir=" + stateDir,
		"--ctrl", "type=unixio,path=" + sock,
		"--log", "file=" + log + ",level=1",
		// Ends with the qemu that used it; Stop covers a qemu that never
		// connected.
		"--terminate"}, nil)
	if err != nil {
		return nil, fmt.Errorf("cannot start swtpm (install swtpm): %w", err)
	}
	wctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	if err := waitForPath(wctx, sock, p); err != nil {
		p.Stop(time.Second)
		return nil, err
	}
	return &SWTPM{StateDir: stateDir, Socket: sock, p: p}, nil
}

// Stop ends swtpm by PID.
func (s *SWTPM) Stop() { s.p.Stop(3 * time.Second) }
