package textfmt

import (
	"bytes"
	"strings"
	"testing"
)

func TestWrap(t *testing.T) {
	tests := []struct {
		text  string
		width int
		want  []string
	}{
		{"open /dev/vg0/root as root_crypt", 0, []string{"open /dev/vg0/root as root_crypt"}},
		{"open /dev/vg0/root as root_crypt", 12, []string{"open", "/dev/vg0/roo", "t as", "root_crypt"}},
		{"a b c d", 3, []string{"a b", "c d"}},
		{"", 5, []string{""}},
	}
	for _, tt := range tests {
		if got := Wrap(tt.text, tt.width); strings.Join(got, "|") != strings.Join(tt.want, "|") {
			t.Errorf("Wrap(%q, %d) = %q, want %q", tt.text, tt.width, got, tt.want)
		}
	}
}

func TestElide(t *testing.T) {
	if got := Elide("/target/root/luks-header-backups/root_crypt.luksheader", 20); got != "/target/r…luksheader" {
		t.Errorf("got %q (%d runes)", got, len([]rune(got)))
	}
	if got := Elide("/dev/sda", 20); got != "/dev/sda" {
		t.Errorf("a short cell changed: %q", got)
	}
}

func TestTableFitsWidth(t *testing.T) {
	tab := Table{Header: []string{"#", "TARGET", "WHAT"}, Rows: [][]string{
		{"1", "/target/root/luks-header-backups/guest-web_crypt.luksheader", "back up the LUKS2 header of /dev/vg0/guest-web to a file on the encrypted root"},
	}}
	var b bytes.Buffer
	tab.Write(&b, Style{Width: 60})
	for _, l := range strings.Split(strings.TrimSpace(b.String()), "\n") {
		if n := len([]rune(l)); n > 60 {
			t.Errorf("%d-column line %q", n, l)
		}
	}
	if !strings.Contains(b.String(), "…") {
		t.Errorf("the long target was not elided:\n%s", b.String())
	}
	b.Reset()
	tab.Write(&b, Style{})
	if strings.Count(b.String(), "\n") != 2 {
		t.Errorf("no width wrapped anyway:\n%s", b.String())
	}
}

func TestPluralAndList(t *testing.T) {
	if Plural(1, "warning", "warnings") != "1 warning" || Plural(6, "crypttab entry", "crypttab entries") != "6 crypttab entries" || Plural(0, "step", "steps") != "0 steps" {
		t.Error("Plural")
	}
	for in, want := range map[string]string{"": "", "a": "a", "a,b": "a and b", "a,b,c": "a, b and c"} {
		var items []string
		if in != "" {
			items = strings.Split(in, ",")
		}
		if got := List(items); got != want {
			t.Errorf("List(%q) = %q, want %q", items, got, want)
		}
	}
}

func TestStyleOf(t *testing.T) {
	env := func(m map[string]string) func(string) string { return func(k string) string { return m[k] } }
	var b bytes.Buffer // not a terminal
	if s := StyleOf(&b, env(nil)); s.Color || s.Width != 0 {
		t.Errorf("a buffer: %+v", s)
	}
	if s := StyleOf(&b, env(map[string]string{"COLUMNS": "80"})); s.Width != 80 || s.Color {
		t.Errorf("COLUMNS=80: %+v", s)
	}
	if s := StyleOf(&b, env(map[string]string{"COLUMNS": "x"})); s.Width != 0 {
		t.Errorf("COLUMNS=x: %+v", s)
	}
	if (Style{}).Fail("FAIL") != "FAIL" || (Style{Color: true}).Fail("FAIL") == "FAIL" {
		t.Error("colour must follow the style")
	}
}
