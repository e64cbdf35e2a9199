package apply

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	diskfs "github.com/diskfs/go-diskfs"
	"github.com/diskfs/go-diskfs/partition/gpt"
	"golang.org/x/sys/unix"

	"github.com/cryptshift/cryptshift/internal/doors/execx"
	"github.com/cryptshift/cryptshift/internal/doors/secrets"
	"github.com/cryptshift/cryptshift/internal/model/plan"
)

// Internal runs one of the actions cryptshift performs itself, named in a
// plan as "cryptshift step ACTION ...": apply calls it in-process, and the
// script form of a plan calls the same code through the CLI.
func Internal(ctx context.Context, run execx.Runner, args []string, stdin io.Reader, stdout io.Writer) error {
	if len(args) == 0 {
		return fmt.Errorf("cannot run step: no action given")
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
		return fmt.Errorf("cannot run step %s: %w", args[0], err)
	}
	switch args[0] {
	case "partition":
		return Partition(device, tableUUID, parts, wipeParts)
	case "keyfile":
		return KeyFile(path, n)
	case "zero":
		return Zero(device, head, tail)
	case "mkdir":
		m, err := strconv.ParseUint(mode, 8, 32)
		if err != nil {
			return fmt.Errorf("cannot run step mkdir: bad mode %q", mode)
		}
		return os.MkdirAll(path, os.FileMode(m))
	case "remove":
		if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("cannot remove %s: %w", path, err)
		}
		return nil
	case "write-block":
		content, err := io.ReadAll(stdin)
		if err != nil {
			return fmt.Errorf("cannot read the block for %s: %w", file, err)
		}
		return WriteBlock(file, string(content))
	case "restore":
		if kind, name, ok := strings.Cut(block, ":"); ok && kind != "" && name != "" {
			begin, end := plan.BlockMarkers(name)
			return RemoveBlock(file, begin, end)
		}
		return Restore(file)
	case "initramfs":
		return Initramfs(ctx, run, root, stdout)
	case "recovery-key":
		k, err := secrets.NewRecoveryKey()
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(stdout, "%s\n", k)
		secrets.Wipe(k)
		return err
	}
	return fmt.Errorf("cannot run step %q: unknown action", args[0])
}

type multi []string

func (m *multi) String() string     { return strings.Join(*m, " ") }
func (m *multi) Set(v string) error { *m = append(*m, v); return nil }

// partSpec is "N:start=BYTES,size=BYTES,type=GUID,name=NAME,uuid=UUID".
type partSpec struct {
	number      int
	start, size int64
	typ, name   string
	uuid        string
}

func parsePartSpec(s string) (partSpec, error) {
	var p partSpec
	num, rest, ok := strings.Cut(s, ":")
	if !ok {
		return p, fmt.Errorf("partition spec %q lacks N:", s)
	}
	var err error
	if p.number, err = strconv.Atoi(num); err != nil || p.number < 1 {
		return p, fmt.Errorf("partition spec %q: bad number", s)
	}
	for _, kv := range strings.Split(rest, ",") {
		k, v, _ := strings.Cut(kv, "=")
		switch k {
		case "start":
			p.start, err = strconv.ParseInt(v, 10, 64)
		case "size":
			p.size, err = strconv.ParseInt(v, 10, 64)
		case "type":
			p.typ = v
		case "name":
			p.name = v
		case "uuid":
			p.uuid = v
		default:
			return p, fmt.Errorf("partition spec %q: unknown key %q", s, k)
		}
		if err != nil {
			return p, fmt.Errorf("partition spec %q: %w", s, err)
		}
	}
	return p, nil
}

// Partition writes a GPT through go-diskfs and has the kernel re-read it.
// With wipe it zeroes the first and last MiB of every new partition, so no
// signature of what was there before shows through.
func Partition(device, tableUUID string, specs []string, wipe bool) error {
	d, err := diskfs.Open(device, diskfs.WithOpenMode(diskfs.ReadWrite))
	if err != nil {
		return fmt.Errorf("cannot open %s to partition it: %w", device, err)
	}
	defer d.Close()
	lss := int(d.LogicalBlocksize)
	table := &gpt.Table{LogicalSectorSize: lss, PhysicalSectorSize: int(d.PhysicalBlocksize), ProtectiveMBR: true, GUID: tableUUID}
	var ps []partSpec
	for _, s := range specs {
		p, err := parsePartSpec(s)
		if err != nil {
			return fmt.Errorf("cannot partition %s: %w", device, err)
		}
		if p.start%int64(lss) != 0 || p.size%int64(lss) != 0 {
			return fmt.Errorf("cannot partition %s: partition %d is not aligned to %d-byte sectors", device, p.number, lss)
		}
		ps = append(ps, p)
		table.Partitions = append(table.Partitions, &gpt.Partition{
			Index: p.number, Start: uint64(p.start / int64(lss)), End: uint64((p.start+p.size)/int64(lss) - 1),
			Size: uint64(p.size), Type: gpt.Type(p.typ), Name: p.name, GUID: p.uuid,
		})
	}
	if err := d.Partition(table); err != nil {
		return fmt.Errorf("cannot write the partition table of %s: %w", device, err)
	}
	if wipe {
		f, err := os.OpenFile(device, os.O_WRONLY, 0)
		if err != nil {
			return fmt.Errorf("cannot open %s: %w", device, err)
		}
		defer f.Close()
		zero := make([]byte, 1<<20)
		for _, p := range ps {
			for _, off := range []int64{p.start, p.start + p.size - int64(len(zero))} {
				if off < p.start {
					continue
				}
				if _, err := f.WriteAt(zero[:min(int64(len(zero)), p.size)], off); err != nil {
					return fmt.Errorf("cannot clear partition %d of %s: %w", p.number, device, err)
				}
			}
		}
		if err := f.Sync(); err != nil {
			return fmt.Errorf("cannot sync %s: %w", device, err)
		}
	}
	return waitForNodes(device, ps)
}

// waitForNodes waits until the kernel (devtmpfs) shows the partitions.
func waitForNodes(device string, ps []partSpec) error {
	if st, err := os.Stat(device); err == nil && st.Mode().IsRegular() {
		return nil // an image file has no partition nodes
	}
	deadline := time.Now().Add(10 * time.Second)
	for _, p := range ps {
		node := partitionNode(device, p.number)
		for {
			if _, err := os.Stat(node); err == nil {
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("cannot find %s after partitioning %s: the kernel did not create it (for a loop device, attach it with losetup --partscan)", node, device)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	return nil
}

func partitionNode(disk string, n int) string {
	if strings.HasPrefix(disk, "/dev/disk/by-") {
		return fmt.Sprintf("%s-part%d", disk, n)
	}
	if c := disk[len(disk)-1]; c >= '0' && c <= '9' {
		return fmt.Sprintf("%sp%d", disk, n)
	}
	return fmt.Sprintf("%s%d", disk, n)
}

// KeyFile writes n random bytes to path, mode 0400, in a directory of mode
// 0700. It writes a temporary file, syncs it and renames it into place, so
// the key file either exists whole or not at all: a crash can never leave
// a half-written key that a LUKS keyslot was made from.
func KeyFile(path string, n int) error {
	if n <= 0 {
		return fmt.Errorf("cannot create key file %s: size %d", path, n)
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("cannot create key directory %s: %w", dir, err)
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return fmt.Errorf("cannot restrict key directory %s: %w", dir, err)
	}
	if st, err := os.Stat(path); err == nil && st.Size() == int64(n) && st.Mode().Perm() == 0o400 {
		return nil // made by an earlier, interrupted run: keep it, a keyslot may use it
	}
	key := make([]byte, n)
	defer secrets.Wipe(key)
	if _, err := rand.Read(key); err != nil {
		return fmt.Errorf("cannot generate key file %s: %w", path, err)
	}
	return atomicWrite(path, key, 0o400)
}

func atomicWrite(path string, data []byte, mode os.FileMode) error {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("cannot write %s: %w", path, err)
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return fmt.Errorf("cannot write %s: %w", path, err)
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("cannot write %s: %w", path, err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("cannot write %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("cannot write %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("cannot write %s: %w", path, err)
	}
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("cannot sync %s: %w", dir, err)
	}
	defer d.Close()
	return d.Sync()
}

// Backup suffixes: the original file, or a marker saying there was none.
const (
	origSuffix   = ".cryptshift-orig"
	absentSuffix = ".cryptshift-absent"
)

// WriteBlock puts a marked block (first line "# BEGIN ...", last line
// "# END ...") into file, replacing an earlier copy of the same block or
// appending it. The first time, it keeps the original file (or a marker
// that there was none) next to it, for Restore.
func WriteBlock(file, block string) error {
	lines := strings.Split(strings.TrimRight(block, "\n"), "\n")
	if len(lines) < 2 || !strings.HasPrefix(lines[0], "# BEGIN ") || !strings.HasPrefix(lines[len(lines)-1], "# END ") {
		return fmt.Errorf("cannot write %s: the block is not marked with # BEGIN/# END lines", file)
	}
	begin, end := lines[0], lines[len(lines)-1]
	old, err := os.ReadFile(file)
	existed := err == nil
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("cannot read %s: %w", file, err)
	}
	if err := os.MkdirAll(filepath.Dir(file), 0o755); err != nil {
		return fmt.Errorf("cannot create %s: %w", filepath.Dir(file), err)
	}
	_, origErr := os.Stat(file + origSuffix)
	_, absentErr := os.Stat(file + absentSuffix)
	if origErr != nil && absentErr != nil { // no backup yet: this is the first edit
		if existed {
			if err := atomicWrite(file+origSuffix, old, 0o600); err != nil {
				return err
			}
		} else if err := atomicWrite(file+absentSuffix, nil, 0o600); err != nil {
			return err
		}
	}
	var out bytes.Buffer
	rest := string(old)
	if i := strings.Index(rest, begin+"\n"); i >= 0 {
		j := strings.Index(rest[i:], end+"\n")
		if j < 0 {
			return fmt.Errorf("cannot update %s: it has %q but not %q; fix the file by hand", file, begin, end)
		}
		out.WriteString(rest[:i])
		out.WriteString(block)
		out.WriteString(rest[i+j+len(end)+1:])
	} else {
		out.WriteString(rest)
		if rest != "" && !strings.HasSuffix(rest, "\n") {
			out.WriteByte('\n')
		}
		out.WriteString(block)
	}
	mode := os.FileMode(0o644)
	if st, err := os.Stat(file); err == nil {
		mode = st.Mode().Perm()
	}
	return atomicWrite(file, out.Bytes(), mode)
}

// RemoveBlock takes a marked block (WriteBlock's format) out of a file.
// Restore alone would put back the file as it was before cryptshift first
// edited it, which also drops every block written since (a migration's
// crypttab entries after an apply's, say). So the block is cut out; only
// when what remains is exactly the saved original (nothing else was added
// since) does Restore run, which also removes the backup it kept.
func RemoveBlock(file, begin, end string) error {
	old, err := os.ReadFile(file)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("cannot read %s: %w", file, err)
	}
	s := string(old)
	i := strings.Index(s, begin+"\n")
	if i < 0 {
		return nil // removed before a crash, or never written
	}
	j := strings.Index(s[i:], end+"\n")
	if j < 0 {
		return fmt.Errorf("cannot remove the block %q from %s: its end line %q is missing; fix the file by hand", begin, file, end)
	}
	rest := s[:i] + s[i+j+len(end)+1:]
	// WriteBlock separates a block from a file without a final newline
	// with one; take that back too.
	if orig, err := os.ReadFile(file + origSuffix); err == nil {
		if rest == string(orig) || (strings.TrimSuffix(rest, "\n") == string(orig) && !bytes.HasSuffix(orig, []byte("\n"))) {
			return Restore(file)
		}
	} else if _, err := os.Stat(file + absentSuffix); err == nil && rest == "" {
		return Restore(file)
	}
	mode := os.FileMode(0o644)
	if st, err := os.Stat(file); err == nil {
		mode = st.Mode().Perm()
	}
	return atomicWrite(file, []byte(rest), mode)
}

// Restore undoes WriteBlock: it puts the original file back, or removes
// the file if there was none.
func Restore(file string) error {
	if _, err := os.Stat(file + origSuffix); err == nil {
		if err := os.Rename(file+origSuffix, file); err != nil {
			return fmt.Errorf("cannot restore %s: %w", file, err)
		}
		return nil
	}
	if _, err := os.Stat(file + absentSuffix); err == nil {
		if err := os.Remove(file); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("cannot restore %s: %w", file, err)
		}
		return os.Remove(file + absentSuffix)
	}
	return nil // never edited
}

// Initramfs regenerates the initramfs of the system at root, or says why
// it cannot yet: a freshly laid-out target root has no OS installed.
func Initramfs(ctx context.Context, run execx.Runner, root string, w io.Writer) error {
	tool := filepath.Join(root, "usr/sbin/update-initramfs")
	if _, err := os.Stat(tool); err != nil {
		fmt.Fprintf(w, "notice: %s has no update-initramfs yet; after installing the system there, run: chroot %s update-initramfs -u -k all\n", root, root)
		return nil
	}
	var cmd execx.Cmd
	if root == "/" {
		cmd = execx.Cmd{Tool: "update-initramfs", Args: []string{"-u", "-k", "all"}}
	} else {
		cmd = execx.Cmd{Tool: "chroot", Args: []string{root, "update-initramfs", "-u", "-k", "all"}}
	}
	_, err := run.Run(ctx, cmd)
	return err
}

// Zero writes zeros over the first head and last tail bytes of a device:
// the undo of writing a partition table (primary and backup GPT) or an LVM
// label and metadata area onto a device that was blank. For a block device
// it then has the kernel re-read the (now absent) partition table.
func Zero(device string, head, tail int64) error {
	f, err := os.OpenFile(device, os.O_WRONLY, 0)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil // the device is gone: nothing of ours is on it
		}
		return fmt.Errorf("cannot open %s: %w", device, err)
	}
	defer f.Close()
	size, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		return fmt.Errorf("cannot size %s: %w", device, err)
	}
	zero := make([]byte, 1<<20)
	write := func(off, n int64) error {
		for n > 0 {
			c := min(n, int64(len(zero)))
			if _, err := f.WriteAt(zero[:c], off); err != nil {
				return fmt.Errorf("cannot clear %s: %w", device, err)
			}
			off, n = off+c, n-c
		}
		return nil
	}
	if err := write(0, min(head, size)); err != nil {
		return err
	}
	if tail > 0 {
		if err := write(max(size-tail, 0), min(tail, size)); err != nil {
			return err
		}
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("cannot sync %s: %w", device, err)
	}
	if st, err := f.Stat(); err == nil && st.Mode()&os.ModeDevice != 0 {
		// BLKRRPART; EINVAL for devices without partitions is fine.
		_ = unix.IoctlSetInt(int(f.Fd()), unix.BLKRRPART, 0)
	}
	return nil
}
