package verify_test

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

	"libvirt.org/go/libvirtxml"

	"github.com/cryptshift/cryptshift/internal/audit/verify"
	"github.com/cryptshift/cryptshift/internal/doors/execx"
	"github.com/cryptshift/cryptshift/internal/doors/qemuimg"
	"github.com/cryptshift/cryptshift/internal/harness/libvirttest"
)

// TestHostVerifyLibvirt starts a private libvirtd, runs a domain on a
// plaintext qcow2 image and defines one on a qemu-encrypted LUKS image, and
// runs verify inside the daemon's mount namespace (where its /etc/libvirt
// and /run/libvirt are): the plaintext disk FAILs, naming the domain, the
// image and libvirt's live status file; the LUKS image PASSes.
//
// The migrate tests extend this: after `cryptshift migrate` of the first
// domain, libvirt.disk.storage for it must PASS, and libvirt.leftover must
// not FAIL once the plaintext source is retired.
func TestHostVerifyLibvirt(t *testing.T) {
	d := libvirttest.Start(t)
	dir := t.TempDir() // on this machine's root: plaintext storage
	plain := filepath.Join(dir, "mx.qcow2")
	sh(t, nil, "qemu-img", "create", "-q", "-f", "qcow2", plain, "64M")
	enc := filepath.Join(dir, "enc.luks")
	// PBKDF2 at the lowest cost: the header is what verify looks at. The
	// product's Create, because it retries qemu 7.2's flaky PBKDF benchmark.
	img := &qemuimg.Driver{Runner: execx.Exec{}}
	if err := img.Create(context.Background(), qemuimg.CreateOptions{Path: enc, Format: qemuimg.LUKS,
		Size: 16 << 20, Secret: []byte("host test passphrase"), IterTimeMS: 10}); err != nil {
		t.Fatal(err)
	}
	d.Define(t, libvirttest.Domain("vt-mx", libvirttest.FileDisk("vda", plain, "qcow2")), true)
	encDisk := libvirttest.FileDisk("vda", enc, "raw")
	encDisk.Source.Encryption = &libvirtxml.DomainDiskEncryption{Format: "luks",
		Secrets: []libvirtxml.DomainDiskSecret{{Type: "passphrase", UUID: "6a5a3d40-0000-4000-8000-00000000c0de"}}}
	d.Define(t, libvirttest.Domain("vt-enc", encDisk), false)

	r := verifyInNamespace(t, d)
	mx := find(t, r, "libvirt.disk.storage", "vt-mx/vda")
	ev := strings.Join(mx.Evidence, "\n")
	if mx.Status != verify.Fail || !strings.Contains(ev, plain) || !strings.Contains(ev, "/run/libvirt/qemu/vt-mx.xml") {
		t.Errorf("vt-mx/vda: got %s %q, want FAIL naming %s and the live status XML", mx.Status, mx.Evidence, plain)
	}
	if c := find(t, r, "libvirt.disk.storage", "vt-enc/vda"); c.Status != verify.Pass {
		t.Errorf("vt-enc/vda on a LUKS image: got %s %q, want PASS", c.Status, c.Evidence)
	}
}

// verifyInNamespace runs verify (this test binary, helper mode) inside the
// private libvirtd's mount namespace and returns its report.
func verifyInNamespace(t *testing.T, d *libvirttest.Daemon) *verify.Report {
	t.Helper()
	pid, err := os.ReadFile(filepath.Join(d.Dir, "libvirtd.pid"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("nsenter", fmt.Sprintf("--mount=/proc/%s/ns/mnt", strings.TrimSpace(string(pid))), "--",
		os.Args[0], "-test.run=^TestHelperVerifyJSON$")
	cmd.Env = append(os.Environ(), "CRYPTSHIFT_VERIFY_HELPER=1")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("verify in the libvirtd namespace: %v\n%s", err, stderr.String())
	}
	out := stdout.String()
	start, end := strings.Index(out, "{"), strings.LastIndex(out, "}")
	if start < 0 || end < start {
		t.Fatalf("no report from the helper:\n%s", out)
	}
	var r verify.Report
	if err := json.Unmarshal([]byte(out[start:end+1]), &r); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	return &r
}

// TestHelperVerifyJSON is not a test: verifyInNamespace runs it in another
// mount namespace to print verify's JSON report of "/".
func TestHelperVerifyJSON(t *testing.T) {
	if os.Getenv("CRYPTSHIFT_VERIFY_HELPER") != "1" {
		t.Skip("helper process for TestHostVerifyLibvirt")
	}
	r, err := verify.Run(verify.Options{Root: "/", Version: "host"})
	if err != nil {
		t.Fatal(err)
	}
	if err := verify.Render(os.Stdout, r, "json"); err != nil {
		t.Fatal(err)
	}
}

func find(t *testing.T, r *verify.Report, id, subject string) verify.Result {
	t.Helper()
	for _, c := range r.Checks {
		if c.ID == id && c.Subject == subject {
			return c
		}
	}
	t.Fatalf("no %s result for %q", id, subject)
	return verify.Result{}
}
