package plan

import (
	"encoding/json"
	"fmt"
	"github.com/cryptshift/cryptshift/internal/textfmt"
	"io"
	"strings"

	"github.com/cryptshift/cryptshift/internal/doors/execx"
	"github.com/cryptshift/cryptshift/internal/model/layout"
)

// JSON renders the plan as indented JSON: the stable machine contract.
func (p *Plan) JSON() ([]byte, error) {
	b, err := json.MarshalIndent(p, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("cannot encode plan: %w", err)
	}
	return append(b, '\n'), nil
}

// Parse reads a plan written by JSON.
func Parse(name string, data []byte) (*Plan, error) {
	var p Plan
	if err := json.Unmarshal(data, &p); err != nil {
		return nil, fmt.Errorf("cannot read plan %s: %w", name, err)
	}
	if p.APIVersion != APIVersion || p.Kind != Kind {
		return nil, fmt.Errorf("cannot read plan %s: not a cryptshift plan (apiVersion %q, kind %q)", name, p.APIVersion, p.Kind)
	}
	if p.Spec == nil {
		return nil, fmt.Errorf("cannot read plan %s: it carries no layout spec; make it with cryptshift plan -o json", name)
	}
	return &p, nil
}

// Table renders the plan for people. Every value is shown printable
// (layout.Printable): a label or host name from an inventory cannot move
// the cursor, clear the screen or reorder what the reviewer reads.
func (p *Plan) Table(w io.Writer) error { return p.TableStyled(w, textfmt.Style{}) }

// TableStyled is Table fitted to a width (long descriptions wrap under
// their column) and, when the style allows, with destructive steps in red.
func (p *Plan) TableStyled(w io.Writer, st textfmt.Style) error {
	pr := layout.Printable
	host := ""
	if p.Host != "" {
		host = " on host " + pr(p.Host)
	}
	fmt.Fprintf(w, "Plan for layout %s%s (target root %s)\n\n", pr(p.Layout), host, pr(p.Root))
	if len(p.Steps) == 0 {
		fmt.Fprintln(w, "Nothing to do: the system already matches the layout.")
	} else {
		t := textfmt.Table{Header: []string{"#", "ACTION", "TARGET", "WHAT IT DOES"}}
		for i, s := range p.Steps {
			what := s.Description
			if s.Destructive {
				what = "DESTROYS " + s.Destroys + ": " + what
			}
			t.Rows = append(t.Rows, []string{fmt.Sprint(i + 1), pr(s.Action), pr(s.Target), pr(what)})
		}
		t.Paint = func(row, col int, cell string) string {
			if p.Steps[row].Destructive {
				return st.Fail(cell)
			}
			return cell
		}
		if err := t.Write(w, st); err != nil {
			return err
		}
	}
	if len(p.Secrets) > 0 {
		fmt.Fprintln(w, "\nSecrets (never shown, never on a command line):")
		for _, s := range p.Secrets {
			st.Para(w, "  ", "    ", fmt.Sprintf("%s: %s; source: %s", pr(s.Name), pr(s.Use), pr(s.Source)))
		}
	}
	if len(p.Crypttab) > 0 {
		fmt.Fprintln(w, "\ncrypttab:")
		for _, e := range p.Crypttab {
			fmt.Fprintf(w, "  %s\n", pr(e.Line))
		}
	}
	if len(p.Fstab) > 0 {
		fmt.Fprintln(w, "\nfstab:")
		for _, e := range p.Fstab {
			fmt.Fprintf(w, "  %s\n", pr(e.Line))
		}
	}
	if len(p.Warnings) > 0 {
		fmt.Fprintln(w, "\nWarnings:")
		for _, prob := range p.Warnings {
			st.Para(w, "  ", "    ", pr(prob.String()))
		}
	}
	if len(p.Notes) > 0 {
		fmt.Fprintln(w, "\nNotes:")
		for _, n := range p.Notes {
			st.Para(w, "  - ", "    ", pr(n))
		}
	}
	fmt.Fprintf(w, "\n%s, %d destructive. Nothing has been changed.\n", textfmt.Plural(len(p.Steps), "step", "steps"), len(p.Destructive()))
	return nil
}

// Script renders the plan as a reviewable bash script that runs exactly the
// plan's commands, in order, with the same inputs. Secrets are read into
// shell variables and handed over with the printf builtin through a pipe or
// a process substitution, so they never reach any process's argv.
//
// Nothing in a plan reaches bash except as data: every argument is
// single-quoted unless it is made of characters no shell interprets (and
// the command word also unless it is a plain program name), comments are
// made printable so a line break cannot end them, and each step's input
// goes into a here-document whose delimiter is chosen so that no line of
// the input equals it.
func (p *Plan) Script(w io.Writer) error {
	for _, s := range p.Steps {
		for _, a := range append(append([]string{}, s.Command...), s.Input) {
			if strings.ContainsRune(a, 0) {
				// bash strings end at NUL: the script could not pass
				// the value on unchanged.
				return fmt.Errorf("cannot render step %s as a script: a value holds a NUL byte", comment(s.ID))
			}
		}
	}
	var b strings.Builder
	b.WriteString("#!/bin/bash\n")
	fmt.Fprintf(&b, "# cryptshift plan for layout %s", comment(p.Layout))
	if p.Host != "" {
		fmt.Fprintf(&b, " on host %s", comment(p.Host))
	}
	fmt.Fprintf(&b, ", target root %s.\n", comment(p.Root))
	b.WriteString("# It runs exactly the commands \"cryptshift apply\" runs, in the same order.\n")
	b.WriteString("# Unlike apply it keeps no journal, checks no postconditions and cannot resume:\n")
	b.WriteString("# review it, and prefer cryptshift apply to run it.\n")
	for _, pr := range p.Warnings {
		fmt.Fprintf(&b, "# %s\n", comment(pr.String()))
	}
	b.WriteString(scriptSettings)
	needs := map[string]bool{}
	for _, s := range p.Steps {
		for _, r := range s.Secrets {
			needs[r.Secret] = true
		}
	}
	if needs[SecretPassphrase] {
		b.WriteString(scriptPassphrase)
	}
	if needs[SecretRecoveryKey] {
		b.WriteString(scriptRecoveryKey)
	}
	for i, s := range p.Steps {
		fmt.Fprintf(&b, "# [%d/%d] %s: %s\n", i+1, len(p.Steps), comment(s.ID), comment(s.Description))
		if s.Destructive {
			fmt.Fprintf(&b, "# DESTRUCTIVE: destroys %s\n", comment(s.Destroys))
		}
		line := commandLine(s.Command)
		var redirs []string
		for _, r := range s.Secrets {
			v := "PASSPHRASE"
			if r.Secret == SecretRecoveryKey {
				v = "RECOVERY_KEY"
			}
			if r.FD == 0 {
				redirs = append(redirs, fmt.Sprintf(`< <(printf '%%s' "$%s")`, v))
			} else {
				redirs = append(redirs, fmt.Sprintf(`%d< <(printf '%%s' "$%s")`, r.FD, v))
			}
		}
		if len(redirs) > 0 {
			line += " " + strings.Join(redirs, " ")
		}
		if s.Input != "" {
			line += hereDoc(s.Input)
		}
		b.WriteString(line + "\n\n")
	}
	if len(p.Steps) == 0 {
		b.WriteString("# Nothing to do: the system already matches the layout.\n")
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// The fixed parts of a script.
const (
	scriptSettings = "set -euo pipefail\numask 077\n\n"

	scriptPassphrase = `# The passphrase: from $CRYPTSHIFT_PASSPHRASE_FILE (trailing newlines dropped) or a prompt.
if [ -n "${CRYPTSHIFT_PASSPHRASE_FILE:-}" ]; then
  PASSPHRASE=$(<"$CRYPTSHIFT_PASSPHRASE_FILE")
else
  read -rsp "Passphrase for the LUKS2 volumes: " PASSPHRASE; echo
  read -rsp "Repeat it: " PASSPHRASE2; echo
  [ "$PASSPHRASE" = "$PASSPHRASE2" ] || { echo "the passphrases differ" >&2; exit 1; }
  unset PASSPHRASE2
fi
[ -n "$PASSPHRASE" ] || { echo "the passphrase is empty" >&2; exit 1; }

`
	scriptRecoveryKey = `# The recovery key: from $CRYPTSHIFT_RECOVERY_KEY_FILE, else generated now.
if [ -n "${CRYPTSHIFT_RECOVERY_KEY_FILE:-}" ] && [ -s "$CRYPTSHIFT_RECOVERY_KEY_FILE" ]; then
  RECOVERY_KEY=$(<"$CRYPTSHIFT_RECOVERY_KEY_FILE")
else
  RECOVERY_KEY=$(cryptshift step recovery-key)
  printf 'Recovery key (write it down and keep it offline; it is shown once):\n  %s\n' "$RECOVERY_KEY" >/dev/tty
fi

`
)

// comment makes a value safe inside a "# ..." line: printable, and so on
// one line (a line break would end the comment and run the rest).
func comment(s string) string { return layout.Printable(s) }

// commandLine quotes a command for bash. Arguments are quoted by
// execx.QuoteArg; the command word is also quoted unless it is a plain
// program name, since "NAME=value" in that place would be an assignment
// and "if", "time" or "!" would be keywords, not programs.
func commandLine(argv []string) string {
	if len(argv) == 0 {
		return "''"
	}
	line := execx.Quote(argv)
	if !plainProgram(argv[0]) {
		rest := strings.TrimPrefix(line, execx.QuoteArg(argv[0]))
		line = "'" + strings.ReplaceAll(argv[0], "'", `'\''`) + "'" + rest
	}
	return line
}

var bashKeywords = map[string]bool{
	"if": true, "then": true, "else": true, "elif": true, "fi": true, "case": true, "esac": true,
	"for": true, "select": true, "while": true, "until": true, "do": true, "done": true,
	"in": true, "function": true, "time": true, "coproc": true,
}

func plainProgram(s string) bool {
	if s == "" || bashKeywords[s] {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("-_./+", r)) {
			return false
		}
	}
	return true
}

// hereDoc feeds input to a command on standard input. The delimiter is
// quoted (no expansion in the body) and chosen so that no line of the body
// equals it: a body line equal to the delimiter would end the document and
// run the lines after it as commands. Input without a final line break,
// which a here-document cannot carry exactly, goes through printf instead.
func hereDoc(input string) string {
	if !strings.HasSuffix(input, "\n") {
		return " < <(printf '%s' " + execx.QuoteArg(input) + ")"
	}
	lines := map[string]bool{}
	for _, l := range strings.Split(input, "\n") {
		lines[l] = true
	}
	delim := "CRYPTSHIFT_EOF"
	for n := 1; lines[delim]; n++ {
		delim = fmt.Sprintf("CRYPTSHIFT_EOF_%d", n)
	}
	return " <<'" + delim + "'\n" + input + delim
}
