package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cryptshift/cryptshift/internal/harness/testtier"
)

var binary string

// TestMain builds the real binary once: the CLI contract (exit statuses,
// stdout vs stderr) is tested on what users run. It goes under the
// repository's .cache/, which the VM tier's guest sees at the same path
// (the host root is shared read-only), so guest tests run it too.
func TestMain(m *testing.M) {
	abs, _ := filepath.Abs("../../.cache/bin")
	binary = filepath.Join(abs, "cryptshift")
	if !testtier.InVM() {
		if err := os.MkdirAll(abs, 0o755); err != nil {
			panic(err)
		}
		tmp := fmt.Sprintf("%s.%d", binary, os.Getpid())
		out, err := exec.Command("go", "build", "-o", tmp, ".").CombinedOutput()
		if err != nil {
			panic("cannot build cryptshift: " + string(out))
		}
		if err := os.Rename(tmp, binary); err != nil {
			panic(err)
		}
	}
	os.Exit(m.Run())
}

type result struct {
	stdout, stderr string
	code           int    // -1 when killed by a signal
	signal         string // e.g. "signal: killed"
}

func run(t *testing.T, args ...string) result {
	t.Helper()
	return runEnv(t, nil, args...)
}

func runEnv(t *testing.T, env []string, args ...string) result {
	t.Helper()
	cmd := exec.Command(binary, args...)
	cmd.Env = append(os.Environ(), env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	r := result{stdout: stdout.String(), stderr: stderr.String()}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		r.code = ee.ExitCode()
		r.signal = ee.Error()
	} else if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestPlanDefaultIsTheMailHostExample(t *testing.T) {
	r := run(t, "plan")
	if r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	want, err := os.ReadFile("../../testdata/golden/plans/mail-host.txt")
	if err != nil {
		t.Fatal(err)
	}
	if r.stdout != string(want) {
		t.Errorf("cryptshift plan differs from the mail-host golden table")
	}
}

func TestPlanJSONContract(t *testing.T) {
	a := run(t, "plan", "-o", "json")
	b := run(t, "plan", "-o", "json")
	if a.code != 0 || a.stdout != b.stdout {
		t.Fatalf("exit %d; identical=%v", a.code, a.stdout == b.stdout)
	}
	var p struct {
		Steps []struct {
			ID          string   `json:"id"`
			Action      string   `json:"action"`
			Target      string   `json:"target"`
			Command     []string `json:"command"`
			Destructive *bool    `json:"destructive"`
		} `json:"steps"`
		Crypttab []json.RawMessage `json:"crypttab"`
		Fstab    []json.RawMessage `json:"fstab"`
	}
	if err := json.Unmarshal([]byte(a.stdout), &p); err != nil {
		t.Fatal(err)
	}
	if len(p.Steps) == 0 || len(p.Crypttab) == 0 || len(p.Fstab) == 0 {
		t.Fatalf("got %d steps, %d crypttab, %d fstab entries", len(p.Steps), len(p.Crypttab), len(p.Fstab))
	}
	for _, s := range p.Steps {
		if s.ID == "" || s.Action == "" || s.Target == "" || len(s.Command) == 0 || s.Destructive == nil {
			t.Errorf("step misses a contract field: %+v", s)
		}
	}
}

func TestPlanExamples(t *testing.T) {
	r := run(t, "plan", "--example", "list")
	for _, n := range []string{"mail-host", "minimal", "kvm-host", "hibernate"} {
		if !strings.Contains(r.stdout, n) {
			t.Errorf("--example list lacks %s:\n%s", n, r.stdout)
		}
	}
	r = run(t, "plan", "--example", "kvm-host", "-o", "layout")
	want, _ := os.ReadFile("../../playbooks/examples/kvm-host.yaml")
	if r.code != 0 || r.stdout != string(want) {
		t.Errorf("-o layout does not print the example file (exit %d)", r.code)
	}
	r = run(t, "plan", "--example", "hibernate", "-o", "script")
	if r.code != 0 || !strings.HasPrefix(r.stdout, "#!/bin/bash") {
		t.Errorf("script output: exit %d, %q", r.code, r.stdout[:min(len(r.stdout), 40)])
	}
}

func TestExitStatuses(t *testing.T) {
	dir := t.TempDir()
	layoutFile := filepath.Join(dir, "mail.yaml")
	ex, _ := os.ReadFile("../../playbooks/examples/mail-host.yaml")
	os.WriteFile(layoutFile, ex, 0o644)
	inv, _ := os.ReadFile("../../playbooks/examples/mail-host.inventory.json")
	used := strings.Replace(string(inv), `"path": "/dev/sdb",`, `"path": "/dev/sdb", "content": {"type": "ext4", "uuid": "0e3c9c1a-2c44-4f3a-9a51-6f1c52f0e001", "label": "old-mail"},`, 1)
	usedFile := filepath.Join(dir, "used.json")
	os.WriteFile(usedFile, []byte(used), 0o644)
	invFile := filepath.Join(dir, "inv.json")
	os.WriteFile(invFile, inv, 0o644)

	tests := []struct {
		name     string
		args     []string
		code     int
		stderr   string
		noStdout bool
	}{
		{"ok", []string{"plan", "-f", layoutFile, "--inventory", invFile}, 0, "", false},
		{"unknown flag", []string{"plan", "--frobnicate"}, 2, "unknown flag", true},
		{"bad output", []string{"plan", "-o", "yaml"}, 2, "use text, json, script or layout", true},
		{"bad device flag", []string{"plan", "--device", "disk0"}, 2, "NAME=/dev/PATH", true},
		{"unknown example", []string{"plan", "--example", "nope"}, 2, "mail-host", true},
		{"invalid layout", []string{"plan", "-f", "../../testdata/layouts/invalid/04-mounts.yaml", "--inventory", invFile}, 3,
			"error at ../../testdata/layouts/invalid/04-mounts.yaml $.volumes[1].mount, line 15 col 12", true},
		{"missing inventory", []string{"plan", "-f", layoutFile, "--inventory", filepath.Join(dir, "none.json")}, 2, "cannot read --inventory", true},
		{"refused", []string{"plan", "-f", layoutFile, "--inventory", usedFile}, 4, `/dev/sdb: an ext4 filesystem UUID 0e3c9c1a-2c44-4f3a-9a51-6f1c52f0e001 label "old-mail"`, true},
		{"allowed", []string{"plan", "-f", layoutFile, "--inventory", usedFile, "--allow-destroy"}, 0, "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := run(t, tt.args...)
			if r.code != tt.code {
				t.Fatalf("got exit %d, want %d; stderr: %s", r.code, tt.code, r.stderr)
			}
			if !strings.Contains(r.stderr, tt.stderr) {
				t.Errorf("stderr %q lacks %q", r.stderr, tt.stderr)
			}
			if tt.noStdout && r.stdout != "" {
				t.Errorf("a failing run printed on stdout: %q", r.stdout)
			}
		})
	}
}

func TestVersion(t *testing.T) {
	r := run(t, "--version")
	if r.code != 0 || !strings.HasPrefix(r.stdout, "cryptshift ") || !strings.Contains(r.stdout, "commit") {
		t.Errorf("got %q", r.stdout)
	}
}

// TestJSONProgressMakesLogsJSON: with --progress=json a reader of standard
// error must see nothing but JSON objects, so log records (a retried
// command, say) switch to JSON too; otherwise they stay text.
func TestJSONProgressMakesLogsJSON(t *testing.T) {
	defer slog.SetDefault(slog.Default())
	for _, asJSON := range []bool{false, true} {
		var buf bytes.Buffer
		setLogger(&buf, asJSON)
		slog.Warn("command failed", "cmd", "qemu-img create", "exit", 1)
		var rec map[string]any
		err := json.Unmarshal(buf.Bytes(), &rec)
		if asJSON && (err != nil || rec["msg"] != "command failed" || rec["level"] != "WARN") {
			t.Errorf("JSON mode logged %q (%v)", buf.String(), err)
		}
		if !asJSON && (err == nil || !strings.Contains(buf.String(), `msg="command failed"`)) {
			t.Errorf("text mode logged %q", buf.String())
		}
	}
}

// A reviewed plan whose command lines were edited after it was made (or
// that another version made) is refused before anything is read or run:
// apply executes a step's typed parameters, so the command a reviewer
// read must be what they render.
func TestApplyRefusesAnEditedPlan(t *testing.T) {
	dir := t.TempDir()
	r := run(t, "plan", "-o", "json")
	if r.code != 0 {
		t.Fatalf("plan: %d %s", r.code, r.stderr)
	}
	var p map[string]any
	if err := json.Unmarshal([]byte(r.stdout), &p); err != nil {
		t.Fatal(err)
	}
	steps := p["steps"].([]any)
	cmd := steps[0].(map[string]any)["command"].([]any)
	cmd[len(cmd)-1] = "/dev/sdz" // the wrong disk
	b, _ := json.Marshal(p)
	edited := filepath.Join(dir, "edited.json")
	os.WriteFile(edited, b, 0o600)
	r = run(t, "apply", "--plan", edited, "--yes", "--journal", filepath.Join(dir, "j"))
	if r.code != 3 || !strings.Contains(r.stderr, "is not what its parameters render") || !strings.Contains(r.stderr, "/dev/sdz") {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	if _, err := os.Stat(filepath.Join(dir, "j")); err == nil {
		t.Error("a refused apply wrote a journal")
	}
}
