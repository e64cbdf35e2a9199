package main

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// An example is one cryptshift command line from --help or the README.
type example struct {
	where string   // "plan --help", "README.md:47"
	sudo  bool     // written with sudo: it needs root or the host's devices
	args  []string // after "cryptshift"
	out   string   // "> FILE" redirection, if any
}

// helpExamples are the command lines in every command's Example.
func helpExamples(t *testing.T) map[string][]example {
	t.Helper()
	out := map[string][]example{}
	walk(newRootCmd(), func(c *cobra.Command) {
		for _, l := range strings.Split(c.Example, "\n") {
			out[c.Name()+" --help"] = append(out[c.Name()+" --help"], parseExample(t, c.Name()+" --help", l)...)
		}
	})
	return out
}

// readmeExamples are the command lines in the README's sh blocks.
func readmeExamples(t *testing.T) []example {
	t.Helper()
	f, err := os.Open("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var exs []example
	in, line, n := false, "", 0
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		n++
		l := sc.Text()
		if strings.HasPrefix(l, "```") {
			in = l == "```sh"
			continue
		}
		if !in {
			continue
		}
		if strings.HasSuffix(strings.TrimSpace(stripComment(l)), "\\") {
			line += strings.TrimSuffix(strings.TrimSpace(stripComment(l)), "\\") + " "
			continue
		}
		line += l
		exs = append(exs, parseExample(t, "README.md:"+strconv.Itoa(n), line)...)
		line = ""
	}
	return exs
}

func stripComment(l string) string {
	if i := strings.Index(l, " #"); i >= 0 {
		return l[:i]
	}
	if strings.HasPrefix(strings.TrimSpace(l), "#") {
		return ""
	}
	return l
}

// parseExample splits "sudo cryptshift a b > f && cryptshift c" into its
// cryptshift commands; other programs ($EDITOR, make) are not examples.
func parseExample(t *testing.T, where, l string) []example {
	var exs []example
	for _, part := range strings.Split(stripComment(l), "&&") {
		f := strings.Fields(part)
		ex := example{where: where}
		if len(f) > 0 && f[0] == "sudo" {
			ex.sudo, f = true, f[1:]
		}
		switch {
		case len(f) >= 1 && f[0] == "cryptshift":
			f = f[1:]
		case len(f) >= 3 && f[0] == "go" && f[1] == "run" && f[2] == "./cmd/cryptshift":
			f = f[3:]
		default:
			continue
		}
		for i := 0; i < len(f); i++ {
			if f[i] == ">" && i+1 < len(f) {
				ex.out = f[i+1]
				f = append(f[:i], f[i+2:]...)
				i--
			}
		}
		ex.args = f
		exs = append(exs, ex)
	}
	return exs
}

// sandbox is a directory holding the files the examples name but expect
// from elsewhere: the capture (a reference host fixture), a LUKS header
// backup, and the inventory "made on the host" (inv: the example inventory
// matching the layout the examples start from).
func sandbox(t *testing.T, inv string) string {
	t.Helper()
	dir := t.TempDir()
	abs, _ := filepath.Abs(fixtures + "mailhost-luks-on-lvm/root")
	if err := os.Symlink(abs, filepath.Join(dir, "mx1-capture")); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile("../../playbooks/examples/" + inv + ".inventory.json")
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "host.json"), b, 0o644)
	os.WriteFile(filepath.Join(dir, "host.inventory.json"), b, 0o644) // the README's host journey
	gunzip(t, "../../luks/testdata/luks2.hdr.gz", filepath.Join(dir, "header-backup.img"))
	return dir
}

// runsHere says whether an example can run on any machine without root,
// devices or libvirt, and if not, why.
func runsHere(ex example, dir string) (bool, string) {
	if ex.sudo {
		return false, "written with sudo"
	}
	if len(ex.args) == 0 {
		return true, ""
	}
	switch ex.args[0] {
	case "apply", "migrate", "migrate-host", "unlock", "rollback", "capture":
		return false, ex.args[0] + " changes a host"
	case "plan":
		if !slices.Contains(ex.args, "--inventory") && slices.Contains(ex.args, "-f") {
			return false, "plans against this machine's disks"
		}
	}
	for i, a := range ex.args {
		if strings.HasPrefix(a, "/") && (i == 0 || ex.args[i-1] != "--connect") {
			if _, err := os.Stat(a); err != nil {
				return false, "needs " + a + " of a real host"
			}
		}
		if i > 0 && ex.args[i-1] == "--connect" {
			return false, "needs the libvirt daemon at " + a
		}
	}
	return true, ""
}

// TestHelpExamplesRun: every example in --help and in the README runs as
// written. Those that need no root, devices or libvirt run for real, in
// order, in a sandbox (a file one writes, the next reads) and must exit 0
// (doctor: 0 or 1, it depends on the host); the others are parsed by the
// real command tree with their flags checked (everything before the verb
// reads or changes anything), so a flag that does not exist, a missing
// argument or a combination the verb refuses fails the test.
func TestHelpExamplesRun(t *testing.T) {
	sources := helpExamples(t)
	sources["README.md"] = readmeExamples(t)
	ran, parsed := 0, 0
	for src, exs := range sources {
		inv := "mail-host"
		if src == "plan --help" {
			inv = "kvm-host" // its examples start from the kvm-host layout
		}
		dir := sandbox(t, inv)
		for _, ex := range exs {
			ok, why := runsHere(ex, dir)
			if !ok {
				parsed++
				if err := parseOnly(ex.args); err != nil {
					t.Errorf("%s: cryptshift %s (%s): %v", ex.where, strings.Join(ex.args, " "), why, err)
				}
				continue
			}
			ran++
			cmd := exec.Command(binary, ex.args...)
			cmd.Dir = dir
			var stderr strings.Builder
			cmd.Stderr = &stderr
			out, _ := cmd.Output()
			code := cmd.ProcessState.ExitCode()
			if code != 0 && !(len(ex.args) > 0 && ex.args[0] == "doctor" && code == 1) {
				t.Errorf("%s: cryptshift %s: exit %d: %s", ex.where, strings.Join(ex.args, " "), code, stderr.String())
			}
			if ex.out != "" {
				os.WriteFile(filepath.Join(dir, ex.out), out, 0o644)
			}
		}
	}
	t.Logf("%d examples ran, %d were parsed and flag-checked", ran, parsed)
	if ran < 15 || parsed < 20 {
		t.Errorf("only %d examples ran and %d were checked: are the examples still found?", ran, parsed)
	}
	checkUseLines(t)
}

// useFlag is a flag named in a Use: line ("-f LAYOUT", "[--target DIR]").
var useFlag = regexp.MustCompile(`(?:^|[\s\[|(])(--?[a-zA-Z][a-zA-Z0-9-]*)`)

// checkUseLines: every flag a verb's usage line names is one of its own
// flags, and neither hidden nor deprecated (the line is the first thing
// a user copies).
func checkUseLines(t *testing.T) {
	t.Helper()
	n := 0
	walk(newRootCmd(), func(c *cobra.Command) {
		for _, m := range useFlag.FindAllStringSubmatch(c.Use, -1) {
			name := m[1]
			lookup := func(c *cobra.Command) *pflag.Flag {
				if long, ok := strings.CutPrefix(name, "--"); ok {
					return c.Flags().Lookup(long)
				}
				return c.Flags().ShorthandLookup(strings.TrimPrefix(name, "-"))
			}
			// A group's line (unlock (add|remove) ... --volume NAME) names
			// the flags all of its verbs have.
			holders := []*cobra.Command{c}
			if lookup(c) == nil && c.HasSubCommands() {
				holders = c.Commands()
			}
			n++
			for _, h := range holders {
				switch f := lookup(h); {
				case f == nil:
					t.Errorf("%s: its usage line %q names %s, which it does not have", h.CommandPath(), c.Use, name)
				case f.Deprecated != "" || f.Hidden:
					t.Errorf("%s: its usage line %q names %s, which is deprecated or hidden", h.CommandPath(), c.Use, name)
				}
			}
		}
	})
	if n < 5 {
		t.Errorf("only %d flags found in the usage lines: is the pattern still right?", n)
	}
}

// parseOnly runs the command tree on args with nothing carried out: flag
// parsing, argument checks and each verb's PreRunE (its flag checks) run;
// input files and the verb itself do not.
func parseOnly(args []string) error {
	root := newRootCmd()
	root.PersistentPreRunE = nil
	walk(root, func(c *cobra.Command) {
		if c.RunE != nil || c.Run != nil {
			c.Run, c.RunE = nil, func(*cobra.Command, []string) error { return nil }
		}
	})
	root.SetArgs(args)
	root.SetOut(new(strings.Builder))
	root.SetErr(new(strings.Builder))
	return root.Execute()
}
