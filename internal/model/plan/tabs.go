package plan

import (
	"fmt"
	"strings"
)

// fstab and crypttab are lines of fields separated by blanks. A field that
// holds a blank, a tab, a line break or a backslash must be escaped as the
// file's readers decode it, or it splits into two fields or two lines:
// a mount point "/srv/mail store" would mount /srv/mail, and one holding a
// line break would add a line of its own.

// FstabLine renders one fstab(5) line. Fields are escaped as libmount (and
// so mount(8) and systemd-fstab-generator) decodes them: a backslash and
// three octal digits stand for one byte ("\040" is a blank).
func FstabLine(spec, file, typ, options string, dump, pass int) string {
	return strings.Join([]string{EscapeFstab(spec), EscapeFstab(file), EscapeFstab(typ), EscapeFstab(options),
		fmt.Sprint(dump), fmt.Sprint(pass)}, " ")
}

// EscapeFstab escapes one fstab field: blanks, control characters, the
// backslash itself, and a leading '#' (which would make the line a
// comment) become \ooo.
func EscapeFstab(s string) string { return escapeField(s, `\%03o`) }

// CrypttabLine renders one crypttab(5) line. Debian's cryptsetup scripts
// decode "\0ooo" octal sequences in each field (printf %b); systemd's
// generator (up to at least v252, Debian 12) splits on blanks and decodes
// nothing, so the planner never writes a field that needs escaping (the
// layout refuses blanks in key file paths): escaping here only keeps a
// value that slipped through from breaking the line apart.
func CrypttabLine(name, device, keyFile, options string) string {
	return strings.Join([]string{EscapeCrypttab(name), EscapeCrypttab(device), EscapeCrypttab(keyFile), EscapeCrypttab(options)}, " ")
}

// EscapeCrypttab escapes one crypttab field as Debian's crypttab(5) says:
// "\0ooo".
func EscapeCrypttab(s string) string { return escapeField(s, `\0%03o`) }

func escapeField(s, format string) string {
	if s == "" {
		// An empty field would shift the ones after it; write the byte
		// that no reader takes for a separator instead of nothing.
		return fmt.Sprintf(format, 0)
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c <= ' ' || c == '\\' || c == 0x7f || (i == 0 && c == '#') {
			fmt.Fprintf(&b, format, c)
			continue
		}
		b.WriteByte(c)
	}
	return b.String()
}
