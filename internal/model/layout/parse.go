package layout

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"reflect"
	"regexp"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// File is a parsed layout with the position of every value it set.
type File struct {
	Name     string
	Layout   *Layout
	Pos      map[string]Pos
	Warnings []Problem // warnings found by Parse, for callers that plan on
}

// NewReport starts a report that can point into this file.
func (f *File) NewReport() *Report { return NewReport(f.Name, f.Pos) }

var yamlLineRe = regexp.MustCompile(`line (\d+)`)

// Parse reads a layout, fills in defaults and validates everything that does
// not need to know the machine's disks. It returns every problem at once;
// the layout is usable only when the report has no errors.
func Parse(name string, data []byte) (*File, *Report) {
	f := &File{Name: name, Layout: &Layout{}, Pos: map[string]Pos{}}
	rep := f.NewReport()
	var doc yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			rep.Errorf("$", "start from an example: cryptshift plan --example mail-host -o layout", "the file is empty")
			return f, rep
		}
		line := 0
		if m := yamlLineRe.FindStringSubmatch(err.Error()); m != nil {
			line, _ = strconv.Atoi(m[1])
		}
		f.Pos["$"] = Pos{Line: line, Column: 1}
		rep.Errorf("$", "fix the YAML syntax", "%v", err)
		return f, rep
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); err == nil {
		f.Pos["$"] = Pos{Line: extra.Line, Column: extra.Column}
		rep.Errorf("$", "keep one layout per file", "the file holds more than one YAML document")
		return f, rep
	}
	root := &doc
	if root.Kind == yaml.DocumentNode && len(root.Content) == 1 {
		root = root.Content[0]
	}
	d := &decoder{pos: f.Pos, rep: rep}
	d.decode(root, reflect.ValueOf(f.Layout).Elem(), "$")
	decoded := len(rep.Problems)
	f.Layout.Normalize()
	Validate(f, rep)
	// Keep validating after a decode error, so every problem shows at once,
	// but drop findings about a value that could not be read at all.
	kept := rep.Problems[:decoded]
	for _, pr := range rep.Problems[decoded:] {
		if !under(pr.Path, d.failed) {
			kept = append(kept, pr)
		}
	}
	rep.Problems = kept
	rep.Sort()
	f.Warnings = rep.Warnings()
	return f, rep
}

// MustParse parses a layout known to be valid (embedded examples, tests).
func MustParse(name string, data []byte) *File {
	f, rep := Parse(name, data)
	if rep.HasErrors() {
		panic(fmt.Sprintf("layout %s: %s", name, rep.Error()))
	}
	return f
}

func under(p string, roots []string) bool {
	for _, r := range roots {
		if p == r || strings.HasPrefix(p, r+".") || strings.HasPrefix(p, r+"[") {
			return true
		}
	}
	return false
}
