// Package verify proves, place by place, that no data of a Linux host or
// its libvirt guests lands on unencrypted storage, and writes the result
// as a report fit for a GDPR Art. 32 annex.
//
// Every check reads through a root (the live "/", a tree captured by
// `cryptshift capture`, or a guest disk image) and yields results with a
// stable id, a status, the subject, the evidence (the storage chain from
// the path down to the disks), why it matters and how to fix it. Facts
// that cannot be read make a check SKIP or WARN, never PASS or FAIL.
package verify

import (
	"sort"
	"strings"
)

// Status of one check result.
type Status string

// Statuses, from best to worst. SKIP sorts between WARN and PASS in
// verdicts: it never makes a report fail, but it is not a pass either.
const (
	Pass Status = "PASS"
	Skip Status = "SKIP"
	Warn Status = "WARN"
	Fail Status = "FAIL"
)

func (s Status) rank() int {
	switch s {
	case Fail:
		return 3
	case Warn:
		return 2
	case Skip:
		return 1
	}
	return 0
}

// Result is one check applied to one subject.
type Result struct {
	ID          string   `json:"id"`
	Status      Status   `json:"status"`
	Subject     string   `json:"subject"`
	Evidence    []string `json:"evidence"`
	Explanation string   `json:"explanation"`
	Fix         string   `json:"fix"` // empty for PASS and SKIP
}

// Header says what was verified, when and by what.
type Header struct {
	Tool    string `json:"tool"`
	Version string `json:"version"`
	Host    string `json:"host"`
	Date    string `json:"date"`
	Source  string `json:"source"` // live, capture, image
	Root    string `json:"root"`   // the --root or --image argument
	Kernel  string `json:"kernel,omitempty"`
	Lang    string `json:"lang"`
}

// Volume is one encrypted container and its parameters.
type Volume struct {
	Device     string   `json:"device"` // crypt node, e.g. dm-2
	Name       string   `json:"name"`   // device-mapper name
	Type       string   `json:"type"`   // LUKS2, LUKS1, PLAIN
	On         string   `json:"on"`     // what it is stored on
	Cipher     string   `json:"cipher,omitempty"`
	KeySize    int      `json:"keySize,omitempty"`
	SectorSize int      `json:"sectorSize,omitempty"`
	KDF        []string `json:"kdf,omitempty"` // per keyslot, e.g. "0: argon2id t=4 m=1048576 p=4"
	Keyslots   int      `json:"keyslots,omitempty"`
	Tokens     []string `json:"tokens,omitempty"`
	Discard    bool     `json:"discard"`
	Protects   []string `json:"protects,omitempty"` // mount points, swap, guests
	Header     string   `json:"header"`             // where the metadata came from, or why not
}

// Summary counts results and gives the verdict.
type Summary struct {
	Pass    int    `json:"pass"`
	Warn    int    `json:"warn"`
	Fail    int    `json:"fail"`
	Skip    int    `json:"skip"`
	Verdict Status `json:"verdict"` // FAIL if any FAIL, else WARN if any WARN, else PASS
}

// SchemaID names the report format; bump it on incompatible changes.
const SchemaID = "cryptshift.verify/v1"

// Report is the whole result.
type Report struct {
	Schema  string   `json:"schema"`
	Header  Header   `json:"header"`
	Volumes []Volume `json:"volumes"`
	Checks  []Result `json:"checks"`
	Risks   []string `json:"residualRisks"`
	Summary Summary  `json:"summary"`
}

// finish sorts everything and computes the summary, so the JSON is the
// same for the same facts.
func (r *Report) finish() {
	sort.SliceStable(r.Checks, func(i, j int) bool {
		a, b := r.Checks[i], r.Checks[j]
		if a.ID != b.ID {
			return areaOrder(a.ID) < areaOrder(b.ID) || areaOrder(a.ID) == areaOrder(b.ID) && a.ID < b.ID
		}
		return a.Subject < b.Subject
	})
	sort.Slice(r.Volumes, func(i, j int) bool { return r.Volumes[i].Device < r.Volumes[j].Device })
	s := Summary{Verdict: Pass}
	for i := range r.Checks {
		c := &r.Checks[i]
		if c.Evidence == nil {
			c.Evidence = []string{}
		}
		switch c.Status {
		case Pass:
			s.Pass++
		case Warn:
			s.Warn++
		case Fail:
			s.Fail++
		case Skip:
			s.Skip++
		}
	}
	switch {
	case s.Fail > 0:
		s.Verdict = Fail
	case s.Warn > 0:
		s.Verdict = Warn
	}
	r.Summary = s
	if r.Volumes == nil {
		r.Volumes = []Volume{}
	}
	if r.Risks == nil {
		r.Risks = []string{}
	}
}

// Areas group check ids in reports, in this order.
var Areas = []string{"image", "swap", "hibernate", "tmp", "coredump", "kdump", "logs", "libvirt", "lvm", "mail", "keys", "luks"}

// Area returns the group of a check id: the part before the first dot.
func Area(id string) string {
	a, _, _ := strings.Cut(id, ".")
	return a
}

func areaOrder(id string) int {
	a := Area(id)
	for i, x := range Areas {
		if x == a {
			return i
		}
	}
	return len(Areas)
}

// Failed reports whether the report should make the command fail: any
// FAIL, or with strict any WARN.
func (r *Report) Failed(strict bool) bool {
	return r.Summary.Fail > 0 || strict && r.Summary.Warn > 0
}
