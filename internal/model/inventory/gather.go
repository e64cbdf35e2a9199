package inventory

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"

	"github.com/diskfs/go-diskfs/partition/gpt"
	"github.com/diskfs/go-diskfs/partition/mbr"

	"github.com/cryptshift/cryptshift/internal/doors/execx"
	"github.com/cryptshift/cryptshift/internal/doors/probe"
	"github.com/cryptshift/cryptshift/internal/hostview/blockstack"
	"github.com/cryptshift/cryptshift/internal/hostview/rootfs"
	"github.com/cryptshift/cryptshift/internal/model/layout"
	"github.com/cryptshift/cryptshift/luks"
	"github.com/cryptshift/cryptshift/lvm"
)

// Options tune a live inventory.
type Options struct {
	// Target is the directory a layout's root is (or will be) mounted on;
	// its crypttab, fstab, key files and header backups are recorded.
	Target string
	// KeyFileDir and HeaderBackupDir are the paths (as the new system sees
	// them) whose files' metadata is recorded.
	KeyFileDir      string
	HeaderBackupDir string
	// LVM runs lvm; zero value: the real lvm through execx.
	LVM *lvm.LVM
}

// GatherFor reads the live inventory as far as a layout needs it.
func GatherFor(l *layout.Layout, target string, _ map[string]string) (*Inventory, error) {
	return Gather(context.Background(), Options{Target: target, KeyFileDir: l.Keys.KeyFileDir, HeaderBackupDir: l.Keys.HeaderBackupDir})
}

// Gather reads this machine's block storage. It needs root to read device
// signatures, partition tables and LUKS headers; it never writes.
func Gather(ctx context.Context, opt Options) (*Inventory, error) {
	sys, err := blockstack.Scan(rootfs.Dir("/"))
	if err != nil {
		return nil, fmt.Errorf("cannot read the block devices: %w", err)
	}
	if !sys.HaveSysfs() {
		return nil, fmt.Errorf("cannot read the block devices: /sys/class/block is missing")
	}
	inv := &Inventory{APIVersion: APIVersion, Kind: Kind}
	inv.Host, _ = os.Hostname()
	lv := opt.LVM
	if lv == nil {
		lv = &lvm.LVM{Run: execx.Exec{}}
	}
	lvs, lvErr := gatherLVM(ctx, *lv, inv)
	paths := map[string]string{} // kernel name -> canonical path
	for _, d := range sys.Devices {
		paths[d.Name] = canonicalPath(d)
	}
	for _, d := range sys.Devices {
		kind := kindOf(d)
		if kind == "" || d.Size == 0 {
			continue // RAM disks, zram, detached loop devices
		}
		dev := Device{
			Path: paths[d.Name], Kind: kind, Size: int64(d.Size),
			LogicalSectorSize: d.LogicalSectorSize, PhysicalSectorSize: d.PhysicalSectorSize,
			Rotational: d.Rotational, ReadOnly: d.ReadOnly, DMName: d.DMName, DMUUID: d.DMUUID,
			PartitionNumber: d.Partition, Serial: d.Serial, WWID: d.WWID,
		}
		if d.Parent != "" {
			dev.Parent = paths[d.Parent]
		} else if len(d.Slaves) > 0 {
			dev.Parent = paths[d.Slaves[0]]
		}
		if dev.Path != "/dev/"+d.Name {
			dev.Aliases = append(dev.Aliases, "/dev/"+d.Name)
		}
		if kind == KindLVM {
			for _, l := range lvs {
				if l.DMPath == dev.Path {
					dev.Aliases = append(dev.Aliases, l.Path)
				}
			}
		}
		dev.Aliases = append(dev.Aliases, byLinks(dev.Path, "/dev/"+d.Name)...)
		sort.Strings(dev.Aliases)
		if err := readContent(&dev); err != nil {
			return nil, err
		}
		inv.Devices = append(inv.Devices, dev)
	}
	// This process's own mount table: apply mounts in its own namespace
	// (and, in a rescue or test system, its own chroot), where PID 1's
	// view would show other paths.
	mounts := sys.Mounts
	if b, err := os.ReadFile("/proc/self/mountinfo"); err == nil {
		if ms, err := blockstack.ParseMountInfo(bytes.NewReader(b)); err == nil {
			mounts = ms
		}
	}
	for _, m := range mounts {
		src := m.Source
		if d := sys.DeviceByMajMin(m.MajMin()); d != nil {
			src = paths[d.Name]
		}
		if !strings.HasPrefix(src, "/dev/") && m.FSType != "tmpfs" {
			continue // proc, sysfs, cgroup...: nothing a layout mounts
		}
		inv.Mounts = append(inv.Mounts, Mount{Source: src, Target: m.MountPoint, FSType: m.FSType, Options: m.Options})
	}
	for _, s := range sys.Swaps {
		p := s.Filename
		if d := sys.DeviceByPath(p); d != nil {
			p = paths[d.Name]
		}
		inv.Swaps = append(inv.Swaps, Swap{Path: p, Type: s.Type, Size: int64(s.SizeKiB) * 1024})
	}
	tpm, _ := HasTPM2(rootfs.Dir("/"))
	inv.TPM2 = &tpm
	if opt.Target != "" {
		inv.Target = gatherTarget(opt)
	}
	// Labels, serials, header strings and paths come from disks and
	// devices anyone may have prepared: made printable here, so a plan
	// never carries a line break from a recycled disk's label.
	inv.makePrintable()
	inv.Sort()
	if lvErr != nil {
		// Without LVM facts a PV shows up only by its signature, which
		// the planner treats as data to protect: the safe direction.
		return inv, fmt.Errorf("cannot read LVM state (%v); install lvm2, or plan with --inventory from a host that has it", lvErr)
	}
	return inv, nil
}

func kindOf(d *blockstack.Device) string {
	switch d.Kind {
	case blockstack.KindDisk:
		return KindDisk
	case blockstack.KindPart:
		return KindPart
	case blockstack.KindLoop:
		return KindLoop
	case blockstack.KindDM:
		switch {
		case d.CryptType() != "":
			return KindCrypt
		case d.IsLVM() && d.LVMRole() == "":
			return KindLVM
		default:
			return KindDM
		}
	case blockstack.KindMD:
		return KindDisk
	}
	return ""
}

// canonicalPath names dm devices by /dev/mapper/NAME, everything else by
// its kernel name, as mountinfo and the planner name them.
func canonicalPath(d *blockstack.Device) string {
	if d.Kind == blockstack.KindDM && d.DMName != "" {
		return "/dev/mapper/" + d.DMName
	}
	return "/dev/" + d.Name
}

// byLinks lists the udev symlinks (by-id, by-path) that point at a device,
// so a layout may name disks by stable links.
func byLinks(paths ...string) []string {
	var out []string
	for _, dir := range []string{"/dev/disk/by-id", "/dev/disk/by-path"} {
		entries, err := os.ReadDir(dir)
		if err != nil {
			continue
		}
		for _, e := range entries {
			link := filepath.Join(dir, e.Name())
			target, err := filepath.EvalSymlinks(link)
			if err != nil {
				continue
			}
			for _, p := range paths {
				if real, err := filepath.EvalSymlinks(p); err == nil && real == target {
					out = append(out, link)
					break
				}
			}
		}
	}
	return out
}

// readContent probes a device's signature, LUKS header and partition table.
func readContent(dev *Device) error {
	f, err := os.Open(dev.Path)
	if err != nil {
		if errors.Is(err, fs.ErrPermission) && os.Geteuid() != 0 {
			return fmt.Errorf("cannot read %s: permission denied; run cryptshift inventory as root", dev.Path)
		}
		// Recorded as unreadable, never as blank: the planner protects
		// a device it could not look into.
		dev.Content = &Content{Type: "unreadable", Note: err.Error()}
		return nil
	}
	defer f.Close()
	r, err := probe.Probe(f)
	if err != nil {
		return fmt.Errorf("cannot read %s: %w", dev.Path, err)
	}
	if r == nil {
		// Zeros at the start: look where leftovers hide before calling
		// it blank.
		if r, err = probe.Blank(f, dev.Size); err != nil {
			return fmt.Errorf("cannot read %s: %w", dev.Path, err)
		}
		if r == nil {
			dev.Blank = probe.BlankMethod
		}
	}
	if r != nil {
		dev.Content = &Content{Type: r.Type, UUID: r.UUID, Label: r.Label, Version: r.Version, Note: r.Note}
		if r.Type == "crypto_LUKS" {
			h, err := luks.ReadHeader(dev.Path)
			if err != nil {
				return err
			}
			dev.Content.LUKS = h
		}
	}
	if dev.Kind != KindDisk && dev.Kind != KindLoop {
		return nil
	}
	lss, pss := dev.LogicalSectorSize, dev.PhysicalSectorSize
	if lss == 0 {
		lss = 512
	}
	if pss == 0 {
		pss = lss
	}
	if t, err := gpt.Read(f, lss, pss); err == nil {
		tab := &Table{Type: "gpt", UUID: strings.ToLower(t.GUID)}
		for _, p := range t.Partitions {
			if p.Type == gpt.Unused {
				continue
			}
			tab.Partitions = append(tab.Partitions, Partition{
				Number: p.Index, Start: int64(p.Start) * int64(lss), Size: int64(p.End-p.Start+1) * int64(lss),
				Type: strings.ToUpper(string(p.Type)), Name: p.Name, UUID: strings.ToLower(p.GUID),
			})
		}
		dev.Table = tab
	} else if t, err := mbr.Read(f, lss, pss); err == nil && dev.Content != nil && dev.Content.Type == "dos" {
		tab := &Table{Type: "dos"}
		for i, p := range t.Partitions {
			if p.Type == mbr.Empty {
				continue
			}
			tab.Partitions = append(tab.Partitions, Partition{
				Number: i + 1, Start: int64(p.Start) * int64(lss), Size: int64(p.Size) * int64(lss), Type: fmt.Sprintf("%02X", int(p.Type)),
			})
		}
		dev.Table = tab
	}
	return nil
}

func gatherLVM(ctx context.Context, l lvm.LVM, inv *Inventory) ([]lvm.LV, error) {
	pvs, err := l.PVs(ctx)
	if err != nil {
		return nil, err
	}
	vgs, err := l.VGs(ctx)
	if err != nil {
		return nil, err
	}
	lvs, err := l.LVs(ctx)
	if err != nil {
		return nil, err
	}
	for _, p := range pvs {
		inv.PVs = append(inv.PVs, PV{Device: p.Name, VG: p.VG, UUID: p.UUID, Size: p.Size, Free: p.Free})
	}
	for _, v := range vgs {
		inv.VGs = append(inv.VGs, VG{Name: v.Name, UUID: v.UUID, Size: v.Size, Free: v.Free, ExtentSize: v.ExtentSize, ExtentCount: v.ExtentCount, FreeCount: v.FreeCount})
	}
	for _, v := range lvs {
		inv.LVs = append(inv.LVs, LV{VG: v.VG, Name: v.Name, Path: v.Path, UUID: v.UUID, Size: v.Size, Active: v.Active, Origin: v.Origin})
	}
	return lvs, nil
}

// gatherTarget reads the target root's crypttab, fstab and the metadata
// (never the contents) of key files and header backups.
func gatherTarget(opt Options) *Target {
	t := &Target{Root: opt.Target}
	read := func(p string) string {
		b, err := os.ReadFile(filepath.Join(opt.Target, p))
		if err != nil {
			return ""
		}
		return string(b)
	}
	t.Crypttab = read("/etc/crypttab")
	t.Fstab = read("/etc/fstab")
	for _, dir := range []string{opt.KeyFileDir, opt.HeaderBackupDir} {
		if dir == "" {
			continue
		}
		entries, err := os.ReadDir(filepath.Join(opt.Target, dir))
		if err != nil {
			continue
		}
		for _, e := range entries {
			info, err := e.Info()
			if err != nil || !info.Mode().IsRegular() {
				continue
			}
			t.Files = append(t.Files, File{Path: path.Join(dir, e.Name()), Mode: uint32(info.Mode().Perm()), Size: info.Size()})
		}
	}
	return t
}
