package doctor

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
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
// and how to fix it, then what cryptshift can and cannot do here.
func (r *Report) WriteText(w io.Writer) error {
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
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	for _, c := range r.Checks {
		fmt.Fprintf(tw, "  %s\t%s\t%s\n", strings.ToUpper(string(c.Status)), c.ID, c.Found)
		if c.Fix != "" {
			fmt.Fprintf(tw, "  \t\tfix: %s\n", c.Fix)
		}
	}
	tw.Flush()
	b.WriteString("\nWhat cryptshift can do here\n")
	tw = tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
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
	b.WriteString("\n")
	if nr := r.NotReady(); len(nr) > 0 {
		fmt.Fprintf(&b, "Not ready for: %s (checked: %s)\n", strings.Join(nr, ", "), strings.Join(r.For, ", "))
	} else {
		fmt.Fprintf(&b, "Ready for: %s\n", strings.Join(r.For, ", "))
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func orUnknown(s string) string {
	if s == "" {
		return "(unknown release)"
	}
	return s
}
