package plan

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"reflect"
	"slices"
	"strconv"
	"strings"

	"github.com/cryptshift/cryptshift/internal/doors/clevis"
	"github.com/cryptshift/cryptshift/internal/doors/fs"
	"github.com/cryptshift/cryptshift/internal/doors/gpt"
	"github.com/cryptshift/cryptshift/luks"
	"github.com/cryptshift/cryptshift/lvm"
)

// Params are a step's typed parameters: exactly one field is set, and it
// names the operation. A step's command line is rendered from them by the
// package that owns the tool (luks, lvm, fs, or this package for the few
// actions cryptshift does itself, "cryptshift step ..."), and that one
// rendering is what the plan JSON shows, what the script runs and what
// apply executes. Nothing parses a command line back, except the
// "cryptshift step" verb that the script calls, with ParseInternal below.
type Params struct {
	Wipe         *fs.Wipe           `json:"wipe,omitempty"`
	Partition    *Partition         `json:"partition,omitempty"`
	Zero         *Zero              `json:"zero,omitempty"`
	Mkfs         *fs.Mkfs           `json:"mkfs,omitempty"`
	Mkswap       *fs.Mkswap         `json:"mkswap,omitempty"`
	PVCreate     *lvm.PVCreate      `json:"pvcreate,omitempty"`
	VGCreate     *lvm.VGCreate      `json:"vgcreate,omitempty"`
	VGExtend     *lvm.VGExtend      `json:"vgextend,omitempty"`
	VGReduce     *lvm.VGReduce      `json:"vgreduce,omitempty"`
	VGRemove     *lvm.VGRemove      `json:"vgremove,omitempty"`
	LVCreate     *lvm.LVCreate      `json:"lvcreate,omitempty"`
	LVExtend     *lvm.LVExtend      `json:"lvextend,omitempty"`
	LVRemove     *lvm.LVRemove      `json:"lvremove,omitempty"`
	LUKSFormat   *luks.Format       `json:"luksFormat,omitempty"`
	LUKSAddKey   *luks.AddKey       `json:"luksAddKey,omitempty"`
	LUKSOpen     *luks.Open         `json:"luksOpen,omitempty"`
	PlainOpen    *luks.OpenPlain    `json:"plainOpen,omitempty"`
	Close        *luks.Close        `json:"close,omitempty"`
	CryptResize  *luks.Resize       `json:"cryptResize,omitempty"`
	HeaderBackup *luks.HeaderBackup `json:"headerBackup,omitempty"`
	Mount        *fs.Mount          `json:"mount,omitempty"`
	Umount       *fs.Umount         `json:"umount,omitempty"`
	Swapon       *fs.Swapon         `json:"swapon,omitempty"`
	Swapoff      *fs.Swapoff        `json:"swapoff,omitempty"`
	Mkdir        *Mkdir             `json:"mkdir,omitempty"`
	KeyFile      *KeyFile           `json:"keyFile,omitempty"`
	Remove       *Remove            `json:"remove,omitempty"`
	WriteBlock   *Block             `json:"writeBlock,omitempty"`
	RestoreBlock *Block             `json:"restoreBlock,omitempty"`
	Initramfs    *Initramfs         `json:"initramfs,omitempty"`
	ClevisBind   *clevis.Bind       `json:"clevisBind,omitempty"`
	ClevisUnbind *clevis.Unbind     `json:"clevisUnbind,omitempty"`
}

// op returns the one operation p holds (a value of a door's type, or of
// this package's internal types), or an error if p holds none or several.
func (p *Params) op() (any, error) {
	if p == nil {
		return nil, errors.New("the step has no parameters")
	}
	var op any
	n := 0
	v := reflect.ValueOf(p).Elem()
	for i := 0; i < v.NumField(); i++ {
		if f := v.Field(i); !f.IsNil() {
			op = f.Elem().Interface()
			n++
		}
	}
	if n != 1 {
		return nil, fmt.Errorf("the step's parameters name %d operations, not one", n)
	}
	// A Block is written or restored: the field says which.
	switch {
	case p.WriteBlock != nil:
		op = writeBlock{*p.WriteBlock}
	case p.RestoreBlock != nil:
		op = restoreBlock{*p.RestoreBlock}
	}
	return op, nil
}

// Check reports whether p holds exactly one operation.
func (p *Params) Check() error {
	_, err := p.op()
	return err
}

// Command renders the command line of the operation p holds.
func (p *Params) Command() ([]string, error) {
	op, err := p.op()
	if err != nil {
		return nil, err
	}
	switch o := op.(type) {
	case luks.Op:
		return o.Argv(), nil
	case lvm.Op:
		return lvm.Argv(o), nil
	case fs.Op:
		return o.Argv(), nil
	case clevis.Op:
		return o.Argv(), nil
	case internalOp:
		return append([]string{"cryptshift", "step", o.verb()}, o.flags()...), nil
	}
	return nil, fmt.Errorf("cannot render a %T", op)
}

// SecretRefs lists the secrets the operation reads and on which
// descriptor: a luks key that is a named secret comes on stdin, a new key
// on fd 3.
func (p *Params) SecretRefs() []SecretRef {
	var refs []SecretRef
	add := func(fd int, k luks.Key) {
		if k.File == "" && k.Secret != "" {
			refs = append(refs, SecretRef{FD: fd, Secret: k.Secret})
		}
	}
	switch {
	case p == nil:
	case p.LUKSFormat != nil:
		add(0, p.LUKSFormat.Key)
	case p.LUKSAddKey != nil:
		add(0, p.LUKSAddKey.Key)
		add(3, p.LUKSAddKey.NewKey)
	case p.LUKSOpen != nil:
		add(0, p.LUKSOpen.Key)
	case p.CryptResize != nil:
		add(0, p.CryptResize.Key)
	case p.ClevisBind != nil:
		// clevis luks bind -k - reads a key that opens the volume now.
		refs = append(refs, SecretRef{FD: 0, Secret: SecretPassphrase})
	}
	return refs
}

// NewStep makes a step from its typed parameters: Command, Undo and
// Secrets are rendered from them.
func NewStep(s Step, params, undo *Params) Step {
	s.Params, s.UndoParams = params, undo
	if err := s.Render(); err != nil {
		panic("plan: " + err.Error()) // the planner made parameters no door renders
	}
	return s
}

// Render fills Command, Undo and Secrets from Params and UndoParams.
func (s *Step) Render() error {
	cmd, err := s.Params.Command()
	if err != nil {
		return fmt.Errorf("step %s: %w", s.ID, err)
	}
	s.Command, s.Secrets, s.Undo = cmd, s.Params.SecretRefs(), nil
	if s.UndoParams != nil {
		if s.Undo, err = s.UndoParams.Command(); err != nil {
			return fmt.Errorf("step %s: undo: %w", s.ID, err)
		}
	}
	return nil
}

// CheckRendering refuses a step whose command, undo command or secrets
// are not what its parameters render to: a plan file edited by hand (or
// made by another version) would otherwise run something other than what
// its reviewer read.
func (s Step) CheckRendering() error {
	r := s
	if err := r.Render(); err != nil {
		return err
	}
	switch {
	case !slices.Equal(r.Command, s.Command):
		return fmt.Errorf("step %s: its command %q is not what its parameters render (%q)", s.ID, strings.Join(s.Command, " "), strings.Join(r.Command, " "))
	case !slices.Equal(r.Undo, s.Undo):
		return fmt.Errorf("step %s: its undo command %q is not what its parameters render (%q)", s.ID, strings.Join(s.Undo, " "), strings.Join(r.Undo, " "))
	case !slices.Equal(r.Secrets, s.Secrets):
		return fmt.Errorf("step %s: the secrets it names are not the ones its parameters read", s.ID)
	}
	return nil
}

// The operations cryptshift carries out itself. The script form of a plan
// runs them as "cryptshift step VERB --flag value ..."; apply runs the same
// code in-process. flags renders them, ParseInternal reads them back.

type internalOp interface {
	verb() string
	flags() []string
}

// Partition writes a GPT (through go-diskfs); WipePartitions zeroes the
// first and last MiB of each new partition, so that no signature of what
// was there before shows through.
type Partition struct {
	Device         string          `json:"device"`
	TableUUID      string          `json:"tableUUID"`
	Partitions     []gpt.Partition `json:"partitions"`
	WipePartitions bool            `json:"wipePartitions,omitempty"`
}

// Zero writes zeros over the first Head and last Tail bytes of Device:
// the undo of a partition table or an LVM label on a disk that was blank.
type Zero struct {
	Device string `json:"device"`
	Head   int64  `json:"head"`
	Tail   int64  `json:"tail,omitempty"`
}

// Mkdir makes a directory (and its parents) with Mode.
type Mkdir struct {
	Path string `json:"path"`
	Mode uint32 `json:"mode"`
}

// KeyFile writes Bytes random bytes to Path, mode 0400, in a 0700
// directory, atomically.
type KeyFile struct {
	Path  string `json:"path"`
	Bytes int    `json:"bytes"`
}

// Remove removes a file cryptshift made.
type Remove struct {
	Path string `json:"path"`
}

// Block is the marked block of a layout in one of the new system's tab
// files (crypttab or fstab): written from the step's input, or taken out
// again.
type Block struct {
	File   string `json:"file"`
	Kind   string `json:"kind"`   // crypttab or fstab
	Layout string `json:"layout"` // whose block: BlockMarkers(Layout)
}

// Initramfs regenerates the initramfs of the system at Root (a notice if
// none is installed there yet).
type Initramfs struct {
	Root string `json:"root"`
}

func (p Partition) verb() string { return "partition" }
func (p Partition) flags() []string {
	args := []string{"--device", p.Device, "--table-uuid", p.TableUUID}
	if p.WipePartitions {
		args = append(args, "--wipe-partitions")
	}
	for _, q := range p.Partitions {
		args = append(args, "--partition", fmt.Sprintf("%d:start=%d,size=%d,type=%s,name=%s,uuid=%s", q.Number, q.Start, q.Size, q.Type, q.Name, q.UUID))
	}
	return args
}

func (z Zero) verb() string { return "zero" }
func (z Zero) flags() []string {
	args := []string{"--device", z.Device, "--head", strconv.FormatInt(z.Head, 10)}
	if z.Tail > 0 {
		args = append(args, "--tail", strconv.FormatInt(z.Tail, 10))
	}
	return args
}

func (m Mkdir) verb() string { return "mkdir" }
func (m Mkdir) flags() []string {
	return []string{"--mode", fmt.Sprintf("%04o", m.Mode), "--path", m.Path}
}

func (k KeyFile) verb() string { return "keyfile" }
func (k KeyFile) flags() []string {
	return []string{"--path", k.Path, "--bytes", strconv.Itoa(k.Bytes)}
}

func (r Remove) verb() string    { return "remove" }
func (r Remove) flags() []string { return []string{"--path", r.Path} }

func (b Block) flags() []string {
	return []string{"--file", b.File, "--block", b.Kind + ":" + b.Layout}
}

// writeBlock and restoreBlock are a Block's two operations.
type writeBlock struct{ Block }
type restoreBlock struct{ Block }

func (writeBlock) verb() string   { return "write-block" }
func (restoreBlock) verb() string { return "restore" }

func (i Initramfs) verb() string    { return "initramfs" }
func (i Initramfs) flags() []string { return []string{"--root", i.Root} }

// ParseInternal reads the arguments of "cryptshift step VERB ..." (after
// "step") into the operation's parameters. It is the inverse of the
// rendering above, for the script form of a plan.
func ParseInternal(args []string) (*Params, error) {
	if len(args) == 0 {
		return nil, errors.New("cannot run step: no action given")
	}
	fl := flag.NewFlagSet("step "+args[0], flag.ContinueOnError)
	fl.SetOutput(io.Discard)
	var (
		device, tableUUID, path, file, block, mode, root string
		parts                                            multi
		wipeParts                                        bool
		n                                                int
		head, tail                                       int64
	)
	fl.StringVar(&device, "device", "", "")
	fl.StringVar(&tableUUID, "table-uuid", "", "")
	fl.Var(&parts, "partition", "")
	fl.BoolVar(&wipeParts, "wipe-partitions", false, "")
	fl.StringVar(&path, "path", "", "")
	fl.IntVar(&n, "bytes", 0, "")
	fl.StringVar(&file, "file", "", "")
	fl.StringVar(&block, "block", "", "")
	fl.StringVar(&mode, "mode", "0700", "")
	fl.StringVar(&root, "root", "", "")
	fl.Int64Var(&head, "head", 0, "")
	fl.Int64Var(&tail, "tail", 0, "")
	if err := fl.Parse(args[1:]); err != nil {
		return nil, fmt.Errorf("cannot run step %s: %w", args[0], err)
	}
	if fl.NArg() > 0 {
		return nil, fmt.Errorf("cannot run step %s: unexpected argument %q", args[0], fl.Arg(0))
	}
	need := func(what, v string) error {
		if v == "" {
			return fmt.Errorf("cannot run step %s: --%s is required", args[0], what)
		}
		return nil
	}
	switch args[0] {
	case "partition":
		if err := need("device", device); err != nil {
			return nil, err
		}
		p := &Partition{Device: device, TableUUID: tableUUID, WipePartitions: wipeParts}
		for _, s := range parts {
			q, err := parsePartSpec(s)
			if err != nil {
				return nil, fmt.Errorf("cannot run step partition: %w", err)
			}
			p.Partitions = append(p.Partitions, q)
		}
		return &Params{Partition: p}, nil
	case "zero":
		return &Params{Zero: &Zero{Device: device, Head: head, Tail: tail}}, need("device", device)
	case "mkdir":
		m, err := strconv.ParseUint(mode, 8, 32)
		if err != nil {
			return nil, fmt.Errorf("cannot run step mkdir: bad mode %q", mode)
		}
		return &Params{Mkdir: &Mkdir{Path: path, Mode: uint32(m)}}, need("path", path)
	case "keyfile":
		return &Params{KeyFile: &KeyFile{Path: path, Bytes: n}}, need("path", path)
	case "remove":
		return &Params{Remove: &Remove{Path: path}}, need("path", path)
	case "write-block", "restore":
		kind, name, ok := strings.Cut(block, ":")
		if !ok || kind == "" || name == "" {
			return nil, fmt.Errorf("cannot run step %s: --block must be KIND:LAYOUT, not %q", args[0], block)
		}
		b := &Block{File: file, Kind: kind, Layout: name}
		if args[0] == "restore" {
			return &Params{RestoreBlock: b}, need("file", file)
		}
		return &Params{WriteBlock: b}, need("file", file)
	case "initramfs":
		return &Params{Initramfs: &Initramfs{Root: root}}, need("root", root)
	}
	return nil, fmt.Errorf("cannot run step %q: unknown action", args[0])
}

type multi []string

func (m *multi) String() string     { return strings.Join(*m, " ") }
func (m *multi) Set(v string) error { *m = append(*m, v); return nil }

// parsePartSpec reads "N:start=BYTES,size=BYTES,type=GUID,name=NAME,uuid=UUID".
func parsePartSpec(s string) (gpt.Partition, error) {
	var p gpt.Partition
	num, rest, ok := strings.Cut(s, ":")
	if !ok {
		return p, fmt.Errorf("partition spec %q lacks N:", s)
	}
	var err error
	if p.Number, err = strconv.Atoi(num); err != nil || p.Number < 1 {
		return p, fmt.Errorf("partition spec %q: bad number", s)
	}
	for _, kv := range strings.Split(rest, ",") {
		k, v, _ := strings.Cut(kv, "=")
		switch k {
		case "start":
			p.Start, err = strconv.ParseInt(v, 10, 64)
		case "size":
			p.Size, err = strconv.ParseInt(v, 10, 64)
		case "type":
			p.Type = v
		case "name":
			p.Name = v
		case "uuid":
			p.UUID = v
		default:
			return p, fmt.Errorf("partition spec %q: unknown key %q", s, k)
		}
		if err != nil {
			return p, fmt.Errorf("partition spec %q: %w", s, err)
		}
	}
	return p, nil
}
