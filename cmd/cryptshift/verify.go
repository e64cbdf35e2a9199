package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/cryptshift/cryptshift/internal/audit/verify"
	"github.com/cryptshift/cryptshift/internal/exitcode"
	"github.com/cryptshift/cryptshift/internal/textfmt"
)

// paintReport colours the text report's badges (FAIL red, WARN yellow,
// PASS green) and its result line, in either language, when st allows;
// otherwise it returns text unchanged.
func paintReport(text []byte, r *verify.Report, lang string, st textfmt.Style) []byte {
	if !st.Color {
		return text
	}
	paint := map[verify.Status]func(string) string{verify.Fail: st.Fail, verify.Warn: st.Warn, verify.Pass: st.Pass,
		verify.Skip: st.Dim, verify.Incomplete: st.Warn}
	badges := map[string]func(string) string{}
	for _, c := range r.Checks {
		if f := paint[c.Status]; f != nil {
			badges["  "+verify.Badge(lang, c)+" "] = f
		}
	}
	lines := strings.SplitAfter(string(text), "\n")
	for i, l := range lines {
		for b, f := range badges {
			if strings.HasPrefix(l, b) {
				lines[i] = "  " + f(strings.TrimSpace(b)) + l[len(b)-1:]
				break
			}
		}
		if i < 8 && (strings.HasPrefix(l, "Result: ") || strings.HasPrefix(l, "Ergebnis: ")) {
			head, rest, _ := strings.Cut(l, ": ")
			verdict, tail, _ := strings.Cut(rest, ":")
			f := st.Pass
			switch {
			case r.Summary.Fail > 0:
				f = st.Fail
			case r.Incomplete() || r.Summary.Warn > 0:
				f = st.Warn
			}
			if tail != "" {
				tail = ":" + tail
			}
			lines[i] = head + ": " + f(verdict) + tail
		}
	}
	return []byte(strings.Join(lines, ""))
}

type verifyOptions struct {
	root, image, output, lang, date, outFile string
	strict                                   bool
}

func newVerifyCmd() *cobra.Command {
	var o verifyOptions
	cmd := &cobra.Command{
		Use:   "verify",
		Short: "Prove that no data lands on unencrypted storage, and write the Art. 32 evidence report",
		Long: `verify checks every place where data of this host and its libvirt guests can
land: swap, hibernation, /tmp, /var/tmp, /dev/shm, core dumps, kdump, logs,
guest disks and their backing chains, managed saves, memory snapshots,
storage pools and leftover images, LVM snapshots, the Postfix queue and
spool, Dovecot's mail store and indexes, content filters, key files, LUKS
header backups and the LUKS parameters themselves.

Each path is traced through mountinfo and /sys down to the disks (loop
files, LVM, dm-crypt, partitions, zram): swap on an LV inside an encrypted
PV is encrypted, whatever other auditors say.

Every result has a stable id, a status (PASS, WARN, FAIL, SKIP), the
evidence, why it matters and the fix. A fact that cannot be read gives SKIP
or WARN, never PASS or FAIL.

--root reads a captured tree (cryptshift capture) instead of this system;
--image reads a guest's raw disk image offline.`,
		Example: `  sudo cryptshift verify
  sudo cryptshift verify -o html --lang de --out nachweis.html
  cryptshift verify --root ./mx1-capture -o json
  cryptshift verify --image /var/lib/libvirt/images/mx.raw`,
		Args:    cobra.NoArgs,
		PreRunE: func(cmd *cobra.Command, _ []string) error { return o.validate(cmd.Flags().Changed("root")) },
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runVerify(cmd, o)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.root, "root", "/", "`DIR` to verify: / or a tree made by cryptshift capture")
	f.StringVar(&o.image, "image", "", "verify a guest's raw disk `IMAGE` offline (its fstab, crypttab, swap, tmp, dumps, mail paths)")
	outputFlag(cmd, &o.output, "text", []string{"text", "json", "markdown", "html"}, "report format")
	choiceFlag(cmd, &o.lang, "lang", "", "en", []string{"en", "de"}, nil, "report language")
	f.StringVar(&o.date, "date", "", "report `DATE` (YYYY-MM-DD) instead of today's or the capture's")
	f.StringVar(&o.outFile, "out", "", "write the report to `FILE` instead of standard output")
	f.BoolVar(&o.strict, "strict", false, "exit 1 on warnings too")
	markInput(f, "image")
	_ = cmd.MarkFlagDirname("root")
	return cmd
}

// validate checks the flags alone (usage errors, exit 2).
func (o verifyOptions) validate(rootGiven bool) error {
	switch o.output {
	case "text", "json", "markdown", "html":
	default:
		return usageError("unknown output format %q: use text, json, markdown or html", o.output)
	}
	if !verify.Supported(o.lang) {
		return usageError("unknown language %q: use en or de", o.lang)
	}
	if _, err := time.Parse(time.DateOnly, o.date); o.date != "" && err != nil {
		return usageError("bad --date %q: use a real day as YYYY-MM-DD", o.date)
	}
	if o.image != "" && rootGiven {
		return usageError("--root and --image exclude each other")
	}
	return nil
}

func runVerify(cmd *cobra.Command, o verifyOptions) error {
	if err := o.validate(cmd.Flags().Changed("root")); err != nil {
		return err
	}
	root := o.root
	if o.image != "" {
		root = ""
	} else if err := hostRoot("verify", root); err != nil {
		return err
	}
	r, err := verify.Run(verify.Options{Root: root, Image: o.image, Lang: o.lang, Date: o.date, Version: version, Commit: buildCommit()})
	if err != nil {
		// Nothing could be checked: no report, exit status 2.
		return exitcode.With(exitcode.Usage, err)
	}
	var buf bytes.Buffer
	if err := verify.Render(&buf, r, o.output); err != nil {
		return err
	}
	if o.outFile != "" {
		if err := os.WriteFile(o.outFile, buf.Bytes(), 0o644); err != nil {
			return fmt.Errorf("cannot write report %s: %w", o.outFile, err)
		}
	} else {
		out := buf.Bytes()
		if o.output == "text" {
			out = paintReport(out, r, o.lang, textfmt.For(cmd.OutOrStdout()))
		}
		if _, err := cmd.OutOrStdout().Write(out); err != nil {
			return err
		}
	}
	s := r.Summary
	switch {
	case s.Fail > 0:
		return exitcode.With(exitcode.Failure, errors.New(failedLine(o.lang, false, s.Fail, s.Warn)))
	case r.Incomplete():
		return exitcode.With(exitcode.Usage, fmt.Errorf("cannot verify completely: %s (see the report's coverage); no PASS without evidence", verify.Headline(r)))
	case r.Failed(o.strict):
		return exitcode.With(exitcode.Failure, errors.New(failedLine(o.lang, true, 0, s.Warn)))
	}
	return nil
}

// failedLine is the verdict verify leaves on standard error, in the
// report's language and its words (a FAIL is a "Mangel" in the German
// report): "verification failed: 3 failures, 1 warning (see the report)".
func failedLine(lang string, strict bool, fail, warn int) string {
	type words struct{ failOne, failMany, warnOne, warnMany, failed, strict, see string }
	w := map[string]words{
		"en": {"failure", "failures", "warning", "warnings", "verification failed", "verification failed with --strict", "see the report"},
		"de": {"Mangel", "Mängel", "Warnung", "Warnungen", "Prüfung nicht bestanden", "Prüfung mit --strict nicht bestanden", "siehe den Bericht"},
	}[lang]
	if w.failOne == "" {
		return failedLine("en", strict, fail, warn)
	}
	var counts []string
	if fail > 0 {
		counts = append(counts, textfmt.Plural(fail, w.failOne, w.failMany))
	}
	if warn > 0 || fail == 0 {
		counts = append(counts, textfmt.Plural(warn, w.warnOne, w.warnMany))
	}
	head := w.failed
	if strict {
		head = w.strict
	}
	return fmt.Sprintf("%s: %s (%s)", head, strings.Join(counts, ", "), w.see)
}
