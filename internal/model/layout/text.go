package layout

import (
	"fmt"
	"reflect"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Every string a layout or an inventory carries may end up in a command
// line, a bash script, a comment, crypttab or fstab, a LUKS or filesystem
// header, or on a terminal. Whatever it becomes, a line break, another
// control character or a bidirectional override in it changes what a
// reader sees or what a parser reads; so they are refused everywhere,
// before anything is planned.

// BadChar finds the first character that no value may contain: invalid
// UTF-8, C0 and C1 control characters (line breaks, tab, escape, DEL),
// the Unicode line and paragraph separators, and the bidirectional
// formatting characters that reorder what a terminal shows ("Trojan
// Source", CVE-2021-42574). It returns what the character is, for a
// message, its byte offset, and whether one was found.
func BadChar(s string) (what string, at int, found bool) {
	for i, r := range s {
		if r == utf8.RuneError {
			if _, n := utf8.DecodeRuneInString(s[i:]); n == 1 {
				return fmt.Sprintf("the byte 0x%02x, which is not UTF-8", s[i]), i, true
			}
		}
		if isBad(r) {
			return describeRune(r), i, true
		}
	}
	return "", 0, false
}

func isBad(r rune) bool {
	switch {
	case unicode.IsControl(r): // C0, DEL, C1
		return true
	case r == '\u2028' || r == '\u2029': // line and paragraph separators
		return true
	case r == '\u061c' || r == '\u200e' || r == '\u200f': // bidi marks
		return true
	case r >= '\u202a' && r <= '\u202e': // bidi embeddings and overrides
		return true
	case r >= '\u2066' && r <= '\u2069': // bidi isolates
		return true
	case r == '\ufeff': // zero-width no-break space (byte order mark)
		return true
	}
	return false
}

func describeRune(r rune) string {
	switch r {
	case '\n':
		return "a line break (U+000A)"
	case '\r':
		return "a carriage return (U+000D)"
	case '\t':
		return "a tab (U+0009)"
	}
	if unicode.IsControl(r) {
		return fmt.Sprintf("the control character U+%04X", r)
	}
	return fmt.Sprintf("the invisible formatting character U+%04X", r)
}

// Printable renders s for a comment, a message or a terminal: every
// character BadChar refuses becomes a visible escape (\n, \x1b, \u202e),
// so the result is one line that shows what is really there.
func Printable(s string) string {
	if _, _, bad := BadChar(s); !bad {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && n == 1:
			fmt.Fprintf(&b, `\x%02x`, s[i])
		case r == '\n':
			b.WriteString(`\n`)
		case r == '\r':
			b.WriteString(`\r`)
		case r == '\t':
			b.WriteString(`\t`)
		case isBad(r) && r < 0x100:
			fmt.Fprintf(&b, `\x%02x`, r)
		case isBad(r):
			fmt.Fprintf(&b, `\u%04x`, r)
		default:
			b.WriteString(s[i : i+n])
		}
		i += n
	}
	return b.String()
}

// Short quotes a value for an error message, cut to a readable length: a
// 10,000-character value is reported by its start and its length.
func Short(s string) string {
	const max = 60
	if len(s) <= max {
		return fmt.Sprintf("%q", s)
	}
	cut := max
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return fmt.Sprintf("%q... (%d bytes)", s[:cut], len(s))
}

// MaxText bounds any single value: the longest a path may be (PATH_MAX is
// 4096 bytes including the terminating NUL); names and labels have their
// own, smaller limits.
const MaxText = 4095

// MaxFreeText bounds descriptions and reasons: they are shown in plans and
// step descriptions, one line each.
const MaxFreeText = 1024

// checkText walks every string of the layout (by its YAML path) and refuses
// the characters BadChar finds and values longer than MaxText. It runs on
// layouts parsed from YAML and on the specs carried by plan files alike.
func checkText(l *Layout, rep *Report) {
	WalkText(l, "yaml", TextProblem, func(p string, v reflect.Value) {
		s := v.String()
		if what, i, bad := BadChar(s); bad {
			rep.Errorf(p, "remove it; values may not hold control characters, line breaks or bidirectional overrides",
				"value %s contains %s at byte %d", Short(s), what, i)
			return
		}
		rep.Errorf(p, "shorten it", "value %s is %d bytes long; at most %d are allowed", Short(s), len(s), MaxText)
	})
}

// TextProblem reports whether a value breaks the rules every string
// follows: a character BadChar refuses, or more than MaxText bytes.
func TextProblem(s string) bool {
	_, _, bad := BadChar(s)
	return bad || len(s) > MaxText
}

// WalkText calls fn with the path ($.volumes[2].mount) and the settable
// value of every string in the struct ptr points to for which want is
// true, naming fields by the given struct tag ("yaml" for layouts, "json"
// for inventories), the way their decoders and error messages name them.
// Paths are built only for those strings: a document may hold 100,000.
func WalkText(ptr any, tag string, want func(string) bool, fn func(path string, v reflect.Value)) {
	w := textWalker{tag: tag, want: want, fn: fn}
	w.walk(reflect.ValueOf(ptr).Elem())
}

type pathStep struct {
	name  string // field name, or "" for an index
	index int
}

type textWalker struct {
	tag  string
	want func(string) bool
	fn   func(string, reflect.Value)
	path []pathStep
}

func (w *textWalker) pathString() string {
	var b strings.Builder
	b.WriteString("$")
	for _, s := range w.path {
		if s.name != "" {
			b.WriteString("." + s.name)
		} else {
			fmt.Fprintf(&b, "[%d]", s.index)
		}
	}
	return b.String()
}

func (w *textWalker) walk(v reflect.Value) {
	switch v.Kind() {
	case reflect.Pointer:
		if !v.IsNil() {
			w.walk(v.Elem())
		}
	case reflect.String:
		if w.want(v.String()) {
			w.fn(w.pathString(), v)
		}
	case reflect.Slice:
		for i := 0; i < v.Len(); i++ {
			w.path = append(w.path, pathStep{index: i})
			w.walk(v.Index(i))
			w.path = w.path[:len(w.path)-1]
		}
	case reflect.Struct:
		t := v.Type()
		for i := 0; i < t.NumField(); i++ {
			f := t.Field(i)
			if !f.IsExported() {
				continue
			}
			name, opts, _ := strings.Cut(f.Tag.Get(w.tag), ",")
			switch {
			case opts == "inline":
				w.walk(v.Field(i))
			case name == "" || name == "-":
			default:
				w.path = append(w.path, pathStep{name: name})
				w.walk(v.Field(i))
				w.path = w.path[:len(w.path)-1]
			}
		}
	}
}
