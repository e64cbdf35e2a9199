package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"unicode/utf8"

	"golang.org/x/sys/unix"

	"github.com/cryptshift/cryptshift/internal/harness/golden"
	"github.com/cryptshift/cryptshift/internal/model/inventory"
	"github.com/cryptshift/cryptshift/internal/model/plan"
	"github.com/cryptshift/cryptshift/internal/textfmt"
)

// TestPlanTableFitsColumns: with COLUMNS the plan table fits the width
// (long descriptions wrap under their column, long targets are elided in
// the middle); goldens at 80 and 120 columns. Only the verbatim crypttab
// and fstab lines, which must stay copyable, may be longer.
func TestPlanTableFitsColumns(t *testing.T) {
	for _, cols := range []int{80, 120} {
		r := runEnv(t, []string{fmt.Sprintf("COLUMNS=%d", cols)}, "plan")
		if r.code != 0 {
			t.Fatalf("exit %d: %s", r.code, r.stderr)
		}
		golden.Check(t, fmt.Sprintf("../../testdata/golden/plans/mail-host.%d.txt", cols), []byte(r.stdout))
		section := ""
		for _, l := range strings.Split(r.stdout, "\n") {
			if strings.HasSuffix(l, ":") && !strings.HasPrefix(l, " ") {
				section = l
			}
			if n := utf8.RuneCountInString(l); n > cols && section != "crypttab:" && section != "fstab:" {
				t.Errorf("COLUMNS=%d: a %d-column line: %q", cols, n, l)
			}
		}
	}
	// Without a terminal and without COLUMNS nothing is wrapped: the
	// output is the same as the unwrapped golden, for diffs and scripts.
	r := runEnv(t, []string{"COLUMNS="}, "plan")
	want, _ := os.ReadFile("../../testdata/golden/plans/mail-host.txt")
	if r.stdout != string(want) {
		t.Error("plan without a terminal or COLUMNS differs from the unwrapped golden")
	}
}

// TestNoEscapeSequencesUnlessTerminal: colour only on a terminal, never
// in a pipe and never with NO_COLOR. The terminal case runs the binary on
// a pseudo-terminal, so the check can fail both ways.
func TestNoEscapeSequencesUnlessTerminal(t *testing.T) {
	inv, _ := os.ReadFile("../../playbooks/examples/mail-host.inventory.json")
	used := strings.Replace(string(inv), `"path": "/dev/sdb",`, `"path": "/dev/sdb", "content": {"type": "ext4", "uuid": "0e3c9c1a-2c44-4f3a-9a51-6f1c52f0e001", "label": "old-mail"},`, 1)
	usedFile := t.TempDir() + "/used.json"
	os.WriteFile(usedFile, []byte(used), 0o644)
	cases := [][]string{
		{"plan", "--example", "mail-host", "--inventory", usedFile, "--allow-destroy"},
		{"verify", "--root", fixtures + "swap-plain-partition/root"},
		{"verify", "--root", fixtures + "swap-plain-partition/root", "--lang", "de"},
		{"doctor", "--for", "plan"},
		{"inventory"},
	}
	for _, args := range cases {
		if r := run(t, args...); strings.Contains(r.stdout+r.stderr, "\033[") {
			t.Errorf("%v in a pipe: escape sequences in the output", args)
		}
		for _, env := range [][]string{{"NO_COLOR=1"}, {"TERM=dumb"}, nil} {
			out := onTerminal(t, env, args...)
			has := strings.Contains(out, "\033[")
			if want := env == nil; has != want {
				t.Errorf("%v on a terminal with %v: escape sequences %v, want %v", args, env, has, want)
			}
		}
	}
}

// onTerminal runs the binary with its standard output on a pty.
func onTerminal(t *testing.T, env []string, args ...string) string {
	t.Helper()
	cmd := exec.Command(binary, args...)
	cmd.Env = append(os.Environ(), "TERM=xterm", "COLUMNS=100", "NO_COLOR=")
	cmd.Env = append(cmd.Env, env...)
	ptmx, tty := openPTY(t)
	defer ptmx.Close()
	cmd.Stdout, cmd.Stderr = tty, tty
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	tty.Close()
	var buf bytes.Buffer
	_, _ = buf.ReadFrom(ptmx) // ends with EIO once the child has exited
	_ = cmd.Wait()
	return buf.String()
}

// openPTY opens a pseudo-terminal pair (posix_openpt, unlockpt, ptsname).
func openPTY(t *testing.T) (ptmx, tty *os.File) {
	t.Helper()
	m, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatalf("cannot open a pseudo-terminal: %v", err)
	}
	if err := unix.IoctlSetPointerInt(int(m.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		t.Fatalf("cannot unlock the pseudo-terminal: %v", err)
	}
	n, err := unix.IoctlGetInt(int(m.Fd()), unix.TIOCGPTN)
	if err != nil {
		t.Fatalf("cannot name the pseudo-terminal: %v", err)
	}
	s, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatalf("cannot open the pseudo-terminal: %v", err)
	}
	return m, s
}

// TestInventoryTableFitsColumns: the inventory table of a host with LUKS
// headers and partition tables (the kvm-host example) fits 80 and 120
// columns, and is unwrapped without a width.
func TestInventoryTableFitsColumns(t *testing.T) {
	b, err := os.ReadFile("../../playbooks/examples/kvm-host.inventory.json")
	if err != nil {
		t.Fatal(err)
	}
	inv, err := inventory.Parse("kvm-host.inventory.json", b)
	if err != nil {
		t.Fatal(err)
	}
	// What a reused disk looks like: a long note on what is where.
	inv.Devices[0].Content = &inventory.Content{Type: "unknown", Label: "old-mail-store-2019",
		Note: "a LUKS2 secondary header at byte 1048576 and an ext4 backup superblock at byte 134217728"}
	var wide bytes.Buffer
	inventoryTable(&wide, inv, textfmt.Style{})
	longest := 0
	for _, l := range strings.Split(wide.String(), "\n") {
		longest = max(longest, utf8.RuneCountInString(l))
	}
	if longest <= 80 {
		t.Fatalf("the example's widest line has %d columns: it tests no wrapping", longest)
	}
	for _, cols := range []int{80, 120} {
		var buf bytes.Buffer
		inventoryTable(&buf, inv, textfmt.Style{Width: cols})
		for _, l := range strings.Split(buf.String(), "\n") {
			if n := utf8.RuneCountInString(l); n > cols {
				t.Errorf("%d columns: a %d-column line %q", cols, n, l)
			}
		}
		if strings.Count(buf.String(), "/dev/") < strings.Count(wide.String(), "/dev/")-2 {
			t.Errorf("%d columns: devices went missing", cols)
		}
	}
}

// TestApplyJSONProgressOnStderr: apply's --progress json events go to
// standard error, as migrate's do, and nothing of them to standard output.
func TestApplyJSONProgressOnStderr(t *testing.T) {
	var stdout, stderr bytes.Buffer
	r := newStepReporter("json", &stdout, &stderr)
	s := plan.Step{ID: "mkfs:/dev/sda1", Action: "mkfs", Target: "/dev/sda1"}
	r.StepStart(1, 1, s)
	r.StepDone(1, 1, s, 0, false, nil)
	if stdout.Len() != 0 {
		t.Errorf("progress on stdout: %q", stdout.String())
	}
	lines := strings.Split(strings.TrimSpace(stderr.String()), "\n")
	if len(lines) != 2 {
		t.Fatalf("want a start and a done event on stderr, got %q", stderr.String())
	}
	for _, l := range lines {
		var ev struct {
			Event string `json:"event"`
		}
		if err := json.Unmarshal([]byte(l), &ev); err != nil || ev.Event == "" {
			t.Errorf("not a JSON event: %q", l)
		}
	}
}
