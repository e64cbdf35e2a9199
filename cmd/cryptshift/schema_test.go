package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/santhosh-tekuri/jsonschema/v6"
)

func compileSchema(t *testing.T, name string) *jsonschema.Schema {
	t.Helper()
	c := jsonschema.NewCompiler()
	s, err := c.Compile(filepath.Join("../../docs/schema", name))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func validate(t *testing.T, s *jsonschema.Schema, what, out string) {
	t.Helper()
	v, err := jsonschema.UnmarshalJSON(bytes.NewReader([]byte(out)))
	if err != nil {
		t.Fatalf("%s: not JSON: %v", what, err)
	}
	if err := s.Validate(v); err != nil {
		t.Errorf("%s does not match the documented schema: %v", what, err)
	}
}

// TestVerifyJSONMatchesSchema: the real `verify -o json` of every fixture,
// in both languages, matches docs/schema/verify-report.schema.json.
func TestVerifyJSONMatchesSchema(t *testing.T) {
	s := compileSchema(t, "verify-report.schema.json")
	roots, _ := filepath.Glob(fixtures + "*/root")
	if len(roots) < 30 {
		t.Fatalf("only %d fixtures", len(roots))
	}
	// The schema can fail: a report with an unknown verdict or a SKIP
	// without its kind is rejected.
	ref := run(t, "verify", "--root", fixtures+"partial-capture/root", "-o", "json").stdout
	for _, bad := range []string{strings.Replace(ref, `"verdict": "INCOMPLETE"`, `"verdict": "MAYBE"`, 1),
		strings.Replace(ref, `"skip": "missing"`, `"skip": "later"`, 1)} {
		v, _ := jsonschema.UnmarshalJSON(strings.NewReader(bad))
		if s.Validate(v) == nil {
			t.Error("the schema accepts a malformed report")
		}
	}
	for _, root := range roots {
		for _, lang := range []string{"en", "de"} {
			r := run(t, "verify", "--root", root, "-o", "json", "--lang", lang)
			validate(t, s, root+" "+lang, r.stdout)
		}
	}
}

// TestInspectJSONMatchesSchema: inspect's tree and header outputs match
// docs/schema/inspect.schema.json.
func TestInspectJSONMatchesSchema(t *testing.T) {
	s := compileSchema(t, "inspect.schema.json")
	for _, args := range [][]string{
		{"inspect", "-o", "json", "--root", fixtures + "lvm-snapshot-plain/root"},
		{"inspect", "-o", "json", "--root", fixtures + "mailhost-luks-on-lvm/root"},
		{"inspect", "-o", "json", "../../internal/hostview/sysconf/testdata/v2.qcow2.hdr"},
	} {
		r := run(t, args...)
		if r.code != 0 {
			t.Fatalf("%v: exit %d %s", args, r.code, r.stderr)
		}
		validate(t, s, args[len(args)-1], r.stdout)
	}
	dir := t.TempDir()
	hdr := gunzip(t, "../../luks/testdata/luks2.hdr.gz", filepath.Join(dir, "luks2.hdr"))
	validate(t, s, "luks2 header", run(t, "inspect", "-o", "json", hdr).stdout)
}

// gunzip unpacks a test fixture with gzip(1).
func gunzip(t *testing.T, src, dst string) string {
	t.Helper()
	b, err := exec.Command("gzip", "-dc", src).Output()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return dst
}

// TestInventoryJSONMatchesSchema: this host's real inventory and every
// shipped example inventory match docs/schema/inventory.schema.json, and
// the schema rejects a malformed one.
func TestInventoryJSONMatchesSchema(t *testing.T) {
	s := compileSchema(t, "inventory.schema.json")
	r := run(t, "inventory", "-o", "json")
	if r.code != 0 {
		t.Fatalf("inventory: exit %d: %s", r.code, r.stderr)
	}
	validate(t, s, "inventory of this host", r.stdout)
	files, _ := filepath.Glob("../../playbooks/examples/*.inventory.json")
	files = append(files, "../../testdata/inventories/minimal-applied.json")
	if len(files) < 4 {
		t.Fatalf("only %d inventories", len(files))
	}
	for _, f := range files {
		b, _ := os.ReadFile(f)
		validate(t, s, f, string(b))
	}
	b, _ := os.ReadFile(files[0])
	for _, bad := range []string{strings.Replace(string(b), `"kind": "disk"`, `"kind": "tape"`, 1),
		strings.Replace(string(b), `"apiVersion": "cryptshift/v1"`, `"apiVersion": "cryptshift/v0"`, 1)} {
		v, _ := jsonschema.UnmarshalJSON(strings.NewReader(bad))
		if s.Validate(v) == nil {
			t.Error("the schema accepts a malformed inventory")
		}
	}
}

// TestDoctorJSONMatchesSchema: doctor's report (all capabilities, and one)
// matches docs/schema/doctor.schema.json, and its exit status is "ready".
func TestDoctorJSONMatchesSchema(t *testing.T) {
	s := compileSchema(t, "doctor.schema.json")
	for _, args := range [][]string{{"doctor", "-o", "json"}, {"doctor", "-o", "json", "--for", "plan"}} {
		r := run(t, args...)
		validate(t, s, strings.Join(args, " "), r.stdout)
		ready := strings.Contains(r.stdout, "\n  \"ready\": true")
		if (r.code == 0) != ready {
			t.Errorf("%v: exit %d with ready=%v", args, r.code, ready)
		}
	}
	bad := strings.Replace(run(t, "doctor", "-o", "json", "--for", "plan").stdout, `"status": "ok"`, `"status": "fine"`, 1)
	v, _ := jsonschema.UnmarshalJSON(strings.NewReader(bad))
	if s.Validate(v) == nil {
		t.Error("the schema accepts a check with an unknown status")
	}
}
