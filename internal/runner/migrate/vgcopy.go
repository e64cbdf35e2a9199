package migrate

import (
	"context"
	"fmt"
	"os"
	"strconv"

	"golang.org/x/sys/unix"

	"github.com/cryptshift/cryptshift/internal/doors/qemuimg"
	"github.com/cryptshift/cryptshift/internal/model/plan"
	"github.com/cryptshift/cryptshift/internal/runner/copier"
	"github.com/cryptshift/cryptshift/internal/runner/engine"
)

// Copy and verify onto a vg: target. The mapping is a plain block device
// that cryptshift can write itself, so a raw source (an image file or a
// block device) goes through the copier: it reads only allocated data,
// writes every block of the mapping (zeros included: a fresh LV holds
// whatever the disk held before, and the guest must read zeros where the
// source had them), hashes the source in the same pass and reads every
// chunk back through dm-crypt. Proof before the switch is then the SHA-256
// of the frozen source, hashed again, against the SHA-256 of the decrypted
// mapping, re-read from the disk (O_DIRECT). A qcow2 chain, which only qemu
// reads, is copied with qemu-img convert -n and compared with qemu-img
// compare after the mapping's page cache is dropped.

// copyChunkSize and copyCheckpointEvery tune the copier: its chunk size
// and how often it journals a checkpoint; 0 keeps its defaults (4 MiB,
// 1 GiB). Tests lower them with setCopyTuning so that a cut leaves more
// work than is in flight.
var (
	copyChunkSize       int
	copyCheckpointEvery int64
)

// setCopyTuning sets the copier's chunk size and checkpoint interval and
// returns the function that puts the previous values back.
func setCopyTuning(chunk int, checkpointEvery int64) (restore func()) {
	prevChunk, prevEvery := copyChunkSize, copyCheckpointEvery
	copyChunkSize, copyCheckpointEvery = chunk, checkpointEvery
	return func() { copyChunkSize, copyCheckpointEvery = prevChunk, prevEvery }
}

// rawSource reports whether the copier can read a disk's source itself.
func rawSource(d *Disk) bool { return len(d.Chain) == 1 && d.Chain[0].Format == qemuimg.Raw }

func (v *vgTarget) DataSteps(d *Disk) []*Step {
	rt := v.rt
	what := "the disk"
	if rt.h.Mode == ModeLive {
		what = "the frozen base (the guest writes to the encrypted overlay meanwhile)"
	}
	src := d.Top().Path
	size := strconv.FormatInt(d.VirtualSize, 10)
	var cp, vf *Step
	if rawSource(d) {
		cp = &Step{Step: plan.Step{ID: d.Target + ".copy", Action: "copy", Target: d.TargetPath,
			Description: fmt.Sprintf("copy %s of %s (%s) onto %s with cryptshift's copier: only allocated data is read, every block of the mapping is written, the source is hashed (SHA-256) and every chunk read back through dm-crypt", what, d.Target, chainString(d.Chain), d.TargetPath),
			Command:     []string{"cryptshift:copy", "--verify", src, d.TargetPath}},
			Disk: d.Target, State: StateCopied}
		cp.Run = func(ctx context.Context) error { return v.copyRaw(ctx, d) }
		vf = &Step{Step: plan.Step{ID: d.Target + ".verify", Action: "verify", Target: d.TargetPath,
			Description: fmt.Sprintf("hash the source of %s and the decrypted mapping, re-read from the disk: both SHA-256 must be equal (and equal to the copy's)", d.Target),
			Command:     []string{"cryptshift:sha256", "--bytes", size, src, d.TargetPath}},
			Disk: d.Target, State: StateVerified}
		vf.Run = func(ctx context.Context) error { return v.verifyRaw(ctx, d) }
		return []*Step{cp, vf}
	}
	dst := qemuimg.Image{Path: d.TargetPath, Format: qemuimg.Raw}
	cp = &Step{Step: plan.Step{ID: d.Target + ".copy", Action: "copy", Target: d.TargetPath,
		Description: fmt.Sprintf("copy %s of %s (%s) onto %s with qemu-img, writing every block", what, d.Target, chainString(d.Chain), d.TargetPath),
		Command:     qemuimg.ConvertCmd(d.sourceImage(), dst).Argv()},
		Disk: d.Target, State: StateCopied}
	cp.Run = func(ctx context.Context) error {
		img, err := v.Image(ctx, d)
		if err != nil {
			return err
		}
		rt.prog.Start("copy "+d.Target, 0)
		err = rt.img.Convert(ctx, d.sourceImage(), img)
		rt.prog.Done(err)
		return err
	}
	vf = &Step{Step: plan.Step{ID: d.Target + ".verify", Action: "verify", Target: d.TargetPath,
		Description: fmt.Sprintf("compare the source of %s with the decrypted mapping, byte for byte, re-read from the disk", d.Target),
		Command:     qemuimg.CompareCmd(d.sourceImage(), dst, false).Argv()},
		Disk: d.Target, State: StateVerified}
	vf.Run = func(ctx context.Context) error {
		img, err := v.Image(ctx, d)
		if err != nil {
			return err
		}
		// qemu-img reads through the page cache: drop what the copy left
		// there, so the compare decrypts what is on the disk.
		if err := syncAndDrop(img.Path); err != nil {
			return err
		}
		rt.prog.Start("verify "+d.Target, 0)
		err = rt.img.Compare(ctx, d.sourceImage(), img, false)
		rt.prog.Done(err)
		return err
	}
	return []*Step{cp, vf}
}

func (v *vgTarget) copyRaw(ctx context.Context, d *Disk) error {
	rt := v.rt
	img, err := v.Image(ctx, d)
	if err != nil {
		return err
	}
	opt := copier.Options{Verify: true, Progress: copier.Report(rt.prog), CheckpointEvery: copyCheckpointEvery, ChunkSize: copyChunkSize,
		// A checkpoint holds the copy's offset and SHA-256 state, never
		// source bytes: safe in the journal. Resume continues there.
		OnCheckpoint: func(c copier.Checkpoint) error {
			if err := rt.j.Event(event{Event: "copy-checkpoint", Disk: d.Target, Checkpoint: &c}); err != nil {
				return err
			}
			engine.Fault("copy:" + d.Target)
			return nil
		}}
	if c := rt.checkpoints[d.Target]; c != nil && c.Size == d.VirtualSize {
		opt.Checkpoint = c
		rt.printf("%s: continuing the copy at %s\n", d.Target, human(c.Offset))
	}
	rt.prog.Start("copy "+d.Target, d.VirtualSize)
	res, err := copier.Copy(ctx, d.Top().Path, img.Path, opt)
	rt.prog.Done(err)
	if err != nil {
		return err
	}
	if !res.Verified || res.Size != d.VirtualSize {
		return fmt.Errorf("cannot copy %s: the copier read back %d of %d bytes", d.Target, res.Size, d.VirtualSize)
	}
	rt.copySums[d.Target] = res.SHA256
	rt.event(map[string]any{"event": "copied", "disk": d.Target, "sha256": res.SHA256,
		"dataBytes": res.DataBytes, "zeroBytes": res.ZeroBytes, "holeBytes": res.HoleBytes})
	return nil
}

func (v *vgTarget) verifyRaw(ctx context.Context, d *Disk) error {
	rt := v.rt
	img, err := v.Image(ctx, d)
	if err != nil {
		return err
	}
	rt.prog.Start("verify "+d.Target, 0)
	src, err := copier.Hash(ctx, d.Top().Path, d.VirtualSize, copier.HashOptions{})
	if err == nil {
		var dst string
		dst, err = copier.Hash(ctx, img.Path, d.VirtualSize, copier.HashOptions{})
		switch {
		case err != nil:
		case rt.copySums[d.Target] != "" && rt.copySums[d.Target] != src:
			err = fmt.Errorf("cannot verify %s: the source %s changed after it was copied (SHA-256 %s, copied %s); something else writes it", d.Target, d.Top().Path, src, rt.copySums[d.Target])
		case src != dst:
			err = fmt.Errorf("cannot verify %s: the decrypted %s (SHA-256 %s) differs from the source %s (SHA-256 %s)", d.Target, d.TargetPath, dst, d.Top().Path, src)
		}
	}
	rt.prog.Done(err)
	if err != nil {
		return err
	}
	rt.event(map[string]any{"event": "verified", "disk": d.Target, "sha256": src})
	rt.note(fmt.Sprintf("%s: the source and the decrypted %s have the same SHA-256 %s", d.Target, d.TargetPath, src))
	return nil
}

// syncAndDrop writes back and evicts a block device's cached pages
// (POSIX_FADV_DONTNEED drops clean pages of the device's page cache).
func syncAndDrop(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("cannot open %s: %w", path, err)
	}
	defer f.Close()
	if err := unix.Fdatasync(int(f.Fd())); err != nil {
		return fmt.Errorf("cannot sync %s: %w", path, err)
	}
	if err := unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED); err != nil {
		return fmt.Errorf("cannot drop the cache of %s: %w", path, err)
	}
	return nil
}
