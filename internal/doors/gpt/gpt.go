// Package gpt is the door that writes GPT partition tables (through
// go-diskfs) and waits for the kernel to show the partitions.
package gpt

import (
	"fmt"
	"os"
	"strings"
	"time"

	diskfs "github.com/diskfs/go-diskfs"
	"github.com/diskfs/go-diskfs/partition/gpt"
)

// Partition is one partition of a table Write makes.
type Partition struct {
	Number int    `json:"number"`
	Start  int64  `json:"start"` // bytes
	Size   int64  `json:"size"`  // bytes
	Type   string `json:"type"`  // GPT type GUID
	Name   string `json:"name"`
	UUID   string `json:"uuid"`
}

// Partition writes a GPT through go-diskfs and has the kernel re-read it.
// With wipe it zeroes the first and last MiB of every new partition, so no
// signature of what was there before shows through.
func Write(device, tableUUID string, ps []Partition, wipe bool) error {
	d, err := diskfs.Open(device, diskfs.WithOpenMode(diskfs.ReadWrite))
	if err != nil {
		return fmt.Errorf("cannot open %s to partition it: %w", device, err)
	}
	defer d.Close()
	lss := int(d.LogicalBlocksize)
	table := &gpt.Table{LogicalSectorSize: lss, PhysicalSectorSize: int(d.PhysicalBlocksize), ProtectiveMBR: true, GUID: tableUUID}
	for _, p := range ps {
		if p.Number < 1 || p.Start < 0 || p.Size <= 0 {
			return fmt.Errorf("cannot partition %s: partition %d has no valid place (start %d, size %d)", device, p.Number, p.Start, p.Size)
		}
		if p.Start%int64(lss) != 0 || p.Size%int64(lss) != 0 {
			return fmt.Errorf("cannot partition %s: partition %d is not aligned to %d-byte sectors", device, p.Number, lss)
		}
		table.Partitions = append(table.Partitions, &gpt.Partition{
			Index: p.Number, Start: uint64(p.Start / int64(lss)), End: uint64((p.Start+p.Size)/int64(lss) - 1),
			Size: uint64(p.Size), Type: gpt.Type(p.Type), Name: p.Name, GUID: p.UUID,
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
			for _, off := range []int64{p.Start, p.Start + p.Size - int64(len(zero))} {
				if off < p.Start {
					continue
				}
				if _, err := f.WriteAt(zero[:min(int64(len(zero)), p.Size)], off); err != nil {
					return fmt.Errorf("cannot clear partition %d of %s: %w", p.Number, device, err)
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
func waitForNodes(device string, ps []Partition) error {
	if st, err := os.Stat(device); err == nil && st.Mode().IsRegular() {
		return nil // an image file has no partition nodes
	}
	deadline := time.Now().Add(10 * time.Second)
	for _, p := range ps {
		node := Node(device, p.Number)
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

// Node names partition n of a disk the way the kernel and udev do: sda1,
// nvme0n1p1, loop0p1, and by-id/...-part1 for udev links.
func Node(disk string, n int) string {
	if strings.HasPrefix(disk, "/dev/disk/by-") {
		return fmt.Sprintf("%s-part%d", disk, n)
	}
	if c := disk[len(disk)-1]; c >= '0' && c <= '9' {
		return fmt.Sprintf("%sp%d", disk, n)
	}
	return fmt.Sprintf("%s%d", disk, n)
}
