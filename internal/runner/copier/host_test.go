package copier

import (
	"context"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/cryptshift/cryptshift/internal/harness/testtier"
	"golang.org/x/sys/unix"
)

// loop attaches path to a free loop device and detaches it when the test ends.
func loop(t *testing.T, path string, readOnly bool) string {
	t.Helper()
	args := []string{"--find", "--show"}
	if readOnly {
		args = append(args, "--read-only")
	}
	out, err := exec.Command("losetup", append(args, path)...).CombinedOutput()
	if err != nil {
		testtier.Unavailable(t, "cannot attach a loop device: "+strings.TrimSpace(string(out)))
	}
	dev := strings.TrimSpace(string(out))
	t.Cleanup(func() {
		if out, err := exec.Command("losetup", "--detach", dev).CombinedOutput(); err != nil {
			t.Errorf("cannot detach %s: %v: %s", dev, err, out)
		}
	})
	return dev
}

// TestHostCopyLoopDevice copies between block devices: a source device (no
// holes to find: SEEK_DATA reports all of it as data) onto a larger target
// device, then refuses a target that someone holds open exclusively.
func TestHostCopyLoopDevice(t *testing.T) {
	testtier.Host(t, "losetup")
	dir := t.TempDir()
	src, want := image(t, dir, "src", 16*miB, []seg{{miB, 3 * miB, 'r'}, {8 * miB, 64 * kiB, 'z'}, {15 * miB, miB, 'r'}}, 21)
	dst, old := oldPlaintext(t, dir, "dst", 20*miB)
	srcDev, dstDev := loop(t, src, true), loop(t, dst, false)

	res, err := Copy(context.Background(), srcDev, dstDev, Options{Verify: true, ChunkSize: 1 * miB})
	if err != nil {
		t.Fatal(err)
	}
	if res.SHA256 != sum(want) || !res.Verified {
		t.Errorf("SHA256 %s verified %v, want %s verified", res.SHA256, res.Verified, sum(want))
	}
	if res.HoleBytes != 0 || res.TailBytes != 4*miB {
		t.Errorf("holes %d, tail %d; want no holes on a device and a 4 MiB tail", res.HoleBytes, res.TailBytes)
	}
	got, err := Hash(context.Background(), dstDev, res.Size, HashOptions{})
	if err != nil || got != res.SHA256 {
		t.Errorf("Hash(%s) = %s, %v; want %s", dstDev, got, err, res.SHA256)
	}
	// Through the loop device's page cache and the backing file's: read
	// the backing file only after the copy synced.
	checkTarget(t, dst, want, old, false)

	// A device held open with O_EXCL (as a mounted filesystem or a
	// device-mapper table holds it) must be refused, unchanged.
	held, err := os.OpenFile(dstDev, os.O_RDONLY|unix.O_EXCL, 0)
	if err != nil {
		t.Fatalf("cannot hold %s: %v", dstDev, err)
	}
	defer held.Close()
	_, err = Copy(context.Background(), srcDev, dstDev, Options{})
	if err == nil || !strings.Contains(err.Error(), "in use") {
		t.Errorf("Copy onto a held device = %v, want an in-use error", err)
	}
}
