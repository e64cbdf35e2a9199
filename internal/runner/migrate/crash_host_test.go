package migrate_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/cryptshift/cryptshift/internal/runner/migrate"
)

var (
	cliOnce sync.Once
	cliPath string
	cliErr  error
	cliDir  string
)

// cli builds the cryptshift binary once per test run: the crash matrix
// kills a real process.
func cli(t *testing.T) string {
	t.Helper()
	cliOnce.Do(func() {
		cliDir, cliErr = os.MkdirTemp("", "cs-cli-")
		if cliErr != nil {
			return
		}
		cliPath = filepath.Join(cliDir, "cryptshift")
		out, err := exec.Command("go", "build", "-o", cliPath, "github.com/cryptshift/cryptshift/cmd/cryptshift").CombinedOutput()
		if err != nil {
			cliErr = errors.New(string(out))
		}
	})
	if cliErr != nil {
		t.Fatalf("cannot build cryptshift: %v", cliErr)
	}
	return cliPath
}

func TestMain(m *testing.M) {
	code := m.Run()
	if cliDir != "" {
		os.RemoveAll(cliDir)
	}
	os.Exit(code)
}

// runCLI runs `cryptshift migrate` for g; with a failpoint it expects the
// process to die of SIGKILL there and reports whether it did.
func (e *env) runCLI(t *testing.T, g *guest, mode, failpoint string, extra ...string) (killed bool, out string, err error) {
	t.Helper()
	args := append([]string{"migrate", g.name, "--connect", e.d.Socket, "--to", "pool:enc", "--allow-plaintext-secret-store", "--mode", mode,
		"--yes", "--journal", e.journalOf(g), "--iter-time", "10", "--progress", "none"}, extra...)
	cmd := exec.Command(cli(t), args...)
	cmd.Env = append(os.Environ(), "CRYPTSHIFT_FAULT="+failpoint)
	var buf bytes.Buffer
	cmd.Stdout, cmd.Stderr = &buf, &buf
	err = cmd.Run()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() && ws.Signal() == syscall.SIGKILL {
			return true, buf.String(), nil
		}
	}
	return false, buf.String(), err
}

func (e *env) journalOf(g *guest) string { return filepath.Join(e.dir, "journal", g.name+".journal") }

type crashCounts struct{ injected, resumed, rolledBack atomic.Int32 }

// TestHostCrashMatrix kills cryptshift with SIGKILL at every journal state
// (and during a copy and while a block job runs), then either resumes
// (the result must be the complete, verified migration) or rolls back (the
// guest must be back on its original disks with identical data and
// nothing of the migration left).
func TestHostCrashMatrix(t *testing.T) {
	e := newEnv(t)
	cli(t)
	// Every state boundary is covered against the fake libvirt
	// (TestCrashResumeAndRollback); here each kind of boundary is crossed
	// once for real: a target half made, a running qemu-img, a snapshot
	// taken, both copies verified, a block job left running in qemu by the
	// dead process, one disk switched and the other not.
	points := map[string][]string{
		migrate.ModeOffline: {
			"state:vda:target-created", "copy:vda", "state:vdb:verified", "begin:domain.switch", "state:vda:switched",
		},
		migrate.ModeLive: {
			"state:vda:target-created", "state:vda:snapshot", "copy:vdb", "state:vdb:verified",
			"job:vda:copy", "state:vda:switched",
		},
	}
	var n crashCounts
	start := time.Now()
	t.Run("matrix", func(t *testing.T) {
		i := 0
		for _, mode := range []string{migrate.ModeOffline, migrate.ModeLive} {
			for _, fp := range points[mode] {
				for _, then := range []string{"resume", "rollback"} {
					i++
					name := mode[:3] + "-" + then[:3] + "-" + itoa(i)
					t.Run(mode+"/"+fp+"/"+then, func(t *testing.T) {
						t.Parallel()
						e.crashOnce(t, &n, name, mode, fp, then)
					})
				}
			}
		}
	})
	t.Logf("crash matrix: %d crashes injected, %d resumed to a verified migration, %d rolled back to identical originals, in %s",
		n.injected.Load(), n.resumed.Load(), n.rolledBack.Load(), time.Since(start).Round(time.Second))
}

func (e *env) crashOnce(t *testing.T, n *crashCounts, name, mode, fp, then string) {
	live := mode == migrate.ModeLive
	g := e.newGuest(t, name, live)
	pid := e.d.QemuPID(g.name)
	killed, out, err := e.runCLI(t, g, mode, fp)
	if !killed {
		t.Fatalf("failpoint %s did not fire (err %v):\n%s", fp, err, out)
	}
	n.injected.Add(1)
	switch then {
	case "resume":
		killed, out, err := e.runCLI(t, g, mode, "", "--resume")
		if killed || err != nil {
			t.Fatalf("resume after %s: %v\n%s\n%s", fp, err, out, e.d.DomainLog(g.name))
		}
		e.checkMigrated(t, g, live)
		n.resumed.Add(1)
	case "rollback":
		// Through the CLI, as a user would: the rollback verb sees a
		// migrate journal by its header and hands it to migrate.Rollback.
		out, err := exec.Command(cli(t), "rollback", e.journalOf(g)).CombinedOutput()
		if err != nil {
			t.Fatalf("rollback after %s: %v\n%s\n%s", fp, err, out, e.d.DomainLog(g.name))
		}
		if !live {
			// The guest boots its original disks.
			must(t, e.c.StartDomain(g.name))
		}
		e.checkOriginal(t, g, true)
		n.rolledBack.Add(1)
	}
	if live && e.d.QemuPID(g.name) != pid {
		t.Fatalf("the live guest was restarted (qemu pid %d, was %d)", e.d.QemuPID(g.name), pid)
	}
}

func itoa(i int) string {
	const digits = "0123456789"
	if i < 10 {
		return digits[i : i+1]
	}
	return itoa(i/10) + digits[i%10:i%10+1]
}

// TestHostCLIOfflineProgressJSON runs the CLI as a user would, with
// --progress=json: the events on standard error are JSON lines with a
// start and a done event for each disk's copy, and stdout says what was
// migrated.
func TestHostCLIOfflineProgressJSON(t *testing.T) {
	e := newEnv(t)
	g := e.newGuest(t, "cli", false)
	cmd := exec.Command(cli(t), "migrate", g.name, "--connect", e.d.Socket, "--to", "pool:enc", "--allow-plaintext-secret-store", "--mode", "offline",
		"--yes", "--journal", e.journalOf(g), "--iter-time", "10", "--progress", "json")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("%v\n%s\n%s", err, stdout.String(), stderr.String())
	}
	events := map[string]bool{}
	for _, line := range bytes.Split(bytes.TrimSpace(stderr.Bytes()), []byte("\n")) {
		var ev struct {
			Event string `json:"event"`
			Task  string `json:"task"`
			Done  int64  `json:"done"`
			Total int64  `json:"total"`
			Msg   string `json:"msg"` // a log record, e.g. a retried qemu-img
		}
		if err := json.Unmarshal(line, &ev); err != nil || (ev.Event == "") == (ev.Msg == "") {
			t.Fatalf("neither a JSON event nor a JSON log record on stderr: %q", line)
		}
		events[ev.Event+" "+ev.Task] = true
		if ev.Event == "done" && ev.Task == "copy vda" && ev.Done != ev.Total {
			t.Errorf("copy vda done at %d of %d", ev.Done, ev.Total)
		}
	}
	for _, want := range []string{"start copy vda", "done copy vda", "start copy vdb", "done copy vdb", "done verify vdb"} {
		if !events[want] {
			t.Errorf("no %q event; got %v", want, events)
		}
	}
	if !bytes.Contains(stdout.Bytes(), []byte("migrated cli: vda switched, vdb switched")) {
		t.Errorf("stdout:\n%s", stdout.String())
	}
	e.checkMigrated(t, g, false)
}

// TestHostLiveGuestRestartsMidway: the guest is powered off and started
// again between the snapshot and the switch (a reboot through qemu, a host
// admin's virsh destroy/start). It must boot from its encrypted overlay
// (libvirt 9.0 needs the definition fixed up for that), and the migration
// must finish once it runs.
func TestHostLiveGuestRestartsMidway(t *testing.T) {
	e := newEnv(t)
	g := e.newGuest(t, "restart", true)
	if killed, out, err := e.runCLI(t, g, migrate.ModeLive, "state:vdb:verified"); !killed {
		t.Fatalf("failpoint did not fire: %v\n%s", err, out)
	}
	must(t, e.c.DestroyDomain(g.name))
	if _, out, err := e.runCLI(t, g, migrate.ModeLive, "", "--resume"); err == nil || !bytes.Contains([]byte(out), []byte("is shut off")) {
		t.Fatalf("resume with the guest off: got %v\n%s", err, out)
	}
	if err := e.c.StartDomain(g.name); err != nil {
		t.Fatalf("the guest does not start on its encrypted overlays: %v\n%s", err, e.d.DomainLog(g.name))
	}
	if _, out, err := e.runCLI(t, g, migrate.ModeLive, "", "--resume"); err != nil {
		t.Fatalf("resume: %v\n%s", err, out)
	}
	e.checkMigrated(t, g, true)
}
