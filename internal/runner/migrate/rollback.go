package migrate

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"libvirt.org/go/libvirtxml"

	"github.com/cryptshift/cryptshift/internal/doors/execx"
	"github.com/cryptshift/cryptshift/internal/doors/progress"
	"github.com/cryptshift/cryptshift/internal/doors/qemuimg"
	"github.com/cryptshift/cryptshift/internal/exitcode"
	"github.com/cryptshift/cryptshift/internal/model/plan"
	"github.com/cryptshift/cryptshift/internal/runner/engine"
	"github.com/cryptshift/cryptshift/libvirt"
)

// RollbackOptions tune Rollback.
type RollbackOptions struct {
	Connect  string // override the journal's --connect
	Out      io.Writer
	Progress progress.Reporter

	Hypervisor Hypervisor
	Images     ImageTool
	Runner     execx.Runner // cryptsetup, lvm (vg: targets); nil: the real ones
	Root       string       // see Options.Root
}

// Rollback puts the guest of a migrate journal back on its original disks
// with all its data — including what it wrote during and after the
// migration — and removes the targets, overlays and keys the migration
// made. It works from any state except source-retired (the plaintext
// source no longer exists).
//
// A running guest stays running: its writes are moved back with the same
// block jobs the live migration uses. A shut-off guest's disks are merged
// or copied back with qemu-img.
func Rollback(ctx context.Context, journalPath string, o RollbackOptions) (err error) {
	defer recoverJournal(&err)
	l, err := engine.Read(journalPath)
	if err != nil {
		return err
	}
	h, err := readHeader(l)
	if err != nil {
		return err
	}
	opts := Options{Connect: h.Connect, Out: o.Out, Progress: o.Progress, Hypervisor: o.Hypervisor, Images: o.Images,
		Runner: o.Runner, Root: o.Root, ShutdownTimeout: 5 * time.Minute}
	if o.Connect != "" {
		opts.Connect = o.Connect
	}
	if opts.Out == nil {
		opts.Out = io.Discard
	}
	if opts.Progress == nil {
		opts.Progress = progress.Discard
	}
	rt, closeFn, err := newRuntime(&opts)
	if err != nil {
		return err
	}
	defer closeFn()
	j, err := engine.Open(journalPath)
	if err != nil {
		return err
	}
	defer j.Close()
	rt.j, rt.h = j, h
	if err := rt.replay(j.Log()); err != nil {
		return err
	}
	if j.Log().RolledBack {
		rt.printf("journal %s is already rolled back\n", journalPath)
		return nil
	}
	for _, d := range h.Disks {
		if rt.states[d.Target] == StateRetired {
			return exitcode.With(exitcode.Refused, fmt.Errorf("cannot roll back domain %s: the plaintext source of disk %s was retired (overwritten and removed); the encrypted target %s is the only copy of its data now", h.Domain, d.Target, d.TargetPath))
		}
	}
	t, err := newTarget(h.To, rt)
	if err != nil {
		return err
	}
	rt.t = t
	if problems := t.Prepare(ctx, h); len(problems) > 0 {
		return fmt.Errorf("cannot roll back domain %s: %s", h.Domain, strings.Join(problems, "; "))
	}
	rt.printf("rolling back the migration of %s\n", h.Domain)
	if _, err := j.Rollback(ctx, rt.undoSteps(), engine.Options{Out: rt.out}); err != nil {
		return fmt.Errorf("%w (cryptshift rollback %s)", err, journalPath)
	}
	rt.printf("domain %s is back on its original disks; the encrypted targets and their keys are removed\n", h.Domain)
	return nil
}

// undoSteps are the steps of a migrate rollback, run in this order by the
// engine. A migration is undone from where the guest is now, not step by
// step: each disk is brought back onto its source chain (the guest's
// writes since included), the original disk elements are defined again,
// a guest the migration shut down is started, and only then are the
// targets, overlays and keys the migration made removed. Each undo step
// looks before it acts, so a rollback that was interrupted runs again.
func (rt *runtime) undoSteps() []engine.Step {
	h := rt.h
	var steps []engine.Step
	add := func(id, desc string, interruptible bool, do func(ctx context.Context) error) {
		steps = append(steps, &undoStep{s: plan.Step{ID: id, Action: "rollback", Target: "domain " + h.Domain, Description: desc}, do: do, interruptible: interruptible})
	}
	add("rollback.resume-guest", "resume the guest if this migration paused it", false, func(ctx context.Context) error {
		st, err := rt.hv.DomainState(h.Domain)
		if err != nil {
			return err
		}
		if st == libvirt.Paused && rt.pausedByUs {
			if err := rt.hv.ResumeDomain(h.Domain); err != nil {
				return err
			}
			rt.event(map[string]any{"event": "resumed"})
		}
		return nil
	})
	for i := range h.Disks {
		d := &h.Disks[i]
		add("rollback.disk."+d.Target, fmt.Sprintf("bring disk %s back onto %s with everything the guest wrote", d.Target, d.Top().Path), true, func(ctx context.Context) error {
			st, err := rt.hv.DomainState(h.Domain)
			if err != nil {
				return err
			}
			if st == libvirt.Running || st == libvirt.Paused {
				err = rt.rollbackLive(ctx, d)
			} else {
				err = rt.rollbackOffline(ctx, d)
			}
			if err != nil {
				return fmt.Errorf("cannot roll back disk %s of domain %s: %w", d.Target, h.Domain, err)
			}
			rt.printf("%s: back on %s\n", d.Target, d.Top().Path)
			return nil
		})
	}
	add("rollback.define", "define the domain with its original disk elements", false, func(ctx context.Context) error {
		return rt.defineDisks(diskNames(h), rt.origDisk)
	})
	if h.Shutdown && h.WasRunning {
		// An offline migration that shut the guest down leaves it as it
		// found it.
		add("rollback.start", fmt.Sprintf("start domain %s again, as it was running before the migration", h.Domain), false, func(ctx context.Context) error {
			st, err := rt.hv.DomainState(h.Domain)
			if err != nil || st != libvirt.ShutOff {
				return err
			}
			return rt.hv.StartDomain(h.Domain)
		})
	}
	for i := range h.Disks {
		d := &h.Disks[i]
		add("rollback.remove."+d.Target, fmt.Sprintf("remove the target, overlays and keys this migration made for %s", d.Target), false, func(ctx context.Context) error {
			return rt.t.Remove(ctx, d)
		})
	}
	add("rollback.finish", "refresh the target", false, func(ctx context.Context) error { return rt.t.Finish(ctx) })
	return steps
}

// undoStep is one step of a migrate rollback.
type undoStep struct {
	s             plan.Step
	do            func(ctx context.Context) error
	interruptible bool
}

func (u *undoStep) Entry() plan.Step                   { return u.s }
func (u *undoStep) Do(ctx context.Context) error       { return u.do(ctx) }
func (u *undoStep) Done(context.Context) (bool, error) { return false, nil }
func (u *undoStep) Interruptible() bool                { return u.interruptible }

func (rt *runtime) origDisk(d *Disk) (*libvirtxml.DomainDisk, error) {
	var x libvirtxml.DomainDisk
	if err := x.Unmarshal(d.OrigXML); err != nil {
		return nil, fmt.Errorf("cannot parse the saved definition of disk %s: %w", d.Target, err)
	}
	return &x, nil
}

// sourceBacking is the original chain from layer from down, as the
// backing chain of a block copy's destination.
func (d *Disk) sourceBacking(from int) *libvirtxml.DomainDiskBackingStore {
	var top, cur *libvirtxml.DomainDiskBackingStore
	for _, l := range d.Chain[from:] {
		b := &libvirtxml.DomainDiskBackingStore{Format: &libvirtxml.DomainDiskFormat{Type: l.Format}, Source: layerSource(l)}
		if top == nil {
			top = b
		} else {
			cur.BackingStore = b
		}
		cur = b
	}
	return top
}

func layerSource(l Layer) *libvirtxml.DomainDiskSource {
	if l.Type == "block" {
		return &libvirtxml.DomainDiskSource{Block: &libvirtxml.DomainDiskSourceBlock{Dev: l.Path}}
	}
	return &libvirtxml.DomainDiskSource{File: &libvirtxml.DomainDiskSourceFile{File: l.Path}}
}

// rollbackLive moves a running guest's disk back onto its original chain,
// from wherever the migration (or an earlier rollback) left it.
//
//	O → B   (snapshot taken)        active commit of O into B, pivot
//	T       (switched: the guest    snapshot onto BO (encrypted, in the pool)
//	         writes the target)     to freeze T, then as below
//	BO → T                          copy T back into B, compare, shallow block
//	                                copy of BO onto B itself, pivot
//
// Any block job still running is cancelled first: cancelling leaves the
// guest where it is, with its data intact.
func (rt *runtime) rollbackLive(ctx context.Context, d *Disk) error {
	h := rt.h
	for round := 0; round < 8; round++ {
		job, err := rt.hv.BlockJob(h.Domain, d.Target)
		if err != nil {
			return err
		}
		if job.Type != libvirt.JobNone {
			if err := rt.hv.AbortJob(h.Domain, d.Target); err != nil {
				return err
			}
			continue
		}
		live, err := rt.hv.DomainXML(h.Domain, libvirt.XMLFlags{})
		if err != nil {
			return err
		}
		chain := libvirt.Chain(libvirt.FindDisk(live, d.Target))
		if len(chain) == 0 {
			return fmt.Errorf("the disk is gone from the domain")
		}
		switch top := chain[0]; {
		case top == d.Top().Path:
			return nil
		case top == d.OverlayPath:
			if err := rt.hv.BlockCommitActive(h.Domain, d.Target); err != nil {
				return err
			}
			if err := rt.waitPivot(ctx, d, "merge back"); err != nil {
				return err
			}
		case top == d.TargetPath:
			// The guest writes data the source does not have: freeze it on
			// an encrypted overlay and copy it back.
			if err := rt.t.OverlayStep(h, d, d.Target+".back-overlay", d.BackOverlayPath, Layer{Path: top, Format: d.targetImageFormat(), Type: "file"}).Run(ctx); err != nil {
				return err
			}
			snap := &libvirtxml.DomainSnapshot{Disks: &libvirtxml.DomainSnapshotDisks{}}
			for _, x := range live.Devices.Disks {
				if x.Target == nil {
					continue
				}
				sd := libvirtxml.DomainSnapshotDisk{Name: x.Target.Dev, Snapshot: "no"}
				if x.Target.Dev == d.Target {
					sd.Snapshot = "external"
					sd.Driver = &libvirtxml.DomainDiskDriver{Type: qemuimg.QCOW2}
					sd.Source = rt.t.OverlaySource(d, d.BackOverlayPath)
				}
				snap.Disks.Disks = append(snap.Disks.Disks, sd)
			}
			if err := rt.hv.SnapshotDisks(h.Domain, snap, false); err != nil {
				return err
			}
		case top == d.BackOverlayPath:
			frozen, err := rt.chainImage(ctx, d, chain[1:])
			if err != nil {
				return err
			}
			if err := rt.copyBack(ctx, d, frozen); err != nil {
				return err
			}
			// The destination is the original top image with its own
			// backing chain, now holding exactly what T holds.
			dest := &libvirtxml.DomainDisk{Driver: &libvirtxml.DomainDiskDriver{Type: d.Top().Format}, Source: layerSource(d.Top())}
			if len(d.Chain) > 1 {
				dest.BackingStore = d.sourceBacking(1)
			}
			if err := rt.hv.BlockCopy(h.Domain, d.Target, dest, true); err != nil {
				return err
			}
			if err := rt.waitPivot(ctx, d, "copy back"); err != nil {
				return err
			}
		default:
			return fmt.Errorf("the guest runs on %v, which this migration did not make; inspect it with virsh domblklist %s", chain, h.Domain)
		}
	}
	return fmt.Errorf("the disk did not get back to its source after several block jobs")
}

// chainImage builds how qemu-img opens a chain of images this migration
// made (an overlay over T, or T alone), each with its key.
func (rt *runtime) chainImage(ctx context.Context, d *Disk, chain []string) (qemuimg.Image, error) {
	if len(chain) == 0 {
		return qemuimg.Image{}, fmt.Errorf("empty backing chain")
	}
	switch chain[0] {
	case d.TargetPath:
		return rt.t.Image(ctx, d)
	case d.OverlayPath, d.BackOverlayPath:
		var backing *qemuimg.Image
		if len(chain) > 1 && chain[1] == d.TargetPath {
			b, err := rt.chainImage(ctx, d, chain[1:])
			if err != nil {
				return qemuimg.Image{}, err
			}
			backing = &b
		}
		return rt.t.OverlayImage(ctx, d, chain[0], backing)
	}
	return qemuimg.Image{}, fmt.Errorf("%s is not an image this migration made", chain[0])
}

// copyBack writes the guest-visible data of frozen into the original source
// chain (qemu-img writes every block of an existing image, zeros included,
// so stale data in the source cannot show through) and compares them.
func (rt *runtime) copyBack(ctx context.Context, d *Disk, frozen qemuimg.Image) error {
	rt.prog.Start("copy back "+d.Target, 0)
	err := rt.img.Convert(ctx, frozen, d.sourceImage())
	rt.prog.Done(err)
	if err != nil {
		return err
	}
	return rt.img.Compare(ctx, frozen, d.sourceImage(), false)
}

// rollbackOffline puts a shut-off guest's disk back on its source: an
// overlay over the untouched source is merged into it; anything else holds
// data the source may lack and is copied back in full.
func (rt *runtime) rollbackOffline(ctx context.Context, d *Disk) error {
	h := rt.h
	if !h.Persistent {
		return fmt.Errorf("domain %s is transient and shut off, so libvirt no longer knows it; its data is in %s (encrypted, key in libvirt secret %s); define the domain from %s and roll back again", h.Domain, d.TargetPath, d.SecretUUID, h.OrigXMLPath)
	}
	dom, err := rt.hv.DomainXML(h.Domain, libvirt.XMLFlags{Inactive: true})
	if err != nil {
		return err
	}
	x := libvirt.FindDisk(dom, d.Target)
	top := libvirt.SourcePath(x)
	switch top {
	case d.Top().Path:
		return nil
	case d.OverlayPath:
		// The overlay sits on the untouched source chain: merge it down.
		img, err := rt.t.OverlayImage(ctx, d, top, nil)
		if err != nil {
			return err
		}
		if err := rt.img.Commit(ctx, img); err != nil {
			return err
		}
	case d.TargetPath, d.BackOverlayPath:
		chain, err := rt.ourChain(ctx, d, top)
		if err != nil {
			return err
		}
		img, err := rt.chainImage(ctx, d, chain)
		if err != nil {
			return err
		}
		if err := rt.copyBack(ctx, d, img); err != nil {
			return err
		}
	default:
		return fmt.Errorf("its definition points at %s, which this migration did not make", top)
	}
	return rt.defineDisks([]string{d.Target}, rt.origDisk)
}

// ourChain is the chain below an image this migration made, as far as it
// consists of images it made (the persistent definition may not list it).
func (rt *runtime) ourChain(ctx context.Context, d *Disk, top string) ([]string, error) {
	switch top {
	case d.TargetPath:
		return []string{top}, nil
	case d.BackOverlayPath:
		return []string{top, d.TargetPath}, nil
	}
	return nil, fmt.Errorf("%s is not an image this migration made", top)
}
