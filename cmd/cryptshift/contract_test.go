package main

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// runnable says how each verb runs here without devices, root or libvirt,
// so that every value of its -o can be tried: the arguments to add, and
// the exit statuses its result may have on this host. A verb added later
// that prints a result must appear here or in needsHost, or
// TestCLIContract fails: the contract covers it by construction.
var runnable = map[string]struct {
	args  []string
	codes []int
}{
	"plan":      {nil, []int{0}},
	"verify":    {[]string{"--root", fixtures + "mailhost-luks-on-lvm/root"}, []int{0}},
	"inspect":   {[]string{"--root", fixtures + "mailhost-luks-on-lvm/root"}, []int{0}},
	"doctor":    {[]string{"--for", "plan"}, []int{0}},
	"inventory": {nil, []int{0}},
}

// needsHost names the verbs with an -o that cannot produce a result here,
// and why; their usage errors are still checked.
var needsHost = map[string]string{
	"migrate":      "a libvirt domain (its -o is --dry-run's format)",
	"migrate-host": "a layout applied and mounted at /target (its -o is --dry-run's format)",
	"add":          "an open LUKS2 volume (unlock add; its -o is --dry-run's format)",
	"remove":       "an open LUKS2 volume (unlock remove; its -o is --dry-run's format)",
}

// TestCLIContract holds every command of the tree (hidden ones and cobra's
// own included) to docs/cli.md: --help exits 0 and prints the help on
// stdout; an unknown flag, a bad -o value, surplus arguments and a missing
// input file exit 2 and say so on stderr with nothing on stdout; each -o
// value exits with a documented status, and json output parses.
func TestCLIContract(t *testing.T) {
	root := newRootCmd()
	var cmds []*cobra.Command
	walk(root, func(c *cobra.Command) {
		if c != root {
			cmds = append(cmds, c)
		}
	})
	if len(cmds) < len(verbs) {
		t.Fatalf("walked %d commands, fewer than the %d verbs", len(cmds), len(verbs))
	}
	usage := func(t *testing.T, why string, args ...string) {
		t.Helper()
		r := run(t, args...)
		if r.code != 2 {
			t.Errorf("%s: %q: exit %d, want 2; stderr %q", why, args, r.code, r.stderr)
		}
		if r.stdout != "" {
			t.Errorf("%s: %q printed on stdout: %q", why, args, r.stdout)
		}
		if !strings.HasPrefix(r.stderr, "cryptshift: ") && !strings.Contains(r.stderr, "\ncryptshift: ") {
			t.Errorf("%s: %q: stderr %q does not say what is wrong", why, args, r.stderr)
		}
	}
	for _, c := range cmds {
		path := strings.Fields(c.CommandPath())[1:]
		t.Run(strings.Join(path, "_"), func(t *testing.T) {
			r := run(t, append(path, "--help")...)
			if r.code != 0 || !strings.Contains(r.stdout, "Usage:") {
				t.Errorf("--help: exit %d, stdout %.80q", r.code, r.stdout)
			}
			if c.DisableFlagParsing {
				// step: its flags are the action's; a missing or
				// unknown action is a usage error.
				usage(t, "no action", path...)
				usage(t, "unknown action", append(path, "frobnicate")...)
				return
			}
			usage(t, "unknown flag", append(path, "--no-such-flag")...)
			usage(t, "surplus arguments", append(path, "one", "two", "three")...)

			// A positional argument the verb needs, so that the flag
			// under test is what fails.
			pos := []string{}
			if c.Args != nil && c.Args(c, nil) != nil {
				pos = []string{"x"}
			}
			c.Flags().VisitAll(func(f *pflag.Flag) {
				if f.Annotations[inputAnnotation] == nil {
					return
				}
				missing := filepath.Join(t.TempDir(), "missing")
				args := append(append(append([]string{}, path...), pos...), "--"+f.Name, missing)
				usage(t, "missing input --"+f.Name, args...)
				if r := run(t, args...); !strings.Contains(r.stderr, "--"+f.Name) {
					t.Errorf("%q: stderr %q does not name --%s", args, r.stderr, f.Name)
				}
			})

			out := c.Flags().Lookup("output")
			if out == nil {
				return
			}
			if out.Shorthand != "o" {
				t.Errorf("--output has shorthand %q, want -o everywhere", out.Shorthand)
			}
			usage(t, "bad -o", append(append(append([]string{}, path...), pos...), "-o", "yaml-or-pdf")...)
			complete, ok := c.GetFlagCompletionFunc("output")
			if !ok {
				t.Fatalf("-o offers no completion: add it with outputFlag")
			}
			values, _ := complete(c, nil, "")
			if !slices.Contains(values, "json") || !(slices.Contains(values, "text") || c.Name() == "migrate") {
				t.Errorf("-o values %q: want text and json", values)
			}
			how, ok := runnable[c.Name()]
			if !ok {
				if why := needsHost[c.Name()]; why != "" {
					t.Logf("-o values not run: %s needs %s", c.Name(), why)
					return
				}
				t.Fatalf("%s has -o but is neither in runnable nor in needsHost", c.Name())
			}
			for _, v := range append(values, aliases(c.Name())...) {
				args := append(append(append([]string{}, path...), how.args...), "-o", v)
				if c.Name() == "plan" && v == "layout" {
					args = append(args, "--example", "minimal")
				}
				r := run(t, args...)
				if !slices.Contains(how.codes, r.code) {
					t.Errorf("%q: exit %d, want one of %v; stderr %q", args, r.code, how.codes, r.stderr)
				}
				if r.stdout == "" {
					t.Errorf("%q printed nothing", args)
				}
				if v == "json" && !json.Valid([]byte(r.stdout)) {
					t.Errorf("%q: stdout is not JSON: %.200q", args, r.stdout)
				}
			}
		})
	}

	// The root: no verb prints the help; a wrong one is a usage error.
	if r := run(t); r.code != 0 || !strings.Contains(r.stdout, "Available Commands") {
		t.Errorf("cryptshift alone: exit %d", r.code)
	}
	usage(t, "unknown verb", "frobnicate")
	usage(t, "unknown help topic", "help", "frobnicate")
	usage(t, "unknown shell", "completion", "tcsh")
	usage(t, "no shell", "completion")
	usage(t, "a file where a flag is needed", "plan", "host.yaml")
	usage(t, "capture without DIR", "capture")
	usage(t, "capture into a deep missing path", "capture", filepath.Join(t.TempDir(), "a", "b", "c"))
	usage(t, "missing journal", "rollback", filepath.Join(t.TempDir(), "missing"))
	usage(t, "missing header file", "inspect", filepath.Join(t.TempDir(), "missing"))
	// A --root that cannot be checked is exit 2 in every verb that reads one.
	missingRoot, notHost := filepath.Join(t.TempDir(), "missing"), t.TempDir()
	usage(t, "verify --root on a missing directory", "verify", "--root", missingRoot)
	usage(t, "verify --root on a directory that is not a host tree", "verify", "--root", notHost)
	usage(t, "inspect --root on a missing directory", "inspect", "--root", missingRoot)
	usage(t, "inspect --root on a directory that is not a host tree", "inspect", "--root", notHost)
	usage(t, "doctor --root on a missing directory", "doctor", "--root", missingRoot)
	dest := filepath.Join(t.TempDir(), "capture")
	usage(t, "capture --root on a missing directory", "capture", "--root", missingRoot, dest)
	usage(t, "capture --root on a directory that is not a host tree", "capture", "--root", notHost, dest)
	if _, err := os.Lstat(dest); !os.IsNotExist(err) {
		t.Errorf("capture with a bad --root left %s behind (stat: %v)", dest, err)
	}
	usage(t, "resume without a journal", "apply", "--resume")
	usage(t, "bad --passphrase-fd", "apply", "--passphrase-fd", "-1", "--resume", "--journal", "j")
}

// aliases are the -o values kept for compatibility (not completed).
func aliases(verb string) []string {
	if verb == "plan" || verb == "inventory" {
		return []string{"table"}
	}
	return nil
}

// TestDeprecatedFlagsStillWork: the old names keep working, say they are
// deprecated on stderr, and never disturb JSON on stdout.
func TestDeprecatedFlagsStillWork(t *testing.T) {
	r := run(t, "plan", "--root", "/mnt/new", "-o", "json")
	var p struct {
		Root string `json:"root"`
	}
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &p) != nil || p.Root != "/mnt/new" {
		t.Fatalf("plan --root: exit %d, root %q: %s", r.code, p.Root, r.stderr)
	}
	if !strings.Contains(r.stderr, "use --target") {
		t.Errorf("no deprecation note: %q", r.stderr)
	}
	if r := run(t, "plan", "-o", "table"); r.code != 0 || !strings.Contains(r.stdout, "WHAT IT DOES") {
		t.Errorf("-o table: exit %d", r.code)
	}
	// Help shows --target, not the deprecated --root, and no "-1" default.
	for _, verb := range []string{"plan", "apply", "migrate-host"} {
		h := run(t, verb, "--help").stdout
		if !strings.Contains(h, "--target DIR") || strings.Contains(h, "--root") || strings.Contains(h, "(default -1)") {
			t.Errorf("%s --help:\n%s", verb, h)
		}
	}
	if h := run(t, "migrate", "--help").stdout; !strings.Contains(h, "--mode offline|live") || !strings.Contains(h, "--to pool:NAME|vg:NAME") || !strings.Contains(h, "-y, --yes") || !strings.Contains(h, "-c, --connect") {
		t.Errorf("migrate --help lacks the placeholders or short flags:\n%s", h)
	}
	for _, verb := range []string{"apply", "rollback", "migrate"} {
		if h := run(t, verb, "--help").stdout; !strings.Contains(h, "-y, --yes") {
			t.Errorf("%s --help has no -y", verb)
		}
	}
}

// TestJSONFileFieldIsStable: the plan JSON is byte-identical whether the
// layout was named as host.yaml, ./host.yaml or by its absolute path.
func TestJSONFileFieldIsStable(t *testing.T) {
	dir := t.TempDir()
	b, _ := os.ReadFile("../../playbooks/examples/mail-host.yaml")
	os.WriteFile(filepath.Join(dir, "host.yaml"), b, 0o644)
	inv, _ := filepath.Abs("../../playbooks/examples/mail-host.inventory.json")
	var outs []string
	for _, name := range []string{"host.yaml", "./host.yaml", filepath.Join(dir, "host.yaml"), "../" + filepath.Base(dir) + "/host.yaml"} {
		cmd := exec.Command(binary, "plan", "-f", name, "--inventory", inv, "-o", "json")
		cmd.Dir = dir
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("plan -f %s: %v", name, err)
		}
		if !strings.Contains(string(out), `"file": "host.yaml"`) {
			t.Fatalf("plan -f %s: no warning names its file as host.yaml", name)
		}
		outs = append(outs, string(out))
	}
	for i := range outs {
		if outs[i] != outs[0] {
			t.Errorf("the plan JSON differs with path form %d", i)
		}
	}
}

// TestCompletionOffersValues: the shell completion (cobra's __complete,
// which the bash, zsh and fish scripts call) offers the values of the
// flags that take a fixed set.
func TestCompletionOffersValues(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want []string
	}{
		{[]string{"plan", "-o", ""}, []string{"text", "json", "script", "layout"}},
		{[]string{"plan", "--example", ""}, []string{"mail-host", "kvm-host", "list"}},
		{[]string{"verify", "-o", ""}, []string{"text", "json", "markdown", "html"}},
		{[]string{"verify", "--lang", ""}, []string{"en", "de"}},
		{[]string{"migrate", "mx", "--mode", ""}, []string{"offline", "live"}},
		{[]string{"inventory", "-o", ""}, []string{"text", "json"}},
		{[]string{"doctor", "--for", ""}, []string{"plan", "migrate-vg"}},
	} {
		r := run(t, append([]string{"__complete"}, tc.args...)...)
		got := strings.Fields(r.stdout)
		for _, w := range tc.want {
			if !slices.Contains(got, w) {
				t.Errorf("completing %q: got %q, lacks %s", tc.args, got, w)
			}
		}
	}
	// --to offers pools and VGs when they can be listed, else the two
	// prefixes; never files.
	r := run(t, "__complete", "migrate", "mx", "--to", "")
	if !strings.Contains(r.stdout, "pool:") && !strings.Contains(r.stdout, "vg:") {
		t.Errorf("completing --to: %q", r.stdout)
	}
}

// TestMigrateDryRunFromDomainXML: with --domain-xml the dry-run reads the
// domain from the file and never needs libvirtd for it: with no daemon
// (a socket that does not exist) it gets past the domain and its disks to
// the target's own checks (this machine has no volume group vg-none: exit
// 3 naming it), where without the file it stops at the connection. A
// definition of another domain, or --domain-xml without --dry-run, is a
// usage error. (internal/runner/migrate's TestDryRunFromDomainXML shows
// the steps equal those planned through libvirtd.)
func TestMigrateDryRunFromDomainXML(t *testing.T) {
	dir := t.TempDir()
	img := filepath.Join(dir, "mail.raw")
	os.WriteFile(img, make([]byte, 1<<20), 0o600)
	xml := filepath.Join(dir, "mail.xml")
	os.WriteFile(xml, []byte(`<domain type='kvm'><name>mail</name><uuid>9b0c8a52-1f3e-4c7d-8e62-0d5a7f1c2b33</uuid>
<memory unit='KiB'>1048576</memory><os><type arch='x86_64'>hvm</type></os><devices>
<disk type='file' device='disk'><driver name='qemu' type='raw'/><source file='`+img+`'/><target dev='vda' bus='virtio'/></disk>
</devices></domain>`), 0o600)
	sock := filepath.Join(dir, "no-libvirtd")
	base := []string{"migrate", "mail", "--to", "vg:vg-none", "--mode", "offline", "--connect", sock}

	r := run(t, append(base, "--dry-run")...)
	if r.code == 0 || !strings.Contains(r.stderr, "cannot connect to libvirt") {
		t.Fatalf("without --domain-xml and libvirtd: exit %d: %s", r.code, r.stderr)
	}
	r = run(t, append(base, "--dry-run", "--domain-xml", xml)...)
	if r.code != 3 || strings.Contains(r.stderr, "connect to libvirt") || !strings.Contains(r.stderr, "vg-none") {
		t.Errorf("--domain-xml without libvirtd: exit %d, want 3 at the volume group check: %s", r.code, r.stderr)
	}
	usage := func(why string, args ...string) {
		t.Helper()
		if r := run(t, args...); r.code != 2 || !strings.Contains(r.stderr, "domain-xml") {
			t.Errorf("%s: exit %d, want 2 naming --domain-xml: %s", why, r.code, r.stderr)
		}
	}
	usage("without --dry-run", append(base, "--domain-xml", xml, "--yes")...)
	other := append([]string{"migrate", "web"}, base[2:]...)
	usage("another domain", append(other, "--dry-run", "--domain-xml", xml)...)
	os.WriteFile(filepath.Join(dir, "junk.xml"), []byte("not xml"), 0o600)
	usage("not a definition", append(base, "--dry-run", "--domain-xml", filepath.Join(dir, "junk.xml"))...)
}

// TestChoiceFlagsSayTheirValues: --target-format is a choice like --mode
// (placeholder, completion, other values a usage error), and apply takes
// migrate's --progress bar.
func TestChoiceFlagsSayTheirValues(t *testing.T) {
	if h := run(t, "migrate", "--help").stdout; !strings.Contains(h, "--target-format raw|qcow2") {
		t.Errorf("migrate --help has no --target-format raw|qcow2:\n%s", h)
	}
	m, _, err := newRootCmd().Find([]string{"migrate"})
	if err != nil {
		t.Fatal(err)
	}
	complete, ok := m.GetFlagCompletionFunc("target-format")
	if !ok {
		t.Fatal("--target-format offers no completion")
	}
	if values, _ := complete(m, nil, ""); !slices.Equal(values, []string{"raw", "qcow2"}) {
		t.Errorf("--target-format completes %q, want raw and qcow2", values)
	}
	usage := run(t, "migrate", "web1", "--to", "pool:enc", "--target-format", "vmdk")
	if usage.code != 2 || !strings.Contains(usage.stderr, "use raw or qcow2") {
		t.Errorf("--target-format vmdk: exit %d, stderr %q", usage.code, usage.stderr)
	}
	if err := parseOnly([]string{"apply", "-f", "x.yaml", "--progress", "bar"}); err != nil {
		t.Errorf("apply --progress bar: %v", err)
	}
	if err := parseOnly([]string{"apply", "-f", "x.yaml", "--progress", "dots"}); err == nil {
		t.Error("apply --progress dots parsed")
	}
}
