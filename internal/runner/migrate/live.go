package migrate

import (
	"context"
	"fmt"
	"slices"
	"time"

	"libvirt.org/go/libvirtxml"

	"github.com/cryptshift/cryptshift/internal/doors/files"
	"github.com/cryptshift/cryptshift/internal/doors/qemuimg"
	"github.com/cryptshift/cryptshift/internal/model/plan"
	"github.com/cryptshift/cryptshift/internal/runner/engine"
	"github.com/cryptshift/cryptshift/libvirt"
)

// Live mode, snapshot engine, per disk:
//
//	source chain B (plaintext)                        guest runs on
//	1. snapshot onto O (encrypted qcow2, backing B)   O → B   (B frozen)
//	2. copy B into T (LUKS), compare B with T         O → B
//	3. shallow block copy of O onto T itself, pivot   T       (B unused)
//	4. remove O, define the domain on T
//
// O is encrypted with the target's key and lives in the target pool, so
// nothing the guest writes during the migration lands on plaintext storage.
// Step 3 is correct because T holds exactly B's data (verified in step 2):
// a shallow copy writes only what O holds, and everywhere else T already
// shows what B showed. (The textbook variant pivots onto a second encrypted
// overlay on top of T and then commits it into T; libvirt 9.0 and qemu 7.2
// accept T itself as the shallow copy's destination, which gives the same
// disk with one block job, one overlay and one LUKS header fewer.)
// A copy that is aborted half-way leaves T equal to B outside O's
// clusters, so repeating it is as correct as the first attempt.

func (rt *runtime) snapshotStep(all []string) *Step {
	h := rt.h
	op := libvirt.Snapshot{Domain: h.Domain}
	for _, n := range all {
		op.Overlays = append(op.Overlays, libvirt.DiskSource{Disk: n, Source: rt.disk(n).OverlayPath})
	}
	s := &Step{Step: plan.Step{ID: "domain.snapshot", Action: "snapshot", Target: "domain " + h.Domain,
		Description: "freeze the source disks with one atomic external disk-only snapshot onto the encrypted overlays (quiesced through the guest agent when it answers); the guest keeps running",
		Command:     op.Argv()}, State: StateSnapshot, Disks: all}
	s.Run = func(ctx context.Context) error {
		if err := rt.mustRun(); err != nil {
			return err
		}
		live, err := rt.hv.DomainXML(h.Domain, libvirt.XMLFlags{})
		if err != nil {
			return err
		}
		on := 0
		for _, n := range all {
			d := rt.disk(n)
			chain := libvirt.Chain(libvirt.FindDisk(live, n))
			switch {
			case len(chain) > 0 && chain[0] == d.OverlayPath:
				on++
			case len(chain) == 0 || chain[0] != d.Top().Path:
				return fmt.Errorf("cannot snapshot disk %s: it now uses %v, not %s as planned; roll back with cryptshift rollback", n, chain, d.Top().Path)
			}
		}
		if on == len(all) {
			return nil // a crash after the snapshot, before its record
		}
		if on > 0 {
			return fmt.Errorf("cannot snapshot domain %s: only some disks are on their overlays (the snapshot is atomic, so something else changed them); roll back with cryptshift rollback", h.Domain)
		}
		snap := &libvirtxml.DomainSnapshot{Disks: &libvirtxml.DomainSnapshotDisks{}}
		for _, x := range live.Devices.Disks {
			if x.Target == nil {
				continue
			}
			sd := libvirtxml.DomainSnapshotDisk{Name: x.Target.Dev, Snapshot: "no"}
			if d := rt.disk(x.Target.Dev); d != nil {
				// Every disk is named: libvirt would give an unnamed one a
				// plaintext overlay next to its image.
				sd.Snapshot = "external"
				sd.Driver = &libvirtxml.DomainDiskDriver{Type: qemuimg.QCOW2}
				sd.Source = rt.t.OverlaySource(d, d.OverlayPath)
			}
			snap.Disks.Disks = append(snap.Disks.Disks, sd)
		}
		quiesced, reason := false, ""
		configured, connected := libvirt.AgentConnected(live)
		switch {
		case connected:
			if err := rt.hv.SnapshotDisks(h.Domain, snap, true); err == nil {
				quiesced = true
			} else {
				reason = "the guest agent could not freeze the guest's filesystems: " + err.Error()
			}
		case configured:
			reason = "the domain has a guest agent channel but no agent answers on it (install and start qemu-guest-agent in the guest)"
		default:
			reason = "the domain has no guest agent channel (org.qemu.guest_agent.0)"
		}
		if !quiesced {
			if err := rt.hv.SnapshotDisks(h.Domain, snap, false); err != nil {
				return err
			}
		}
		rt.event(map[string]any{"event": "snapshot", "quiesced": quiesced, "reason": reason})
		// libvirt 9.0 writes the overlay into the persistent definition
		// with an <encryption> that lacks engine='qemu', and then refuses to
		// start the domain ("Unexpected enum value 0 for
		// virStorageEncryptionEngine"). Defining it back lets libvirt fill
		// in the default, so the guest can restart mid-migration.
		if h.Persistent {
			dom, err := rt.hv.DomainXML(h.Domain, libvirt.XMLFlags{Inactive: true, Secure: true})
			if err != nil {
				return err
			}
			if err := rt.hv.DefineDomain(dom); err != nil {
				return err
			}
		}
		if quiesced {
			rt.note("snapshot quiesced through the guest agent: the frozen base is filesystem-consistent")
		} else {
			rt.note("snapshot not quiesced: " + reason + ". No data is lost by this (every write after the snapshot lands in the encrypted overlay and is merged into the target), but the frozen base alone is only crash-consistent, like a disk after a power cut")
		}
		return nil
	}
	return s
}

// targetDisk is the target as a block copy's destination.
func (rt *runtime) targetDisk(d *Disk) *libvirtxml.DomainDisk {
	format, src := rt.t.GuestDisk(d)
	return &libvirtxml.DomainDisk{Driver: &libvirtxml.DomainDiskDriver{Type: format}, Source: src}
}

func (rt *runtime) liveSwitchStep(d *Disk) *Step {
	h := rt.h
	s := &Step{Step: plan.Step{ID: d.Target + ".switch", Action: "switch", Target: d.TargetPath,
		Description: fmt.Sprintf("move the running guest's %s onto the target: shallow block copy of the encrypted overlay onto the verified target and pivot; remove the overlay and define the domain on the target", d.Target),
		Command: slices.Concat(
			libvirt.BlockCopy{Domain: h.Domain, Disk: d.Target, Dest: rt.t.Describe(d), Shallow: true}.Argv(),
			libvirt.Pivot{}.Argv(),
			files.Remove{Path: d.OverlayPath}.Argv(),
			libvirt.DefineDisks{Disks: []libvirt.DiskSource{{Disk: d.Target, Source: d.TargetPath}}}.Argv(),
		)}, Disk: d.Target, State: StateSwitched}
	s.Run = func(ctx context.Context) error {
		if err := rt.liveMove(ctx, d); err != nil {
			return err
		}
		// Define first: until then the persistent definition may still name
		// the overlay (a guest restarted now would lose what it wrote to
		// the target since the pivot), and the overlay must outlive every
		// reference to it.
		if err := rt.defineDisks([]string{d.Target}, rt.guestDisk); err != nil {
			return err
		}
		return rt.t.RemoveOverlay(ctx, d, d.OverlayPath)
	}
	return s
}

// liveMove drives one disk from its snapshot overlay onto the target. It
// reads where the guest is now (the live chain and any block job a crashed
// run left running in qemu) and continues from there.
func (rt *runtime) liveMove(ctx context.Context, d *Disk) error {
	h := rt.h
	if err := rt.mustRun(); err != nil {
		return err
	}
	for round := 0; round < 4; round++ {
		live, err := rt.hv.DomainXML(h.Domain, libvirt.XMLFlags{})
		if err != nil {
			return err
		}
		chain := libvirt.Chain(libvirt.FindDisk(live, d.Target))
		job, err := rt.hv.BlockJob(h.Domain, d.Target)
		if err != nil {
			return err
		}
		if len(chain) == 0 {
			return fmt.Errorf("cannot switch disk %s: it is gone from domain %s", d.Target, h.Domain)
		}
		switch top := chain[0]; {
		case top == d.TargetPath && len(chain) == 1 && job.Type == libvirt.JobNone:
			return nil
		case top == d.OverlayPath && job.Type == libvirt.JobCopy:
			if err := rt.waitPivot(ctx, d, "shallow copy"); err != nil {
				return err
			}
		case top == d.OverlayPath && job.Type == libvirt.JobNone:
			if err := rt.hv.BlockCopy(h.Domain, d.Target, rt.targetDisk(d), true); err != nil {
				return err
			}
			engine.Fault("job:" + d.Target + ":copy")
			if err := rt.waitPivot(ctx, d, "shallow copy"); err != nil {
				return err
			}
		default:
			return fmt.Errorf("cannot switch disk %s: the guest runs on %v with block job %q, which cryptshift did not expect; inspect with virsh domblklist %s and virsh blockjob, or roll back with cryptshift rollback", d.Target, chain, job.Type, h.Domain)
		}
	}
	return fmt.Errorf("cannot switch disk %s: it did not reach the target after several block jobs", d.Target)
}

func (rt *runtime) waitPivot(ctx context.Context, d *Disk, what string) error {
	rt.prog.Start(what+" "+d.Target, 0)
	err := rt.hv.WaitReady(ctx, rt.h.Domain, d.Target, func(cur, end uint64) {
		rt.prog.Update(int64(cur))
	})
	if err == nil {
		start := time.Now()
		err = rt.hv.Pivot(rt.h.Domain, d.Target)
		if err == nil && what == "shallow copy" {
			// libvirt's pivot returns when qemu has completed the job: it
			// drains the disk (holds the guest's requests on it), swaps the
			// node and lets the requests go on. The call's duration bounds
			// that hold; the vCPUs are never paused.
			took := time.Since(start)
			rt.event(map[string]any{"event": "pivot", "disk": d.Target, "ms": took.Milliseconds()})
			rt.note(fmt.Sprintf("%s: pivot onto the target took %s: the guest's I/O on the disk was held at most that long, its vCPUs kept running", d.Target, took.Round(time.Millisecond)))
		}
	}
	rt.prog.Done(err)
	return err
}

// Live mode, mirror engine: one full block copy per disk (qemu mirror) onto
// the target; when all are in sync the guest is paused (qemu flushes its
// caches on pause), each source is compared with its target, each job is
// pivoted, and the guest resumes. The pause lasts as long as the compare.

func (rt *runtime) mirrorStep(d *Disk) *Step {
	h := rt.h
	s := &Step{Step: plan.Step{ID: d.Target + ".mirror", Action: "copy", Target: d.TargetPath,
		Description: fmt.Sprintf("mirror %s of the running guest into the encrypted target (full block copy) until both are in sync", d.Target),
		Command:     libvirt.BlockCopy{Domain: h.Domain, Disk: d.Target, Dest: rt.t.Describe(d)}.Argv()},
		Disk: d.Target, State: StateCopied}
	s.Run = func(ctx context.Context) error {
		live, err := rt.hv.DomainXML(h.Domain, libvirt.XMLFlags{})
		if err != nil {
			return err
		}
		chain := libvirt.Chain(libvirt.FindDisk(live, d.Target))
		if len(chain) == 1 && chain[0] == d.TargetPath {
			return nil
		}
		job, err := rt.hv.BlockJob(h.Domain, d.Target)
		if err != nil {
			return err
		}
		if job.Type == libvirt.JobNone {
			if err := rt.hv.BlockCopy(h.Domain, d.Target, rt.targetDisk(d), false); err != nil {
				return err
			}
		} else if job.Type != libvirt.JobCopy {
			return fmt.Errorf("cannot mirror disk %s: a %s block job runs on it; wait for it or cancel it with virsh blockjob --abort", d.Target, job.Type)
		}
		rt.prog.Start("mirror "+d.Target, d.VirtualSize)
		err = rt.hv.WaitReady(ctx, h.Domain, d.Target, func(cur, end uint64) {
			rt.prog.Update(int64(cur) * d.VirtualSize / int64(max(end, 1)))
		})
		rt.prog.Done(err)
		return err
	}
	return s
}

func (rt *runtime) mirrorSwitchStep(all []string) *Step {
	h := rt.h
	cmd := libvirt.SuspendDomain{Domain: h.Domain}.Argv()
	for _, n := range all {
		d := rt.disk(n)
		cmd = append(cmd, qemuimg.CompareCmd(d.sourceImage(), qemuimg.Image{Path: d.TargetPath, Format: d.targetImageFormat(), Secret: placeholderKey}, true).Argv()...)
		cmd = append(cmd, libvirt.Pivot{Disk: n}.Argv()...)
	}
	cmd = append(cmd, libvirt.Argv(libvirt.ResumeDomain{Domain: h.Domain}, libvirt.DefineDisks{})...)
	s := &Step{Step: plan.Step{ID: "domain.verify-switch", Action: "verify-switch", Target: "domain " + h.Domain,
		Description: "pause the guest, compare every source with its decrypted target, pivot each mirror onto its target, resume the guest (the pause lasts as long as the compare), define the domain on the targets",
		Command:     cmd}, State: StateSwitched, Disks: all}
	s.Run = func(ctx context.Context) error {
		live, err := rt.hv.DomainXML(h.Domain, libvirt.XMLFlags{})
		if err != nil {
			return err
		}
		var pending []*Disk
		for _, n := range all {
			chain := libvirt.Chain(libvirt.FindDisk(live, n))
			if !(len(chain) == 1 && chain[0] == rt.disk(n).TargetPath) {
				pending = append(pending, rt.disk(n))
			}
		}
		st, err := rt.hv.DomainState(h.Domain)
		if err != nil {
			return err
		}
		pausedByUs := rt.pausedByUs
		if len(pending) > 0 && st == libvirt.Running {
			rt.event(map[string]any{"event": "paused"})
			if err := rt.hv.SuspendDomain(h.Domain); err != nil {
				return err
			}
			pausedByUs = true
		}
		start := time.Now()
		err = rt.verifyAndPivot(ctx, pending)
		if pausedByUs {
			if rerr := rt.hv.ResumeDomain(h.Domain); rerr != nil && err == nil {
				err = rerr
			} else if rerr == nil {
				rt.event(map[string]any{"event": "resumed"})
				rt.note(fmt.Sprintf("mirror engine: the guest was paused for %s while its disks were compared", time.Since(start).Round(time.Millisecond)))
			}
		}
		if err != nil {
			return err
		}
		return rt.defineDisks(all, rt.guestDisk)
	}
	return s
}

func (rt *runtime) verifyAndPivot(ctx context.Context, pending []*Disk) error {
	for _, d := range pending {
		if err := rt.hv.WaitReady(ctx, rt.h.Domain, d.Target, nil); err != nil {
			return err
		}
		dst, err := rt.t.Image(ctx, d)
		if err != nil {
			return err
		}
		rt.prog.Start("verify "+d.Target, 0)
		err = rt.img.Compare(ctx, d.sourceImage(), dst, true)
		rt.prog.Done(err)
		if err != nil {
			return err
		}
		rt.recordState(d.Target, StateVerified)
		if err := rt.hv.Pivot(rt.h.Domain, d.Target); err != nil {
			return err
		}
	}
	return nil
}

// mustRun checks that a live migration's guest still runs: block jobs and
// snapshots of a running guest are what the live steps are made of.
func (rt *runtime) mustRun() error {
	st, err := rt.hv.DomainState(rt.h.Domain)
	if err != nil {
		return err
	}
	if st != libvirt.Running && st != libvirt.Paused {
		return fmt.Errorf("domain %s is %s: the live migration's next step needs it running; start it (its disks are consistent: it boots from whatever images the migration reached) and continue with --resume, or roll back with cryptshift rollback", rt.h.Domain, st)
	}
	return nil
}
