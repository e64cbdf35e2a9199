// Package textfmt lays out text for people: tables that fit the terminal
// (or $COLUMNS), colour only where a person looks at a terminal, and
// English plurals. Output for machines never goes through it.
package textfmt

import (
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"unicode/utf8"

	"golang.org/x/term"
)

// Style says how wide text may be and whether it may be coloured.
type Style struct {
	Width int  // columns; 0: no limit (not a terminal and no $COLUMNS)
	Color bool // ANSI colours
}

// For is the style for writing to w: its width from $COLUMNS, else the
// terminal's; colour only on a terminal, without $NO_COLOR
// (https://no-color.org) and not on TERM=dumb.
func For(w io.Writer) Style {
	return StyleOf(w, os.Getenv)
}

// StyleOf is For with the environment given (tests).
func StyleOf(w io.Writer, getenv func(string) string) Style {
	var s Style
	tty := false
	f, ok := w.(*os.File)
	if ok && term.IsTerminal(int(f.Fd())) {
		tty = true
		if cols, _, err := term.GetSize(int(f.Fd())); err == nil && cols > 0 {
			s.Width = cols
		}
	}
	if n, err := strconv.Atoi(getenv("COLUMNS")); err == nil && n > 0 {
		s.Width = n
	}
	// NO_COLOR counts when set to anything but the empty string.
	s.Color = tty && getenv("NO_COLOR") == "" && getenv("TERM") != "dumb"
	return s
}

// ANSI SGR codes (ECMA-48).
const (
	red    = "\033[1;31m"
	yellow = "\033[33m"
	green  = "\033[32m"
	bold   = "\033[1m"
	dim    = "\033[2m"
	reset  = "\033[0m"
)

func (s Style) paint(code, text string) string {
	if !s.Color || text == "" {
		return text
	}
	return code + text + reset
}

// Fail, Warn, Pass, Bold and Dim colour text when the style allows.
func (s Style) Fail(t string) string { return s.paint(red, t) }
func (s Style) Warn(t string) string { return s.paint(yellow, t) }
func (s Style) Pass(t string) string { return s.paint(green, t) }
func (s Style) Bold(t string) string { return s.paint(bold, t) }
func (s Style) Dim(t string) string  { return s.paint(dim, t) }

// Table is rows of cells under a header. Every column but the last is as
// wide as its widest cell; the last one wraps at spaces (or, for a word
// longer than the line, is cut) to fit Style.Width.
type Table struct {
	Header []string
	Rows   [][]string
	// Paint colours a cell after it is laid out (so colour codes never
	// count as width); nil: none.
	Paint func(row, col int, cell string) string
}

// minLast is the narrowest the last column gets, however narrow the
// terminal: below it a description is unreadable in any case.
const minLast = 24

// Write lays the table out in style s.
func (t Table) Write(w io.Writer, s Style) error {
	if len(t.Header) == 0 {
		return nil
	}
	n := len(t.Header)
	widths := make([]int, n)
	all := append([][]string{t.Header}, t.Rows...)
	for _, r := range all {
		for c := 0; c < n-1 && c < len(r); c++ {
			widths[c] = max(widths[c], utf8.RuneCountInString(r[c]))
		}
	}
	last := 0 // no limit
	if s.Width > 0 {
		// The description gets at least a third of the line: a column
		// wider than that leaves (long paths) is elided in the middle.
		want := max(minLast, s.Width/3)
		for sum(widths[:n-1])+2*(n-1)+want > s.Width {
			i := widest(widths[:n-1])
			if widths[i] <= minElided {
				break
			}
			widths[i]--
		}
		last = max(s.Width-sum(widths[:n-1])-2*(n-1), minLast)
	}
	var b strings.Builder
	for i, r := range all {
		var lines []string
		text := ""
		if len(r) >= n {
			text = r[n-1]
		}
		lines = Wrap(text, last)
		for li, line := range lines {
			var out strings.Builder
			for c := 0; c < n-1; c++ {
				cell := ""
				if li == 0 && c < len(r) {
					cell = Elide(r[c], widths[c])
				}
				pad := strings.Repeat(" ", widths[c]-utf8.RuneCountInString(cell)+2)
				if i > 0 && t.Paint != nil && cell != "" {
					cell = t.Paint(i-1, c, cell)
				}
				out.WriteString(cell + pad)
			}
			if i > 0 && t.Paint != nil && line != "" {
				line = t.Paint(i-1, n-1, line)
			}
			if i == 0 {
				line = s.Bold(line)
			}
			out.WriteString(line)
			b.WriteString(strings.TrimRight(out.String(), " ") + "\n")
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// minElided is the narrowest a column is elided to.
const minElided = 12

func sum(xs []int) int {
	t := 0
	for _, x := range xs {
		t += x
	}
	return t
}

func widest(xs []int) int {
	w := 0
	for i, x := range xs {
		if x > xs[w] {
			w = i
		}
	}
	return w
}

// Elide shortens text to width runes by cutting out its middle (where a
// path is least telling) and marking the cut with "…".
func Elide(text string, width int) string {
	rs := []rune(text)
	if width <= 0 || len(rs) <= width {
		return text
	}
	if width < 3 {
		return string(rs[:width])
	}
	head := (width - 1) / 2
	tail := width - 1 - head
	return string(rs[:head]) + "…" + string(rs[len(rs)-tail:])
}

// Wrap breaks text into lines of at most width runes at spaces; a word
// longer than width is cut. width 0 is no limit.
func Wrap(text string, width int) []string {
	if width <= 0 || utf8.RuneCountInString(text) <= width {
		return []string{text}
	}
	var lines []string
	line := ""
	for _, word := range strings.Fields(text) {
		for utf8.RuneCountInString(word) > width {
			if line != "" {
				lines = append(lines, line)
				line = ""
			}
			rs := []rune(word)
			lines = append(lines, string(rs[:width]))
			word = string(rs[width:])
		}
		switch {
		case line == "":
			line = word
		case utf8.RuneCountInString(line)+1+utf8.RuneCountInString(word) <= width:
			line += " " + word
		default:
			lines = append(lines, line)
			line = word
		}
	}
	if line != "" || len(lines) == 0 {
		lines = append(lines, line)
	}
	return lines
}

// Plural is "1 step", "6 steps".
func Plural(n int, one, many string) string {
	if n == 1 {
		return fmt.Sprintf("%d %s", n, one)
	}
	return fmt.Sprintf("%d %s", n, many)
}

// List joins items as English prose: "a", "a and b", "a, b and c".
func List(items []string) string {
	switch len(items) {
	case 0:
		return ""
	case 1:
		return items[0]
	}
	return strings.Join(items[:len(items)-1], ", ") + " and " + items[len(items)-1]
}

// Para writes text wrapped to s.Width, its first line after first and the
// others after rest (an indent as wide as first, usually).
func (s Style) Para(w io.Writer, first, rest, text string) {
	width := 0
	if s.Width > 0 {
		width = max(s.Width-utf8.RuneCountInString(first), minLast)
	}
	for i, l := range Wrap(text, width) {
		p := rest
		if i == 0 {
			p = first
		}
		fmt.Fprintln(w, p+l)
	}
}
