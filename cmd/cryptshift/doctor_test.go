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
