package plan

import (
	"fmt"
	"strconv"
	"strings"
	"testing"
)

// parseTabLine reads one line of fstab or crypttab back the way their
// readers do, written from the formats' rules rather than from the writer:
// a line starting with '#' (after blanks) is a comment; fields are split
// on blanks and tabs; decode turns each field's escapes back into bytes;
// a NUL ends a field (C strings).
func parseTabLine(line string, decode func(string) (string, error)) ([]string, error) {
	if strings.ContainsAny(line, "\n") {
		return nil, fmt.Errorf("the entry spans more than one line")
	}
	trimmed := strings.TrimLeft(line, " \t")
	if trimmed == "" || trimmed[0] == '#' {
		return nil, fmt.Errorf("the line is a comment or empty")
	}
	var fields []string
	for _, raw := range strings.FieldsFunc(trimmed, func(r rune) bool { return r == ' ' || r == '\t' }) {
		f, err := decode(raw)
		if err != nil {
			return nil, err
		}
		if i := strings.IndexByte(f, 0); i >= 0 {
			f = f[:i]
		}
		fields = append(fields, f)
	}
	return fields, nil
}

// decodeFstab: libmount's unmangle: a backslash and three octal digits
// are one byte; any other backslash is itself.
func decodeFstab(s string) (string, error) {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) && isOctal(s[i+1:i+4]) {
			n, _ := strconv.ParseUint(s[i+1:i+4], 8, 8)
			b.WriteByte(byte(n))
			i += 3
			continue
		}
		b.WriteByte(s[i])
	}
	return b.String(), nil
}

// decodeCrypttab: Debian's crypttab(5) ("octal sequences \0num within a
// field are decoded", through printf %b): "\0" and up to three octal
// digits are one byte; another backslash is undefined behaviour there,
// so an error here.
func decodeCrypttab(s string) (string, error) {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '\\' {
			b.WriteByte(s[i])
			continue
		}
		if i+1 >= len(s) || s[i+1] != '0' {
			return "", fmt.Errorf("backslash without \\0 octal sequence in %q", s)
		}
		j := i + 2
		for j < len(s) && j < i+5 && s[j] >= '0' && s[j] <= '7' {
			j++
		}
		n, _ := strconv.ParseUint("0"+s[i+2:j], 8, 16)
		if n > 255 {
			return "", fmt.Errorf("octal sequence beyond a byte in %q", s)
		}
		b.WriteByte(byte(n))
		i = j - 1
	}
	return b.String(), nil
}

func isOctal(s string) bool {
	if len(s) != 3 {
		return false
	}
	for _, c := range []byte(s) {
		if c < '0' || c > '7' {
			return false
		}
	}
	return true
}

func sameFields(got, want []string) bool {
	if len(got) != len(want) {
		return false
	}
	for i := range got {
		if got[i] != want[i] {
			return false
		}
	}
	return true
}

// checkTabs writes an fstab and a crypttab line from the fields and reads
// them back; what is read must be what was written, field by field, on one
// line. A NUL byte cannot be carried (it ends the field for every reader).
func checkTabs(t *testing.T, a, b, c, d string) {
	t.Helper()
	want := func(fields ...string) []string {
		out := make([]string, len(fields))
		for i, f := range fields {
			if j := strings.IndexByte(f, 0); j >= 0 {
				f = f[:j]
			}
			out[i] = f
		}
		return out
	}
	fl := FstabLine(a, b, c, d, 0, 2)
	got, err := parseTabLine(fl, decodeFstab)
	if w := append(want(a, b, c, d), "0", "2"); err != nil || !sameFields(got, w) {
		t.Fatalf("fstab line %q reads back as %q (%v), want %q", fl, got, err, w)
	}
	cl := CrypttabLine(a, b, c, d)
	got, err = parseTabLine(cl, decodeCrypttab)
	if w := want(a, b, c, d); err != nil || !sameFields(got, w) {
		t.Fatalf("crypttab line %q reads back as %q (%v), want %q", cl, got, err, w)
	}
}

func TestTabLinesEscapeFields(t *testing.T) {
	tests := []struct{ in, fstab, crypttab string }{
		{"/srv/mail store", `/srv/mail\040store`, `/srv/mail\0040store`},
		{"a\tb\nc", `a\011b\012c`, `a\0011b\0012c`},
		{`back\slash`, `back\134slash`, `back\0134slash`},
		{"#not-a-comment", `\043not-a-comment`, `\0043not-a-comment`},
		{"mid#dle", "mid#dle", "mid#dle"},
		{"UUID=0e3c-ok", "UUID=0e3c-ok", "UUID=0e3c-ok"},
		{"ümlaut", "ümlaut", "ümlaut"},
	}
	for _, tt := range tests {
		if got := EscapeFstab(tt.in); got != tt.fstab {
			t.Errorf("EscapeFstab(%q) = %q, want %q", tt.in, got, tt.fstab)
		}
		if got := EscapeCrypttab(tt.in); got != tt.crypttab {
			t.Errorf("EscapeCrypttab(%q) = %q, want %q", tt.in, got, tt.crypttab)
		}
		checkTabs(t, tt.in, "/x", "ext4", "defaults")
	}
	// The original hole: a mount point with a line break added an fstab
	// line of its own.
	l := FstabLine("UUID=1", "/srv\n/dev/sdb /etc ext4 defaults 0 0", "ext4", "defaults", 0, 2)
	if strings.Contains(l, "\n") || l != `UUID=1 /srv\012/dev/sdb\040/etc\040ext4\040defaults\0400\0400 ext4 defaults 0 2` {
		t.Fatalf("got %q", l)
	}
	checkTabs(t, "", "x", "", "y")
}

// FuzzTabLines: any four field values come back from an fstab and a
// crypttab line unchanged, each line one line with the right field count.
func FuzzTabLines(f *testing.F) {
	f.Add("UUID=0e3c", "/srv/mail store", "ext4", "nodev,nosuid")
	f.Add("#x", "a\tb\nc", `\040`, "\\0040")
	f.Add("", "\x00", "a\x00b", "\x7f\x01")
	f.Fuzz(func(t *testing.T, a, b, c, d string) { checkTabs(t, a, b, c, d) })
}
