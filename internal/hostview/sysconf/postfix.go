package sysconf

import (
	"bufio"
	"io"
	"regexp"
	"strings"
)

// PostfixDefaults are the compiled-in values of the parameters verify
// needs, as Debian's postfix 3.7 reports them with `postconf -d`.
var PostfixDefaults = map[string]string{
	"queue_directory":      "/var/spool/postfix",
	"data_directory":       "/var/lib/postfix",
	"mail_spool_directory": "/var/mail",
	"home_mailbox":         "",
}

// PostfixConfig holds the parameters of a main.cf.
type PostfixConfig map[string]string

// ParsePostfixMainCF parses main.cf (postconf(5)): "name = value", long
// values continued on lines that start with whitespace, "#" comments only
// at the start of a line.
func ParsePostfixMainCF(r io.Reader) (PostfixConfig, error) {
	c := PostfixConfig{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 1<<20)
	var name string
	for sc.Scan() {
		raw := sc.Text()
		t := strings.TrimSpace(raw)
		if t == "" || strings.HasPrefix(t, "#") {
			continue
		}
		if raw[0] == ' ' || raw[0] == '\t' {
			if name != "" {
				c[name] = strings.TrimSpace(c[name] + " " + t)
			}
			continue
		}
		k, v, ok := strings.Cut(t, "=")
		if !ok {
			name = ""
			continue
		}
		name = strings.TrimSpace(k)
		c[name] = strings.TrimSpace(v)
	}
	return c, sc.Err()
}

var postfixVar = regexp.MustCompile(`\$\{?([a-z0-9_]+)\}?`)

// Get returns a parameter with $name and ${name} expanded from the file
// and the defaults (up to a fixed depth, as postconf does for loops).
func (c PostfixConfig) Get(name string) string {
	v, ok := c[name]
	if !ok {
		v = PostfixDefaults[name]
	}
	for i := 0; i < 10 && strings.Contains(v, "$"); i++ {
		v = postfixVar.ReplaceAllStringFunc(v, func(m string) string {
			n := postfixVar.FindStringSubmatch(m)[1]
			if x, ok := c[n]; ok {
				return x
			}
			return PostfixDefaults[n]
		})
	}
	return v
}
