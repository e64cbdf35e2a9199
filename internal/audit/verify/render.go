package verify

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"html/template"
	"io"
	"strings"
	"unicode/utf8"
)

// Formats lists the output formats of Render.
var Formats = []string{"text", "json", "markdown", "html"}

// Render writes the report in the given format.
func Render(w io.Writer, r *Report, format string) error {
	switch format {
	case "text", "":
		return renderText(w, r)
	case "json":
		return renderJSON(w, r)
	case "markdown", "md":
		return renderMarkdown(w, r)
	case "html":
		return renderHTML(w, r)
	}
	return fmt.Errorf("cannot render report: unknown format %q (want %s)", format, strings.Join(Formats, ", "))
}

func renderJSON(w io.Writer, r *Report) error {
	b, err := jsonBytes(r)
	if err != nil {
		return err
	}
	_, err = w.Write(b)
	return err
}

func jsonBytes(r *Report) ([]byte, error) {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("cannot render report as JSON: %w", err)
	}
	return append(b, '\n'), nil
}

// JSONDigest is the SHA-256 of the report rendered as JSON (`-o json`, the
// same bytes for the same facts): the HTML and Markdown reports name it, so
// an auditor can tie a human report to its machine-readable form.
func JSONDigest(r *Report) string {
	b, err := jsonBytes(r)
	if err != nil {
		return ""
	}
	return fmt.Sprintf("%x", sha256.Sum256(b))
}

// groups returns the results by area, in report order.
func groups(r *Report) [][]Result {
	var out [][]Result
	for _, c := range r.Checks {
		if len(out) == 0 || Area(out[len(out)-1][0].ID) != Area(c.ID) {
			out = append(out, nil)
		}
		out[len(out)-1] = append(out[len(out)-1], c)
	}
	return out
}

func sourceText(r *Report) string {
	s := tr(r.Header.Lang, "ui.source."+r.Header.Source) + " " + r.Header.Root
	if r.Header.ManifestSHA256 != "" {
		s += ", " + tr(r.Header.Lang, "ui.manifest", r.Header.ManifestSHA256)
	}
	if r.Header.ImageSize > 0 {
		s += " (" + humanSize(r.Header.ImageSize) + ")"
	}
	return s
}

func dateText(r *Report) string {
	d := r.Header.Date
	switch r.Header.DateSource {
	case "operator":
		d += " (" + tr(r.Header.Lang, "ui.date.operator") + ")"
	case "capture":
		d += " (" + tr(r.Header.Lang, "ui.date.capture") + ")"
	}
	return d
}

func toolText(r *Report) string {
	s := r.Header.Tool + " " + r.Header.Version
	switch r.Header.Commit {
	case "":
	case "unknown": // the CLI's word for a build without VCS stamp
		s += ", " + tr(r.Header.Lang, "ui.commit.unknown")
	default:
		s += ", " + tr(r.Header.Lang, "ui.commit", r.Header.Commit)
	}
	return s
}

// plural picks key+".one" for 1 and key+".other" otherwise, both formatted
// with n first.
func plural(l, key string, n int, args ...any) string {
	k := key + ".other"
	if n == 1 {
		k = key + ".one"
	}
	return tr(l, k, append([]any{n}, args...)...)
}

// summaryText counts the results by the badges the report shows them
// with: a SKIP is "not checked" (its inputs were missing or refused) or
// "not applicable" (there was nothing to check), never one word for both.
func summaryText(r *Report) string {
	s, l := r.Summary, r.Header.Lang
	na := 0
	for _, c := range r.Checks {
		if c.Status == Skip && c.Skip == SkipNotApplicable {
			na++
		}
	}
	parts := []string{plural(l, "ui.n.pass", s.Pass), plural(l, "ui.n.warn", s.Warn), plural(l, "ui.n.fail", s.Fail)}
	if s.Skip-na > 0 || na == 0 {
		parts = append(parts, plural(l, "ui.n.skip", s.Skip-na))
	}
	if na > 0 {
		parts = append(parts, plural(l, "ui.n.na", na))
	}
	return strings.Join(parts, ", ")
}

// Headline says what was found, in one line: the verdict and, for FAIL
// and WARN, the kinds of problems; for INCOMPLETE what was not examined.
func Headline(r *Report) string {
	l, s := r.Header.Lang, r.Summary
	var kinds []string
	for _, f := range s.Findings {
		kinds = append(kinds, tr(l, "ui.finding."+f))
	}
	switch s.Verdict {
	case Fail:
		h := tr(l, "ui.verdict.FAIL", joinAnd(l, kinds))
		if !r.Coverage.Complete {
			h += "; " + tr(l, "ui.verdict.alsoincomplete", joinAnd(l, missingAreas(r)))
		}
		return h
	case Incomplete:
		return tr(l, "ui.verdict.INCOMPLETE", joinAnd(l, missingAreas(r)))
	case Warn:
		return tr(l, "ui.verdict.WARN", plural(l, "ui.n.warn", s.Warn), joinAnd(l, kinds))
	}
	return tr(l, "ui.verdict.PASS")
}

// missingAreas names what was not examined: the essential areas first,
// then the titles of other checks that could not run.
func missingAreas(r *Report) []string {
	var out []string
	for _, e := range r.Coverage.Essentials {
		if !e.Ran {
			out = append(out, tr(r.Header.Lang, "ui.essential."+e.Area))
		}
	}
	seen := map[string]bool{}
	for _, g := range r.Coverage.NotExamined {
		if ess := essentialOf(g.ID); ess != "" || seen[g.ID] {
			continue
		}
		seen[g.ID] = true
		out = append(out, midSentence(r.Header.Lang, Title(r.Header.Lang, g.ID)))
	}
	return out
}

// midSentence lowercases an English title's first letter for use inside a
// sentence ("unlock methods ..."), but not an acronym's ("LUKS headers");
// German nouns keep their capital.
func midSentence(l, s string) string {
	if l != "en" || len(s) < 2 || s[1] < 'a' || s[1] > 'z' {
		return s
	}
	return strings.ToLower(s[:1]) + s[1:]
}

// essentialOf returns the essential area a check id belongs to, or "".
func essentialOf(id string) string {
	for _, a := range essentialAreas {
		if contains(a.live, id) || contains(a.image, id) {
			return a.area
		}
	}
	return ""
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func joinAnd(l string, items []string) string {
	switch len(items) {
	case 0:
		return ""
	case 1:
		return items[0]
	}
	return strings.Join(items[:len(items)-1], ", ") + " " + tr(l, "ui.and") + " " + items[len(items)-1]
}

// Badge is a status as the report shows it: the JSON status in English,
// the auditor's words in German; a SKIP says whether there was nothing to
// check or whether it could not be checked.
func Badge(l string, c Result) string {
	if c.Status == Skip && c.Skip == SkipNotApplicable {
		return tr(l, "ui.badge.NA")
	}
	return tr(l, "ui.badge."+string(c.Status))
}

// Clean replaces control characters (which a compromised host can put in
// file names, labels or headers) with visible escapes, so that a report
// printed on a terminal cannot move the cursor, recolour or hide text.
func Clean(s string) string {
	if !strings.ContainsFunc(s, unsafeRune) {
		return s
	}
	var b strings.Builder
	for _, r := range s {
		switch {
		case unsafeRune(r) && r <= 0xff:
			fmt.Fprintf(&b, "\\x%02x", r)
		case unsafeRune(r):
			fmt.Fprintf(&b, "\\u%04x", r)
		default:
			b.WriteRune(r)
		}
	}
	return b.String()
}

func unsafeRune(r rune) bool {
	return r < 0x20 || r == 0x7f || r >= 0x80 && r < 0xa0 || r == 0x2028 || r == 0x2029 || r >= 0x202a && r <= 0x202e || r >= 0x2066 && r <= 0x2069 || r == utf8.RuneError
}

// renderText prints one line per result, grouped by area; warnings and
// failures add their evidence and fix.
func renderText(w io.Writer, r *Report) error {
	l := r.Header.Lang
	var b bytes.Buffer
	fmt.Fprintf(&b, "%s\n", tr(l, "ui.title"))
	fmt.Fprintf(&b, "%s: %s   %s: %s\n", tr(l, "ui.host"), Clean(r.Header.Host), tr(l, "ui.date"), dateText(r))
	fmt.Fprintf(&b, "%s: %s\n", tr(l, "ui.source"), Clean(sourceText(r)))
	fmt.Fprintf(&b, "%s: %s\n", tr(l, "ui.tool"), Clean(toolText(r)))
	fmt.Fprintf(&b, "%s: %s (%s)\n", tr(l, "ui.verdict"), Headline(r), summaryText(r))
	width := 4
	for _, c := range r.Checks {
		width = max(width, utf8.RuneCountInString(Badge(l, c)))
	}
	for _, g := range groups(r) {
		fmt.Fprintf(&b, "\n%s\n", tr(l, "ui.area."+Area(g[0].ID)))
		for _, c := range g {
			badge := Badge(l, c)
			fmt.Fprintf(&b, "  %s%s  %-24s %s", badge, strings.Repeat(" ", width-utf8.RuneCountInString(badge)), c.ID, Clean(c.Subject))
			if c.Status == Skip && len(c.Evidence) > 0 {
				fmt.Fprintf(&b, " — %s", Clean(c.Evidence[0]))
			}
			b.WriteString("\n")
			if c.Status == Fail || c.Status == Warn {
				for _, ev := range c.Evidence {
					fmt.Fprintf(&b, "        %s\n", Clean(ev))
				}
				if c.Fix != "" && c.Fix != "-" {
					fmt.Fprintf(&b, "        %s: %s\n", tr(l, "ui.fix"), c.Fix)
				}
			}
		}
	}
	if len(r.Volumes) > 0 {
		fmt.Fprintf(&b, "\n%s\n", tr(l, "ui.volumes"))
		for _, v := range r.Volumes {
			fmt.Fprintf(&b, "  %s %s %s %s %s: %s\n", Clean(v.Device), Clean(v.Name), v.Type, tr(l, "ui.on.lower"), Clean(v.On), Clean(volumeParams(l, v)))
			for _, u := range v.Unlock {
				fmt.Fprintf(&b, "      %s\n", Clean(u))
			}
		}
	}
	fmt.Fprintf(&b, "\n%s\n", tr(l, "ui.coverage"))
	for _, line := range coverageLines(r) {
		fmt.Fprintf(&b, "  %s\n", Clean(line))
	}
	_, err := w.Write(b.Bytes())
	return err
}

// coverageLines says what was examined and what was not, and why.
func coverageLines(r *Report) []string {
	l := r.Header.Lang
	var out []string
	for _, e := range r.Coverage.Essentials {
		if e.Ran {
			out = append(out, tr(l, "ui.cov.ran", tr(l, "ui.essential."+e.Area), strings.Join(e.Checks, ", ")))
		} else {
			out = append(out, tr(l, "ui.cov.notran", tr(l, "ui.essential."+e.Area), e.Why))
		}
	}
	if n := len(r.Coverage.NotExamined); n > 0 {
		out = append(out, plural(l, "ui.cov.gaps", n))
		for _, g := range r.Coverage.NotExamined {
			out = append(out, "  "+g.ID+" "+g.Subject+": "+g.Reason)
		}
	}
	if n := len(r.Coverage.Refused); n > 0 {
		out = append(out, plural(l, "ui.cov.refused", n))
		for _, x := range r.Coverage.Refused {
			out = append(out, "  "+x)
		}
	}
	return out
}

func volumeParams(lang string, v Volume) string {
	s := cipherText(lang, v)
	if len(v.KDF) > 0 {
		s += ", " + strings.Join(v.KDF, "; ")
	}
	if v.Discard {
		s += ", discard"
	}
	return s
}

// cipherText says how a volume encrypts: cipher, key and sector size from
// its header, or what is known of a plain mapping.
func cipherText(lang string, v Volume) string {
	switch {
	case v.Cipher == "":
		return v.Header
	case v.KeySize == 0:
		return v.Cipher + "; " + v.Header
	}
	return tr(lang, "ui.params", v.Cipher, v.KeySize, v.SectorSize)
}

func mdEscape(s string) string {
	r := strings.NewReplacer("|", `\|`, "\n", " ", "<", "&lt;", ">", "&gt;", "`", "\\`", "*", `\*`, "[", `\[`)
	return r.Replace(Clean(s))
}

// renderMarkdown writes the Art. 32 evidence report as Markdown.
func renderMarkdown(w io.Writer, r *Report) error {
	l := r.Header.Lang
	var b bytes.Buffer
	fmt.Fprintf(&b, "# %s\n\n_%s_\n\n", tr(l, "ui.title"), tr(l, "ui.subtitle"))
	fmt.Fprintf(&b, "| | |\n|---|---|\n")
	fmt.Fprintf(&b, "| %s | %s |\n| %s | %s |\n| %s | %s |\n", tr(l, "ui.host"), mdEscape(r.Header.Host), tr(l, "ui.date"), mdEscape(dateText(r)), tr(l, "ui.source"), mdEscape(sourceText(r)))
	if r.Header.Kernel != "" {
		fmt.Fprintf(&b, "| %s | %s |\n", tr(l, "ui.kernel"), mdEscape(r.Header.Kernel))
	}
	fmt.Fprintf(&b, "| %s | %s |\n\n", tr(l, "ui.tool"), mdEscape(toolText(r)))
	fmt.Fprintf(&b, "**%s: %s** (%s)\n\n", tr(l, "ui.verdict"), mdEscape(Headline(r)), summaryText(r))
	fmt.Fprintf(&b, "## %s\n\n", tr(l, "ui.volumes"))
	if len(r.Volumes) == 0 {
		fmt.Fprintf(&b, "%s\n\n", tr(l, "ui.novolumes"))
	} else {
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s | %s | %s | %s |\n|---|---|---|---|---|---|---|---|---|\n",
			tr(l, "ui.device"), tr(l, "ui.name"), tr(l, "ui.type"), tr(l, "ui.on"), tr(l, "ui.cipher"), tr(l, "ui.kdf"), tr(l, "ui.unlock"), tr(l, "ui.discard"), tr(l, "ui.protects"))
		for _, v := range r.Volumes {
			cipher := cipherText(l, v)
			unlock := make([]string, len(v.Unlock))
			for i, u := range v.Unlock {
				unlock[i] = mdEscape(u)
			}
			fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", mdEscape(v.Device), mdEscape(v.Name), v.Type, mdEscape(v.On), mdEscape(cipher),
				mdEscape(strings.Join(v.KDF, "; ")), strings.Join(unlock, "<br>"), yesNo(l, v.Discard), mdEscape(strings.Join(v.Protects, ", ")))
		}
		b.WriteString("\n")
	}
	fmt.Fprintf(&b, "## %s\n\n", tr(l, "ui.checks"))
	for _, g := range groups(r) {
		fmt.Fprintf(&b, "### %s\n\n| %s | %s | %s | %s |\n|---|---|---|---|\n", tr(l, "ui.area."+Area(g[0].ID)),
			tr(l, "ui.status"), tr(l, "ui.check"), tr(l, "ui.subject"), tr(l, "ui.evidence"))
		for _, c := range g {
			ev := make([]string, len(c.Evidence))
			for i, e := range c.Evidence {
				ev[i] = mdEscape(e)
			}
			fmt.Fprintf(&b, "| **%s** | %s<br>`%s` | %s | %s |\n", Badge(l, c), mdEscape(Title(l, c.ID)), c.ID, mdEscape(c.Subject), strings.Join(ev, "<br>"))
		}
		b.WriteString("\n")
		for _, c := range g {
			if c.Status != Fail && c.Status != Warn {
				continue
			}
			fmt.Fprintf(&b, "- **%s `%s` %s** — %s: %s", Badge(l, c), c.ID, mdEscape(c.Subject), tr(l, "ui.why"), mdEscape(c.Explanation))
			if c.Fix != "" && c.Fix != "-" {
				fmt.Fprintf(&b, " %s: %s", tr(l, "ui.fix"), c.Fix)
			}
			b.WriteString("\n")
		}
		b.WriteString("\n")
	}
	fmt.Fprintf(&b, "## %s\n\n", tr(l, "ui.coverage"))
	for _, line := range coverageLines(r) {
		fmt.Fprintf(&b, "- %s\n", mdEscape(strings.TrimSpace(line)))
	}
	fmt.Fprintf(&b, "\n## %s\n\n", tr(l, "ui.risks"))
	for _, x := range r.Risks {
		fmt.Fprintf(&b, "- %s\n", mdEscape(x))
	}
	fmt.Fprintf(&b, "\n---\n\n%s\n\n%s\n\n%s\n", tr(l, "ui.nosecrets"), tr(l, "ui.art32"), tr(l, "ui.digest", r.Schema, JSONDigest(r)))
	_, err := w.Write(b.Bytes())
	return err
}

func yesNo(l string, b bool) string {
	if b {
		return tr(l, "ui.yes")
	}
	return tr(l, "ui.no")
}

// htmlTemplate is self-contained: inline CSS, no scripts, no fonts, no
// images, so the file can be attached to a contract annex and opened offline.
var htmlTemplate = template.Must(template.New("report").Funcs(template.FuncMap{
	"t":        func(l, k string, a ...any) string { return tr(l, k, a...) },
	"title":    Title,
	"area":     func(id string) string { return Area(id) },
	"lower":    strings.ToLower,
	"join":     strings.Join,
	"yesno":    yesNo,
	"src":      sourceText,
	"sum":      summaryText,
	"date":     dateText,
	"tool":     toolText,
	"headline": Headline,
	"badge":    Badge,
	"clean":    Clean,
	"coverage": coverageLines,
	"digest":   JSONDigest,
	"groups":   groups,
	"code":     codeSpans,
	"ev":       func(lang, s string) template.HTML { return evidenceHTML(lang, s) },
	"params":   cipherText,
}).Parse(`<!DOCTYPE html>
<html lang="{{.Header.Lang}}">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{t .Header.Lang "ui.title"}} — {{clean .Header.Host}} — {{.Header.Date}}</title>
<style>
body{font-family:"DejaVu Sans",Helvetica,Arial,sans-serif;font-size:13px;color:#1d2330;margin:0;background:#fff}
main{max-width:1100px;margin:0 auto;padding:28px 32px}
h1{font-size:22px;margin:0 0 2px}
h2{font-size:17px;border-bottom:2px solid #d8dde6;padding-bottom:4px;margin-top:28px}
h3{font-size:14px;margin:18px 0 6px;color:#38425a}
.sub{color:#5a6478;margin:0 0 16px}
table{border-collapse:collapse;width:100%;margin:4px 0 8px}
th,td{text-align:left;vertical-align:top;padding:5px 8px;border-bottom:1px solid #e4e7ee}
th{background:#f3f5f9;font-weight:600}
table.meta{width:auto}
table.checks{table-layout:fixed}
table.checks td{overflow-wrap:anywhere}
.cls-plaintext{color:#c62828;font-weight:700}.cls-encrypted{color:#2e7d32;font-weight:700}.cls-ram{color:#1565c0;font-weight:700}.cls-unknown{color:#b26a00;font-weight:700}
table.meta th{background:none;padding-left:0;color:#5a6478;font-weight:normal}
code,.ev{font-family:"DejaVu Sans Mono",Menlo,Consolas,monospace;font-size:11.5px}
.ev div{margin:1px 0;word-break:break-word}
.badge{display:inline-block;white-space:nowrap;min-width:38px;text-align:center;font-weight:700;font-size:11px;padding:2px 6px;border-radius:3px;color:#fff}
.PASS{background:#2e7d32}.WARN{background:#b26a00}.FAIL{background:#c62828}.SKIP{background:#78839a}.INCOMPLETE{background:#6a1b9a}
.cov li{margin:2px 0}.cov .no{color:#6a1b9a;font-weight:700}
.verdict{padding:12px 16px;border-radius:4px;margin:16px 0;font-size:15px;font-weight:600;color:#fff}
.note{color:#38425a;font-size:12px;margin-top:6px}
.fix{margin-top:4px;color:#38425a}
.fix b{color:#1d2330}
footer{margin-top:30px;padding-top:10px;border-top:1px solid #d8dde6;color:#5a6478;font-size:12px}
@media print{main{padding:0}.verdict,.badge{-webkit-print-color-adjust:exact;print-color-adjust:exact}}
</style>
</head>
<body><main>
{{- $l := .Header.Lang}}
<h1>{{t $l "ui.title"}}</h1>
<p class="sub">{{t $l "ui.subtitle"}}</p>
<table class="meta">
<tr><th>{{t $l "ui.host"}}</th><td><b>{{clean .Header.Host}}</b></td></tr>
<tr><th>{{t $l "ui.date"}}</th><td>{{date .}}</td></tr>
<tr><th>{{t $l "ui.source"}}</th><td>{{clean (src .)}}</td></tr>
{{- if .Header.Kernel}}<tr><th>{{t $l "ui.kernel"}}</th><td>{{clean .Header.Kernel}}</td></tr>{{end}}
<tr><th>{{t $l "ui.tool"}}</th><td>{{clean (tool .)}}</td></tr>
</table>
<div class="verdict {{.Summary.Verdict}}">{{t $l "ui.verdict"}}: {{clean (headline .)}}<div class="note" style="color:#fff">{{sum .}}</div></div>

<h2>{{t $l "ui.volumes"}}</h2>
{{- if not .Volumes}}<p>{{t $l "ui.novolumes"}}</p>{{else}}
<table>
<tr><th>{{t $l "ui.device"}}</th><th>{{t $l "ui.name"}}</th><th>{{t $l "ui.type"}}</th><th>{{t $l "ui.on"}}</th><th>{{t $l "ui.cipher"}}</th><th>{{t $l "ui.kdf"}}</th><th>{{t $l "ui.unlock"}}</th><th>{{t $l "ui.discard"}}</th><th>{{t $l "ui.protects"}}</th></tr>
{{- range .Volumes}}
<tr><td><code>{{clean .Device}}</code></td><td><code>{{clean .Name}}</code></td><td>{{.Type}}</td><td class="ev">{{clean .On}}</td><td class="ev">{{clean (params $l .)}}</td><td class="ev">{{range .KDF}}<div>{{.}}</div>{{end}}</td><td class="ev">{{range .Unlock}}<div>{{clean .}}</div>{{end}}</td><td>{{yesno $l .Discard}}</td><td class="ev">{{clean (join .Protects ", ")}}</td></tr>
{{- end}}
</table>{{end}}

<h2>{{t $l "ui.checks"}}</h2>
{{- range groups .}}
<h3>{{t $l (printf "ui.area.%s" (area (index . 0).ID))}}</h3>
<table class="checks">
<colgroup><col style="width:118px"><col style="width:220px"><col style="width:200px"><col></colgroup>
<tr><th>{{t $l "ui.status"}}</th><th>{{t $l "ui.check"}}</th><th>{{t $l "ui.subject"}}</th><th>{{t $l "ui.evidence"}}</th></tr>
{{- range .}}
<tr><td><span class="badge {{.Status}}">{{badge $l .}}</span></td><td>{{title $l .ID}}<br><code>{{.ID}}</code></td><td><code>{{clean .Subject}}</code></td>
<td><div class="ev">{{range .Evidence}}<div>{{ev $l .}}</div>{{end}}</div>
{{- if or (eq .Status "FAIL") (eq .Status "WARN")}}<div class="fix"><b>{{t $l "ui.why"}}:</b> {{.Explanation}}</div>{{if and .Fix (ne .Fix "-")}}<div class="fix"><b>{{t $l "ui.fix"}}:</b> {{code .Fix}}</div>{{end}}{{end}}</td></tr>
{{- end}}
</table>
{{- end}}

<h2>{{t $l "ui.coverage"}}</h2>
<ul class="cov">{{range coverage .}}<li>{{.}}</li>{{end}}</ul>

<h2>{{t $l "ui.risks"}}</h2>
<ul>{{range .Risks}}<li>{{code .}}</li>{{end}}</ul>
<footer><p>{{t $l "ui.nosecrets"}}</p><p>{{t $l "ui.art32"}}</p><p>{{t $l "ui.digest" .Schema (digest .)}}</p></footer>
</main></body></html>
`))

func renderHTML(w io.Writer, r *Report) error {
	var b bytes.Buffer
	if err := htmlTemplate.Execute(&b, r); err != nil {
		return fmt.Errorf("cannot render report as HTML: %w", err)
	}
	_, err := w.Write(b.Bytes())
	return err
}

// codeSpans escapes s and renders `backquoted` parts as <code>.
func codeSpans(s string) template.HTML {
	parts := strings.Split(Clean(s), "`")
	var b strings.Builder
	for i, p := range parts {
		if i%2 == 1 && i < len(parts)-1 {
			b.WriteString("<code>" + template.HTMLEscapeString(p) + "</code>")
			continue
		}
		if i%2 == 1 {
			b.WriteString("`")
		}
		b.WriteString(template.HTMLEscapeString(p))
	}
	return template.HTML(b.String())
}

// evidenceHTML escapes an evidence line and colours its storage verdict
// ("⇒ PLAINTEXT").
func evidenceHTML(lang, s string) template.HTML {
	out := template.HTMLEscapeString(Clean(s))
	for _, c := range []string{"plaintext", "encrypted", "ram", "unknown"} {
		word := template.HTMLEscapeString(tr(lang, "class."+c))
		out = strings.Replace(out, "⇒ "+word, `⇒ <span class="cls-`+c+`">`+word+`</span>`, 1)
	}
	return template.HTML(out)
}
