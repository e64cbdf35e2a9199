package execx

import (
	"context"
	"errors"
	"strings"
	"testing"
)

// Quote renders argv for logs and scripts: a word that a POSIX shell would
// split, expand or glob is single-quoted, a quote inside it closed and
// escaped; the shell reads back exactly the argv.
func TestQuote(t *testing.T) {
	for _, tt := range []struct {
		argv []string
		want string
	}{
		{[]string{"cryptsetup", "open", "--key-file", "-", "/dev/vg0/root", "root_crypt"}, "cryptsetup open --key-file - /dev/vg0/root root_crypt"},
		{[]string{"mkfs.ext4", "-L", ""}, "mkfs.ext4 -L ''"},
		{[]string{"echo", "two words"}, "echo 'two words'"},
		{[]string{"echo", "it's"}, `echo 'it'\''s'`},
		{[]string{"echo", "$HOME", "`id`", "$(id)", "a;b", "a|b", "a&b", "*", "?", "~", "a\nb"},
			`echo '$HOME' '` + "`id`" + `' '$(id)' 'a;b' 'a|b' 'a&b' '*' '?' '~' 'a` + "\n" + `b'`},
		{[]string{"lvm", "--config", "devices{obtain_device_list_from_udev=0}"}, "lvm --config 'devices{obtain_device_list_from_udev=0}'"},
		{[]string{"a=b,c:d+e@f%g/h.i_j"}, "a=b,c:d+e@f%g/h.i_j"},
		{[]string{"ünïcode"}, "'ünïcode'"},
	} {
		if got := Quote(tt.argv); got != tt.want {
			t.Errorf("Quote(%q):\ngot  %s\nwant %s", tt.argv, got, tt.want)
		}
	}
}

// Scrub takes every secret out of what a tool printed: the whole secret,
// each of its lines (tools echo a passphrase without its newline), but not
// fragments too short to be secrets (they would mangle ordinary output).
func TestScrub(t *testing.T) {
	pass := []byte("correct horse battery staple")
	multi := []byte("first line of key\nsecond line of key\n")
	for _, tt := range []struct {
		name    string
		in      string
		secrets [][]byte
		want    string
	}{
		{"none", "No key available with this passphrase.", nil, "No key available with this passphrase."},
		{"whole", "bad passphrase correct horse battery staple given", [][]byte{pass}, "bad passphrase <redacted> given"},
		{"twice", "correct horse battery staple/correct horse battery staple", [][]byte{pass}, "<redacted>/<redacted>"},
		{"trailing newline in secret", "got correct horse battery staple.", [][]byte{append(pass, '\n')}, "got <redacted>."},
		{"each line", "echo: second line of key", [][]byte{multi}, "echo: <redacted>"},
		{"short parts stay", "abc is fine", [][]byte{[]byte("abc")}, "abc is fine"},
		{"several secrets", "k1=topsecret1 k2=topsecret2", [][]byte{[]byte("topsecret1"), []byte("topsecret2")}, "k1=<redacted> k2=<redacted>"},
		{"empty output", "", [][]byte{pass}, ""},
	} {
		if got := string(Scrub([]byte(tt.in), tt.secrets)); got != tt.want {
			t.Errorf("%s: got %q, want %q", tt.name, got, tt.want)
		}
	}
}

// SetTool's restore puts back a repointed entry and removes a new one.
func TestSetToolRestores(t *testing.T) {
	restore := SetTool("lvm", "/opt/lvm")
	if Tools["lvm"] != "/opt/lvm" {
		t.Fatalf("got %q", Tools["lvm"])
	}
	restore()
	if Tools["lvm"] != "lvm" {
		t.Errorf("after restore: got %q, want lvm", Tools["lvm"])
	}
	SetTool("new-test-tool", "/bin/true")()
	if _, ok := Tools["new-test-tool"]; ok {
		t.Error("a new entry outlived its restore")
	}
}

// What a failed tool printed reaches the error (and the log) scrubbed of
// the secrets it was given on stdin, on extra descriptors and in Redact.
func TestRunScrubsErrors(t *testing.T) {
	defer SetTool("sh-test", "/bin/sh")()
	secret := []byte("s3cret-passphrase")
	extra := []byte("fd3-recovery-key")
	_, err := Exec{}.Run(context.Background(), Cmd{Tool: "sh-test", Args: []string{"-c", `read x; echo "bad key $x" >&2; cat <&3 >&2; echo "$x" | tr a-z A-Z >&2; exit 3`},
		Stdin: append(secret, '\n'), ExtraFiles: [][]byte{extra}, Redact: [][]byte{[]byte("S3CRET-PASSPHRASE")}})
	var xe *Error
	if !errors.As(err, &xe) || xe.ExitCode != 3 {
		t.Fatalf("got %v", err)
	}
	for _, s := range []string{string(secret), string(extra), "S3CRET-PASSPHRASE"} {
		if strings.Contains(err.Error(), s) {
			t.Errorf("the error holds %q: %v", s, err)
		}
	}
	if !strings.Contains(err.Error(), "bad key <redacted>") {
		t.Errorf("the error lost the tool's message: %v", err)
	}
}
