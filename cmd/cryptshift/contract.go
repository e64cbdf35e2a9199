package main

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/cryptshift/cryptshift/internal/exitcode"
	"github.com/cryptshift/cryptshift/internal/hostview/blockstack"
	"github.com/cryptshift/cryptshift/internal/hostview/rootfs"
)

// The command-line contract every verb keeps (docs/cli.md): usage errors
// and inputs that cannot be read exit 2, whatever cobra or a package says.
// enforceContract applies it to the whole command tree, so a verb added
// later keeps it without doing anything; TestCLIContract checks it.

// inputAnnotation marks a flag whose value is a file cryptshift reads: a
// missing or unreadable one is a usage error (exit 2), checked before the
// verb runs. Mark flags with markInput.
const inputAnnotation = "cryptshift_input"

// markInput marks flags as input files (and completes them as files).
func markInput(fs *pflag.FlagSet, names ...string) {
	for _, n := range names {
		if err := fs.SetAnnotation(n, inputAnnotation, []string{"true"}); err != nil {
			panic("markInput: " + err.Error())
		}
	}
}

// enforceContract makes cobra's own argument errors usage errors, turns
// unknown verbs, unknown help topics and unknown shells into exit status
// 2, and checks every marked input file before a verb runs.
func enforceContract(root *cobra.Command) {
	root.InitDefaultHelpCmd()
	root.InitDefaultCompletionCmd()
	// "cryptshift" alone prints the help; "cryptshift frob" is a usage error.
	root.Args = func(cmd *cobra.Command, args []string) error {
		if len(args) > 0 {
			return unknownVerb(cmd, args[0])
		}
		return nil
	}
	root.RunE = func(cmd *cobra.Command, _ []string) error { return cmd.Help() }
	root.DisableFlagsInUseLine = true // "cryptshift" prints the help: no flags to show
	for _, c := range root.Commands() {
		switch c.Name() {
		case "help":
			c.RunE = helpTopic
			c.Run = nil
		case "completion":
			c.Args = func(cmd *cobra.Command, args []string) error {
				if len(args) > 0 {
					return usageError("cannot write completion for %q: the shells are bash, zsh, fish and powershell", args[0])
				}
				return nil
			}
			c.RunE = func(cmd *cobra.Command, _ []string) error {
				return usageError("cannot write completion: name the shell: cryptshift completion bash|zsh|fish|powershell")
			}
		}
	}
	walk(root, func(c *cobra.Command) {
		// pflag's "Flag --root has been deprecated" must not land in the
		// JSON on standard output.
		c.Flags().SetOutput(os.Stderr)
		args := c.Args
		if args == nil {
			return
		}
		c.Args = func(cmd *cobra.Command, a []string) error {
			err := args(cmd, a)
			if err != nil && exitcode.Of(err) == exitcode.Failure {
				// cobra.NoArgs says "unknown command": for a verb that
				// takes none, the argument is misplaced.
				if len(a) > 0 && strings.HasPrefix(err.Error(), "unknown command") {
					err = fmt.Errorf("cannot run %s: it takes no argument %q; give files with their flag (see cryptshift %s --help)", cmd.CommandPath(), a[0], cmd.Name())
				}
				return exitcode.With(exitcode.Usage, err)
			}
			return err
		}
	})
}

func walk(c *cobra.Command, f func(*cobra.Command)) {
	f(c)
	for _, s := range c.Commands() {
		walk(s, f)
	}
}

func unknownVerb(root *cobra.Command, name string) error {
	msg := fmt.Sprintf("unknown command %q", name)
	if s := root.SuggestionsFor(name); len(s) > 0 {
		msg += fmt.Sprintf("; did you mean %s?", strings.Join(s, " or "))
	}
	return usageError("%s; run cryptshift --help for the verbs", msg)
}

// helpTopic is "cryptshift help VERB", with an unknown verb a usage error.
func helpTopic(cmd *cobra.Command, args []string) error {
	c, rest, err := cmd.Root().Find(args)
	if c == nil || err != nil || len(rest) > 0 {
		return unknownVerb(cmd.Root(), strings.Join(args, " "))
	}
	c.InitDefaultHelpFlag()
	c.InitDefaultVersionFlag()
	return c.Help()
}

// checkInputs opens every marked input flag the user gave, so a missing or
// unreadable file is exit status 2 with the flag named, before any work.
func checkInputs(cmd *cobra.Command) error {
	var err error
	cmd.Flags().Visit(func(f *pflag.Flag) {
		if err != nil || f.Annotations[inputAnnotation] == nil {
			return
		}
		err = readable("--"+f.Name, f.Value.String())
	})
	return err
}

// readable says whether path is a file that can be opened for reading;
// what names it for the error (a flag, or "the journal").
func readable(what, path string) error {
	if path == "" {
		return usageError("cannot read %s: no file given", what)
	}
	f, err := os.Open(path)
	if err != nil {
		hint := "check the path"
		if errors.Is(err, os.ErrPermission) {
			hint = "run as a user who may read it (sudo)"
		}
		return usageError("cannot read %s %s: %w; %s", what, path, unwrapPath(err), hint)
	}
	defer f.Close()
	if fi, err := f.Stat(); err == nil && fi.IsDir() {
		return usageError("cannot read %s %s: it is a directory; give a file", what, path)
	}
	return nil
}

// unwrapPath drops the "open PATH:" prefix the message already carries.
func unwrapPath(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// readableRoot is the check of a --root DIR that verify, inspect, capture
// and doctor share: a missing directory, or one that is not a directory,
// cannot be checked (exit 2), before anything is read or created.
func readableRoot(verb, root string) error {
	fi, err := os.Stat(root)
	switch {
	case err != nil:
		return usageError("cannot %s %s: %w; check the --root path", verb, root, unwrapPath(err))
	case !fi.IsDir():
		return usageError("cannot %s %s: not a directory; give --root a directory (for a disk image: verify --image)", verb, root)
	}
	return nil
}

// hostRoot is readableRoot plus what verify needs of a host tree (a mount
// table with "/", the swap table, /sys/class/block): a tree without them
// is a usage error (exit 2), not a result about a host.
func hostRoot(verb, root string) error {
	if err := readableRoot(verb, root); err != nil {
		return err
	}
	sys, err := blockstack.Scan(rootfs.Dir(root))
	if err != nil {
		return exitcode.With(exitcode.Usage, fmt.Errorf("cannot %s %s: %w", verb, root, err))
	}
	if gaps := sys.HostTreeGaps(); len(gaps) > 0 {
		return usageError("cannot %s %s: not a host tree (no %s); fix: give the top of a tree made by `cryptshift capture` (the directory holding proc/, sys/ and etc/; for a test fixture its root/), or run %s on the host itself without --root",
			verb, root, strings.Join(gaps, ", no "), verb)
	}
	return nil
}
