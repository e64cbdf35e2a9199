package libvirt

import (
	"context"
	"fmt"
	"time"

	lv "github.com/digitalocean/go-libvirt"
	"libvirt.org/go/libvirtxml"
)

// SnapshotDisks takes an external, disk-only snapshot of a running domain
// onto overlays that already exist (REUSE_EXT: cryptshift creates them, so
// they can be encrypted and live where it chooses). NO_METADATA keeps
// libvirt from recording a snapshot object that would later block undefine
// and confuse snapshot-revert; ATOMIC makes all disks switch or none.
// quiesce asks the guest agent to freeze filesystems around it.
func (c *Conn) SnapshotDisks(name string, snap *libvirtxml.DomainSnapshot, quiesce bool) error {
	d, err := c.lookup(name)
	if err != nil {
		return err
	}
	doc, err := snap.Marshal()
	if err != nil {
		return fmt.Errorf("cannot encode snapshot of domain %q: %w", name, err)
	}
	flags := lv.DomainSnapshotCreateDiskOnly | lv.DomainSnapshotCreateReuseExt |
		lv.DomainSnapshotCreateNoMetadata | lv.DomainSnapshotCreateAtomic
	if quiesce {
		flags |= lv.DomainSnapshotCreateQuiesce
	}
	if _, err := c.l.DomainSnapshotCreateXML(d, doc, uint32(flags)); err != nil {
		return fmt.Errorf("cannot snapshot the disks of domain %q: %w", name, err)
	}
	return nil
}

// BlockCopy starts copying a running domain's disk onto dest, an image that
// already exists (REUSE_EXT). shallow copies only the top image onto dest,
// whose backing chain (dest.BackingStore) must then hold the same data as
// the disk's own backing chain. The job runs in qemu until it is pivoted or
// aborted, even if this process dies.
//
// TRANSIENT_JOB: libvirt 9.0 refuses a copy on a persistent domain without
// it (the job cannot survive a libvirtd restart); cryptshift's journal is
// what makes the operation resumable, so nothing is lost.
func (c *Conn) BlockCopy(name, disk string, dest *libvirtxml.DomainDisk, shallow bool) error {
	d, err := c.lookup(name)
	if err != nil {
		return err
	}
	doc, err := dest.Marshal()
	if err != nil {
		return fmt.Errorf("cannot encode copy destination for %s of domain %q: %w", disk, name, err)
	}
	flags := lv.DomainBlockCopyReuseExt | lv.DomainBlockCopyTransientJob
	if shallow {
		flags |= lv.DomainBlockCopyShallow
	}
	if err := c.l.DomainBlockCopy(d, disk, doc, nil, flags); err != nil {
		return fmt.Errorf("cannot start copying disk %s of domain %q: %w", disk, name, err)
	}
	return nil
}

// BlockCommitActive starts merging the active (top) image of a running
// domain's disk into its immediate backing image; after the pivot the guest
// runs on that image and whatever lies below it.
//
// SHALLOW: without it, libvirt takes a NULL base to mean the bottom of the
// chain and would merge every layer of a qcow2 chain into its base file.
func (c *Conn) BlockCommitActive(name, disk string) error {
	d, err := c.lookup(name)
	if err != nil {
		return err
	}
	if err := c.l.DomainBlockCommit(d, disk, nil, nil, 0, lv.DomainBlockCommitActive|lv.DomainBlockCommitShallow); err != nil {
		return fmt.Errorf("cannot start merging the top image of disk %s of domain %q: %w", disk, name, err)
	}
	return nil
}

// JobType names a block job.
type JobType string

const (
	JobNone         JobType = ""
	JobPull         JobType = "pull"
	JobCopy         JobType = "copy"
	JobCommit       JobType = "commit"
	JobActiveCommit JobType = "active-commit"
	JobBackup       JobType = "backup"
)

// BlockJob is the state of the block job on one disk.
type BlockJob struct {
	Type     JobType // JobNone: no job on this disk
	Cur, End uint64
	// Ready: qemu says both sides are in sync and the job may be pivoted
	// (libvirt's <mirror ready='yes'/>).
	Ready bool
}

// BlockJob returns the job running on a disk, if any.
func (c *Conn) BlockJob(name, disk string) (BlockJob, error) {
	d, err := c.lookup(name)
	if err != nil {
		return BlockJob{}, err
	}
	found, typ, _, cur, end, err := c.l.DomainGetBlockJobInfo(d, disk, 0)
	if err != nil {
		return BlockJob{}, fmt.Errorf("cannot read the block job on disk %s of domain %q: %w", disk, name, err)
	}
	if found == 0 {
		return BlockJob{}, nil
	}
	j := BlockJob{Cur: cur, End: end}
	switch lv.DomainBlockJobType(typ) {
	case lv.DomainBlockJobTypePull:
		j.Type = JobPull
	case lv.DomainBlockJobTypeCopy:
		j.Type = JobCopy
	case lv.DomainBlockJobTypeCommit:
		j.Type = JobCommit
	case lv.DomainBlockJobTypeActiveCommit:
		j.Type = JobActiveCommit
	case lv.DomainBlockJobTypeBackup:
		j.Type = JobBackup
	default:
		j.Type = JobType(fmt.Sprintf("type-%d", typ))
	}
	if j.Type == JobCopy || j.Type == JobActiveCommit {
		live, err := c.DomainXML(name, XMLFlags{})
		if err != nil {
			return BlockJob{}, err
		}
		for _, dd := range live.Devices.Disks {
			if dd.Target != nil && dd.Target.Dev == disk && dd.Mirror != nil {
				j.Ready = dd.Mirror.Ready == "yes"
			}
		}
	}
	return j, nil
}

// WaitReady polls a copy or active-commit job until qemu reports it ready to
// pivot. report, if not nil, receives the job's progress. A job that
// vanishes before it is ready has failed (qemu reports the reason in the
// domain's log).
func (c *Conn) WaitReady(ctx context.Context, name, disk string, report func(cur, end uint64)) error {
	for {
		j, err := c.BlockJob(name, disk)
		if err != nil {
			return err
		}
		if j.Type == JobNone {
			return fmt.Errorf("cannot finish the block job on disk %s of domain %q: it ended before it was ready; see the domain's log in /var/log/libvirt/qemu/", disk, name)
		}
		if report != nil {
			report(j.Cur, j.End)
		}
		if j.Ready {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("cannot wait for the block job on disk %s of domain %q: %w", disk, name, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Pivot ends a ready copy or active-commit job by switching the guest onto
// its destination. It returns when the switch is done.
func (c *Conn) Pivot(name, disk string) error {
	d, err := c.lookup(name)
	if err != nil {
		return err
	}
	if err := c.l.DomainBlockJobAbort(d, disk, lv.DomainBlockJobAbortPivot); err != nil {
		return fmt.Errorf("cannot switch disk %s of domain %q onto its new image: %w", disk, name, err)
	}
	return nil
}

// AbortJob cancels a block job and leaves the guest on its current image.
func (c *Conn) AbortJob(name, disk string) error {
	d, err := c.lookup(name)
	if err != nil {
		return err
	}
	if err := c.l.DomainBlockJobAbort(d, disk, 0); err != nil {
		return fmt.Errorf("cannot cancel the block job on disk %s of domain %q: %w", disk, name, err)
	}
	return nil
}
