package verify

import (
	"bytes"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// externalRef matches whatever would make a browser fetch something: a
// src or href attribute, a stylesheet link, a CSS import or url().
var externalRef = regexp.MustCompile(`(?i)\b(src|href|srcset|action|poster)\s*=|<link\b|@import|url\(`)

// TestHTMLReportIsSelfContained: the HTML report of every fixture, in both
// languages, is one file a browser shows without fetching anything (an
// auditor opens it offline, from a mail attachment), with its style inline.
func TestHTMLReportIsSelfContained(t *testing.T) {
	for _, fx := range fixtures {
		for _, lang := range []string{"en", "de"} {
			r, err := Run(Options{Root: filepath.Join(fixtureDir, fx.name, "root"), Version: "test", Lang: lang})
			if err != nil {
				t.Fatal(err)
			}
			var b bytes.Buffer
			if err := Render(&b, r, "html"); err != nil {
				t.Fatal(err)
			}
			html := b.String()
			if m := externalRef.FindStringIndex(html); m != nil {
				t.Errorf("%s (%s): the report refers to something outside it: %q", fx.name, lang, html[max(0, m[0]-40):min(len(html), m[1]+40)])
			}
			if !strings.HasPrefix(html, "<!DOCTYPE html>") || !strings.Contains(html, "<style>") || !strings.Contains(html, `<html lang="`+lang+`"`) {
				t.Errorf("%s (%s): not a standalone HTML document with inline style in its language: %.200q", fx.name, lang, html)
			}
		}
	}
}
