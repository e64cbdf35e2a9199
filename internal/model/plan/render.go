package plan

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/cryptshift/cryptshift/internal/doors/execx"
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

// Table renders the plan for people.
func (p *Plan) Table(w io.Writer) error {
	host := ""
	if p.Host != "" {
		host = " on host " + p.Host
	}
	fmt.Fprintf(w, "Plan for layout %s%s (target root %s)\n\n", p.Layout, host, p.Root)
	if len(p.Steps) == 0 {
		fmt.Fprintln(w, "Nothing to do: the system already matches the layout.")
	} else {
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "#\tACTION\tTARGET\tWHAT IT DOES")
		for i, s := range p.Steps {
			what := s.Description
			if s.Destructive {
				what = "DESTROYS " + s.Destroys + ": " + what
			}
			fmt.Fprintf(tw, "%d\t%s\t%s\t%s\n", i+1, s.Action, s.Target, what)
		}
		tw.Flush()
	}
	if len(p.Secrets) > 0 {
		fmt.Fprintln(w, "\nSecrets (never shown, never on a command line):")
		for _, s := range p.Secrets {
			fmt.Fprintf(w, "  %s: %s; source: %s\n", s.Name, s.Use, s.Source)
		}
	}
	if len(p.Crypttab) > 0 {
		fmt.Fprintln(w, "\ncrypttab:")
		for _, e := range p.Crypttab {
			fmt.Fprintf(w, "  %s\n", e.Line)
		}
	}
	if len(p.Fstab) > 0 {
		fmt.Fprintln(w, "\nfstab:")
		for _, e := range p.Fstab {
			fmt.Fprintf(w, "  %s\n", e.Line)
		}
	}
	if len(p.Warnings) > 0 {
		fmt.Fprintln(w, "\nWarnings:")
		for _, pr := range p.Warnings {
			fmt.Fprintf(w, "  %s\n", pr.String())
		}
	}
	if len(p.Notes) > 0 {
		fmt.Fprintln(w, "\nNotes:")
		for _, n := range p.Notes {
			fmt.Fprintf(w, "  - %s\n", n)
		}
	}
	fmt.Fprintf(w, "\n%d step(s), %d destructive. Nothing has been changed.\n", len(p.Steps), len(p.Destructive()))
	return nil
}

// Script renders the plan as a reviewable bash script that runs exactly the
// plan's commands, in order, with the same inputs. Secrets are read into
// shell variables and handed over with the printf builtin through a pipe or
// a process substitution, so they never reach any process's argv.
func (p *Plan) Script(w io.Writer) error {
	var b strings.Builder
	b.WriteString("#!/bin/bash\n")
	fmt.Fprintf(&b, "# cryptshift plan for layout %s", p.Layout)
	if p.Host != "" {
		fmt.Fprintf(&b, " on host %s", p.Host)
	}
	fmt.Fprintf(&b, ", target root %s.\n", p.Root)
	b.WriteString("# It runs exactly the commands \"cryptshift apply\" runs, in the same order.\n")
	b.WriteString("# Unlike apply it keeps no journal, checks no postconditions and cannot resume:\n")
	b.WriteString("# review it, and prefer cryptshift apply to run it.\n")
	for _, pr := range p.Warnings {
		fmt.Fprintf(&b, "# %s\n", pr.String())
	}
	b.WriteString("set -euo pipefail\numask 077\n\n")
	needs := map[string]bool{}
	for _, s := range p.Steps {
		for _, r := range s.Secrets {
			needs[r.Secret] = true
		}
	}
	if needs[SecretPassphrase] {
		b.WriteString(`# The passphrase: from $CRYPTSHIFT_PASSPHRASE_FILE (trailing newlines dropped) or a prompt.
if [ -n "${CRYPTSHIFT_PASSPHRASE_FILE:-}" ]; then
  PASSPHRASE=$(<"$CRYPTSHIFT_PASSPHRASE_FILE")
else
  read -rsp "Passphrase for the LUKS2 volumes: " PASSPHRASE; echo
  read -rsp "Repeat it: " PASSPHRASE2; echo
  [ "$PASSPHRASE" = "$PASSPHRASE2" ] || { echo "the passphrases differ" >&2; exit 1; }
  unset PASSPHRASE2
fi
[ -n "$PASSPHRASE" ] || { echo "the passphrase is empty" >&2; exit 1; }

`)
	}
	if needs[SecretRecoveryKey] {
		b.WriteString(`# The recovery key: from $CRYPTSHIFT_RECOVERY_KEY_FILE, else generated now.
if [ -n "${CRYPTSHIFT_RECOVERY_KEY_FILE:-}" ] && [ -s "$CRYPTSHIFT_RECOVERY_KEY_FILE" ]; then
  RECOVERY_KEY=$(<"$CRYPTSHIFT_RECOVERY_KEY_FILE")
else
  RECOVERY_KEY=$(cryptshift step recovery-key)
  printf 'Recovery key (write it down and keep it offline; it is shown once):\n  %s\n' "$RECOVERY_KEY" >/dev/tty
fi

`)
	}
	for i, s := range p.Steps {
		fmt.Fprintf(&b, "# [%d/%d] %s: %s\n", i+1, len(p.Steps), s.ID, s.Description)
		if s.Destructive {
			fmt.Fprintf(&b, "# DESTRUCTIVE: destroys %s\n", s.Destroys)
		}
		line := execx.Quote(s.Command)
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
			line += " <<'CRYPTSHIFT_EOF'\n" + s.Input + "CRYPTSHIFT_EOF"
		}
		b.WriteString(line + "\n\n")
	}
	if len(p.Steps) == 0 {
		b.WriteString("# Nothing to do: the system already matches the layout.\n")
	}
	_, err := io.WriteString(w, b.String())
	return err
}
