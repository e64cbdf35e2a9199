package verify

import (
	"bytes"
	"encoding/json"
	"fmt"
	"html/template"
	"io"
	"strings"
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
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return fmt.Errorf("cannot render report as JSON: %w", err)
	}
	_, err = w.Write(append(b, '\n'))
	return err
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
	return tr(r.Header.Lang, "ui.source."+r.Header.Source) + " " + r.Header.Root
}

func summaryText(r *Report) string {
	s := r.Summary
	return tr(r.Header.Lang, "ui.summary", s.Pass, s.Warn, s.Fail, s.Skip)
}

// renderText prints one line per result, grouped by area; warnings and
// failures add their evidence and fix.
func renderText(w io.Writer, r *Report) error {
	l := r.Header.Lang
	var b bytes.Buffer
	fmt.Fprintf(&b, "%s\n", tr(l, "ui.title"))
	fmt.Fprintf(&b, "%s: %s   %s: %s   %s: %s\n", tr(l, "ui.host"), r.Header.Host, tr(l, "ui.date"), r.Header.Date, tr(l, "ui.source"), sourceText(r))
	fmt.Fprintf(&b, "%s: %s %s\n", tr(l, "ui.tool"), r.Header.Tool, r.Header.Version)
	fmt.Fprintf(&b, "%s: %s (%s)\n", tr(l, "ui.verdict"), tr(l, "ui.verdict."+string(r.Summary.Verdict)), summaryText(r))
	for _, g := range groups(r) {
		fmt.Fprintf(&b, "\n%s\n", tr(l, "ui.area."+Area(g[0].ID)))
		for _, c := range g {
			fmt.Fprintf(&b, "  %-4s  %-24s %s", c.Status, c.ID, c.Subject)
			if c.Status == Skip && len(c.Evidence) > 0 {
				fmt.Fprintf(&b, " — %s", c.Evidence[0])
			}
			b.WriteString("\n")
			if c.Status == Fail || c.Status == Warn {
				for _, ev := range c.Evidence {
					fmt.Fprintf(&b, "        %s\n", ev)
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
			fmt.Fprintf(&b, "  %s %s %s on %s: %s\n", v.Device, v.Name, v.Type, v.On, volumeParams(l, v))
		}
	}
	_, err := w.Write(b.Bytes())
	return err
}

func volumeParams(lang string, v Volume) string {
	if v.Cipher == "" {
		return v.Header
	}
	s := fmt.Sprintf("%s %d bit, %s", v.Cipher, v.KeySize, strings.Join(v.KDF, "; "))
	if v.Discard {
		s += ", discard"
	}
	return s
}

func mdEscape(s string) string {
	r := strings.NewReplacer("|", `\|`, "\n", " ", "<", "&lt;", ">", "&gt;")
	return r.Replace(s)
}

// renderMarkdown writes the Art. 32 evidence report as Markdown.
func renderMarkdown(w io.Writer, r *Report) error {
	l := r.Header.Lang
	var b bytes.Buffer
	fmt.Fprintf(&b, "# %s\n\n_%s_\n\n", tr(l, "ui.title"), tr(l, "ui.subtitle"))
	fmt.Fprintf(&b, "| | |\n|---|---|\n")
	fmt.Fprintf(&b, "| %s | %s |\n| %s | %s |\n| %s | %s |\n", tr(l, "ui.host"), mdEscape(r.Header.Host), tr(l, "ui.date"), r.Header.Date, tr(l, "ui.source"), mdEscape(sourceText(r)))
	if r.Header.Kernel != "" {
		fmt.Fprintf(&b, "| %s | %s |\n", tr(l, "ui.kernel"), mdEscape(r.Header.Kernel))
	}
	fmt.Fprintf(&b, "| %s | %s %s |\n\n", tr(l, "ui.tool"), r.Header.Tool, mdEscape(r.Header.Version))
	fmt.Fprintf(&b, "**%s: %s** (%s)\n\n", tr(l, "ui.verdict"), tr(l, "ui.verdict."+string(r.Summary.Verdict)), summaryText(r))
	fmt.Fprintf(&b, "## %s\n\n", tr(l, "ui.volumes"))
	if len(r.Volumes) == 0 {
		fmt.Fprintf(&b, "%s\n\n", tr(l, "ui.novolumes"))
	} else {
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s | %s | %s |\n|---|---|---|---|---|---|---|---|\n",
			tr(l, "ui.device"), tr(l, "ui.name"), tr(l, "ui.type"), tr(l, "ui.on"), tr(l, "ui.cipher"), tr(l, "ui.kdf"), tr(l, "ui.discard"), tr(l, "ui.protects"))
		for _, v := range r.Volumes {
			cipher := v.Header
			if v.Cipher != "" {
				cipher = fmt.Sprintf("%s, %d bit, sector %d", v.Cipher, v.KeySize, v.SectorSize)
			}
			fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s | %s | %s |\n", v.Device, mdEscape(v.Name), v.Type, mdEscape(v.On), mdEscape(cipher),
				mdEscape(strings.Join(v.KDF, "; ")), yesNo(l, v.Discard), mdEscape(strings.Join(v.Protects, ", ")))
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
			fmt.Fprintf(&b, "| **%s** | %s<br>`%s` | `%s` | %s |\n", c.Status, mdEscape(Title(l, c.ID)), c.ID, mdEscape(c.Subject), strings.Join(ev, "<br>"))
		}
		b.WriteString("\n")
		for _, c := range g {
			if c.Status != Fail && c.Status != Warn {
				continue
			}
			fmt.Fprintf(&b, "- **%s `%s` %s** — %s: %s", c.Status, c.ID, mdEscape(c.Subject), tr(l, "ui.why"), mdEscape(c.Explanation))
			if c.Fix != "" && c.Fix != "-" {
				fmt.Fprintf(&b, " %s: %s", tr(l, "ui.fix"), c.Fix)
			}
			b.WriteString("\n")
		}
		b.WriteString("\n")
	}
	fmt.Fprintf(&b, "## %s\n\n", tr(l, "ui.risks"))
	for _, x := range r.Risks {
		fmt.Fprintf(&b, "- %s\n", mdEscape(x))
	}
	fmt.Fprintf(&b, "\n---\n\n%s\n\n%s\n", tr(l, "ui.nosecrets"), tr(l, "ui.art32"))
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
	"t":      func(l, k string, a ...any) string { return tr(l, k, a...) },
	"title":  Title,
	"area":   func(id string) string { return Area(id) },
	"lower":  strings.ToLower,
	"join":   strings.Join,
	"yesno":  yesNo,
	"src":    sourceText,
	"sum":    summaryText,
	"groups": groups,
	"code":   codeSpans,
	"ev":     func(lang, s string) template.HTML { return evidenceHTML(lang, s) },
	"params": func(v Volume) string {
		if v.Cipher == "" {
			return v.Header
		}
		return fmt.Sprintf("%s, %d bit, sector %d", v.Cipher, v.KeySize, v.SectorSize)
	},
}).Parse(`<!DOCTYPE html>
<html lang="{{.Header.Lang}}">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{t .Header.Lang "ui.title"}} — {{.Header.Host}} — {{.Header.Date}}</title>
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
.badge{display:inline-block;min-width:38px;text-align:center;font-weight:700;font-size:11px;padding:2px 6px;border-radius:3px;color:#fff}
.PASS{background:#2e7d32}.WARN{background:#b26a00}.FAIL{background:#c62828}.SKIP{background:#78839a}
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
<tr><th>{{t $l "ui.host"}}</th><td><b>{{.Header.Host}}</b></td></tr>
<tr><th>{{t $l "ui.date"}}</th><td>{{.Header.Date}}</td></tr>
<tr><th>{{t $l "ui.source"}}</th><td>{{src .}}</td></tr>
{{- if .Header.Kernel}}<tr><th>{{t $l "ui.kernel"}}</th><td>{{.Header.Kernel}}</td></tr>{{end}}
<tr><th>{{t $l "ui.tool"}}</th><td>{{.Header.Tool}} {{.Header.Version}}</td></tr>
</table>
<div class="verdict {{.Summary.Verdict}}">{{t $l "ui.verdict"}}: {{t $l (printf "ui.verdict.%s" .Summary.Verdict)}}<div class="note" style="color:#fff">{{sum .}}</div></div>

<h2>{{t $l "ui.volumes"}}</h2>
{{- if not .Volumes}}<p>{{t $l "ui.novolumes"}}</p>{{else}}
<table>
<tr><th>{{t $l "ui.device"}}</th><th>{{t $l "ui.name"}}</th><th>{{t $l "ui.type"}}</th><th>{{t $l "ui.on"}}</th><th>{{t $l "ui.cipher"}}</th><th>{{t $l "ui.kdf"}}</th><th>{{t $l "ui.discard"}}</th><th>{{t $l "ui.protects"}}</th></tr>
{{- range .Volumes}}
<tr><td><code>{{.Device}}</code></td><td><code>{{.Name}}</code></td><td>{{.Type}}</td><td class="ev">{{.On}}</td><td class="ev">{{params .}}</td><td class="ev">{{range .KDF}}<div>{{.}}</div>{{end}}</td><td>{{yesno $l .Discard}}</td><td class="ev">{{join .Protects ", "}}</td></tr>
{{- end}}
</table>{{end}}

<h2>{{t $l "ui.checks"}}</h2>
{{- range groups .}}
<h3>{{t $l (printf "ui.area.%s" (area (index . 0).ID))}}</h3>
<table class="checks">
<colgroup><col style="width:64px"><col style="width:230px"><col style="width:200px"><col></colgroup>
<tr><th>{{t $l "ui.status"}}</th><th>{{t $l "ui.check"}}</th><th>{{t $l "ui.subject"}}</th><th>{{t $l "ui.evidence"}}</th></tr>
{{- range .}}
<tr><td><span class="badge {{.Status}}">{{.Status}}</span></td><td>{{title $l .ID}}<br><code>{{.ID}}</code></td><td><code>{{.Subject}}</code></td>
<td><div class="ev">{{range .Evidence}}<div>{{ev $l .}}</div>{{end}}</div>
{{- if or (eq .Status "FAIL") (eq .Status "WARN")}}<div class="fix"><b>{{t $l "ui.why"}}:</b> {{.Explanation}}</div>{{if and .Fix (ne .Fix "-")}}<div class="fix"><b>{{t $l "ui.fix"}}:</b> {{code .Fix}}</div>{{end}}{{end}}</td></tr>
{{- end}}
</table>
{{- end}}

<h2>{{t $l "ui.risks"}}</h2>
<ul>{{range .Risks}}<li>{{code .}}</li>{{end}}</ul>
<footer><p>{{t $l "ui.nosecrets"}}</p><p>{{t $l "ui.art32"}}</p><p>{{.Schema}}</p></footer>
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
	parts := strings.Split(s, "`")
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
	out := template.HTMLEscapeString(s)
	for _, c := range []string{"plaintext", "encrypted", "ram", "unknown"} {
		word := template.HTMLEscapeString(tr(lang, "class."+c))
		out = strings.Replace(out, "⇒ "+word, `⇒ <span class="cls-`+c+`">`+word+`</span>`, 1)
	}
	return template.HTML(out)
}
