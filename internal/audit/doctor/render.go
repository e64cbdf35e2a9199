package doctor

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/cryptshift/cryptshift/internal/textfmt"
)

// WriteJSON writes the report as indented JSON. Checks and capabilities keep
// their fixed order and nothing depends on the time, so two runs on an
// unchanged host are byte-identical.
func (r *Report) WriteJSON(w io.Writer) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return fmt.Errorf("cannot encode the doctor report: %w", err)
	}
	_, err = fmt.Fprintf(w, "%s\n", b)
	return err
}

// WriteText writes the report for people: every check with what was found
// and how to fix it, then what cryptshift can and cannot do here. Style s
// colours the verdicts (textfmt.For on a terminal; the zero Style: none).
func (r *Report) WriteText(w io.Writer, s textfmt.Style) error {
	var b strings.Builder
	host := r.Host
	if host == "" {
		host = "(unknown host)"
	}
	fmt.Fprintf(&b, "cryptshift doctor: %s, Linux %s", host, orUnknown(r.Kernel))
	if r.Root != "/" {
		fmt.Fprintf(&b, " (read from %s)", r.Root)
	}
	b.WriteString("\n\nChecks\n")
	// The columns are laid out plain and painted afterwards, so colour
	// codes never count as width.
	var t strings.Builder
	tw := tabwriter.NewWriter(&t, 0, 0, 2, ' ', 0)
	for _, c := range r.Checks {
		fmt.Fprintf(tw, "  %s\t%s\t%s\n", strings.ToUpper(string(c.Status)), c.ID, c.Found)
		if c.Fix != "" {
			fmt.Fprintf(tw, "  \t\tfix: %s\n", c.Fix)
		}
	}
	tw.Flush()
	b.WriteString(paintFirst(t.String(), map[string]func(string) string{
		"OK": s.Pass, "WARN": s.Warn, "FAIL": s.Fail,
	}))
	b.WriteString("\nWhat cryptshift can do here\n")
	t.Reset()
	tw = tabwriter.NewWriter(&t, 0, 0, 2, ' ', 0)
	for _, c := range r.Capabilities {
		mark := "yes"
		if !c.Ready {
			mark = "NO"
		}
		line := c.Summary
		if len(c.Blockers) > 0 {
			line += "; missing: " + strings.Join(c.Blockers, ", ")
		}
		if c.Note != "" {
			line += " (" + c.Note + ")"
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\n", mark, c.Name, line)
	}
	tw.Flush()
	b.WriteString(paintFirst(t.String(), map[string]func(string) string{"yes": s.Pass, "NO": s.Fail}))
	b.WriteString("\n")
	if nr := r.NotReady(); len(nr) > 0 {
		fmt.Fprintf(&b, "%s %s (checked: %s)\n", s.Fail("Not ready for:"), strings.Join(nr, ", "), strings.Join(r.For, ", "))
	} else {
		fmt.Fprintf(&b, "%s %s\n", s.Pass("Ready for:"), strings.Join(r.For, ", "))
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// paintFirst colours the first word of each indented table line that
// paint names (a verdict in the first column); fix lines start with blanks
// and stay plain.
func paintFirst(table string, paint map[string]func(string) string) string {
	lines := strings.SplitAfter(table, "\n")
	for i, l := range lines {
		rest, ok := strings.CutPrefix(l, "  ")
		if !ok {
			continue
		}
		word, tail, _ := strings.Cut(rest, " ")
		if f := paint[word]; f != nil {
			lines[i] = "  " + f(word) + " " + tail
		}
	}
	return strings.Join(lines, "")
}

func orUnknown(s string) string {
	if s == "" {
		return "(unknown release)"
	}
	return s
}
