package vmtest

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/cryptshift/cryptshift/internal/harness/testtier"
)

// MiB is a size unit for LoopDevices.
const MiB = 1 << 20

// LoopDevices attaches one loop device per size, each backed by a sparse
// file in t.TempDir() (the guest's /tmp, a tmpfs: written blocks use guest
// RAM), and returns their paths (/dev/loopN). It only works inside the VM.
//
// t.Cleanup tears each device down completely, whatever the test stacked on
// it and left behind: filesystems are unmounted and swap turned off on it
// and on every device-mapper device above it (LVM LVs, dm-crypt mappings,
// LVs on crypt on loop, ...), those dm devices are removed top-down, then
// the loop device is detached. In a batch boot the next test starts clean.
func LoopDevices(t testing.TB, sizes ...int64) []string {
	t.Helper()
	if !testtier.InVM() {
		t.Fatal("vmtest.LoopDevices runs only inside the VM: call vmtest.InGuest first")
	}
	dir := t.TempDir()
	var devs []string
	for i, size := range sizes {
		backing := filepath.Join(dir, fmt.Sprintf("disk%d.img", i))
		f, err := os.Create(backing)
		if err != nil {
			t.Fatalf("cannot create loop backing file: %v", err)
		}
		err = f.Truncate(size)
		f.Close()
		if err != nil {
			t.Fatalf("cannot size loop backing file %s to %d bytes: %v", backing, size, err)
		}
		out, err := run(context.Background(), "losetup", "--find", "--show", backing)
		if err != nil {
			t.Fatalf("cannot attach a loop device to %s: %v", backing, err)
		}
		dev := strings.TrimSpace(string(out))
		devs = append(devs, dev)
		t.Cleanup(func() {
			if err := TeardownDevice(dev); err != nil {
				t.Errorf("cannot tear down %s: %v", dev, err)
			}
			if _, err := run(context.Background(), "losetup", "--detach", dev); err != nil {
				t.Errorf("cannot detach %s: %v", dev, err)
			}
		})
	}
	return devs
}

// TeardownDevice removes everything stacked on a block device (/dev/NAME):
// holders first, recursively, each unmounted and swapped off, device-mapper
// holders removed with dmsetup. It leaves the device itself in place.
//
// Removing the dm devices directly is what `vgchange -an` and `cryptsetup
// close` come down to; LVM 2.03 keeps no daemon state (lvmetad is gone) that
// this would confuse.
func TeardownDevice(dev string) error {
	name := filepath.Base(dev)
	if target, err := filepath.EvalSymlinks(dev); err == nil {
		name = filepath.Base(target) // /dev/mapper/x -> dm-3
	}
	return teardown(name, 0)
}

func teardown(name string, depth int) error {
	if depth > 16 {
		return fmt.Errorf("cannot tear down %s: device stack deeper than 16", name)
	}
	holders, _ := os.ReadDir(filepath.Join("/sys/class/block", name, "holders"))
	for _, h := range holders {
		if err := teardown(h.Name(), depth+1); err != nil {
			return err
		}
	}
	if err := releaseDevice(name); err != nil {
		return err
	}
	if depth == 0 {
		return nil
	}
	dmName, err := os.ReadFile(filepath.Join("/sys/class/block", name, "dm", "name"))
	if err != nil {
		return fmt.Errorf("cannot remove %s: it holds a device but is not device-mapper: %w", name, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := run(ctx, "dmsetup", "remove", "--retry", strings.TrimSpace(string(dmName))); err != nil {
		return fmt.Errorf("cannot remove %s: %w", name, err)
	}
	return nil
}

// releaseDevice unmounts every mount of the block device NAME (deepest
// mount point first) and turns swap on it off.
func releaseDevice(name string) error {
	devno, err := os.ReadFile(filepath.Join("/sys/class/block", name, "dev"))
	if err != nil {
		return fmt.Errorf("cannot find device number of %s: %w", name, err)
	}
	mounts, err := mountsOf("/proc/self/mountinfo", strings.TrimSpace(string(devno)))
	if err != nil {
		return err
	}
	for _, mp := range mounts {
		if err := unix.Unmount(mp, 0); err != nil {
			if err := unix.Unmount(mp, unix.MNT_DETACH); err != nil {
				return fmt.Errorf("cannot unmount %s from %s: %w", mp, name, err)
			}
		}
	}
	var st unix.Stat_t
	swaps, _ := os.ReadFile("/proc/swaps")
	for _, line := range strings.Split(string(swaps), "\n")[1:] {
		f := strings.Fields(line)
		if len(f) == 0 || unix.Stat(f[0], &st) != nil || fmt.Sprintf("%d:%d", unix.Major(st.Rdev), unix.Minor(st.Rdev)) != strings.TrimSpace(string(devno)) {
			continue
		}
		if _, err := run(context.Background(), "swapoff", f[0]); err != nil {
			return fmt.Errorf("cannot turn off swap on %s: %w", name, err)
		}
	}
	return nil
}

// mountsOf returns the mount points of the device MAJ:MIN from a
// mountinfo file (proc(5): field 3 is the device, field 5 the mount point,
// octal-escaped), deepest first so nested mounts go before their parents.
func mountsOf(mountinfo, devno string) ([]string, error) {
	f, err := os.Open(mountinfo)
	if err != nil {
		return nil, fmt.Errorf("cannot read mounts: %w", err)
	}
	defer f.Close()
	var mps []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) >= 5 && fields[2] == devno {
			mps = append(mps, unescapeMountinfo(fields[4]))
		}
	}
	sort.Slice(mps, func(i, j int) bool { return len(mps[i]) > len(mps[j]) })
	return mps, sc.Err()
}

func unescapeMountinfo(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			var c byte
			ok := true
			for _, d := range s[i+1 : i+4] {
				if d < '0' || d > '7' {
					ok = false
					break
				}
				c = c*8 + byte(d-'0')
			}
			if ok {
				b.WriteByte(c)
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
