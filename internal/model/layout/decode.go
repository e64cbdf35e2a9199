package layout

import (
	"fmt"
	"reflect"
	"sort"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// scalar is implemented by types that parse themselves from one YAML scalar.
type scalar interface {
	parseScalar(s string) error
}

func (s *Size) parseScalar(raw string) error {
	p, err := ParseSize(raw)
	if err != nil {
		return err
	}
	*s = p
	return nil
}

// decoder fills Go values from a YAML node tree, recording the position of
// every value by its path ($.volumes[2].size) and reporting type errors and
// unknown keys into a Report instead of stopping at the first one.
type decoder struct {
	pos    map[string]Pos
	rep    *Report
	failed []string // paths whose value could not be decoded
	nodes  int      // values visited, aliases counted each time they expand
}

// ExtensionPrefix marks keys cryptshift ignores on purpose (x-owner,
// x-ticket: notes for people and other tools); every other unknown key is
// an error.
const ExtensionPrefix = "x-"

// maxNodes bounds how many values a layout may expand to. YAML aliases can
// make a small file expand exponentially ("billion laughs"); a real layout
// has a few hundred values.
const maxNodes = 100000

// fail records a decode error at path; validation findings under it are
// dropped later, since they would only repeat the same mistake.
func (d *decoder) fail(path, fix, format string, a ...any) {
	d.failed = append(d.failed, path)
	d.rep.Errorf(path, fix, format, a...)
}

func (d *decoder) decode(n *yaml.Node, v reflect.Value, path string) {
	if d.nodes++; d.nodes > maxNodes {
		if d.nodes == maxNodes+1 {
			d.fail("$", "write the layout without deeply nested aliases", "the file expands to more than %d values (YAML aliases)", maxNodes)
		}
		return
	}
	if n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	d.pos[path] = Pos{Line: n.Line, Column: n.Column}
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		return // leave the zero value: "use the default"
	}
	if v.Kind() == reflect.Pointer {
		if v.IsNil() {
			v.Set(reflect.New(v.Type().Elem()))
		}
		d.decode(n, v.Elem(), path)
		return
	}
	if s, ok := v.Addr().Interface().(scalar); ok {
		if n.Kind != yaml.ScalarNode {
			d.fail(path, "", "expected a single value, found %s", kindName(n))
			return
		}
		if err := s.parseScalar(n.Value); err != nil {
			d.fail(path, "", "%v", err)
		}
		return
	}
	switch v.Kind() {
	case reflect.Struct:
		d.decodeStruct(n, v, path)
	case reflect.Slice:
		d.decodeSlice(n, v, path)
	case reflect.String:
		if n.Kind != yaml.ScalarNode {
			d.fail(path, "", "expected a text value, found %s", kindName(n))
			return
		}
		v.SetString(n.Value)
	case reflect.Int:
		if n.Kind != yaml.ScalarNode {
			d.fail(path, "", "expected a whole number, found %s", kindName(n))
			return
		}
		i, err := strconv.Atoi(strings.ReplaceAll(n.Value, "_", ""))
		if err != nil {
			d.fail(path, "write a whole number such as 512", "%q is not a whole number", n.Value)
			return
		}
		v.SetInt(int64(i))
	case reflect.Bool:
		if n.Kind != yaml.ScalarNode {
			d.fail(path, "", "expected true or false, found %s", kindName(n))
			return
		}
		switch strings.ToLower(n.Value) {
		case "true", "yes", "on":
			v.SetBool(true)
		case "false", "no", "off":
			v.SetBool(false)
		default:
			d.fail(path, "write true or false", "%q is not true or false", n.Value)
		}
	default:
		panic(fmt.Sprintf("layout: unsupported field kind %s at %s", v.Kind(), path))
	}
}

// fieldsOf maps YAML keys to struct fields, following ",inline" embedding.
func fieldsOf(t reflect.Type, index []int, out map[string][]int) {
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		tag := f.Tag.Get("yaml")
		name, opts, _ := strings.Cut(tag, ",")
		idx := append(append([]int{}, index...), i)
		if opts == "inline" {
			fieldsOf(f.Type, idx, out)
			continue
		}
		if name == "" || name == "-" {
			continue
		}
		out[name] = idx
	}
}

func (d *decoder) decodeStruct(n *yaml.Node, v reflect.Value, path string) {
	if n.Kind != yaml.MappingNode {
		d.fail(path, "", "expected a mapping of keys to values, found %s", kindName(n))
		return
	}
	fields := map[string][]int{}
	fieldsOf(v.Type(), nil, fields)
	seen := map[string]bool{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := n.Content[i], n.Content[i+1]
		key := k.Value
		kp := path + "." + Printable(key) // a hostile key must not reach a terminal raw
		if seen[key] {
			d.pos[kp] = Pos{Line: k.Line, Column: k.Column}
			d.rep.Errorf(kp, "keep one of them", "key %q appears twice", key)
			continue
		}
		seen[key] = true
		if strings.HasPrefix(key, ExtensionPrefix) {
			continue // the documented escape hatch: notes for people and other tools
		}
		idx, ok := fields[key]
		if !ok {
			// An error, not a warning: a misspelt key silently drops what
			// it meant (a misspelt mountOptions drops nodev,nosuid).
			d.pos[kp] = Pos{Line: k.Line, Column: k.Column}
			fix := "remove it, or prefix it with " + ExtensionPrefix + " to keep it as a note cryptshift ignores"
			if s := closest(key, keysOf(fields)); s != "" {
				fix = fmt.Sprintf("did you mean %q?", s)
			}
			d.rep.Errorf(kp, fix, "unknown key %s", Short(key))
			continue
		}
		d.decode(val, v.FieldByIndex(idx), kp)
	}
}

func (d *decoder) decodeSlice(n *yaml.Node, v reflect.Value, path string) {
	elem := v.Type().Elem()
	if n.Kind == yaml.ScalarNode && elem.Kind() == reflect.String {
		// Mount options may be written fstab-style: "noatime,nodev".
		var items []string
		for _, s := range strings.Split(n.Value, ",") {
			if s = strings.TrimSpace(s); s != "" {
				items = append(items, s)
			}
		}
		v.Set(reflect.ValueOf(items))
		return
	}
	if n.Kind != yaml.SequenceNode {
		d.fail(path, "", "expected a list, found %s", kindName(n))
		return
	}
	s := reflect.MakeSlice(v.Type(), len(n.Content), len(n.Content))
	for i, item := range n.Content {
		d.decode(item, s.Index(i), fmt.Sprintf("%s[%d]", path, i))
	}
	v.Set(s)
}

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		return fmt.Sprintf("the value %q", n.Value)
	default:
		return "something else"
	}
}

func keysOf(m map[string][]int) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// closest returns the candidate within edit distance 2 of s (case folded),
// for "did you mean" hints on typos such as "moutn" or "volumegroup".
func closest(s string, candidates []string) string {
	if len(s) > 64 { // no key is that long; and edit distance is quadratic
		return ""
	}
	best, bestD := "", 3
	for _, c := range candidates {
		if d := editDistance(strings.ToLower(s), strings.ToLower(c)); d < bestD {
			best, bestD = c, d
		}
	}
	return best
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
