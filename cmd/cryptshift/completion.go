package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/cobra/doc"
)

// Completion files as gen-docs names them; packaging/ installs them where
// bash-completion, zsh and fish look on Debian.
const (
	completionBash = "cryptshift.bash"
	completionZsh  = "_cryptshift"
	completionFish = "cryptshift.fish"
)

// newGenDocsCmd writes the man pages and shell completions from the command
// tree itself, so they always match the binary they ship with. The release
// tooling (packaging/) runs it; users get the same completions from
// "cryptshift completion SHELL".
func newGenDocsCmd() *cobra.Command {
	var manDir, compDir, date string
	cmd := &cobra.Command{
		Use:    "gen-docs --man DIR --completions DIR",
		Short:  "Write man pages and bash, zsh and fish completions (for packaging)",
		Hidden: true,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) > 0 || (manDir == "" && compDir == "") {
				return usageError("cannot generate docs: give --man DIR and/or --completions DIR, no arguments")
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			root := cmd.Root()
			if manDir != "" {
				// A fixed date keeps the package reproducible: the
				// release tooling passes the commit's date.
				when := time.Now().UTC()
				if date != "" {
					d, err := time.Parse("2006-01-02", date)
					if err != nil {
						return usageError("cannot generate man pages: --date %q is not YYYY-MM-DD", date)
					}
					when = d
				}
				if err := os.MkdirAll(manDir, 0o755); err != nil {
					return fmt.Errorf("cannot create %s: %w", manDir, err)
				}
				// No "Auto generated" history section naming the
				// build day.
				root.DisableAutoGenTag = true
				// --version is added lazily when a command runs;
				// the man page should list it.
				root.InitDefaultVersionFlag()
				hdr := &doc.GenManHeader{Section: "1", Date: &when,
					Source: "cryptshift " + version, Manual: "cryptshift manual"}
				preformatIndented(root)
				if err := doc.GenManTree(root, hdr, manDir); err != nil {
					return fmt.Errorf("cannot generate man pages in %s: %w", manDir, err)
				}
			}
			if compDir != "" {
				if err := writeCompletions(root, compDir); err != nil {
					return err
				}
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&manDir, "man", "", "write section 1 man pages into `DIR`")
	cmd.Flags().StringVar(&compDir, "completions", "", "write "+completionBash+", "+completionZsh+" and "+completionFish+" into `DIR`")
	cmd.Flags().StringVar(&date, "date", "", "`DATE` (YYYY-MM-DD) for the man pages' footer (default: today)")
	return cmd
}

// preformatIndented keeps the tables in the help texts (exit statuses,
// targets, modes) as they are in --help: the man pages go through Markdown
// (go-md2man), which would reflow lines indented by two spaces into one
// paragraph. Each run of indented lines becomes an indented code block.
func preformatIndented(c *cobra.Command) {
	var out []string
	lines := strings.Split(c.Long, "\n")
	for i, l := range lines {
		indented := strings.HasPrefix(l, " ") && strings.TrimSpace(l) != ""
		prevIndented := i > 0 && strings.HasPrefix(lines[i-1], " ") && strings.TrimSpace(lines[i-1]) != ""
		if indented && !prevIndented && len(out) > 0 && out[len(out)-1] != "" {
			out = append(out, "")
		}
		if !indented && prevIndented && l != "" {
			out = append(out, "")
		}
		if indented {
			l = "    " + l
		}
		out = append(out, l)
	}
	c.Long = strings.Join(out, "\n")
	for _, sub := range c.Commands() {
		preformatIndented(sub)
	}
}

func writeCompletions(root *cobra.Command, dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("cannot create %s: %w", dir, err)
	}
	gens := []struct {
		name string
		gen  func(f *os.File) error
	}{
		// V2 asks the binary itself (cryptshift __complete), so flag
		// values and subcommands stay right as the CLI changes.
		{completionBash, func(f *os.File) error { return root.GenBashCompletionV2(f, true) }},
		{completionZsh, func(f *os.File) error { return root.GenZshCompletion(f) }},
		{completionFish, func(f *os.File) error { return root.GenFishCompletion(f, true) }},
	}
	for _, g := range gens {
		p := filepath.Join(dir, g.name)
		f, err := os.Create(p)
		if err != nil {
			return fmt.Errorf("cannot write %s: %w", p, err)
		}
		err = g.gen(f)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return fmt.Errorf("cannot write %s: %w", p, err)
		}
	}
	return nil
}
