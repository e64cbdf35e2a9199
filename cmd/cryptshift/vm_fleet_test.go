package main

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cryptshift/cryptshift/internal/model/plan"
)

// checkPlaybooksLive runs the fleet playbooks plan.yml and verify.yml
// against the VM itself (connection local) once the mail-host layout is
// applied to its loop devices: the plan the controller fetches for the
// real layout on the real devices has no steps, and the live verify report
// it fetches has no FAIL, so the play succeeds. The host tier runs the same
// playbooks against fixtures (packaging/fleet_host_test.go); this is the
// run against a real layout.
func checkPlaybooksLive(t *testing.T, e *vmEnv) {
	t.Helper()
	if _, err := exec.LookPath("ansible-playbook"); err != nil {
		t.Fatalf("ansible-playbook is not installed (scripts/deps.sh installs it): %v", err)
	}
	dir := filepath.Join(e.dir, "fleet")
	results := filepath.Join(dir, "results")
	ansibleTmp := filepath.Join(dir, "tmp")
	if err := os.MkdirAll(ansibleTmp, 0o700); err != nil {
		t.Fatal(err)
	}
	hosts := filepath.Join(dir, "hosts.yml")
	mustWrite(t, hosts, "all:\n  hosts:\n    vm:\n      ansible_connection: local\n      ansible_python_interpreter: /usr/bin/python3\n")
	vars, err := json.Marshal(map[string]any{
		"cryptshift_bin":            binary,
		"cryptshift_state_dir":      filepath.Join(dir, "state"),
		"cryptshift_fetch_dir":      results,
		"cryptshift_layout":         e.layout,
		"cryptshift_plan_target":    e.root,
		"cryptshift_plan_devices":   map[string]string{"disk0": e.disks[0], "disk1": e.disks[1]},
		"cryptshift_verify_root":    "/",
		"cryptshift_verify_formats": []string{"json", "markdown"},
	})
	if err != nil {
		t.Fatal(err)
	}
	varsFile := filepath.Join(dir, "vars.json")
	mustWrite(t, varsFile, string(vars))

	repo, _ := filepath.Abs("../..")
	cmd := exec.Command("ansible-playbook", "-i", hosts, "-e", "@"+varsFile,
		filepath.Join(repo, "playbooks/plan.yml"), filepath.Join(repo, "playbooks/verify.yml"))
	cmd.Env = append(os.Environ(), "HOME="+ansibleTmp, "ANSIBLE_HOME="+ansibleTmp, "ANSIBLE_LOCAL_TEMP="+ansibleTmp,
		"ANSIBLE_REMOTE_TEMP="+ansibleTmp, "ANSIBLE_NOCOLOR=1", "ANSIBLE_RETRY_FILES_ENABLED=0")
	start := time.Now()
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("ansible-playbook plan.yml verify.yml against the applied VM: %v\n%s", err, out)
	}
	t.Logf("ansible-playbook plan.yml verify.yml against the applied VM took %s under TCG", time.Since(start).Round(time.Second))

	// The fetched plan: the layout is in place, nothing to do.
	pj := readFile(t, filepath.Join(results, "vm", "plan.json"))
	p, err := plan.Parse("fetched plan.json", pj)
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Steps) != 0 || len(p.Crypttab) == 0 {
		t.Fatalf("the fetched plan for the applied layout has %d steps and %d crypttab lines; want 0 steps and the layout's crypttab",
			len(p.Steps), len(p.Crypttab))
	}
	if sh := string(readFile(t, filepath.Join(results, "vm", "plan.sh"))); !strings.HasPrefix(sh, "#!") {
		t.Errorf("the fetched plan.sh is not a script: %.200q", sh)
	}

	// The fetched live report: no FAIL, and it is this VM's report (it
	// names the layout's mappings), not a fixture's.
	var rep verifyReport
	if err := json.Unmarshal(readFile(t, filepath.Join(results, "vm", "verify.json")), &rep); err != nil {
		t.Fatalf("fetched verify.json: %v", err)
	}
	if rep.Summary.Fail != 0 || rep.Summary.Pass == 0 {
		t.Fatalf("the fetched live report has %d FAIL and %d PASS; want 0 FAIL", rep.Summary.Fail, rep.Summary.Pass)
	}
	named := false
	for _, c := range rep.Checks {
		named = named || strings.Contains(c.Subject, "vmail_crypt")
	}
	if !named {
		t.Errorf("the fetched report does not name the applied layout's vmail_crypt mapping")
	}
	if md := string(readFile(t, filepath.Join(results, "vm", "verify.md"))); !strings.Contains(md, "vmail_crypt") {
		t.Errorf("the fetched Markdown report does not name vmail_crypt")
	}
}

func mustWrite(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}
