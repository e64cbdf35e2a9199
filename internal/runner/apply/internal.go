package apply

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/cryptshift/cryptshift/internal/doors/chroot"
	"github.com/cryptshift/cryptshift/internal/doors/execx"
	"github.com/cryptshift/cryptshift/internal/doors/files"
	"github.com/cryptshift/cryptshift/internal/doors/gpt"
	"github.com/cryptshift/cryptshift/internal/doors/secrets"
	"github.com/cryptshift/cryptshift/internal/exitcode"
	"github.com/cryptshift/cryptshift/internal/model/plan"
)

// Step runs "cryptshift step ARGS": one of the actions cryptshift does
// itself, as the script form of a plan calls it. apply runs the same code
// in-process (internal), from the step's typed parameters.
func Step(ctx context.Context, run execx.Runner, args []string, stdin io.Reader, stdout io.Writer) error {
	if len(args) == 1 && args[0] == "recovery-key" {
		// The script's stand-in for apply's recovery key: printed once.
		k, err := secrets.NewRecoveryKey()
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(stdout, "%s\n", k)
		secrets.Wipe(k)
		return err
	}
	p, err := plan.ParseInternal(args)
	if err != nil {
		// Bad arguments to an internal step: a usage error (exit 2).
		return exitcode.With(exitcode.Usage, err)
	}
	if p.KeyFile != nil {
		// The script form knows no plan, so it cannot name the mapping
		// that belongs there; it still refuses a directory that is not
		// on encrypted storage at all: a script re-run after a reboot,
		// with the target no longer mounted, would otherwise write the
		// key onto the plaintext root.
		if err := keyDirCheck(filepath.Dir(p.KeyFile.Path)); err != nil {
			return fmt.Errorf("cannot write key file %s: %w; the key files belong on the encrypted root: open and mount it there (the script's earlier steps do) and run this step again", p.KeyFile.Path, err)
		}
	}
	return internal(ctx, run, p, stdin, stdout)
}

// internal carries out an operation cryptshift does itself. It reports
// false when p names none of those.
func internal(ctx context.Context, run execx.Runner, p *plan.Params, stdin io.Reader, stdout io.Writer) error {
	switch {
	case p.Partition != nil:
		t := p.Partition
		return gpt.Write(ctx, run, t.Device, t.TableUUID, t.Partitions, t.WipePartitions)
	case p.Zero != nil:
		return files.Zero(p.Zero.Device, p.Zero.Head, p.Zero.Tail)
	case p.Mkdir != nil:
		if err := os.MkdirAll(p.Mkdir.Path, os.FileMode(p.Mkdir.Mode)); err != nil {
			return fmt.Errorf("cannot create %s: %w", p.Mkdir.Path, err)
		}
		return nil
	case p.KeyFile != nil:
		return secrets.KeyFile(p.KeyFile.Path, p.KeyFile.Bytes)
	case p.Remove != nil:
		if err := os.Remove(p.Remove.Path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("cannot remove %s: %w", p.Remove.Path, err)
		}
		return nil
	case p.WriteBlock != nil:
		content, err := io.ReadAll(stdin)
		if err != nil {
			return fmt.Errorf("cannot read the block for %s: %w", p.WriteBlock.File, err)
		}
		return files.WriteBlock(p.WriteBlock.File, string(content))
	case p.RestoreBlock != nil:
		begin, end := plan.BlockMarkers(p.RestoreBlock.Layout)
		return files.RemoveBlock(p.RestoreBlock.File, begin, end)
	case p.Initramfs != nil:
		return Initramfs(ctx, run, p.Initramfs.Root, stdout)
	}
	return errNotInternal
}

var errNotInternal = errors.New("not an action cryptshift does itself")

// Initramfs regenerates the initramfs of the system at root, or says why
// it cannot yet: a freshly laid-out target root has no OS installed.
func Initramfs(ctx context.Context, run execx.Runner, root string, w io.Writer) error {
	op := chroot.UpdateInitramfs{Root: root}
	if _, err := os.Stat(filepath.Join(root, op.Tool())); err != nil {
		fmt.Fprintf(w, "notice: %s has no update-initramfs yet; after installing the system there, run: %s\n", root, chroot.Cmd(op))
		return nil
	}
	return chroot.Run(ctx, run, op)
}
