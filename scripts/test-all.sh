#!/bin/bash
# Runs every test tier and fails if any tier fails.
#
# Tier 4 (the boot tier) shares no disk, daemon or device with tiers 1-3:
# its guests are plain qemu processes on user networking with free ports,
# its images live under ~/.cache/cryptshift/boot and the test's temporary
# directory, and it mounts nothing and attaches no loop device on the host
# (docs/boot-tier.md). So it runs concurrently with tiers 1-3 to keep
# `make test` inside the CI budget; its output is kept in a log and
# printed when it ends. CRYPTSHIFT_TEST_SEQUENTIAL=1 runs it after them.
set -euo pipefail
cd "$(dirname "$0")/.."
export GOFLAGS="${GOFLAGS:--buildvcs=false}"
start=$(date +%s)
elapsed() { echo "$(( $(date +%s) - start ))s"; }

boot_log=$(mktemp)
boot_pid=""
cleanup() {
	# Its own session (setsid): stop the whole tier, go test and its
	# guests included, if tiers 1-3 fail first.
	[ -n "$boot_pid" ] && kill -- "-$boot_pid" 2>/dev/null
	rm -f "$boot_log"
}
trap cleanup EXIT
if [ "${CRYPTSHIFT_TEST_SEQUENTIAL:-}" != "1" ]; then
	echo "== tier 4: whole systems booted through OVMF, GRUB and their own initramfs (in the background; log at the end)"
	setsid scripts/test-boot.sh >"$boot_log" 2>&1 &
	boot_pid=$!
fi

echo "== tier 1: unit, table and golden tests"
go test -count=1 ./...
(cd packaging && go test -count=1 ./...)  # its own module: nfpm stays out of cryptshift's
echo "== tier 1: fuzz targets (bounded)"
scripts/fuzz.sh
echo "== tier 2: real tools and daemons on the host ($(elapsed))"
CRYPTSHIFT_TEST_HOST=1 go test -count=1 -run '^TestHost' -timeout 20m ./...
(cd packaging && CRYPTSHIFT_TEST_HOST=1 go test -count=1 -run '^TestHost' -timeout 20m ./...)
echo "== tier 3: dm-crypt and LVM on loop devices in a throwaway VM ($(elapsed))"
scripts/test-vm.sh
echo "== tiers 1-3 passed after $(elapsed)"

if [ -z "$boot_pid" ]; then
	echo "== tier 4: whole systems booted through OVMF, GRUB and their own initramfs"
	scripts/test-boot.sh
else
	echo "== tier 4: waiting for the boot tier"
	status=0
	wait "$boot_pid" || status=$?
	boot_pid=""
	cat "$boot_log"
	[ "$status" -eq 0 ] || { echo "== tier 4 failed (status $status) after $(elapsed)"; exit "$status"; }
fi
echo "== all tiers passed after $(elapsed)"
