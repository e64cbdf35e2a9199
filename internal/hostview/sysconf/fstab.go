// Package sysconf parses the configuration files cryptshift verify reads:
// fstab, crypttab, qcow2 image headers, Postfix main.cf, Dovecot's
// configuration, systemd and sysctl drop-ins, libvirt's qemu.conf, shell
// variable files, /etc/passwd and initramfs archives (file names only).
//
// Parsers take an io.Reader or bytes and never touch the system; helpers
// that merge drop-in directories read through a rootfs.FS.
package sysconf

import (
	"bufio"
	"fmt"
	"github.com/cryptshift/cryptshift/internal/hostview/blockstack"
	"io"
	"strconv"
	"strings"
)

// FstabEntry is one line of /etc/fstab (fstab(5)).
type FstabEntry struct {
	Spec    string   `json:"spec"`    // /dev/..., UUID=..., LABEL=..., tmpfs, ...
	File    string   `json:"file"`    // mount point, or "none"/"swap" for swap
	VFSType string   `json:"vfsType"` // ext4, swap, tmpfs, ...
	Options []string `json:"options"`
	Freq    int      `json:"freq"`
	PassNo  int      `json:"passNo"`
	Line    int      `json:"line"`
}

// HasOption reports whether the entry lists the option (name or name=value).
func (e FstabEntry) HasOption(name string) bool { return hasOption(e.Options, name) }

func hasOption(opts []string, name string) bool {
	for _, o := range opts {
		k, _, _ := strings.Cut(o, "=")
		if k == name {
			return true
		}
	}
	return false
}

func optionValue(opts []string, name string) (string, bool) {
	for _, o := range opts {
		k, v, ok := strings.Cut(o, "=")
		if k == name && ok {
			return v, true
		}
	}
	return "", false
}

// ParseFstab parses fstab(5): whitespace-separated fields, "#" comments,
// octal escapes (\040) for blanks in names. The fourth to sixth fields are
// optional (util-linux libmount defaults them to "defaults", 0, 0).
func ParseFstab(r io.Reader) ([]FstabEntry, error) {
	var out []FstabEntry
	err := eachLine(r, func(n int, line string) error {
		f := strings.Fields(line)
		if len(f) < 3 {
			return fmt.Errorf("cannot parse fstab line %d: want at least 3 fields, got %d", n, len(f))
		}
		e := FstabEntry{Spec: unescape(f[0]), File: unescape(f[1]), VFSType: f[2], Options: []string{"defaults"}, Line: n}
		if len(f) > 3 {
			e.Options = strings.Split(f[3], ",")
		}
		var err error
		if len(f) > 4 {
			if e.Freq, err = strconv.Atoi(f[4]); err != nil {
				return fmt.Errorf("cannot parse fstab line %d: bad dump field %q", n, f[4])
			}
		}
		if len(f) > 5 {
			if e.PassNo, err = strconv.Atoi(f[5]); err != nil {
				return fmt.Errorf("cannot parse fstab line %d: bad pass field %q", n, f[5])
			}
		}
		if len(f) > 6 {
			return fmt.Errorf("cannot parse fstab line %d: want at most 6 fields, got %d", n, len(f))
		}
		out = append(out, e)
		return nil
	})
	return out, err
}

// eachLine calls fn for every line that is not blank or a "#" comment.
func eachLine(r io.Reader, fn func(n int, line string) error) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 1<<20)
	n := 0
	for sc.Scan() {
		n++
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if err := fn(n, line); err != nil {
			return err
		}
	}
	return sc.Err()
}

// unescape decodes octal escapes (\040) as getmntent(3) does: the same
// escapes the kernel writes into mountinfo.
func unescape(s string) string { return blockstack.Unescape(s) }
