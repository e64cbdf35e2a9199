package migrate

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"golang.org/x/sys/unix"
	"libvirt.org/go/libvirtxml"

	"github.com/cryptshift/cryptshift/internal/doors/execx"
	"github.com/cryptshift/cryptshift/internal/doors/fs"
	"github.com/cryptshift/cryptshift/libvirt"
	"github.com/cryptshift/cryptshift/lvm"
)

// retireNote is printed and journaled whenever a source is retired: what
// overwriting through the filesystem does not guarantee.
const retireNote = "retiring overwrote the plaintext image files with zeros through the filesystem and removed them. " +
	"That does not reach every old copy: SSDs and SD cards remap blocks (wear levelling, over-provisioning) and keep the old data " +
	"in cells the OS cannot address; copy-on-write and snapshotting storage (btrfs, ZFS, LVM snapshots and thin pools, " +
	"VM host snapshots) and backups keep their own copies. Only a whole-device secure erase of the old storage " +
	"(blkdiscard --secure, nvme format --ses=1, ATA secure erase) or storage that was encrypted from the start rules them out"

// retire overwrites and removes the plaintext source images of a switched
// disk. It refuses unless the disk is switched and verified, and keeps any
// image that another domain (or this one) still uses.
func (rt *runtime) retire(ctx context.Context, d *Disk) error {
	st := rt.states[d.Target]
	if stateIndex(st) < stateIndex(StateSwitched) || !rt.verified[d.Target] {
		return fmt.Errorf("cannot retire the source of %s: the disk is %s; a source is retired only after the copy was verified and the guest switched", d.Target, st)
	}
	users, err := rt.imageUsers(ctx)
	if err != nil {
		return err
	}
	var retired []string
	for _, l := range d.Chain {
		if l.LV != "" {
			if u := users[l.Path]; len(u) > 0 {
				rt.note(fmt.Sprintf("%s: kept logical volume %s: still used by %s", d.Target, l.LV, strings.Join(u, ", ")))
				continue
			}
			done, err := rt.retireLV(ctx, l)
			if err != nil {
				return err
			}
			if done {
				retired = append(retired, l.Path)
			}
			continue
		}
		if l.Type == "block" {
			rt.note(fmt.Sprintf("%s: kept the block device %s: cryptshift does not know what else lives on it; discard it yourself (blkdiscard) once you are sure", d.Target, l.Path))
			continue
		}
		if u := users[l.Path]; len(u) > 0 {
			rt.note(fmt.Sprintf("%s: kept %s: still used by %s", d.Target, l.Path, strings.Join(u, ", ")))
			continue
		}
		if _, err := os.Lstat(l.Path); errors.Is(err, os.ErrNotExist) {
			continue // retired before a crash
		}
		if err := rt.overwriteAndRemove(ctx, l.Path); err != nil {
			return err
		}
		retired = append(retired, l.Path)
	}
	if len(retired) > 0 {
		rt.note(fmt.Sprintf("%s: overwrote with zeros and removed %s", d.Target, strings.Join(retired, ", ")))
	}
	rt.event(map[string]any{"event": "retired", "disk": d.Target, "files": retired, "note": retireNote})
	rt.note(retireNote)
	for _, l := range d.Chain {
		if l.LV != "" {
			rt.event(map[string]any{"event": "retired-lv", "disk": d.Target, "lv": l.LV, "note": retireLVNote})
			rt.note(retireLVNote)
			break
		}
	}
	return nil
}

// retireLVNote is printed and journaled when an LV source is retired.
const retireLVNote = "retiring a logical volume discarded all its blocks (blkdiscard; where the device takes no discards, it wrote zeros over them with blkdiscard --zeroout) and removed it (lvremove). " +
	"A discard asks the storage to drop the blocks: thin pools and most SSDs then read back zeros, but the flash cells may keep the old data until the drive reuses them, and plain disks ignore it (hence the zeros). " +
	"Neither reaches copies outside the LV: LVM snapshots, extents a pvmove or lvreduce left behind, backups. Only a secure erase of the whole old device rules those out"

// retireLV discards an LV source and removes it. It reports false when the
// LV is already gone (retired before a crash).
func (rt *runtime) retireLV(ctx context.Context, l Layer) (bool, error) {
	cfg := ""
	if rt.h.VG != nil {
		cfg = rt.h.VG.LVMConfig
	}
	lv := lvm.LVM{Run: rt.run, Config: cfg}
	lvs, err := lv.LVs(ctx)
	if err != nil {
		return false, fmt.Errorf("cannot list logical volumes: %w", err)
	}
	exists := false
	for _, x := range lvs {
		if x.VG+"/"+x.Name == l.LV {
			exists = true
		}
	}
	if !exists {
		return false, nil
	}
	// fs.Discard refuses an LV that is in use (O_EXCL).
	if err := fs.Run(ctx, rt.run, fs.Discard{Device: l.Path}); err != nil {
		var xe *execx.Error
		if !errors.As(err, &xe) || !strings.Contains(xe.Stderr, "not supported") {
			return false, fmt.Errorf("cannot discard %s: %w", l.Path, err)
		}
		if err := fs.Run(ctx, rt.run, fs.Discard{Device: l.Path, ZeroOut: true}); err != nil {
			return false, fmt.Errorf("cannot zero %s: %w", l.Path, err)
		}
	}
	vg, name, _ := strings.Cut(l.LV, "/")
	if err := lv.Do(ctx, lvm.LVRemove{VG: vg, Name: name}); err != nil {
		return false, fmt.Errorf("cannot remove logical volume %s: %w", l.LV, err)
	}
	rt.note(fmt.Sprintf("discarded and removed logical volume %s (%s)", l.LV, l.Path))
	return true, nil
}

// imageUsers maps every image file that some domain uses (its disks' whole
// backing chains, running or defined) to those domains.
func (rt *runtime) imageUsers(ctx context.Context) (map[string][]string, error) {
	names, err := rt.hv.DomainNames()
	if err != nil {
		return nil, err
	}
	users := map[string][]string{}
	add := func(path, who string) {
		for _, u := range users[path] {
			if u == who {
				return
			}
		}
		users[path] = append(users[path], who)
	}
	for _, n := range names {
		var defs []*libvirtxml.Domain
		for _, inactive := range []bool{false, true} {
			dom, err := rt.hv.DomainXML(n, libvirt.XMLFlags{Inactive: inactive})
			if err != nil {
				return nil, err
			}
			defs = append(defs, dom)
		}
		who := "domain " + n
		for _, dom := range defs {
			disks := libvirt.Disks(dom)
			if err := rt.hv.ResolveVolumes(disks); err != nil {
				return nil, err
			}
			for _, disk := range disks {
				if disk.Path == "" {
					continue
				}
				add(disk.Path, who)
				// A definition may name only the top image; the backing
				// files are in the image headers.
				if disk.Format == "qcow2" {
					if chain, err := rt.img.InfoChain(ctx, disk.Path, disk.Format); err == nil {
						for _, l := range chain {
							add(absolute(l.Filename, disk.Path), who)
						}
					}
				}
			}
		}
	}
	for p := range users {
		sort.Strings(users[p])
	}
	return users, nil
}

func absolute(name, relativeTo string) string {
	if filepath.IsAbs(name) {
		return filepath.Clean(name)
	}
	return filepath.Join(filepath.Dir(relativeTo), name)
}

// overwriteAndRemove writes zeros over every allocated extent of a file
// (holes hold no data: SEEK_DATA/SEEK_HOLE skips them), syncs, and removes
// it.
func (rt *runtime) overwriteAndRemove(ctx context.Context, path string) error {
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return fmt.Errorf("cannot open %s to overwrite it: %w", path, err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return fmt.Errorf("cannot overwrite %s: %w", path, err)
	}
	size := st.Size()
	rt.prog.Start("retire "+filepath.Base(path), size)
	zeros := make([]byte, 4<<20)
	var off int64
	for off < size {
		if err := ctx.Err(); err != nil {
			rt.prog.Done(err)
			return err
		}
		data, err := unix.Seek(int(f.Fd()), off, unix.SEEK_DATA)
		if err != nil {
			break // ENXIO: no data after off
		}
		hole, err := unix.Seek(int(f.Fd()), data, unix.SEEK_HOLE)
		if err != nil {
			hole = size
		}
		for p := data; p < hole; {
			n := min(int64(len(zeros)), hole-p)
			if _, err := f.WriteAt(zeros[:n], p); err != nil {
				rt.prog.Done(err)
				return fmt.Errorf("cannot overwrite %s: %w", path, err)
			}
			p += n
			rt.prog.Update(p)
		}
		off = hole
	}
	if err := f.Sync(); err != nil {
		rt.prog.Done(err)
		return fmt.Errorf("cannot sync %s: %w", path, err)
	}
	rt.prog.Update(size)
	rt.prog.Done(nil)
	f.Close()
	if err := os.Remove(path); err != nil {
		return fmt.Errorf("cannot remove %s: %w", path, err)
	}
	if dir, err := os.Open(filepath.Dir(path)); err == nil {
		_ = dir.Sync()
		dir.Close()
	}
	return nil
}
