package sysconf

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
)

// LVMVG is what verify needs from LVM's text metadata (/etc/lvm/backup/VG,
// written by every LVM command that changes the VG): its PVs with their
// device hints, and its LVs with what each segment refers to.
type LVMVG struct {
	Name string
	PVs  map[string]string // pv0 -> device hint ("/dev/sdb1")
	LVs  map[string]*LVMLV
}

// LVMLV is one logical volume of the metadata.
type LVMLV struct {
	Name    string
	Visible bool     // status has VISIBLE (hidden LVs are snapshotN, _tdata, ...)
	Types   []string // segment types: striped, snapshot, thin, thin-pool, ...
	Origin  string   // thin or classic snapshot: the LV it copies
	Refs    []string // every LV or PV name its segments refer to
}

// Snapshot reports whether the LV keeps old blocks of another LV: a
// classic snapshot segment, or a thin LV with an origin.
func (l *LVMLV) Snapshot() bool { return l.Origin != "" }

// maxLVMMeta bounds the metadata parser: LVM's own metadata area is at most
// a few MiB, and its nesting is four levels deep.
const (
	maxLVMMetaDepth = 16
	maxLVMMetaItems = 200000
)

// ParseLVMMetadata parses LVM2's text metadata format
// (lib/format_text/import_vsn1.c: "name = value", "name { ... }", values
// are strings, numbers or [lists]).
func ParseLVMMetadata(text string) (*LVMVG, error) {
	p := &lvmParser{s: text}
	root, err := p.section(0)
	if err != nil {
		return nil, fmt.Errorf("cannot parse LVM metadata: %w", err)
	}
	var vg *LVMVG
	for name, v := range root.sub {
		if v.sub["physical_volumes"] == nil && v.sub["logical_volumes"] == nil {
			continue
		}
		vg = &LVMVG{Name: name, PVs: map[string]string{}, LVs: map[string]*LVMLV{}}
		for pv, pvs := range v.sub["physical_volumes"].subOrEmpty() {
			vg.PVs[pv] = pvs.str("device")
		}
		for lvName, lvs := range v.sub["logical_volumes"].subOrEmpty() {
			lv := &LVMLV{Name: lvName}
			for _, st := range lvs.vals["status"] {
				if st == "VISIBLE" {
					lv.Visible = true
				}
			}
			var segs []string
			for k := range lvs.sub {
				if strings.HasPrefix(k, "segment") {
					segs = append(segs, k)
				}
			}
			sort.Strings(segs)
			for _, k := range segs {
				seg := lvs.sub[k]
				t := seg.str("type")
				lv.Types = append(lv.Types, t)
				if o := seg.str("origin"); o != "" && (t == "snapshot" || t == "thin") {
					lv.Origin = o
				}
				for key, vals := range seg.vals {
					if key == "type" || key == "origin" && t == "thin" {
						continue // a thin snapshot's origin shares the pool: its refs come from thin_pool
					}
					lv.Refs = append(lv.Refs, vals...)
				}
			}
			sort.Strings(lv.Refs)
			vg.LVs[lvName] = lv
		}
		break
	}
	if vg == nil {
		return nil, fmt.Errorf("cannot parse LVM metadata: no volume group section")
	}
	return vg, nil
}

// PVsOf returns the PV names (pv0, ...) holding the blocks of an LV,
// following references through pools, snapshots' exception stores, raid
// images and mirrors.
func (vg *LVMVG) PVsOf(lv string) []string {
	seen := map[string]bool{}
	var out []string
	var walk func(n string)
	walk = func(n string) {
		if seen[n] {
			return
		}
		seen[n] = true
		if _, ok := vg.PVs[n]; ok {
			out = append(out, n)
			return
		}
		if l := vg.LVs[n]; l != nil {
			for _, r := range l.Refs {
				walk(r)
			}
		}
	}
	walk(lv)
	sort.Strings(out)
	return out
}

type lvmSection struct {
	vals map[string][]string
	sub  map[string]*lvmSection
}

func (s *lvmSection) subOrEmpty() map[string]*lvmSection {
	if s == nil {
		return nil
	}
	return s.sub
}

func (s *lvmSection) str(k string) string {
	if v := s.vals[k]; len(v) > 0 {
		return v[0]
	}
	return ""
}

type lvmParser struct {
	s     string
	i     int
	items int
}

func (p *lvmParser) skip() {
	for p.i < len(p.s) {
		c := p.s[p.i]
		switch {
		case c == '#':
			for p.i < len(p.s) && p.s[p.i] != '\n' {
				p.i++
			}
		case c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == ',':
			p.i++
		default:
			return
		}
	}
}

func (p *lvmParser) word() string {
	start := p.i
	for p.i < len(p.s) && !strings.ContainsRune(" \t\r\n=[]{},\"#", rune(p.s[p.i])) {
		p.i++
	}
	return p.s[start:p.i]
}

func (p *lvmParser) section(depth int) (*lvmSection, error) {
	if depth > maxLVMMetaDepth {
		return nil, fmt.Errorf("nested deeper than %d", maxLVMMetaDepth)
	}
	sec := &lvmSection{vals: map[string][]string{}, sub: map[string]*lvmSection{}}
	for {
		p.skip()
		if p.i >= len(p.s) {
			return sec, nil
		}
		if p.s[p.i] == '}' {
			p.i++
			return sec, nil
		}
		if p.items++; p.items > maxLVMMetaItems {
			return nil, fmt.Errorf("more than %d items", maxLVMMetaItems)
		}
		name := p.word()
		if name == "" {
			return nil, fmt.Errorf("unexpected %q at offset %d", p.s[p.i], p.i)
		}
		p.skip()
		if p.i >= len(p.s) {
			return nil, fmt.Errorf("%s: unexpected end", name)
		}
		switch p.s[p.i] {
		case '{':
			p.i++
			sub, err := p.section(depth + 1)
			if err != nil {
				return nil, err
			}
			sec.sub[name] = sub
		case '=':
			p.i++
			p.skip()
			v, err := p.value()
			if err != nil {
				return nil, fmt.Errorf("%s: %w", name, err)
			}
			sec.vals[name] = v
		default:
			return nil, fmt.Errorf("%s: want = or {", name)
		}
	}
}

func (p *lvmParser) value() ([]string, error) {
	if p.i >= len(p.s) {
		return nil, fmt.Errorf("missing value")
	}
	switch p.s[p.i] {
	case '"':
		str, err := p.quoted()
		return []string{str}, err
	case '[':
		p.i++
		var out []string
		for {
			p.skip()
			if p.i >= len(p.s) {
				return nil, fmt.Errorf("unterminated list")
			}
			if p.s[p.i] == ']' {
				p.i++
				return out, nil
			}
			if p.items++; p.items > maxLVMMetaItems {
				return nil, fmt.Errorf("more than %d items", maxLVMMetaItems)
			}
			if p.s[p.i] == '"' {
				str, err := p.quoted()
				if err != nil {
					return nil, err
				}
				out = append(out, str)
				continue
			}
			w := p.word()
			if w == "" {
				return nil, fmt.Errorf("bad list item at offset %d", p.i)
			}
			if _, err := strconv.ParseFloat(w, 64); err != nil {
				out = append(out, w)
			}
		}
	}
	w := p.word()
	if w == "" {
		return nil, fmt.Errorf("bad value at offset %d", p.i)
	}
	return []string{w}, nil
}

func (p *lvmParser) quoted() (string, error) {
	p.i++
	var b strings.Builder
	for p.i < len(p.s) {
		c := p.s[p.i]
		p.i++
		switch c {
		case '\\':
			if p.i < len(p.s) {
				b.WriteByte(p.s[p.i])
				p.i++
			}
		case '"':
			return b.String(), nil
		default:
			b.WriteByte(c)
		}
	}
	return "", fmt.Errorf("unterminated string")
}
