package doctor

import (
	"context"
	"strings"
	"testing"

	"github.com/cryptshift/cryptshift/internal/harness/libvirttest"
	"github.com/cryptshift/cryptshift/internal/harness/testtier"
	"github.com/cryptshift/cryptshift/internal/hostview/rootfs"
	"github.com/cryptshift/cryptshift/internal/textfmt"
)

// TestHostDoctor runs every probe for real: cryptsetup formats its argon2id
// scratch header, lvm and qemu-img report their versions, and a private
// libvirtd answers, so migrate-pool must be ready on any host-tier machine.
func TestHostDoctor(t *testing.T) {
	testtier.Host(t, "cryptsetup", "lvm", "qemu-img", "mkfs.ext4", "mkswap", "wipefs")
	d := libvirttest.Start(t)
	r, err := Run(context.Background(), Options{Connect: d.Socket, For: []string{CapMigratePool, CapPlan, CapVerifyCaptured}})
	if err != nil {
		t.Fatal(err)
	}
	checks := byID(r)
	for _, id := range []string{"tool.cryptsetup", "cryptsetup.argon2id", "tool.lvm", "tool.qemu-img", "libvirt", "random"} {
		if c := checks[id]; c.Status != OK {
			t.Errorf("%s: got %s %q (fix %q), want ok", id, c.Status, c.Found, c.Fix)
		}
	}
	if !r.Ready {
		t.Errorf("not ready for %v with a running libvirtd: %+v", r.NotReady(), r.Capabilities)
	}
	// Whatever the kernel, the device-mapper verdict must agree with
	// /proc/devices, which is what libdevmapper needs.
	dm := checks["kernel.device-mapper"]
	hasDM := readKernel(rootfs.Dir("/")).blockDevs["device-mapper"]
	if hasDM != (dm.Status == OK) {
		t.Errorf("kernel.device-mapper %s (%q) but /proc/devices lists device-mapper: %v", dm.Status, dm.Found, hasDM)
	}
	var text strings.Builder
	r.WriteText(&text, textfmt.Style{})
	t.Logf("doctor with a private libvirtd:\n%s", text.String())
}
