package layout

import (
	"strings"
	"testing"
)

// base is a valid layout; each test case replaces one line of it.
const base = `apiVersion: cryptshift/v1
kind: Layout
name: t
description: a test layout
disks:
  - name: disk0
    device: /dev/vda
    partitions:
      - name: esp
        type: esp
        size: 256MiB
        encryption: {type: none, reason: "firmware reads it"}
      - name: pv
        type: lvm
        size: 100%FREE
volumeGroups:
  - name: vg0
volumes:
  - name: root
    size: 10GiB
    mount: /
  - name: srv
    size: 1GiB
    mount: /srv
    mountOptions: [nodev, nosuid]
    label: srv
    encryption: {label: srv}
keys:
  headerBackupDir: /root/luks-header-backups
tmp:
  - path: /tmp
    type: tmpfs
    size: 25%
`

func parseWith(t *testing.T, old, new string) *Report {
	t.Helper()
	if !strings.Contains(base, old) {
		t.Fatalf("base layout has no %q", old)
	}
	_, rep := Parse("t.yaml", []byte(strings.Replace(base, old, new, 1)))
	return rep
}

func TestBaseLayoutIsValid(t *testing.T) {
	if _, rep := Parse("t.yaml", []byte(base)); rep.HasErrors() {
		t.Fatal(rep.Error())
	}
}

// A misspelt key is an error that names the place and the key it meant:
// as a warning it silently dropped nodev,nosuid from fstab.
func TestUnknownKeyIsAnError(t *testing.T) {
	f, rep := Parse("t.yaml", []byte(strings.Replace(base, "mountOptions:", "moutnOptions:", 1)))
	if !rep.HasErrors() {
		t.Fatalf("a misspelt mountOptions was accepted; options now %v", f.Layout.Volumes[1].MountOptions)
	}
	want := `error at t.yaml $.volumes[1].moutnOptions, line 25 col 5: unknown key "moutnOptions"; fix: did you mean "mountOptions"?`
	if got := rep.Errors()[0].String(); got != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}
	// Nothing close: the fix names the escape hatch.
	rep = parseWith(t, "    label: srv\n", "    colour: blue\n")
	if got := rep.Error(); !strings.Contains(got, `unknown key "colour"; fix: remove it, or prefix it with x- to keep it as a note cryptshift ignores`) {
		t.Errorf("got %s", got)
	}
}

// Keys with the x- prefix are the documented escape hatch: ignored at any
// level, no warning.
func TestExtensionKeysAreIgnored(t *testing.T) {
	y := strings.Replace(base, "name: t\n", "name: t\nx-owner: ops team\n", 1)
	y = strings.Replace(y, "    label: srv\n", "    label: srv\n    x-ticket: {id: 42, by: [a, b]}\n", 1)
	f, rep := Parse("t.yaml", []byte(y))
	if rep.HasErrors() || len(rep.Problems) != len(mustParse(t, base).Warnings) {
		t.Fatalf("x- keys were not ignored: %v", rep.Problems)
	}
	if f.Layout.Volumes[1].Label != "srv" {
		t.Fatal("the volume was not decoded")
	}
}

func mustParse(t *testing.T, y string) *File {
	t.Helper()
	f, rep := Parse("t.yaml", []byte(y))
	if rep.HasErrors() {
		t.Fatal(rep.Error())
	}
	return f
}

// Every string is refused when it holds a character that would change what
// a script, a tab file or a terminal reads: each case names the place and
// the character.
func TestControlCharactersAreRefused(t *testing.T) {
	tests := []struct{ old, new, want string }{
		// The original attack: a newline in a mount point closed the
		// script's heredoc and ran the next line as a command.
		{"mount: /srv\n", "mount: \"/srv\\nCRYPTSHIFT_EOF\\ntouch /pwned\"\n",
			`error at t.yaml $.volumes[1].mount, line 24 col 12: value "/srv\nCRYPTSHIFT_EOF\ntouch /pwned" contains a line break (U+000A) at byte 4`},
		{"description: a test layout", "description: \"two\\nlines\"",
			`$.description, line 4 col 14: value "two\nlines" contains a line break (U+000A) at byte 3`},
		{"device: /dev/vda", "device: \"/dev/vda\\r\"",
			`$.disks[0].device, line 7 col 13: value "/dev/vda\r" contains a carriage return (U+000D) at byte 8`},
		{"reason: \"firmware reads it\"", "reason: \"firmware\\e[2Jreads it\"",
			`$.disks[0].partitions[0].encryption.reason, line 12 col 42: value "firmware\x1b[2Jreads it" contains the control character U+001B at byte 8`},
		{"    label: srv\n", "    label: \"s\\tv\"\n",
			`$.volumes[1].label, line 26 col 12: value "s\tv" contains a tab (U+0009) at byte 1`},
		{"encryption: {label: srv}", "encryption: {label: \"a\\u202eb\"}",
			`$.volumes[1].encryption.label, line 27 col 25: value "a\u202eb" contains the invisible formatting character U+202E at byte 1`},
		{"[nodev, nosuid]", "[nodev, \"nosuid\\x85\"]",
			`$.volumes[1].mountOptions[1], line 25 col 27: value "nosuid\u0085" contains the control character U+0085 at byte 6`},
		{"headerBackupDir: /root/luks-header-backups", "headerBackupDir: \"/root/b\\x7f\"",
			`$.keys.headerBackupDir, line 29 col 20: value "/root/b\x7f" contains the control character U+007F at byte 7`},
		{"size: 25%", "size: 25%\n    options: [\"mode=1777\\u2028\"]",
			`$.tmp[0].options[0], line 34 col 15: value "mode=1777\u2028" contains the invisible formatting character U+2028 at byte 9`},
	}
	for _, tt := range tests {
		rep := parseWith(t, tt.old, tt.new)
		if got := rep.Error(); !strings.Contains(got, tt.want) {
			t.Errorf("%s:\ngot  %s\nwant %s", tt.new, got, tt.want)
		}
	}
}

// Fields are checked by what they become.
func TestFieldRules(t *testing.T) {
	long := strings.Repeat("a", 300)
	tests := []struct{ name, old, new, want string }{
		{"a blank in the key file directory cannot be written to crypttab",
			"headerBackupDir:", "keyFileDir: /etc/my keys\n  headerBackupDir:",
			`$.keys.keyFileDir, line 29 col 15: key file directory "/etc/my keys" contains a blank or a backslash; the key file paths go into crypttab, whose fields cannot hold them`},
		{"a comma inside one mount option", "[nodev, nosuid]", `["nodev,exec"]`,
			`$.volumes[1].mountOptions[0], line 25 col 20: mount option "nodev,exec" contains a blank, a comma or a backslash`},
		{"a blank inside a tmpfs option", "size: 25%", "size: 25%\n    options: [\"mode=1777 x\"]",
			`$.tmp[0].options[0], line 34 col 15: tmpfs option "mode=1777 x" contains a blank, a comma or a backslash`},
		{"an empty mount option", "[nodev, nosuid]", `[nodev, ""]`,
			`$.volumes[1].mountOptions[1], line 25 col 27: mount option 2 is empty`},
		{"a header backup directory that climbs out of the target root",
			"headerBackupDir: /root/luks-header-backups", "headerBackupDir: /root/../../etc",
			`$.keys.headerBackupDir, line 29 col 20: header backup directory "/root/../../etc" is not a clean absolute path`},
		{"a mapping name that cryptsetup would read as an option", "encryption: {label: srv}", "encryption: {name: --help}",
			`$.volumes[1].encryption.name, line 27 col 24: mapping name "--help" is not a valid device-mapper name`},
		{"a hash that is not an algorithm name", "encryption: {label: srv}", "encryption: {hash: \"sha256 --debug\"}",
			`$.volumes[1].encryption.hash, line 27 col 24: hash "sha256 --debug" is not a hash algorithm name`},
		{"a device path with a blank", "device: /dev/vda", "device: /dev/disk/by-id/my disk",
			`$.disks[0].device, line 7 col 13: device "/dev/disk/by-id/my disk" contains a blank or a backslash, which no device node has`},
		{"a mount point component longer than NAME_MAX", "mount: /srv\n", "mount: /srv/" + long + "\n",
			`$.volumes[1].mount, line 24 col 12: mount point "/srv/` + strings.Repeat("a", 55) + `"... (305 bytes) has a component of 300 bytes; a file name holds at most 255`},
		{"a very long value", "mount: /srv\n", "mount: /" + strings.Repeat("a/", 2100) + "a\n",
			`$.volumes[1].mount, line 24 col 12: value "/a/a/a/a/a/a/a/a/a/a/a/a/a/a/a/a/a/a/a/a/a/a/a/a/a/a/a/a/a/a"... (4202 bytes) is 4202 bytes long; at most 4095 are allowed`},
		{"a very long reason", "reason: \"firmware reads it\"", "reason: \"" + strings.Repeat("why ", 300) + "\"",
			`$.disks[0].partitions[0].encryption.reason, line 12 col 42: text "why why why why why why why why why why why why why why why "... (1200 bytes) is 1200 bytes long; at most 1024 are allowed here`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rep := parseWith(t, tt.old, tt.new)
			if got := rep.Error(); !strings.Contains(got, tt.want) {
				t.Errorf("got  %s\nwant %s", got, tt.want)
			}
		})
	}
}

// A mount point may hold blanks (fstab escapes them as \040); it is not an
// error.
func TestBlankInMountPointIsAllowed(t *testing.T) {
	f := mustParse(t, strings.Replace(base, "mount: /srv\n", "mount: /srv/mail store\n", 1))
	if f.Layout.Volumes[1].Mount != "/srv/mail store" {
		t.Fatal(f.Layout.Volumes[1].Mount)
	}
}

func TestPrintable(t *testing.T) {
	tests := []struct{ in, want string }{
		{"plain text, ümlaut", "plain text, ümlaut"},
		{"a\nb\r\tc", `a\nb\r\tc`},
		{"esc\x1b[2J", `esc\x1b[2J`},
		{"bidi\u202eevil", `bidi\u202eevil`},
		{"bad\xffutf8", `bad\xffutf8`},
		{"c1\u0085", `c1\x85`},
	}
	for _, tt := range tests {
		got := Printable(tt.in)
		if got != tt.want {
			t.Errorf("Printable(%q) = %q, want %q", tt.in, got, tt.want)
		}
		if _, _, bad := BadChar(got); bad {
			t.Errorf("Printable(%q) = %q still holds a refused character", tt.in, got)
		}
	}
}

// A key is printed in its error's path too: a hostile key arrives escaped.
func TestHostileKeyIsEscapedInPath(t *testing.T) {
	_, rep := Parse("t.yaml", []byte(strings.Replace(base, "name: t\n", "name: t\n\"x\\e[2J\\n\": 1\n", 1)))
	got := rep.Errors()[0].String()
	if want := `error at t.yaml $.x\x1b[2J\n, line 4 col 1: unknown key "x\x1b[2J\n"`; !strings.HasPrefix(got, want) {
		t.Fatalf("got  %s\nwant %s", got, want)
	}
}
