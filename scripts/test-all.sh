#!/bin/bash
# Runs every test tier in order and fails if any tier fails.
set -euo pipefail
cd "$(dirname "$0")/.."
export GOFLAGS="${GOFLAGS:--buildvcs=false}"
echo "== tier 1: unit, table and golden tests"
go test -count=1 ./...
(cd packaging && go test -count=1 ./...)  # its own module: nfpm stays out of cryptshift's
echo "== tier 1: fuzz targets (bounded)"
scripts/fuzz.sh
echo "== tier 2: real tools and daemons on the host"
CRYPTSHIFT_TEST_HOST=1 go test -count=1 -run '^TestHost' -timeout 20m ./...
(cd packaging && CRYPTSHIFT_TEST_HOST=1 go test -count=1 -run '^TestHost' -timeout 20m ./...)
echo "== tier 3: dm-crypt and LVM on loop devices in a throwaway VM"
scripts/test-vm.sh
echo "== tier 4: whole systems booted through OVMF, GRUB and their own initramfs"
scripts/test-boot.sh
