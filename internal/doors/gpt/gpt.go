// Package gpt is the door that writes GPT partition tables (through
// go-diskfs) and waits for the kernel to show the partitions.
package gpt

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"time"

	diskfs "github.com/diskfs/go-diskfs"
	"github.com/diskfs/go-diskfs/partition/gpt"

	"github.com/cryptshift/cryptshift/internal/doors/execx"
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

// Write writes a GPT through go-diskfs and has the kernel re-read it.
// With wipe it zeroes the first and last MiB of every new partition, so no
// signature of what was there before shows through. It returns once the
// partitions' nodes are there to stay: every handle on the disk is closed
// first, because closing a disk opened for writing makes udev re-read its
// partition table, which removes and re-adds the partition nodes; a mkfs
// run in that moment finds no /dev/vdb1 (seen under TCG on a loaded host).
// run carries `udevadm settle` where udev runs.
func Write(ctx context.Context, run execx.Runner, device, tableUUID string, ps []Partition, wipe bool) error {
	if err := writeTable(device, tableUUID, ps); err != nil {
		return err
	}
	if wipe {
		if err := wipeEnds(device, ps); err != nil {
			return err
		}
	}
	if st, err := os.Stat(device); err == nil && st.Mode().IsRegular() {
		return nil // an image file has no partition nodes
	}
	// Settle, wait for the nodes, and once more: a re-read udev queues
	// while the first settle returns would remove them again.
	for range 2 {
		if err := settle(ctx, run); err != nil {
			return err
		}
		if err := waitForNodes(device, ps); err != nil {
			return err
		}
	}
	return nil
}

// settle waits for udev's event queue to drain, where udev runs; without
// udevadm (a minimal system, devtmpfs alone) the kernel's nodes are all
// there is and nothing re-reads behind cryptshift's back.
func settle(ctx context.Context, run execx.Runner) error {
	if _, err := exec.LookPath("udevadm"); err != nil {
		return nil
	}
	if _, err := run.Run(ctx, execx.Cmd{Tool: "udevadm", Args: []string{"settle", "--timeout=60"}}); err != nil {
		return fmt.Errorf("the partition table was written, but udev did not settle: %w", err)
	}
	return nil
}

func writeTable(device, tableUUID string, ps []Partition) error {
	d, err := diskfs.Open(device)
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
	return nil
}

// wipeEnds zeroes the first and last MiB of every partition, through the
// whole disk, and closes it.
func wipeEnds(device string, ps []Partition) error {
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
	return f.Close()
}

// waitForNodes waits until the kernel (devtmpfs) shows the partitions.
func waitForNodes(device string, ps []Partition) error {
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
