package blockstack

import (
	"bufio"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// Mount is one line of /proc/PID/mountinfo (proc(5), "mountinfo").
type Mount struct {
	ID         int    `json:"id"`
	ParentID   int    `json:"parentId"`
	Major      uint32 `json:"major"`
	Minor      uint32 `json:"minor"`
	Root       string `json:"root"`       // path inside the filesystem that is mounted (bind mounts: not "/")
	MountPoint string `json:"mountPoint"` // where it is mounted
	Options    string `json:"options"`    // per-mount options
	Optional   string `json:"optional,omitempty"`
	FSType     string `json:"fsType"`
	Source     string `json:"source"`
	SuperOpts  string `json:"superOptions"`
}

// MajMin returns "MAJOR:MINOR", the form /sys/class/block/*/dev uses.
func (m Mount) MajMin() string { return fmt.Sprintf("%d:%d", m.Major, m.Minor) }

// Option returns the value of a super-block option (overlay's upperdir=...)
// and whether it is present.
func (m Mount) Option(name string) (string, bool) {
	for _, o := range splitOptions(m.SuperOpts) {
		k, v, _ := strings.Cut(o, "=")
		if k == name {
			return v, true
		}
	}
	return "", false
}

// splitOptions splits a comma-separated option list. Overlayfs escapes
// commas inside paths as "\,", so a backslash protects the next character.
func splitOptions(s string) []string {
	var out []string
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		switch {
		case s[i] == '\\' && i+1 < len(s):
			b.WriteByte(s[i+1])
			i++
		case s[i] == ',':
			out = append(out, b.String())
			b.Reset()
		default:
			b.WriteByte(s[i])
		}
	}
	return append(out, b.String())
}

// ParseMountInfo parses the mountinfo format:
//
//	36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue
//
// Paths are unescaped: the kernel's show_mountinfo (fs/proc_namespace.c)
// writes space, tab, newline and backslash as octal escapes (\040 ...).
func ParseMountInfo(r io.Reader) ([]Mount, error) {
	var mounts []Mount
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 1<<20)
	n := 0
	for sc.Scan() {
		n++
		line := sc.Text()
		if strings.TrimSpace(line) == "" {
			continue
		}
		m, err := parseMountLine(line)
		if err != nil {
			return nil, fmt.Errorf("cannot parse mountinfo line %d: %w", n, err)
		}
		mounts = append(mounts, m)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("cannot read mountinfo: %w", err)
	}
	return mounts, nil
}

func parseMountLine(line string) (Mount, error) {
	f := strings.Fields(line)
	sep := -1
	for i := 6; i < len(f); i++ {
		if f[i] == "-" {
			sep = i
			break
		}
	}
	if len(f) < 7 || sep < 0 || len(f) < sep+3 {
		return Mount{}, fmt.Errorf("want at least 10 fields with a \"-\" separator, got %q", line)
	}
	var m Mount
	var err error
	if m.ID, err = strconv.Atoi(f[0]); err != nil {
		return Mount{}, fmt.Errorf("bad mount id %q", f[0])
	}
	if m.ParentID, err = strconv.Atoi(f[1]); err != nil {
		return Mount{}, fmt.Errorf("bad parent id %q", f[1])
	}
	maj, min, ok := strings.Cut(f[2], ":")
	if !ok {
		return Mount{}, fmt.Errorf("bad major:minor %q", f[2])
	}
	ma, err1 := strconv.ParseUint(maj, 10, 32)
	mi, err2 := strconv.ParseUint(min, 10, 32)
	if err1 != nil || err2 != nil {
		return Mount{}, fmt.Errorf("bad major:minor %q", f[2])
	}
	m.Major, m.Minor = uint32(ma), uint32(mi)
	m.Root = Unescape(f[3])
	m.MountPoint = Unescape(f[4])
	m.Options = f[5]
	m.Optional = strings.Join(f[6:sep], " ")
	m.FSType = Unescape(f[sep+1])
	m.Source = Unescape(f[sep+2])
	if len(f) > sep+3 {
		m.SuperOpts = strings.Join(f[sep+3:], " ")
	}
	return m, nil
}

// Unescape decodes the kernel's octal escapes (\040 for space) used in
// mountinfo and /proc/swaps (seq_file mangle_path).
func Unescape(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && isOctal(s[i+1:]) {
			v, _ := strconv.ParseUint(s[i+1:i+4], 8, 8)
			b.WriteByte(byte(v))
			i += 3
			continue
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func isOctal(s string) bool {
	if len(s) < 3 {
		return false
	}
	for i := 0; i < 3; i++ {
		if s[i] < '0' || s[i] > '7' {
			return false
		}
	}
	return s[0] <= '3' // \377 is the largest byte
}
