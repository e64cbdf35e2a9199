package sysconf

import (
	"fmt"
	"path"
	"sort"
	"strings"

	"github.com/cryptshift/cryptshift/internal/hostview/rootfs"
)

// DovecotSetting is one "key = value" from Dovecot's configuration, with
// the section it appeared in ("" for top level, "namespace inbox", ...).
type DovecotSetting struct {
	Key     string `json:"key"`
	Value   string `json:"value"`
	Section string `json:"section,omitempty"`
	File    string `json:"file"`
	Line    int    `json:"line"`
}

// DovecotConfig is every setting in file order, includes expanded.
type DovecotConfig struct {
	Settings []DovecotSetting
	Files    []string // files read
}

// Get returns the last top-level value of key (later settings win, as in
// Dovecot's config parser).
func (c *DovecotConfig) Get(key string) (string, bool) {
	v, ok := "", false
	for _, s := range c.Settings {
		if s.Key == key && s.Section == "" {
			v, ok = s.Value, true
		}
	}
	return v, ok
}

// All returns every setting named key, in any section.
func (c *DovecotConfig) All(key string) []DovecotSetting {
	var out []DovecotSetting
	for _, s := range c.Settings {
		if s.Key == key {
			out = append(out, s)
		}
	}
	return out
}

// maxIncludeDepth bounds !include recursion (Dovecot itself refuses loops).
const maxIncludeDepth = 10

// ReadDovecotConfig reads /etc/dovecot/dovecot.conf through the root and
// follows "!include" and "!include_try" (globs, relative to the including
// file) as doc.dovecot.org describes the config file syntax.
func ReadDovecotConfig(f rootfs.FS, file string) (*DovecotConfig, error) {
	c := &DovecotConfig{}
	if err := c.read(f, file, 0, true); err != nil {
		return nil, err
	}
	return c, nil
}

func (c *DovecotConfig) read(f rootfs.FS, file string, depth int, must bool) error {
	if depth > maxIncludeDepth {
		return fmt.Errorf("cannot read %s: includes nested deeper than %d", file, maxIncludeDepth)
	}
	b, err := rootfs.ReadFile(f, file)
	if err != nil {
		if must {
			return fmt.Errorf("cannot read dovecot config %s: %w", file, err)
		}
		return nil
	}
	c.Files = append(c.Files, file)
	return c.parse(f, file, string(b), depth)
}

// ParseDovecot parses one file's text without following includes.
func ParseDovecot(text string) (*DovecotConfig, error) {
	c := &DovecotConfig{}
	return c, c.parse(nil, "dovecot.conf", text, 0)
}

func (c *DovecotConfig) parse(f rootfs.FS, file, text string, depth int) error {
	var sections []string
	for i, raw := range strings.Split(text, "\n") {
		line := strings.TrimSpace(stripDovecotComment(raw))
		if line == "" {
			continue
		}
		switch {
		case strings.HasPrefix(line, "!include"):
			fields := strings.Fields(line)
			if len(fields) != 2 || f == nil {
				continue
			}
			pat := unquote(fields[1])
			if !strings.HasPrefix(pat, "/") {
				pat = path.Join(path.Dir(file), pat)
			}
			for _, inc := range globRoot(f, pat) {
				if err := c.read(f, inc, depth+1, fields[0] == "!include"); err != nil {
					return err
				}
			}
		case line == "}":
			if len(sections) > 0 {
				sections = sections[:len(sections)-1]
			}
		case strings.HasSuffix(line, "{") && !strings.Contains(line, "="):
			sections = append(sections, strings.Join(strings.Fields(strings.TrimSuffix(line, "{")), " "))
		default:
			k, v, ok := strings.Cut(line, "=")
			if !ok {
				continue
			}
			v = strings.TrimSpace(v)
			closes := strings.HasSuffix(v, "}") && strings.Count(v, "{") < strings.Count(v, "}")
			if closes {
				v = strings.TrimSpace(strings.TrimSuffix(v, "}"))
			}
			c.Settings = append(c.Settings, DovecotSetting{
				Key: strings.TrimSpace(k), Value: unquote(v),
				Section: strings.Join(sections, "/"), File: file, Line: i + 1,
			})
			if closes && len(sections) > 0 {
				sections = sections[:len(sections)-1]
			}
		}
	}
	return nil
}

func stripDovecotComment(s string) string {
	inQ := false
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '"':
			inQ = !inQ
		case '#':
			if !inQ {
				return s[:i]
			}
		}
	}
	return s
}

func unquote(s string) string {
	if len(s) >= 2 && (s[0] == '"' && s[len(s)-1] == '"' || s[0] == '\'' && s[len(s)-1] == '\'') {
		return s[1 : len(s)-1]
	}
	return s
}

// globRoot expands a glob whose only wildcards are in the last element.
func globRoot(f rootfs.FS, pat string) []string {
	dir, base := path.Split(pat)
	if !strings.ContainsAny(base, "*?[") {
		return []string{pat}
	}
	ents, err := rootfs.ReadDir(f, dir)
	if err != nil {
		return nil
	}
	var out []string
	for _, e := range ents {
		if ok, _ := path.Match(base, e.Name()); ok {
			out = append(out, path.Join(dir, e.Name()))
		}
	}
	sort.Strings(out)
	return out
}

// MailLocation is a parsed Dovecot mail location
// ("maildir:~/Maildir:INDEX=/var/lib/dovecot/index/%u").
type MailLocation struct {
	Format string            `json:"format"` // maildir, mbox, sdbox, mdbox, ...
	Path   string            `json:"path"`
	Params map[string]string `json:"params,omitempty"` // INDEX, CONTROL, INBOX, ...
}

// ParseMailLocation splits a Dovecot 2.3 mail_location.
func ParseMailLocation(s string) MailLocation {
	var ml MailLocation
	parts := strings.Split(s, ":")
	i := 0
	if len(parts) > 1 && !strings.Contains(parts[0], "/") && !strings.Contains(parts[0], "=") {
		ml.Format, i = parts[0], 1
	}
	for j := i; j < len(parts); j++ {
		p := parts[j]
		if k, v, ok := strings.Cut(p, "="); ok && strings.ToUpper(k) == k {
			if ml.Params == nil {
				ml.Params = map[string]string{}
			}
			ml.Params[k] = v
			continue
		}
		if ml.Path == "" {
			ml.Path = p
		}
	}
	return ml
}

// StaticPrefix returns the part of a Dovecot path before the first
// variable (%u, %{user}, ~): the directory every user's mail lands under.
// ok is false when the path starts with a variable or "~" (per-user home).
func StaticPrefix(p string) (string, bool) {
	if strings.HasPrefix(p, "~") {
		return "", false
	}
	if i := strings.IndexByte(p, '%'); i >= 0 {
		p = p[:i]
	}
	if !strings.HasPrefix(p, "/") {
		return "", false
	}
	return path.Clean(p), true
}
