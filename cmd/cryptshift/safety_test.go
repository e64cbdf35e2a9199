package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func writeExampleLayout(t *testing.T, name string, edit func(string) string) string {
	t.Helper()
	r := run(t, "plan", "--example", name, "-o", "layout")
	if r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	p := filepath.Join(t.TempDir(), name+".yaml")
	if err := os.WriteFile(p, []byte(edit(r.stdout)), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func writeExampleInventory(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile("../../playbooks/examples/" + name + ".inventory.json")
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), name+".json")
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// --device NAME=PATH naming no disk of the layout is an error in plan and
// in apply (before apply reads the machine), exit status 3.
func TestCLIDeviceOverrideMustNameADisk(t *testing.T) {
	lay := writeExampleLayout(t, "minimal", func(s string) string { return s })
	inv := writeExampleInventory(t, "minimal")
	want := `--device "disk9=/dev/loop0" names no disk of this layout; fix: name one of the layout's disks: disk0`
	for _, args := range [][]string{
		{"plan", "-f", lay, "--inventory", inv, "--device", "disk9=/dev/loop0"},
		{"apply", "-f", lay, "--device", "disk9=/dev/loop0", "--yes", "--journal", filepath.Join(t.TempDir(), "j")},
	} {
		r := run(t, args...)
		if r.code != 3 || !strings.Contains(r.stderr, want) {
			t.Errorf("%s: exit %d, stderr:\n%s\nwant exit 3 and %q", args[0], r.code, r.stderr, want)
		}
	}
}

// A misspelt key stops plan (exit 3) and says what was meant; nothing is
// planned without the options it would have dropped.
func TestCLIMisspeltKeyIsAnError(t *testing.T) {
	lay := writeExampleLayout(t, "mail-host", func(s string) string {
		return strings.Replace(s, "    mountOptions: [nodev, nosuid]\n", "    moutnOptions: [nodev, nosuid]\n", 1)
	})
	r := run(t, "plan", "-f", lay, "--inventory", writeExampleInventory(t, "mail-host"), "-o", "script")
	if r.code != 3 || r.stdout != "" || !strings.Contains(r.stderr, `$.volumes[1].moutnOptions, line 48 col 5: unknown key "moutnOptions"; fix: did you mean "mountOptions"?`) {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
	}
}

// The heredoc attack from the issue: a mount point with a line break is
// refused before any script is written.
func TestCLIScriptInjectionThroughMountPointIsRefused(t *testing.T) {
	lay := writeExampleLayout(t, "mail-host", func(s string) string {
		return strings.Replace(s, "mount: /var/vmail ", "mount: \"/var/vmail\\nCRYPTSHIFT_EOF\\ntouch /tmp/pwned\\n\" ", 1)
	})
	r := run(t, "plan", "-f", lay, "--inventory", writeExampleInventory(t, "mail-host"), "-o", "script")
	if r.code != 3 || r.stdout != "" || !strings.Contains(r.stderr, `$.volumes[2].mount, line 51 col 12: value "/var/vmail\nCRYPTSHIFT_EOF\ntouch /tmp/pwned\n" contains a line break (U+000A) at byte 10`) {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
	}
}

// An inventory whose host name escapes the script's comment line is
// refused.
func TestCLIHostileInventoryHostIsRefused(t *testing.T) {
	inv := writeExampleInventory(t, "minimal")
	b, _ := os.ReadFile(inv)
	os.WriteFile(inv, []byte(strings.Replace(string(b), `"host": "vps01"`, `"host": "vps01\ntouch /tmp/pwned"`, 1)), 0o644)
	r := run(t, "plan", "--example", "minimal", "--inventory", inv, "-o", "script")
	if r.code != 3 || r.stdout != "" || !strings.Contains(r.stderr, `$.host: value "vps01\ntouch /tmp/pwned" contains a line break (U+000A) at byte 5`) {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
	}
}

// The verbs that hold secrets run with core dumps off, soft and hard limit
// (inherited by every tool they start); the kernel's /proc/PID/limits of
// the running process is the oracle.
func TestCLISecretVerbsDisableCoreDumps(t *testing.T) {
	dir := t.TempDir()
	cmd := exec.Command(binary, "step", "write-block", "--file", filepath.Join(dir, "fstab"), "--block", "fstab:t")
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// write-block reads its block from stdin until EOF: while it waits,
	// its limits are in place (set before the verb ran).
	var core string
	for i := 0; i < 200 && core != "Max core file size 0 0 bytes"; i++ {
		time.Sleep(10 * time.Millisecond)
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/limits", cmd.Process.Pid))
		for _, l := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(l, "Max core file size") {
				core = strings.Join(strings.Fields(l), " ")
			}
		}
	}
	stdin.Write([]byte("# BEGIN cryptshift layout t\n# END cryptshift layout t\n"))
	stdin.Close()
	if err := cmd.Wait(); err != nil {
		t.Fatalf("%v: %s", err, out.String())
	}
	if core != "Max core file size 0 0 bytes" {
		t.Fatalf("got %q", core)
	}
}
