package layout

import (
	"fmt"
	"github.com/cryptshift/cryptshift/internal/textfmt"
	"sort"
	"strings"
)

// Severity of a validation problem.
type Severity string

// Severities.
const (
	SevError   Severity = "error"
	SevWarning Severity = "warning"
)

// Pos is a place in a source file (1-based).
type Pos struct {
	Line   int `json:"line"`
	Column int `json:"column"`
}

// Problem is one validation finding, located in the user's file.
type Problem struct {
	Severity Severity `json:"severity"`
	File     string   `json:"file,omitempty"`
	Path     string   `json:"path"`
	Line     int      `json:"line,omitempty"`
	Column   int      `json:"column,omitempty"`
	Message  string   `json:"message"`
	Fix      string   `json:"fix,omitempty"`
}

// String renders the problem as "error at $.volumes[2].size, line 14 col 9: ...".
func (p Problem) String() string {
	var b strings.Builder
	b.WriteString(string(p.Severity))
	b.WriteString(" at ")
	if p.File != "" {
		b.WriteString(p.File)
		b.WriteString(" ")
	}
	b.WriteString(p.Path)
	if p.Line > 0 {
		fmt.Fprintf(&b, ", line %d col %d", p.Line, p.Column)
	}
	b.WriteString(": ")
	b.WriteString(p.Message)
	if p.Fix != "" {
		b.WriteString("; fix: ")
		b.WriteString(p.Fix)
	}
	return b.String()
}

// Report collects every problem found, so the user sees them all at once.
type Report struct {
	File     string
	Problems []Problem
	pos      map[string]Pos
}

// NewReport starts a report for a file whose value positions are known.
func NewReport(file string, pos map[string]Pos) *Report {
	if pos == nil {
		pos = map[string]Pos{}
	}
	return &Report{File: file, pos: pos}
}

// Errorf records an error at path.
func (r *Report) Errorf(path, fix, format string, a ...any) {
	r.add(SevError, path, fix, fmt.Sprintf(format, a...))
}

// Warnf records a warning at path.
func (r *Report) Warnf(path, fix, format string, a ...any) {
	r.add(SevWarning, path, fix, fmt.Sprintf(format, a...))
}

func (r *Report) add(sev Severity, path, fix, msg string) {
	p := r.PosOf(path)
	r.Problems = append(r.Problems, Problem{
		Severity: sev, File: r.File, Path: path, Line: p.Line, Column: p.Column, Message: msg, Fix: fix,
	})
}

// PosOf finds the position of path, or of its nearest ancestor present in
// the file (a defaulted value has no position of its own).
func (r *Report) PosOf(path string) Pos {
	for p := path; p != ""; p = parentPath(p) {
		if pos, ok := r.pos[p]; ok {
			return pos
		}
	}
	return Pos{}
}

func parentPath(p string) string {
	i := strings.LastIndexAny(p, ".[")
	if i <= 0 {
		return ""
	}
	return p[:i]
}

// HasErrors reports whether any problem is an error.
func (r *Report) HasErrors() bool {
	for _, p := range r.Problems {
		if p.Severity == SevError {
			return true
		}
	}
	return false
}

// Errors returns only the errors.
func (r *Report) Errors() []Problem { return r.filter(SevError) }

// Warnings returns only the warnings.
func (r *Report) Warnings() []Problem { return r.filter(SevWarning) }

func (r *Report) filter(s Severity) []Problem {
	var out []Problem
	for _, p := range r.Problems {
		if p.Severity == s {
			out = append(out, p)
		}
	}
	return out
}

// Sort orders problems by position, errors and warnings interleaved, so
// output reads top to bottom like the file.
func (r *Report) Sort() {
	sort.SliceStable(r.Problems, func(i, j int) bool {
		a, b := r.Problems[i], r.Problems[j]
		if a.Line != b.Line {
			return a.Line < b.Line
		}
		if a.Column != b.Column {
			return a.Column < b.Column
		}
		return a.Path < b.Path
	})
}

// Error makes a report with errors usable as an error value.
func (r *Report) Error() string {
	errs := r.Errors()
	lines := make([]string, 0, len(errs)+1)
	lines = append(lines, fmt.Sprintf("cannot use %s: %s", nonEmpty(r.File, "layout"), textfmt.Plural(len(errs), "error", "errors")))
	for _, p := range errs {
		lines = append(lines, "  "+p.String())
	}
	return strings.Join(lines, "\n")
}

func nonEmpty(s, def string) string {
	if s == "" {
		return def
	}
	return s
}
