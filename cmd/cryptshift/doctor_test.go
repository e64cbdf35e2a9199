package main

import (
	"encoding/json"
	"strings"
	"testing"
)

// TestDoctorExitStatus checks doctor's CLI contract on whatever host runs
// the tests: planning needs nothing, so --for plan is ready everywhere and
// exits 0; the exit status agrees with the JSON's "ready"; bad flags exit 2.
func TestDoctorExitStatus(t *testing.T) {
	r := run(t, "doctor", "--for", "plan,verify-captured", "-o", "json")
	if r.code != 0 {
		t.Fatalf("doctor --for plan,verify-captured: exit %d, want 0: %s", r.code, r.stderr)
	}
	var rep struct {
		Schema string   `json:"schema"`
		Ready  bool     `json:"ready"`
		For    []string `json:"for"`
		Checks []struct {
			ID     string `json:"id"`
			Status string `json:"status"`
		} `json:"checks"`
		Capabilities []struct {
			Name  string `json:"name"`
			Ready bool   `json:"ready"`
		} `json:"capabilities"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil {
		t.Fatalf("doctor -o json is not JSON: %v\n%s", err, r.stdout)
	}
	if rep.Schema != "cryptshift.doctor/v1" || !rep.Ready || strings.Join(rep.For, ",") != "plan,verify-captured" || len(rep.Checks) < 10 || len(rep.Capabilities) != 6 {
		t.Errorf("got schema %q ready %v for %q, %d checks, %d capabilities", rep.Schema, rep.Ready, rep.For, len(rep.Checks), len(rep.Capabilities))
	}

	// Without --for the exit status is the report's readiness.
	all := run(t, "doctor", "-o", "json")
	if err := json.Unmarshal([]byte(all.stdout), &rep); err != nil {
		t.Fatalf("doctor -o json is not JSON: %v\n%s", err, all.stdout)
	}
	if want := map[bool]int{true: 0, false: 1}[rep.Ready]; all.code != want {
		t.Errorf("doctor: exit %d with ready=%v, want %d", all.code, rep.Ready, want)
	}
	if !rep.Ready && !strings.Contains(all.stderr, "cryptshift: not ready for ") {
		t.Errorf("doctor not ready: stderr %q does not say for what", all.stderr)
	}

	for _, args := range [][]string{{"doctor", "-o", "yaml"}, {"doctor", "--for", "teleport"}, {"doctor", "extra"}} {
		if r := run(t, args...); r.code != 2 {
			t.Errorf("%q: exit %d, want 2 (usage): %s", args, r.code, r.stderr)
		}
	}
}

// TestDoctorHelpMatchesChecks: doctor --help names every check doctor
// runs and every capability it judges, and its default is all of them. A
// new check must be named in the help (and here) to pass.
func TestDoctorHelpMatchesChecks(t *testing.T) {
	help := run(t, "doctor", "--help").stdout
	flat := strings.Join(strings.Fields(help), " ")
	says := map[string]string{
		"kernel.device-mapper": "kernel device-mapper", "kernel.dm-crypt": "dm-crypt", "kernel.loop": "loop",
		"kernel.xts-aes": "XTS-AES", "tool.cryptsetup": "cryptsetup", "cryptsetup.argon2id": "argon2id in cryptsetup",
		"tool.lvm": "lvm", "tool.e2fsprogs": "filesystem", "tool.xfsprogs": "filesystem", "tool.dosfstools": "filesystem",
		"tool.util-linux": "swap and mount tools", "boot.initramfs-crypt": "initramfs that can unlock an encrypted root",
		"tool.qemu-img": "qemu-img", "libvirt": "reachable libvirt", "privileges": "root privileges", "random": "random generator",
	}
	r := run(t, "doctor", "-o", "json")
	var rep struct {
		Checks []struct {
			ID string `json:"id"`
		} `json:"checks"`
		Capabilities []struct {
			Name string `json:"name"`
		} `json:"capabilities"`
		For []string `json:"for"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil {
		t.Fatal(err)
	}
	for _, c := range rep.Checks {
		phrase, ok := says[c.ID]
		if !ok {
			t.Errorf("check %s is not described in doctor --help (add it there and here)", c.ID)
		} else if !strings.Contains(flat, phrase) {
			t.Errorf("doctor --help does not mention %q (check %s)", phrase, c.ID)
		}
	}
	for _, c := range rep.Capabilities {
		if !strings.Contains(help, "  "+c.Name+" ") {
			t.Errorf("doctor --help does not list capability %s", c.Name)
		}
	}
	if len(rep.For) != len(rep.Capabilities) {
		t.Errorf("without --for doctor judges %v, but its help says all %d capabilities", rep.For, len(rep.Capabilities))
	}
}
