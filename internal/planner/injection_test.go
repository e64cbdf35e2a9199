package planner

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/cryptshift/cryptshift/internal/model/inventory"
	"github.com/cryptshift/cryptshift/internal/model/layout"
	"github.com/cryptshift/cryptshift/internal/model/plan"
	"github.com/cryptshift/cryptshift/playbooks"
)

// The real oracle for "plan -o script": bash itself runs the generated
// script with every program it may call replaced by a recording stub
// (PATH holds nothing else, cryptshift included). Hostile values are put
// into every layout and inventory field that reaches the script; for each,
// either validation refuses it, or the script runs exactly the plan's
// commands with exactly the plan's arguments and inputs, and nothing else.

// payloads try every way a value could make bash run something: command
// substitution, backticks, quotes that close the quoting, separators,
// line breaks, the here-document delimiter, control characters, an
// absolute program path, parameter expansion, and sheer length. Each one
// that could run anything calls "pwned" (a stub that records a breach) or
// touches CANARY.
var payloads = []string{
	"$(pwned)",
	"`pwned`",
	"';pwned;'",
	`";pwned;"`,
	"$(/bin/touch${IFS}CANARY)",
	"${X:=$(pwned)}",
	"x;pwned;#",
	"a|pwned",
	"\npwned\n",
	"\nCRYPTSHIFT_EOF\npwned\n",
	"CRYPTSHIFT_EOF",
	"\x1b[2J\rpwned\a",
	"\u202e$(pwned)",
	"$(pwned) ` pwned ` ' \" ; & | < > ( ) { } [ ] * ? ~ # ! \\",
	strings.Repeat("$(pwned)", 600),
}

// A field is where a payload goes: into the layout's YAML (as a JSON
// string, which is a valid YAML double-quoted scalar) or the inventory.
type field struct {
	name   string
	layout func(y, v string) string
	inv    func(inv *inventory.Inventory, v string)
	root   bool // the payload goes into --root
}

func yamlString(s string) string { b, _ := json.Marshal(s); return string(b) }

func replaceOnce(t *testing.T, y, old, new string) string {
	t.Helper()
	if !strings.Contains(y, old) {
		t.Fatalf("the layout has no %q", old)
	}
	return strings.Replace(y, old, new, 1)
}

func injectionFields(t *testing.T) []field {
	ly := func(old, prefix, suffix string) func(y, v string) string {
		return func(y, v string) string {
			return replaceOnce(t, y, old, prefix+yamlString(strings.TrimSuffix(strings.TrimPrefix(old, prefix), suffix)+v)+suffix)
		}
	}
	return []field{
		{name: "layout description", layout: ly("description: Mail server (Postfix + Dovecot) with two KVM guests on encrypted LVs\n", "description: ", "\n")},
		{name: "disk device (layout and inventory)", layout: ly("    device: /dev/sdb\n", "    device: ", "\n"),
			inv: func(inv *inventory.Inventory, v string) { inv.Device("/dev/sdb").Path = "/dev/sdb" + v }},
		{name: "partition reason", layout: ly(`reason: "GRUB loads the kernel and initramfs from /boot; it holds no keys"`, "reason: ", "")},
		{name: "partition label", layout: func(y, v string) string {
			return replaceOnce(t, y, "        type: boot ", "        label: "+yamlString("b"+v)+"\n        type: boot ")
		}},
		{name: "volume mount point", layout: ly("    mount: /var/vmail ", "    mount: ", " ")},
		{name: "volume mount option", layout: func(y, v string) string {
			return replaceOnce(t, y, "[nodev, nosuid, noexec, noatime]", "[nodev, nosuid, noexec, noatime, "+yamlString("x-"+v)+"]")
		}},
		{name: "volume filesystem label", layout: func(y, v string) string {
			return replaceOnce(t, y, "    mount: /var\n", "    mount: /var\n    label: "+yamlString("v"+v)+"\n")
		}},
		{name: "LUKS2 label", layout: func(y, v string) string {
			return replaceOnce(t, y, "    mount: /var\n", "    mount: /var\n    encryption: {label: "+yamlString("v"+v)+"}\n")
		}},
		{name: "LUKS2 hash", layout: func(y, v string) string {
			return replaceOnce(t, y, "  keySize: 512\n", "  keySize: 512\n  hash: "+yamlString("sha256"+v)+"\n")
		}},
		{name: "guest domain", layout: ly("guest: {domain: mx, disk: vda}", "guest: {domain: ", ", disk: vda}")},
		{name: "key file directory", layout: ly("  keyFileDir: /etc/cryptsetup-keys.d\n", "  keyFileDir: ", "\n")},
		{name: "header backup directory", layout: ly("  headerBackupDir: /root/luks-header-backups ", "  headerBackupDir: ", " ")},
		{name: "tmp path", layout: ly("  - path: /dev/shm\n", "  - path: ", "\n")},
		{name: "tmp option", layout: func(y, v string) string {
			return replaceOnce(t, y, "    size: 1GiB\n", "    size: 1GiB\n    options: ["+yamlString("x-"+v)+"]\n")
		}},
		{name: "inventory host", inv: func(inv *inventory.Inventory, v string) { inv.Host = "mail01" + v }},
		{name: "inventory content (type, version, UUID, label, note)", inv: func(inv *inventory.Inventory, v string) {
			inv.Device("/dev/sda").Content = &inventory.Content{Type: "ext4" + v, Version: v, UUID: v, Label: v, Note: v}
		}},
		{name: "inventory LUKS header strings", inv: func(inv *inventory.Inventory, v string) {
			inv.Device("/dev/sda").Content = &inventory.Content{Type: "crypto_LUKS", Version: "2", UUID: "u" + v, Label: v}
		}},
		{name: "target root", root: true},
	}
}

// outcome is what happened to one payload in one field.
type outcome struct {
	refused string // the validation error, when refused
	plan    *plan.Plan
}

// tryFields puts v into every given field at once, and validates and
// plans the result.
func tryFields(t *testing.T, fields []field, v string, canary string) outcome {
	t.Helper()
	v = strings.ReplaceAll(v, "CANARY", canary)
	e, err := playbooks.Load("mail-host")
	if err != nil {
		t.Fatal(err)
	}
	y := string(e.Layout)
	for _, fl := range fields {
		if fl.layout != nil {
			y = fl.layout(y, v)
		}
	}
	f, rep := layout.Parse("mail-host.yaml", []byte(y))
	if rep.HasErrors() {
		return outcome{refused: rep.Error()}
	}
	inv, err := inventory.Parse("mail-host.inventory.json", e.Inventory)
	if err != nil {
		t.Fatal(err)
	}
	opt := Options{AllowDestroy: true}
	for _, fl := range fields {
		if fl.inv != nil {
			fl.inv(inv, v)
			// An inventory file with such values is refused as a whole;
			// this one goes to the planner directly, as a gathered one
			// would, after the check.
			b, _ := inv.Marshal()
			if _, err := inventory.Parse("hostile.json", b); err != nil {
				return outcome{refused: err.Error()}
			}
		}
		if fl.root {
			opt.Root = "/target" + v
		}
	}
	p, rep, err := Plan(f, inv, opt)
	if err != nil {
		return outcome{refused: fmt.Sprintf("%v\n%v", err, rep.Errors())}
	}
	return outcome{plan: p}
}

// stubTools writes a recording stub for every program name into dir. Each
// call leaves NNN.argv (the program name and arguments, NUL-separated) and
// NNN.stdin; "pwned" also leaves BREACH.
func stubTools(t *testing.T, dir, logDir string, names []string) {
	t.Helper()
	stub := `#!/bin/bash
shopt -s nullglob
calls=("` + logDir + `"/*.argv)
n=$(printf '%03d' "${#calls[@]}")
printf '%s\0' "${0##*/}" "$@" > "` + logDir + `/$n.argv"
[ -c /dev/stdin ] || /bin/cat > "` + logDir + `/$n.stdin" # /dev/null: nothing to record
if [ "${0##*/}" = pwned ]; then : > "` + logDir + `/BREACH"; fi
exit 0
`
	for _, n := range names {
		if err := os.WriteFile(filepath.Join(dir, n), []byte(stub), 0o755); err != nil {
			t.Fatal(err)
		}
	}
}

// runScript runs p's script under bash with stubs only, and checks that
// the calls made are exactly the plan's steps.
func runScript(t *testing.T, p *plan.Plan, canary string) {
	t.Helper()
	var script bytes.Buffer
	if err := p.Script(&script); err != nil {
		t.Fatalf("Script: %v", err)
	}
	dir := t.TempDir()
	bin, logDir := filepath.Join(dir, "bin"), filepath.Join(dir, "log")
	os.Mkdir(bin, 0o755)
	os.Mkdir(logDir, 0o755)
	names := map[string]bool{"cryptshift": true, "pwned": true, "touch": true, "rm": true, "cat": true, "sh": true, "bash": true}
	for _, s := range p.Steps {
		if !strings.Contains(s.Command[0], "/") {
			names[s.Command[0]] = true
		}
	}
	var list []string
	for n := range names {
		list = append(list, n)
	}
	sort.Strings(list)
	stubTools(t, bin, logDir, list)
	pass, rk := filepath.Join(dir, "pass"), filepath.Join(dir, "rk")
	os.WriteFile(pass, []byte("injection test passphrase\n"), 0o600)
	os.WriteFile(rk, []byte("RKEY0-RKEY1\n"), 0o600)
	sh := filepath.Join(dir, "plan.sh")
	os.WriteFile(sh, script.Bytes(), 0o700)
	cmd := exec.Command("/bin/bash", sh)
	cmd.Dir = dir
	cmd.Env = []string{"PATH=" + bin, "HOME=" + dir, "CRYPTSHIFT_PASSPHRASE_FILE=" + pass, "CRYPTSHIFT_RECOVERY_KEY_FILE=" + rk}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("the script failed: %v\n%s\n--- script:\n%.3000s", err, out, script.String())
	}
	if _, err := os.Stat(filepath.Join(logDir, "BREACH")); err == nil {
		t.Fatalf("an injected command ran\n--- script:\n%.3000s", script.String())
	}
	if _, err := os.Stat(canary); err == nil {
		t.Fatalf("an injected absolute command ran (the canary exists)\n--- script:\n%.3000s", script.String())
	}
	calls, _ := filepath.Glob(filepath.Join(logDir, "*.argv"))
	sort.Strings(calls)
	if len(calls) != len(p.Steps) {
		t.Fatalf("the script made %d calls, the plan has %d steps\n%s", len(calls), len(p.Steps), out)
	}
	for i, s := range p.Steps {
		b, _ := os.ReadFile(calls[i])
		got := strings.Split(strings.TrimSuffix(string(b), "\x00"), "\x00")
		want := append([]string{filepath.Base(s.Command[0])}, s.Command[1:]...)
		if fmt.Sprintf("%q", got) != fmt.Sprintf("%q", want) {
			t.Fatalf("call %d is %q, step %s is %q", i+1, got, s.ID, want)
		}
		if s.Input != "" {
			in, _ := os.ReadFile(strings.TrimSuffix(calls[i], ".argv") + ".stdin")
			if string(in) != s.Input {
				t.Fatalf("call %d read %q on stdin, step %s has input %q", i+1, in, s.ID, s.Input)
			}
		}
	}
}

// Every hostile value in every field is refused by validation or comes out
// of bash as data; refusals of a value with a control character name it.
// Each value is first tried in each field alone (validation only); then
// one layout and inventory carry it in every field that accepted it, and
// that plan's script runs under bash.
func TestScriptInjection(t *testing.T) {
	if _, err := os.Stat("/bin/bash"); err != nil {
		t.Fatal("bash is needed: the script's reader is bash")
	}
	canary := filepath.Join(t.TempDir(), "canary")
	pairs := 0
	for i, v := range payloads {
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			var accepted []field
			for _, fl := range injectionFields(t) {
				o := tryFields(t, []field{fl}, v, canary)
				if o.refused == "" {
					accepted = append(accepted, fl)
					continue
				}
				if _, _, bad := layout.BadChar(v); bad && !strings.Contains(o.refused, "contains") {
					t.Errorf("%s: refused without naming the character: %s", fl.name, o.refused)
				}
			}
			if len(accepted) == 0 {
				return
			}
			pairs += len(accepted)
			o := tryFields(t, accepted, v, canary)
			if o.refused != "" {
				// Accepted one by one but not together: run them one by one.
				for _, fl := range accepted {
					if o := tryFields(t, []field{fl}, v, canary); o.plan != nil {
						runScript(t, o.plan, canary)
					}
				}
				return
			}
			runScript(t, o.plan, canary)
		})
	}
	t.Logf("%d field/payload pairs reached bash", pairs)
	if pairs < 40 {
		t.Errorf("only %d pairs reached bash: the test no longer exercises the renderer", pairs)
	}
}

// The renderer defends itself too: a plan whose strings were never
// validated (every text field of a real plan replaced by a payload,
// including line breaks and control characters) still runs under bash as
// exactly its steps.
func TestScriptInjectionUnvalidatedPlan(t *testing.T) {
	canary := filepath.Join(t.TempDir(), "canary")
	f, inv := loadExample(t, "mail-host")
	// The payloads that attack the script's own syntax; FuzzScript covers
	// the rest without bash.
	for i, v := range []string{payloads[0], payloads[1], payloads[2], payloads[4], payloads[9], payloads[11], payloads[13]} {
		v = strings.ReplaceAll(v, "CANARY", canary)
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			p, _, err := Plan(f, inv, Options{})
			if err != nil {
				t.Fatal(err)
			}
			p.Layout, p.Host, p.Root = v, v, v
			p.Warnings = append(p.Warnings, layout.Problem{Severity: layout.SevWarning, Path: v, Message: v, Fix: v})
			for j := range p.Steps {
				s := &p.Steps[j]
				s.ID, s.Description, s.Destroys, s.Target = s.ID+v, v, v, v
				s.Destructive = true
				for k := 1; k < len(s.Command); k++ {
					s.Command[k] += v
				}
				if s.Input != "" {
					s.Input += v + "\n" + v + "\n"
				}
			}
			runScript(t, p, canary)
		})
	}
}
