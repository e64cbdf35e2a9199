// Package testtier gates tests by tier. Tier 1 (pure unit, table, golden)
// always runs. Tier 2 (real tools and daemons on the host) runs when
// CRYPTSHIFT_TEST_HOST=1; tier 3 (real dm-crypt and LVM inside a throwaway VM)
// runs when CRYPTSHIFT_TEST_VM=1; tier 4 (real boots of whole Debian systems
// through firmware, GRUB and their own initramfs) runs when
// CRYPTSHIFT_TEST_BOOT=1. The Makefile sets these.
//
// A gated test that is not enabled skips and says how to enable it. A test
// that is enabled but whose prerequisites are missing fails when CI=true and
// skips with the reason otherwise: CI must never go green by skipping.
package testtier

import (
	"os"
	"os/exec"
	"testing"
)

// Host gates a tier-2 test and checks that the named programs exist.
func Host(t testing.TB, programs ...string) {
	t.Helper()
	gate(t, "CRYPTSHIFT_TEST_HOST", "host tier (make test-host)", programs)
}

// VM gates a tier-3 test and checks that the named programs exist.
func VM(t testing.TB, programs ...string) {
	t.Helper()
	gate(t, "CRYPTSHIFT_TEST_VM", "VM tier (make test-vm)", programs)
}

// Boot gates a tier-4 test (a whole Debian system booted under qemu through
// OVMF and GRUB; see internal/harness/boot) and checks that the named
// programs exist.
func Boot(t testing.TB, programs ...string) {
	t.Helper()
	gate(t, "CRYPTSHIFT_TEST_BOOT", "boot tier (make test-boot)", programs)
}

// InVM reports whether this process runs inside the test VM (the harness sets
// CRYPTSHIFT_IN_VM=1 in the guest).
func InVM() bool { return os.Getenv("CRYPTSHIFT_IN_VM") == "1" }

// Unavailable reports a missing prerequisite of an enabled tier: a failure in
// CI, a skip elsewhere.
func Unavailable(t testing.TB, why string) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatalf("tier prerequisite missing in CI: %s", why)
	}
	t.Skipf("tier prerequisite missing: %s", why)
}

func gate(t testing.TB, env, name string, programs []string) {
	t.Helper()
	if os.Getenv(env) != "1" {
		t.Skipf("%s not enabled: set %s=1", name, env)
	}
	for _, p := range programs {
		if _, err := exec.LookPath(p); err != nil {
			Unavailable(t, p+" not found in PATH; run the Makefile's setup (make deps)")
		}
	}
}
