package planner

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
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

// syntaxPayloads index the payloads that attack the script's own
// syntax (substitution, closing quotes, the here-document delimiter,
// every metacharacter): all examples get these, mail-host gets all.
var syntaxPayloads = []int{0, 2, 9, 13}

// A field is where a payload goes: into the layout's YAML (as a JSON
// string, which is a valid YAML double-quoted scalar) or the inventory.
// layout reports false when the layout has no such place (the field does
// not apply to that example).
type field struct {
	name   string
	layout func(y, v string) (string, bool)
	inv    func(inv *inventory.Inventory, v string)
	root   bool // the payload goes into --root
}

func yamlString(s string) string { b, _ := json.Marshal(s); return string(b) }

// firstDisk is the device path of the layout's first disk;
// injectedDisk is that path in the example being tried.
var (
	firstDisk    = regexp.MustCompile(`(?m)^    device: (\S+)$`)
	injectedDisk string
)

func injectionFields(t *testing.T) []field {
	// ly replaces the first old (a literal) with prefix + the quoted
	// value of old's middle plus the payload + suffix.
	ly := func(old, prefix, suffix string) func(y, v string) (string, bool) {
		return func(y, v string) (string, bool) {
			if !strings.Contains(y, old) {
				return y, false
			}
			return strings.Replace(y, old, prefix+yamlString(strings.TrimSuffix(strings.TrimPrefix(old, prefix), suffix)+v)+suffix, 1), true
		}
	}
	// re replaces group 1 of the first match of pattern with its value
	// plus the payload, quoted; all=true replaces it wherever the same
	// word occurs (a name and every reference to it).
	re := func(pattern string, all bool) func(y, v string) (string, bool) {
		rx := regexp.MustCompile(pattern)
		return func(y, v string) (string, bool) {
			m := rx.FindStringSubmatchIndex(y)
			if m == nil {
				return y, false
			}
			old := y[m[2]:m[3]]
			q := yamlString(old + v)
			if all {
				w := regexp.MustCompile(`([\s\[{:,])` + regexp.QuoteMeta(old) + `([\s\]},/]|$)`)
				return w.ReplaceAllString(y, "${1}"+strings.ReplaceAll(q, "$", "$$")+"${2}"), true
			}
			return y[:m[2]] + q + y[m[3]:], true
		}
	}
	// under inserts line (with base plus the payload, quoted, in place of %s) after
	// the first line matching section, or appends section and line.
	under := func(section, base, line string) func(y, v string) (string, bool) {
		return func(y, v string) (string, bool) {
			l := strings.ReplaceAll(line, "%s", yamlString(base+v))
			if i := strings.Index(y, "\n"+section+"\n"); i >= 0 {
				i += len(section) + 2
				return y[:i] + l + y[i:], true
			}
			return y + "\n" + section + "\n" + l, true
		}
	}
	// rootEncryption sets key of the root volume's encryption section.
	// luksKey sets a key of the top-level luks section, replacing the
	// layout's own value where it has one.
	luksKey := func(key, base string) func(y, v string) (string, bool) {
		rx := regexp.MustCompile(`(?m)^  ` + key + `: \S+$`)
		return func(y, v string) (string, bool) {
			if i := strings.Index(y, "\nluks:\n"); i >= 0 {
				if loc := rx.FindStringIndex(y[i:]); loc != nil {
					return y[:i+loc[0]] + "  " + key + ": " + yamlString(base+v) + y[i+loc[1]:], true
				}
			}
			return under("luks:", base, "  "+key+": %s\n")(y, v)
		}
	}
	rootEncryption := func(key, base string) func(y, v string) (string, bool) {
		return func(y, v string) (string, bool) {
			q := yamlString(base + v)
			if strings.Contains(y, "    mount: /\n    encryption:\n") {
				return strings.Replace(y, "    mount: /\n    encryption:\n", "    mount: /\n    encryption:\n      "+key+": "+q+"\n", 1), true
			}
			if !strings.Contains(y, "    mount: /\n") {
				return y, false
			}
			return strings.Replace(y, "    mount: /\n", "    mount: /\n    encryption: {"+key+": "+q+"}\n", 1), true
		}
	}
	const (
		tang  = `tang: [{url: "http://tang.internal:7500", thumbprint: voU6475c-6TIakg7U7LoBHrS9ESNwU98S-1Gr2IDA2k}]`
		sshed = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIE admin@laptop"
	)
	disk := func(f func(d *inventory.Device, v string)) func(inv *inventory.Inventory, v string) {
		return func(inv *inventory.Inventory, v string) {
			for i := range inv.Devices {
				if inv.Devices[i].Kind == inventory.KindDisk {
					f(&inv.Devices[i], v)
					return
				}
			}
			t.Fatal("the inventory has no disk")
		}
	}
	return []field{
		{name: "layout name", layout: re(`(?m)^name: (\S+)$`, false)},
		{name: "layout description", layout: re(`(?m)^description: (.+)$`, false)},
		{name: "disk device (layout and inventory)", layout: func(y, v string) (string, bool) {
			m := firstDisk.FindStringSubmatch(y)
			if m == nil {
				return y, false
			}
			return strings.Replace(y, m[0], "    device: "+yamlString(m[1]+v), 1), true
		}, inv: func(inv *inventory.Inventory, v string) {
			// The inventory knows the disk under the same hostile path.
			for i := range inv.Devices {
				if d := &inv.Devices[i]; d.Kind == inventory.KindDisk && inv.Devices[i].Path == injectedDisk {
					d.Path += v
					return
				}
			}
		}},
		{name: "disk name", layout: re(`(?m)^  - name: (disk\w*)$`, true)},
		{name: "partition reason", layout: re(`reason: ("[^"]*")`, false)},
		{name: "partition label", layout: func(y, v string) (string, bool) {
			if !strings.Contains(y, "        type: boot\n") {
				return y, false
			}
			return strings.Replace(y, "        type: boot\n", "        type: boot\n        label: "+yamlString("b"+v)+"\n", 1), true
		}},
		{name: "volume group name", layout: re(`(?m)^  - name: (vg\w*)$`, true)},
		{name: "volume name", layout: re(`(?m)^  - name: (root)$`, true)},
		{name: "volume mount point", layout: ly("    mount: /var/vmail ", "    mount: ", " ")},
		{name: "volume mount option", layout: func(y, v string) (string, bool) {
			if !strings.Contains(y, "[nodev, nosuid, noexec, noatime]") {
				return y, false
			}
			return strings.Replace(y, "[nodev, nosuid, noexec, noatime]", "[nodev, nosuid, noexec, noatime, "+yamlString("x-"+v)+"]", 1), true
		}},
		{name: "volume filesystem label", layout: func(y, v string) (string, bool) {
			if !strings.Contains(y, "    mount: /\n") {
				return y, false
			}
			return strings.Replace(y, "    mount: /\n", "    mount: /\n    label: "+yamlString("v"+v)+"\n", 1), true
		}},
		{name: "LUKS2 label", layout: rootEncryption("label", "v")},
		{name: "mapping name", layout: rootEncryption("name", "m")},
		{name: "LUKS2 hash", layout: luksKey("hash", "sha256")},
		{name: "LUKS2 cipher", layout: luksKey("cipher", "aes-xts-plain64")},
		{name: "LUKS2 pbkdf", layout: luksKey("pbkdf", "argon2id")},
		{name: "guest domain", layout: ly("guest: {domain: mx, disk: vda}", "guest: {domain: ", ", disk: vda}")},
		{name: "key file directory", layout: ly("  keyFileDir: /etc/cryptsetup-keys.d\n", "  keyFileDir: ", "\n")},
		{name: "header backup directory", layout: re(`(?m)^  headerBackupDir: (\S+)`, false)},
		{name: "unlock ip", layout: under("keys:", "dhcp", "  unlock: {ip: %s, networkModules: [virtio_net], "+tang+"}\n")},
		{name: "unlock network module", layout: under("keys:", "virtio_net", "  unlock: {ip: dhcp, networkModules: [%s], "+tang+"}\n")},
		{name: "unlock tang url", layout: under("keys:", "http://tang.internal:7500", "  unlock: {ip: dhcp, tang: [{url: %s, thumbprint: voU6475c-6TIakg7U7LoBHrS9ESNwU98S-1Gr2IDA2k}]}\n")},
		{name: "unlock tang thumbprint", layout: under("keys:", "voU6475c-6TIakg7U7LoBHrS9ESNwU98S-1Gr2IDA2k", "  unlock: {ip: dhcp, tang: [{url: \"http://tang.internal:7500\", thumbprint: %s}]}\n")},
		{name: "unlock ssh authorized key", layout: under("keys:", sshed, "  unlock: {ip: dhcp, ssh: {authorizedKeys: [%s]}}\n")},
		{name: "unlock tpm2 pcrs", layout: under("keys:", "7", "  unlock: {tpm2: {pcrs: %s}}\n"), inv: func(inv *inventory.Inventory, _ string) {
			yes := true
			inv.TPM2 = &yes
		}},
		{name: "tmp path", layout: ly("  - path: /dev/shm\n", "  - path: ", "\n")},
		{name: "tmp option", layout: under("tmp:", "x-", "  - path: /run/x\n    type: tmpfs\n    size: 1GiB\n    options: [%s]\n")},
		{name: "inventory host", inv: func(inv *inventory.Inventory, v string) { inv.Host = "mail01" + v }},
		{name: "inventory serial", inv: disk(func(d *inventory.Device, v string) { d.Serial = "WD-1" + v; d.WWID = "naa.5" + v })},
		{name: "inventory alias", inv: disk(func(d *inventory.Device, v string) { d.Aliases = append(d.Aliases, "/dev/disk/by-id/ata-X"+v) })},
		{name: "inventory content (type, version, UUID, label, note)", inv: disk(func(d *inventory.Device, v string) {
			d.Content = &inventory.Content{Type: "ext4" + v, Version: v, UUID: v, Label: v, Note: v}
		})},
		{name: "inventory LUKS header strings", inv: disk(func(d *inventory.Device, v string) {
			d.Content = &inventory.Content{Type: "crypto_LUKS", Version: "2", UUID: "u" + v, Label: v}
		})},
		{name: "inventory VG and LV names", inv: func(inv *inventory.Inventory, v string) {
			inv.VGs = append(inv.VGs, inventory.VG{Name: "old" + v, Size: 1 << 30, ExtentSize: 4 << 20, ExtentCount: 256})
			inv.LVs = append(inv.LVs, inventory.LV{VG: "old" + v, Name: "lv" + v, Path: "/dev/old" + v + "/lv" + v, Size: 1 << 30})
		}},
		{name: "target root", root: true},
	}
}

// outcome is what happened to one payload in one field.
type outcome struct {
	na      bool   // the field does not apply to this layout
	refused string // the validation error, when refused
	plan    *plan.Plan
}

// tryFields puts v into every given field of the example at once, and
// validates and plans the result.
func tryFields(t *testing.T, example string, fields []field, v string, canary string) outcome {
	t.Helper()
	v = strings.ReplaceAll(v, "CANARY", canary)
	e, err := playbooks.Load(example)
	if err != nil {
		t.Fatal(err)
	}
	y := string(e.Layout)
	if m := firstDisk.FindStringSubmatch(y); m != nil {
		injectedDisk = m[1]
	}
	for _, fl := range fields {
		if fl.layout != nil {
			var ok bool
			if y, ok = fl.layout(y, v); !ok {
				return outcome{na: true}
			}
		}
	}
	f, rep := layout.Parse(example+".yaml", []byte(y))
	if rep.HasErrors() {
		return outcome{refused: rep.Error()}
	}
	inv, err := inventory.Parse(example+".inventory.json", e.Inventory)
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

// Every hostile value in every field of every example layout is refused
// by validation or comes out of bash as data; refusals of a value with a
// control character name it. First each field is tried with a harmless
// value (it must plan: a refusal of a hostile value is then the value's
// doing, not the field's placement). Then each value is tried in each
// field alone (validation only); then one layout and inventory carry it
// in every field that accepted it, and that plan's script runs under bash.
func TestScriptInjection(t *testing.T) {
	if _, err := os.Stat("/bin/bash"); err != nil {
		t.Fatal("bash is needed: the script's reader is bash")
	}
	canary := filepath.Join(t.TempDir(), "canary")
	fields := injectionFields(t)
	covered := map[string]bool{}
	pairs := 0
	for _, ex := range playbooks.Examples() {
		var apply []field
		for _, fl := range fields {
			o := tryFields(t, ex, []field{fl}, "", canary)
			switch {
			case o.na:
			case o.refused != "":
				t.Errorf("%s: %s: refused with a harmless value, so it proves nothing with a hostile one: %s", ex, fl.name, o.refused)
			default:
				apply = append(apply, fl)
				covered[fl.name] = true
			}
		}
		for i, v := range payloads {
			if ex != "mail-host" && !slices.Contains(syntaxPayloads, i) {
				continue // the machine has 2 cores: the other examples get the payloads that attack the script's syntax
			}
			t.Run(fmt.Sprintf("%s/%d", ex, i), func(t *testing.T) {
				var accepted []field
				for _, fl := range apply {
					o := tryFields(t, ex, []field{fl}, v, canary)
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
				o := tryFields(t, ex, accepted, v, canary)
				if o.refused != "" {
					// Accepted one by one but not together: run them one by one.
					for _, fl := range accepted {
						if o := tryFields(t, ex, []field{fl}, v, canary); o.plan != nil {
							runScript(t, o.plan, canary)
						}
					}
					return
				}
				runScript(t, o.plan, canary)
			})
		}
	}
	for _, fl := range fields {
		if !covered[fl.name] {
			t.Errorf("field %q applies to no example layout: it tests nothing", fl.name)
		}
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
