package main

import (
	"context"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/cryptshift/cryptshift/internal/doors/execx"
	"github.com/cryptshift/cryptshift/internal/planner"
	"github.com/cryptshift/cryptshift/internal/textfmt"
	"github.com/cryptshift/cryptshift/libvirt"
	"github.com/cryptshift/cryptshift/lvm"
	"github.com/cryptshift/cryptshift/playbooks"
)

// One vocabulary for every verb (docs/cli.md): the same name means the
// same thing everywhere, and the same short flag is the same long flag.
//
//   -o, --output   text|json (+ table as an alias of text, markdown|html, script|layout where they exist)
//   --root DIR     a host tree to read: / or a captured tree (verify, inspect, capture, doctor)
//   --target DIR   where the new system's root is mounted while applying (plan, apply, inventory)
//   -y, --yes      do not ask for confirmation
//   -c, --connect  libvirt URI or daemon socket
//   -f, --file     the layout file

// outputFlag adds -o/--output with its values (the first ones text and
// json where the verb has them); "table" stays an alias of text where it
// was the name.
func outputFlag(cmd *cobra.Command, p *string, def string, values []string, usage string) {
	var aliases []string
	if values[0] == "text" && (cmd.Name() == "plan" || cmd.Name() == "inventory") {
		aliases = []string{"table"}
	}
	choiceFlag(cmd, p, "output", "o", def, values, aliases, usage)
}

// targetFlag adds --target DIR (the mount target of the layout's root) and
// the deprecated --root that plan, apply and migrate-host used to call it: --root means
// a host tree to read everywhere else.
func targetFlag(f *pflag.FlagSet, p *string, usage string) {
	f.StringVar(p, "target", planner.DefaultRoot, usage)
	f.StringVar(p, "root", planner.DefaultRoot, "deprecated alias of --target")
	_ = f.MarkDeprecated("root", "use --target (--root names a host tree to read in verify, inspect and capture)")
}

func yesFlag(f *pflag.FlagSet, p *bool, usage string) {
	f.BoolVarP(p, "yes", "y", false, usage)
}

func connectFlag(f *pflag.FlagSet, p *string, usage string) {
	f.StringVarP(p, "connect", "c", "", usage)
}

// fdValue is a file descriptor flag whose unset state (-1) is not shown
// as a default in --help.
type fdValue struct{ fd *int }

func newFDValue(p *int) *fdValue { *p = -1; return &fdValue{p} }

func (v *fdValue) String() string {
	if v.fd == nil || *v.fd < 0 {
		return ""
	}
	return strconv.Itoa(*v.fd)
}

func (v *fdValue) Set(s string) error {
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 {
		return usageError("not a file descriptor number: %q", s)
	}
	*v.fd = n
	return nil
}

func (v *fdValue) Type() string { return "N" }

// completeValues makes the shell complete flag to one of values.
func completeValues(cmd *cobra.Command, flag string, values ...string) {
	if err := cmd.RegisterFlagCompletionFunc(flag, cobra.FixedCompletions(values, cobra.ShellCompDirectiveNoFileComp)); err != nil {
		panic(err)
	}
}

// completeExamples completes --example with the shipped layouts.
func completeExamples(cmd *cobra.Command) {
	completeValues(cmd, "example", append(playbooks.Examples(), "list")...)
}

// completeTo offers migrate's targets: the libvirt pools (when the daemon
// answers) and the volume groups (when lvm runs), each bounded in time so
// that a shell never waits long; nothing when neither is reachable.
func completeTo(connect *string) cobra.CompletionFunc {
	return func(cmd *cobra.Command, _ []string, toComplete string) ([]string, cobra.ShellCompDirective) {
		var out []string
		if !strings.HasPrefix(toComplete, "vg:") {
			if c, err := libvirt.Dial(*connect); err == nil {
				if names, err := c.PoolNames(); err == nil {
					for _, n := range names {
						out = append(out, "pool:"+n)
					}
				}
				c.Close()
			}
		}
		if !strings.HasPrefix(toComplete, "pool:") {
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
			defer cancel()
			if vgs, err := (lvm.LVM{Run: execx.Exec{}}).VGs(ctx); err == nil {
				for _, vg := range vgs {
					out = append(out, "vg:"+vg.Name)
				}
			}
		}
		if len(out) == 0 {
			out = []string{"pool:", "vg:"}
			return out, cobra.ShellCompDirectiveNoFileComp | cobra.ShellCompDirectiveNoSpace
		}
		return out, cobra.ShellCompDirectiveNoFileComp
	}
}

// newPalette is the colour and width style for people reading w.
func newPalette(w io.Writer) textfmt.Style { return textfmt.For(w) }

// choice is a string flag with a fixed set of values: --help shows them as
// the placeholder (--mode offline|live), the shell completes them, and any
// other value is a usage error. aliases are accepted but not offered.
type choice struct {
	p       *string
	values  []string
	aliases []string
}

func (c *choice) String() string { return *c.p }
func (c *choice) Type() string   { return strings.Join(c.values, "|") }

func (c *choice) Set(s string) error {
	for _, v := range append(append([]string{}, c.values...), c.aliases...) {
		if s == v {
			*c.p = s
			return nil
		}
	}
	n := len(c.values)
	return fmt.Errorf("use %s or %s", strings.Join(c.values[:n-1], ", "), c.values[n-1])
}

// choiceFlag adds a choice flag to cmd (short may be "").
func choiceFlag(cmd *cobra.Command, p *string, name, short, def string, values, aliases []string, usage string) {
	*p = def
	cmd.Flags().VarP(&choice{p: p, values: values, aliases: aliases}, name, short, usage)
	completeValues(cmd, name, values...)
}
