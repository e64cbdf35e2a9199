package plan

import (
	"fmt"
	"regexp"
	"strings"
	"testing"

	"github.com/cryptshift/cryptshift/internal/model/layout"
)

// parsedCommand is one command line of a script as bash would read it,
// recovered by scriptCommands.
type parsedCommand struct {
	argv    []string
	secrets []string // "FD:VAR" of each secret redirection, in order
	input   *string  // here-document or printf input
}

// scriptCommands reads a script the way bash would, for the subset Script
// may produce, and fails on anything outside it. The subset is chosen so
// that nothing in it can expand, substitute or run anything: words are
// made of characters no shell interprets, single-quoted strings and \',
// and the only other constructs are the fixed secret redirections and
// quoted here-documents. So when a script parses, bash runs exactly the
// commands returned, with exactly these arguments and inputs.
func scriptCommands(script string) (cmds []parsedCommand, comments []string, err error) {
	rest, ok := strings.CutPrefix(script, "#!/bin/bash\n")
	if !ok {
		return nil, nil, fmt.Errorf("no #!/bin/bash line")
	}
	for strings.HasPrefix(rest, "#") {
		var line string
		line, rest, _ = strings.Cut(rest, "\n")
		comments = append(comments, line)
	}
	if rest, ok = strings.CutPrefix(rest, scriptSettings); !ok {
		return nil, nil, fmt.Errorf("the header is followed by %.40q, not the settings", rest)
	}
	rest, _ = strings.CutPrefix(rest, scriptPassphrase)
	rest, _ = strings.CutPrefix(rest, scriptRecoveryKey)
	for rest != "" {
		switch {
		case rest[0] == '\n':
			rest = rest[1:]
		case rest[0] == '#':
			var line string
			line, rest, _ = strings.Cut(rest, "\n")
			comments = append(comments, line)
		default:
			c, r, err := parseCommand(rest)
			if err != nil {
				return cmds, comments, fmt.Errorf("command %d: %w", len(cmds)+1, err)
			}
			cmds, rest = append(cmds, c), r
		}
	}
	return cmds, comments, nil
}

var (
	secretRedirRe = regexp.MustCompile(`^([0-9]*)< <\(printf '%s' "\$(PASSPHRASE|RECOVERY_KEY)"\)`)
	printfInputRe = regexp.MustCompile(`^< <\(printf '%s' `)
	hereDocRe     = regexp.MustCompile(`^<<'([A-Z0-9_]+)'`)
)

func safeChar(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("-_./=:,+@%", c) >= 0
}

// parseWord reads one word at the start of s: safe characters,
// single-quoted strings and \'. It reports whether any part was quoted
// and where an unquoted '=' was.
func parseWord(s string) (word string, n int, quoted, unquotedEq bool, err error) {
	var b strings.Builder
	i := 0
	for i < len(s) {
		c := s[i]
		switch {
		case c == ' ' || c == '\n' || c == ')':
			return b.String(), i, quoted, unquotedEq, nil
		case c == '\'':
			end := strings.IndexByte(s[i+1:], '\'')
			if end < 0 {
				return "", 0, false, false, fmt.Errorf("unterminated quote")
			}
			b.WriteString(s[i+1 : i+1+end])
			i += end + 2
			quoted = true
		case c == '\\' && i+1 < len(s) && s[i+1] == '\'':
			b.WriteByte('\'')
			i += 2
			quoted = true
		case safeChar(c):
			if c == '=' && !quoted {
				unquotedEq = true
			}
			b.WriteByte(c)
			i++
		default:
			return "", 0, false, false, fmt.Errorf("unquoted %q at %.30q", c, s[i:])
		}
	}
	return b.String(), i, quoted, unquotedEq, nil
}

func parseCommand(s string) (parsedCommand, string, error) {
	var c parsedCommand
	delim := ""
	for {
		if s == "" {
			return c, "", fmt.Errorf("script ends inside a command")
		}
		if s[0] == '\n' {
			s = s[1:]
			break
		}
		if s[0] == ' ' {
			s = s[1:]
			continue
		}
		if m := secretRedirRe.FindStringSubmatch(s); m != nil && len(c.argv) > 0 {
			fd := m[1]
			if fd == "" {
				fd = "0"
			}
			c.secrets = append(c.secrets, fd+":"+m[2])
			s = s[len(m[0]):]
			continue
		}
		if m := printfInputRe.FindString(s); m != "" && len(c.argv) > 0 {
			w, n, _, _, err := parseWord(s[len(m):])
			if err != nil {
				return c, "", fmt.Errorf("printf input: %w", err)
			}
			if !strings.HasPrefix(s[len(m)+n:], ")") {
				return c, "", fmt.Errorf("printf input not closed")
			}
			c.input = &w
			s = s[len(m)+n+1:]
			continue
		}
		if m := hereDocRe.FindStringSubmatch(s); m != nil && len(c.argv) > 0 {
			delim = m[1]
			s = s[len(m[0]):]
			continue
		}
		w, n, quoted, eq, err := parseWord(s)
		if err != nil {
			return c, "", err
		}
		if n == 0 {
			return c, "", fmt.Errorf("unexpected %.30q", s)
		}
		if len(c.argv) == 0 && !quoted && (eq || scriptKeywords[w]) {
			return c, "", fmt.Errorf("command word %q is an assignment or a keyword", w)
		}
		c.argv = append(c.argv, w)
		s = s[n:]
	}
	if len(c.argv) == 0 {
		return c, "", fmt.Errorf("empty command")
	}
	if delim != "" {
		var body strings.Builder
		for {
			line, r, found := strings.Cut(s, "\n")
			if !found && line != delim {
				return c, "", fmt.Errorf("here-document %s is not closed", delim)
			}
			s = r
			if line == delim {
				break
			}
			body.WriteString(line + "\n")
		}
		in := body.String()
		c.input = &in
	}
	return c, s, nil
}

// The reserved words of bash(1), written independently of render.go's
// list: an unquoted one in command position is not a program.
var scriptKeywords = map[string]bool{"!": true, "case": true, "coproc": true, "do": true, "done": true, "elif": true,
	"else": true, "esac": true, "fi": true, "for": true, "function": true, "if": true, "in": true, "select": true,
	"then": true, "time": true, "until": true, "while": true, "{": true, "}": true, "[[": true, "]]": true}

// checkScript renders p and checks that bash would run exactly its steps,
// and that every comment is one printable line.
func checkScript(t *testing.T, p *Plan) string {
	t.Helper()
	var b strings.Builder
	if err := p.Script(&b); err != nil {
		t.Fatalf("Script: %v", err)
	}
	script := b.String()
	cmds, comments, err := scriptCommands(script)
	if err != nil {
		t.Fatalf("the script does not read back: %v\n%s", err, script)
	}
	for _, c := range comments {
		if _, _, bad := layout.BadChar(c); bad {
			t.Fatalf("comment line holds a control character: %q", c)
		}
	}
	if len(cmds) != len(p.Steps) {
		t.Fatalf("the script runs %d commands, the plan has %d steps\n%s", len(cmds), len(p.Steps), script)
	}
	for i, s := range p.Steps {
		c := cmds[i]
		if fmt.Sprintf("%q", c.argv) != fmt.Sprintf("%q", s.Command) {
			t.Fatalf("step %d runs %q, want %q\n%s", i+1, c.argv, s.Command, script)
		}
		var want []string
		for _, r := range s.Secrets {
			v := "PASSPHRASE"
			if r.Secret == SecretRecoveryKey {
				v = "RECOVERY_KEY"
			}
			want = append(want, fmt.Sprintf("%d:%s", r.FD, v))
		}
		if strings.Join(c.secrets, " ") != strings.Join(want, " ") {
			t.Fatalf("step %d reads secrets %v, want %v", i+1, c.secrets, want)
		}
		switch {
		case s.Input == "" && c.input != nil:
			t.Fatalf("step %d gets input %q, want none", i+1, *c.input)
		case s.Input != "" && (c.input == nil || *c.input != s.Input):
			t.Fatalf("step %d gets input %v, want %q\n%s", i+1, c.input, s.Input, script)
		}
	}
	return script
}

func hostilePlan(layoutName, host, root, id, desc, destroys, arg, cmd, input, warning string) *Plan {
	return &Plan{
		APIVersion: APIVersion, Kind: Kind, Layout: layoutName, Host: host, Root: root,
		Warnings: []layout.Problem{{Severity: layout.SevWarning, Path: "$", Message: warning, Fix: warning}},
		Steps: []Step{
			{ID: id, Action: ActWriteFstab, Target: arg, Description: desc, Destructive: true, Destroys: destroys,
				Command: []string{"cryptshift", "step", "write-block", "--file", arg, "--block", arg}, Input: input},
			{ID: id + "2", Action: ActLUKSFormat, Target: arg, Description: desc,
				Command: []string{cmd, arg, "--key-file", "-", arg},
				Secrets: []SecretRef{{FD: 0, Secret: SecretPassphrase}, {FD: 3, Secret: SecretRecoveryKey}}},
			{ID: id + "3", Action: ActMount, Target: arg, Description: desc,
				Command: []string{"mount", arg, input}, Input: strings.TrimSuffix(input, "\n")},
		},
	}
}

// Hostile values in every field a script carries come out as data.
func TestScriptCarriesHostileValuesAsData(t *testing.T) {
	for _, v := range []string{
		"plain",
		"a\nb", "$(touch /tmp/pwned)", "`touch /tmp/pwned`", "'; touch /tmp/pwned; '", `"; touch /tmp/pwned; "`,
		"x\nCRYPTSHIFT_EOF\ntouch /tmp/pwned\n", "CRYPTSHIFT_EOF\n", "CRYPTSHIFT_EOF\nCRYPTSHIFT_EOF_1\n",
		"\r\x1b[2J\x07\x7f\u0085\u2028\u202e", `\`, "'", "#not a comment", "~root", "{a,b}", "*", "a=b", "if", "!",
		strings.Repeat("$(x)'\n", 5000),
	} {
		checkScript(t, hostilePlan(v, v, v, v, v, v, v, v, v+"\n", v))
	}
}

// A NUL byte cannot pass through bash: the script is refused, not
// silently cut.
func TestScriptRefusesNUL(t *testing.T) {
	p := hostilePlan("l", "h", "/target", "id", "d", "x", "a\x00b", "cmd", "in\n", "w")
	if err := p.Script(&strings.Builder{}); err == nil || !strings.Contains(err.Error(), "NUL byte") {
		t.Fatalf("got %v", err)
	}
}

// FuzzScript: whatever the plan's strings hold, the script parses back
// (scriptCommands) into exactly the plan's commands, secret redirections
// and inputs, and every comment is one printable line.
func FuzzScript(f *testing.F) {
	f.Add("mail-host", "mx1", "/target", "mount:/target/srv", "mount it", "an ext4 filesystem", "/srv/a b", "lvm", "UUID=x / ext4 defaults 0 1\n", "w")
	f.Add("l", "h\nrm -rf /", "/t", "i", "d\n", "`x`", "$(x)", "a=b", "CRYPTSHIFT_EOF\n", "\x1b")
	f.Fuzz(func(t *testing.T, layoutName, host, root, id, desc, destroys, arg, cmd, input, warning string) {
		p := hostilePlan(layoutName, host, root, id, desc, destroys, arg, cmd, input, warning)
		if strings.ContainsRune(arg+cmd+input, 0) {
			if err := p.Script(&strings.Builder{}); err == nil {
				t.Fatal("a NUL byte was rendered")
			}
			return
		}
		checkScript(t, p)
	})
}

// The oracle itself: scripts written the way Script used to write them,
// with a heredoc body line equal to the delimiter, a comment broken by a
// line break, or an unquoted substitution, do not read back as the one
// command that was meant.
func TestScriptOracleCatchesTheOldHoles(t *testing.T) {
	head := "#!/bin/bash\n# plan\n" + scriptSettings
	for _, tt := range []struct{ name, script, meant string }{
		{"heredoc closed early", head + "cryptshift step write-block <<'CRYPTSHIFT_EOF'\nCRYPTSHIFT_EOF\ntouch /tmp/pwned\nCRYPTSHIFT_EOF\n", `["cryptshift" "step" "write-block"]`},
		{"comment broken by a line break", head + "# [1/1] mount:/srv\ntouch /tmp/pwned: mount it\nmount /srv\n", `["mount" "/srv"]`},
		{"command substitution", head + "mount $(touch /tmp/pwned)\n", `["mount" "$(touch /tmp/pwned)"]`},
		{"backticks", head + "mount `touch /tmp/pwned`\n", "[\"mount\" \"`touch /tmp/pwned`\"]"},
		{"assignment as the command word", head + "PATH=/tmp/evil mount\n", `["PATH=/tmp/evil" "mount"]`},
	} {
		cmds, _, err := scriptCommands(tt.script)
		if err == nil && len(cmds) == 1 && fmt.Sprintf("%q", cmds[0].argv) == tt.meant {
			t.Errorf("%s: read back as the one command meant, %s", tt.name, tt.meant)
		}
	}
}
