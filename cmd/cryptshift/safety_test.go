package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
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
