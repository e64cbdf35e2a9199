package migrate_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cryptshift/cryptshift/internal/runner/migrate"
)

type auditCheck struct {
	ID       string   `json:"id"`
	Status   string   `json:"status"`
	Subject  string   `json:"subject"`
	Evidence []string `json:"evidence"`
}

// verifyInLibvirtNS runs "cryptshift verify -o json" in the private
// libvirtd's mount namespace, where its domain definitions, status files
// and images are where libvirt keeps them.
func verifyInLibvirtNS(t *testing.T, e *env) []auditCheck {
	t.Helper()
	pid, err := os.ReadFile(filepath.Join(e.d.Dir, "libvirtd.pid"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("nsenter", fmt.Sprintf("--mount=/proc/%s/ns/mnt", strings.TrimSpace(string(pid))), "--", cli(t), "verify", "-o", "json")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.Run() // exit 1 when something FAILs: read the report either way
	var rep struct {
		Checks []auditCheck `json:"checks"`
	}
	if err := json.Unmarshal(stdout.Bytes(), &rep); err != nil {
		t.Fatalf("verify: %v\n%s", err, stderr.String())
	}
	return rep.Checks
}

func statusOf(checks []auditCheck, id, subject string) string {
	for _, c := range checks {
		if c.ID == id && c.Subject == subject {
			return c.Status
		}
	}
	return "(no such check)"
}

// A domain on plaintext images FAILs verify; after migrate its disks
// PASS, and once the sources are retired no check names them.
func TestHostVerifyBeforeAndAfterMigrate(t *testing.T) {
	e := newEnv(t)
	g := e.newGuest(t, "audit", false)
	before := verifyInLibvirtNS(t, e)
	for _, dev := range []string{"vda", "vdb"} {
		if s := statusOf(before, "libvirt.disk.storage", "audit/"+dev); s != "FAIL" {
			t.Fatalf("before migrate: libvirt.disk.storage audit/%s is %s, want FAIL", dev, s)
		}
	}
	o := e.options(g, migrate.ModeOffline)
	o.Out = &bytes.Buffer{}
	if _, err := migrate.Run(context.Background(), o); err != nil {
		t.Fatal(err)
	}
	after := verifyInLibvirtNS(t, e)
	for _, dev := range []string{"vda", "vdb"} {
		if s := statusOf(after, "libvirt.disk.storage", "audit/"+dev); s != "PASS" {
			t.Errorf("after migrate: libvirt.disk.storage audit/%s is %s, want PASS", dev, s)
		}
	}
	o.Resume, o.RetireSource = true, true
	if _, err := migrate.Run(context.Background(), o); err != nil {
		t.Fatal(err)
	}
	for _, c := range verifyInLibvirtNS(t, e) {
		ev := strings.Join(c.Evidence, " ")
		if c.Status == "FAIL" && (strings.Contains(ev, g.raw) || strings.Contains(ev, g.qcow2) || strings.HasPrefix(c.Subject, "audit/")) {
			t.Errorf("after retiring the sources: %s %s FAILs: %s", c.ID, c.Subject, ev)
		}
	}
}
