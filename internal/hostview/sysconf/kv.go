package sysconf

import (
	"path"
	"sort"
	"strings"

	"github.com/cryptshift/cryptshift/internal/hostview/rootfs"
)

// ParseShellVars parses KEY=VALUE lines as sourced by /bin/sh
// (/etc/default/*, initramfs-tools conf.d): quotes removed, "export"
// ignored, no expansion.
func ParseShellVars(text string) map[string]string {
	out := map[string]string{}
	_ = eachLine(strings.NewReader(text), func(_ int, line string) error {
		line = strings.TrimPrefix(line, "export ")
		k, v, ok := strings.Cut(line, "=")
		if !ok || strings.ContainsAny(k, " \t") {
			return nil
		}
		v = strings.TrimSpace(v)
		if i := strings.Index(v, " #"); i >= 0 && !strings.HasPrefix(v, `"`) && !strings.HasPrefix(v, "'") {
			v = strings.TrimSpace(v[:i])
		}
		out[k] = unquote(v)
		return nil
	})
	return out
}

// ParseSysctl parses sysctl.conf(5): "key = value", "#" or ";" comments, a
// leading "-" ignores errors. Keys use "." or "/" as separator; they are
// returned with ".".
func ParseSysctl(text string) map[string]string {
	out := map[string]string{}
	for _, raw := range strings.Split(text, "\n") {
		line := strings.TrimSpace(raw)
		if line == "" || line[0] == '#' || line[0] == ';' {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			continue
		}
		k = strings.TrimPrefix(strings.TrimSpace(k), "-")
		out[strings.ReplaceAll(k, "/", ".")] = strings.TrimSpace(v)
	}
	return out
}

// SysctlSetting is a persistent sysctl value and the file that sets it.
type SysctlSetting struct {
	Value string `json:"value"`
	File  string `json:"file"`
}

// sysctlDirs in systemd-sysctl's order of precedence (sysctl.d(5)): a file
// in an earlier directory masks a same-named file in later ones.
var sysctlDirs = []string{"/etc/sysctl.d", "/run/sysctl.d", "/usr/local/lib/sysctl.d", "/usr/lib/sysctl.d", "/lib/sysctl.d"}

// ReadSysctl merges the persistent sysctl configuration under the root:
// drop-ins sorted by file name, then /etc/sysctl.conf (applied last by
// Debian's procps and systemd-sysctl's 99-sysctl.conf link).
func ReadSysctl(f rootfs.FS) map[string]SysctlSetting {
	files := dropIns(f, sysctlDirs, ".conf")
	files = append(files, "/etc/sysctl.conf")
	out := map[string]SysctlSetting{}
	for _, file := range files {
		b, err := rootfs.ReadFile(f, file)
		if err != nil {
			continue
		}
		for k, v := range ParseSysctl(string(b)) {
			out[k] = SysctlSetting{Value: v, File: file}
		}
	}
	return out
}

// dropIns lists files with suffix from dirs, later directories masked by
// same-named files in earlier ones, sorted by base name.
func dropIns(f rootfs.FS, dirs []string, suffix string) []string {
	byName := map[string]string{}
	for i := len(dirs) - 1; i >= 0; i-- {
		ents, err := rootfs.ReadDir(f, dirs[i])
		if err != nil {
			continue
		}
		for _, e := range ents {
			if strings.HasSuffix(e.Name(), suffix) {
				byName[e.Name()] = path.Join(dirs[i], e.Name())
			}
		}
	}
	names := make([]string, 0, len(byName))
	for n := range byName {
		names = append(names, n)
	}
	sort.Strings(names)
	out := make([]string, len(names))
	for i, n := range names {
		out[i] = byName[n]
	}
	return out
}

// ParseINI parses a systemd-style configuration file: "[Section]" headers,
// "Key=Value", "#" and ";" comments. Keys are returned as "Section.Key".
func ParseINI(text string) map[string]string {
	out := map[string]string{}
	section := ""
	for _, raw := range strings.Split(text, "\n") {
		line := strings.TrimSpace(raw)
		if line == "" || line[0] == '#' || line[0] == ';' {
			continue
		}
		if strings.HasPrefix(line, "[") && strings.HasSuffix(line, "]") {
			section = line[1 : len(line)-1]
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			continue
		}
		out[section+"."+strings.TrimSpace(k)] = strings.TrimSpace(v)
	}
	return out
}

// SystemdSetting is an effective value and the file that set it.
type SystemdSetting struct {
	Value string `json:"value"`
	File  string `json:"file"`
}

// ReadSystemdConf merges a systemd daemon configuration such as
// "systemd/coredump.conf": the main file from /etc (else /usr/lib), then
// drop-ins from NAME.d directories in /usr/lib, /run and /etc, later ones
// winning (systemd.syntax(7), "Configuration Directories and Precedence").
// Keys are "Section.Key".
func ReadSystemdConf(f rootfs.FS, rel string) (map[string]SystemdSetting, []string) {
	out := map[string]SystemdSetting{}
	var read []string
	apply := func(file string) {
		b, err := rootfs.ReadFile(f, file)
		if err != nil {
			return
		}
		read = append(read, file)
		for k, v := range ParseINI(string(b)) {
			out[k] = SystemdSetting{Value: v, File: file}
		}
	}
	main := "/etc/" + rel
	if !rootfs.Exists(f, main) {
		main = "/usr/lib/" + rel
	}
	apply(main)
	for _, file := range dropIns(f, []string{"/etc/" + rel + ".d", "/run/" + rel + ".d", "/usr/lib/" + rel + ".d"}, ".conf") {
		apply(file)
	}
	return out, read
}

// ParseLibvirtConf parses libvirt's daemon configuration syntax
// (qemu.conf): "key = value" with quoted strings, numbers or [lists].
// Lists are returned joined by ",".
func ParseLibvirtConf(text string) map[string]string {
	out := map[string]string{}
	lines := strings.Split(text, "\n")
	for i := 0; i < len(lines); i++ {
		line := strings.TrimSpace(stripDovecotComment(lines[i]))
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			continue
		}
		v = strings.TrimSpace(v)
		if strings.HasPrefix(v, "[") {
			for !strings.Contains(v, "]") && i+1 < len(lines) {
				i++
				v += " " + strings.TrimSpace(stripDovecotComment(lines[i]))
			}
			v = strings.Trim(v, "[] ")
			var items []string
			for _, it := range strings.Split(v, ",") {
				if it = unquote(strings.TrimSpace(it)); it != "" {
					items = append(items, it)
				}
			}
			v = strings.Join(items, ",")
		}
		out[strings.TrimSpace(k)] = unquote(v)
	}
	return out
}

// PasswdEntry is one account from /etc/passwd.
type PasswdEntry struct {
	Name  string
	UID   int
	Home  string
	Shell string
}

// ParsePasswd parses passwd(5), skipping malformed lines.
func ParsePasswd(text string) []PasswdEntry {
	var out []PasswdEntry
	for _, line := range strings.Split(text, "\n") {
		f := strings.Split(strings.TrimSpace(line), ":")
		if len(f) != 7 {
			continue
		}
		uid := 0
		for _, c := range f[2] {
			if c < '0' || c > '9' {
				uid = -1
				break
			}
			uid = uid*10 + int(c-'0')
			if uid > 1<<31 {
				uid = -1
				break
			}
		}
		if uid < 0 {
			continue
		}
		out = append(out, PasswdEntry{Name: f[0], UID: uid, Home: f[5], Shell: f[6]})
	}
	return out
}
