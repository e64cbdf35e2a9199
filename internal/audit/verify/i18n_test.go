package verify

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

var verbRE = regexp.MustCompile(`%[-+# 0-9.]*[vsdqxXfgT%]`)

// TestCatalogComplete checks that every text exists in both languages with
// the same format verbs, that every key the code names is in the catalog,
// and that every check id has a title, an explanation and a fix.
func TestCatalogComplete(t *testing.T) {
	for k, m := range catalog {
		if m.en == "" || m.de == "" {
			t.Errorf("%s: empty text (en %q, de %q)", k, m.en, m.de)
		}
		if a, b := verbRE.FindAllString(m.en, -1), verbRE.FindAllString(m.de, -1); strings.Join(a, " ") != strings.Join(b, " ") {
			t.Errorf("%s: format verbs differ: en %v, de %v", k, a, b)
		}
	}
	files, _ := filepath.Glob("*.go")
	keyRE := regexp.MustCompile(`(?:e\.t|tr\(l|tr\(r\.Header\.Lang|t \$l)\(?,?\s*"([a-z][a-z0-9.\-]*)"`)
	idRE := regexp.MustCompile(`(?:const id = |e\.(?:add|skip|addFix|locationCheck)\()"([a-z]+\.[a-z0-9.\-]+)"`)
	fixRE := regexp.MustCompile(`"([a-z]+\.[a-z0-9.\-]+\.fix\.[a-z]+)"`)
	ids := map[string]bool{}
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range keyRE.FindAllStringSubmatch(string(b), -1) {
			if k := m[1]; !strings.HasSuffix(k, ".") {
				if _, ok := catalog[k]; !ok {
					t.Errorf("%s: key %q is not in the catalog", f, k)
				}
			}
		}
		for _, m := range fixRE.FindAllStringSubmatch(string(b), -1) {
			if _, ok := catalog[m[1]]; !ok {
				t.Errorf("%s: fix %q is not in the catalog", f, m[1])
			}
		}
		for _, m := range idRE.FindAllStringSubmatch(string(b), -1) {
			ids[m[1]] = true
		}
	}
	for _, id := range []string{"tmp.tmp", "tmp.var-tmp"} { // named in a table, not a call
		ids[id] = true
	}
	if len(ids) < 40 {
		t.Errorf("found %d check ids in the code, expected at least 40: %v", len(ids), ids)
	}
	for id := range ids {
		for _, part := range []string{".title", ".why", ".fix"} {
			if _, ok := catalog[id+part]; !ok {
				t.Errorf("check %s has no %s text", id, part)
			}
		}
		if !strings.Contains(strings.Join(Areas, " "), Area(id)) {
			t.Errorf("check %s is in no report area", id)
		}
		if _, ok := catalog["ui.area."+Area(id)]; !ok {
			t.Errorf("area %s has no title", Area(id))
		}
	}
	for _, c := range []string{"encrypted", "ram", "plaintext", "unknown"} {
		if _, ok := catalog["class."+c]; !ok {
			t.Errorf("class %s has no text", c)
		}
	}
}

// TestGermanReportIsGerman renders a failing fixture in German and checks
// that the explanations and fixes are the German ones.
func TestGermanReportIsGerman(t *testing.T) {
	r, err := Run(Options{Root: filepath.Join(fixtureDir, "swap-plain-partition", "root"), Lang: "de", Version: "test"})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range r.Checks {
		if c.Explanation != catalog[c.ID+".why"].de {
			t.Errorf("%s: explanation not German: %q", c.ID, c.Explanation)
		}
		if (c.Status == Fail || c.Status == Warn) && c.Fix == catalog[c.ID+".fix"].en {
			t.Errorf("%s: fix in English: %q", c.ID, c.Fix)
		}
	}
}

// TestGermanEvidenceHasNoEnglish: in German reports the evidence sentences
// are German; what stays is data (paths, device names, configuration
// lines as written, lsblk's kinds).
func TestGermanEvidenceHasNoEnglish(t *testing.T) {
	english := regexp.MustCompile(`\b(line|not active|see above|no encryption|random key|cannot|is a snapshot|not found|stored|keyslot \d|file /|block device|dumps|the)\b`)
	for _, fx := range fixtures {
		r, err := Run(Options{Root: filepath.Join(fixtureDir, fx.name, "root"), Lang: "de", Version: "test"})
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range r.Checks {
			for _, ev := range append(append([]string{}, c.Evidence...), c.Explanation, c.Fix) {
				if m := english.FindString(ev); m != "" {
					t.Errorf("%s %s %s: English %q in %q", fx.name, c.ID, c.Subject, m, ev)
				}
			}
		}
		for _, v := range r.Volumes {
			for _, u := range v.Unlock {
				if m := english.FindString(u); m != "" {
					t.Errorf("%s volume %s: English %q in %q", fx.name, v.Name, m, u)
				}
			}
		}
	}
}

// TestHeaderNamesVersionAndCommit: an auditor cites the report by the
// tool's version and commit; both reach the text, Markdown and HTML
// headers, in the report's language (no English "commit unknown" in a
// German report).
func TestHeaderNamesVersionAndCommit(t *testing.T) {
	root := filepath.Join(fixtureDir, "swap-plain-partition", "root")
	for _, tc := range []struct {
		lang, commit string
		want         []string
		notWant      string
	}{
		{"en", "0123abcd4567", []string{"cryptshift verify 1.4.2, commit 0123abcd4567"}, ""},
		{"de", "0123abcd4567", []string{"cryptshift verify 1.4.2, Commit 0123abcd4567"}, ""},
		{"en", "unknown", []string{"cryptshift verify 1.4.2, commit unknown"}, ""},
		{"de", "unknown", []string{"cryptshift verify 1.4.2, Commit unbekannt"}, "commit unknown"},
	} {
		r, err := Run(Options{Root: root, Lang: tc.lang, Version: "1.4.2", Commit: tc.commit})
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range []string{"text", "markdown", "html"} {
			var b strings.Builder
			if err := Render(&b, r, f); err != nil {
				t.Fatal(err)
			}
			head := b.String()[:min(b.Len(), 4000)]
			for _, w := range tc.want {
				if !strings.Contains(head, w) {
					t.Errorf("%s %s, commit %q: header lacks %q:\n%s", tc.lang, f, tc.commit, w, head[:min(len(head), 600)])
				}
			}
			if tc.notWant != "" && strings.Contains(b.String(), tc.notWant) {
				t.Errorf("%s %s: says %q", tc.lang, f, tc.notWant)
			}
		}
	}
}

// TestSummaryCountsByBadge: the summary line names SKIP results by the
// badge the report shows them with ("not checked" or "not applicable"),
// with the singular and plural of each language.
func TestSummaryCountsByBadge(t *testing.T) {
	r := &Report{Summary: Summary{Pass: 1, Skip: 3}, Checks: []Result{
		{Status: Pass}, {Status: Skip, Skip: SkipMissing},
		{Status: Skip, Skip: SkipNotApplicable}, {Status: Skip, Skip: SkipNotApplicable}}}
	for lang, want := range map[string]string{
		"en": "1 passed, 0 warnings, 0 failed, 1 not checked, 2 not applicable",
		"de": "1 bestanden, 0 Warnungen, 0 Mängel, 1 nicht geprüft, 2 entfallen",
	} {
		r.Header.Lang = lang
		if got := summaryText(r); got != want {
			t.Errorf("%s: summary %q, want %q", lang, got, want)
		}
	}
	// Nothing was left unchecked: no "0 nicht geprüft" beside what was N/A.
	r.Summary.Skip, r.Checks = 1, []Result{{Status: Pass}, {Status: Skip, Skip: SkipNotApplicable}}
	r.Header.Lang = "de"
	if got, want := summaryText(r), "1 bestanden, 0 Warnungen, 0 Mängel, 1 entfällt"; got != want {
		t.Errorf("de: summary %q, want %q", got, want)
	}
}
