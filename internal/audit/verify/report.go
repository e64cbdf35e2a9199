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
// INCOMPLETE is a verdict only: no FAIL, but a check that matters for data
// at rest could not run, so the report cannot say PASS.
const (
	Pass       Status = "PASS"
	Skip       Status = "SKIP"
	Warn       Status = "WARN"
	Fail       Status = "FAIL"
	Incomplete Status = "INCOMPLETE"
)

// Why a result is SKIP.
const (
	SkipNotApplicable = "not-applicable" // the inputs were read: there is nothing of this kind
	SkipMissing       = "missing"        // the inputs are absent or unreadable: not checked
	SkipRefused       = "refused"        // an input was refused as unsafe to read (see Coverage.Refused)
)

// What a FAIL or WARN is about; the headline names the kinds found.
const (
	FindingPlaintext = "plaintext"    // data is (or would be) stored unencrypted
	FindingWeak      = "weak-crypto"  // encrypted, but with weak parameters
	FindingKeys      = "key-exposure" // key material where it unlocks something for anyone with the disk
	FindingLeftover  = "leftover"     // an old plaintext copy: an image, an LV, a snapshot, a disk
	FindingConfig    = "misconfig"    // a setting that fails or misleads, not a leak in itself
	FindingUnknown   = "unverifiable" // cannot tell how the data is stored
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
	Fix         string   `json:"fix"`               // empty for PASS and SKIP
	Skip        string   `json:"skip,omitempty"`    // SKIP only: not-applicable, missing or refused
	Finding     string   `json:"finding,omitempty"` // FAIL and WARN only: what kind of problem
}

// Header says what was verified, when and by what: what an auditor needs
// to cite the report.
type Header struct {
	Tool    string `json:"tool"`
	Version string `json:"version"`
	Commit  string `json:"commit"`
	Host    string `json:"host"`
	Date    string `json:"date"`
	// DateSource: "today" (the day verify ran), "capture" (the day the
	// tree was captured) or "operator" (set with --date to another day).
	DateSource string `json:"dateSource"`
	Source     string `json:"source"` // live, capture, image
	Root       string `json:"root"`   // the --root or --image argument
	// ManifestSHA256 identifies the captured tree (its manifest file).
	ManifestSHA256 string `json:"manifestSHA256,omitempty"`
	// ImageSize is the size of the verified image file, bytes.
	ImageSize int64  `json:"imageSize,omitempty"`
	Kernel    string `json:"kernel,omitempty"`
	Lang      string `json:"lang"`
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
	Unlock     []string `json:"unlock,omitempty"`   // how it is unlocked: keyslots, key file, tokens, SSH
	Header     string   `json:"header"`             // where the metadata came from, or why not
}

// Summary counts results and gives the verdict.
type Summary struct {
	Pass int `json:"pass"`
	Warn int `json:"warn"`
	Fail int `json:"fail"`
	Skip int `json:"skip"`
	// Verdict: FAIL if any FAIL; else INCOMPLETE if an essential area did
	// not run (Coverage); else WARN if any WARN; else PASS.
	Verdict Status `json:"verdict"`
	// Findings are the kinds of the FAIL results (or, without FAIL, of the
	// WARN results), sorted: what the headline names.
	Findings []string `json:"findings"`
}

// Coverage says what the report rests on: which areas that matter for
// data at rest were examined, which results could not be produced and
// why, and which inputs were refused as unsafe to read.
type Coverage struct {
	Complete   bool        `json:"complete"`
	Essentials []Essential `json:"essentials"`
	// NotExamined lists the SKIP results whose inputs were missing or
	// refused (not-applicable ones are examined: there was nothing there).
	NotExamined []Gap `json:"notExamined"`
	// Refused lists inputs refused by the safety rules (path: reason).
	Refused []string `json:"refused"`
}

// Essential is one area that must have been examined for a PASS.
type Essential struct {
	Area   string   `json:"area"`   // swap, hibernate, tmp, dumps, mounts, keys
	Checks []string `json:"checks"` // the check ids that cover it
	Ran    bool     `json:"ran"`
	Why    string   `json:"why,omitempty"` // when not: the first reason
}

// Gap is a result that could not be produced.
type Gap struct {
	ID      string `json:"id"`
	Subject string `json:"subject"`
	Reason  string `json:"reason"`
}

// SchemaID names the report format; bump it on incompatible changes.
// v2: verdict INCOMPLETE, coverage, findings, skip kinds, header provenance.
const SchemaID = "cryptshift.verify/v2"

// Report is the whole result.
type Report struct {
	Schema   string   `json:"schema"`
	Header   Header   `json:"header"`
	Volumes  []Volume `json:"volumes"`
	Checks   []Result `json:"checks"`
	Coverage Coverage `json:"coverage"`
	Risks    []string `json:"residualRisks"`
	Summary  Summary  `json:"summary"`

	// Inputs names the configuration files verify read and what they are
	// ("passwd-file", "postfix-main.cf", "lvm-metadata"): capture copies
	// them (redacted as their kind needs) even when they live elsewhere
	// than the usual places.
	Inputs map[string]string `json:"-"`
}

// essentialAreas are the areas that must have run for a PASS: where the
// kernel and daemons write data at rest. Live and captured trees use the
// first list of checks, images the second.
var essentialAreas = []struct {
	area        string
	live, image []string
}{
	{"swap", []string{"swap.device"}, []string{"swap.fstab"}},
	{"hibernate", []string{"hibernate.resume"}, []string{"hibernate.resume"}},
	{"tmp", []string{"tmp.tmp", "tmp.var-tmp", "tmp.dev-shm"}, []string{"tmp.tmp", "tmp.var-tmp"}},
	{"dumps", []string{"coredump.pattern", "kdump.target"}, []string{"coredump.pattern", "kdump.target"}},
	{"mounts", []string{"storage.mount"}, []string{"image.partitions"}},
	{"keys", []string{"keys.crypttab", "keys.initramfs"}, []string{"keys.crypttab", "keys.initramfs"}},
}

// finish sorts everything and computes coverage and the summary, so the
// JSON is the same for the same facts.
func (r *Report) finish(image bool, refused []string) {
	sort.SliceStable(r.Checks, func(i, j int) bool {
		a, b := r.Checks[i], r.Checks[j]
		if a.ID != b.ID {
			return areaOrder(a.ID) < areaOrder(b.ID) || areaOrder(a.ID) == areaOrder(b.ID) && a.ID < b.ID
		}
		return a.Subject < b.Subject
	})
	sort.Slice(r.Volumes, func(i, j int) bool { return r.Volumes[i].Device < r.Volumes[j].Device })
	s := Summary{Verdict: Pass, Findings: []string{}}
	failKinds, warnKinds := map[string]bool{}, map[string]bool{}
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
			warnKinds[c.Finding] = true
		case Fail:
			s.Fail++
			failKinds[c.Finding] = true
		case Skip:
			s.Skip++
		}
	}
	r.Coverage = coverage(r.Checks, image, refused)
	kinds := warnKinds
	switch {
	case s.Fail > 0:
		s.Verdict, kinds = Fail, failKinds
	case !r.Coverage.Complete:
		s.Verdict = Incomplete
	case s.Warn > 0:
		s.Verdict = Warn
	}
	if s.Verdict != Pass {
		for k := range kinds {
			s.Findings = append(s.Findings, k)
		}
		sort.Strings(s.Findings)
	}
	r.Summary = s
	if r.Volumes == nil {
		r.Volumes = []Volume{}
	}
	if r.Risks == nil {
		r.Risks = []string{}
	}
}

func coverage(checks []Result, image bool, refused []string) Coverage {
	cv := Coverage{Complete: true, Essentials: []Essential{}, NotExamined: []Gap{}, Refused: append([]string{}, refused...)}
	sort.Strings(cv.Refused)
	for _, c := range checks {
		if c.Status == Skip && c.Skip != SkipNotApplicable {
			reason := ""
			if len(c.Evidence) > 0 {
				reason = c.Evidence[0]
			}
			cv.NotExamined = append(cv.NotExamined, Gap{ID: c.ID, Subject: c.Subject, Reason: reason})
			// Not examined is not examined: no PASS rests on a gap,
			// essential area or not.
			cv.Complete = false
		}
	}
	for _, a := range essentialAreas {
		ids := a.live
		if image {
			ids = a.image
		}
		es := Essential{Area: a.area, Checks: ids, Ran: true}
		for _, id := range ids {
			n := 0
			for _, c := range checks {
				if c.ID != id {
					continue
				}
				n++
				if c.Status == Skip && c.Skip != SkipNotApplicable && es.Ran {
					es.Ran = false
					es.Why = id + " " + c.Subject
					if len(c.Evidence) > 0 {
						es.Why += ": " + c.Evidence[0]
					}
				}
			}
			if n == 0 && es.Ran {
				es.Ran, es.Why = false, id+": no result"
			}
		}
		if !es.Ran {
			cv.Complete = false
		}
		cv.Essentials = append(cv.Essentials, es)
	}
	return cv
}

// Areas group check ids in reports, in this order.
var Areas = []string{"image", "storage", "swap", "hibernate", "tmp", "coredump", "kdump", "logs", "libvirt", "lvm", "mail", "keys", "luks"}

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

// Incomplete reports whether an essential area could not be examined.
func (r *Report) Incomplete() bool { return !r.Coverage.Complete }
