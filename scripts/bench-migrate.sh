#!/bin/bash
# Migration benchmark: the whole `cryptshift migrate` onto a pool: target
# against the verified peer pipelines (qemu-img convert + qemu-img compare
# into raw LUKS and into qcow2-LUKS) on one 16 GiB qcow2 source with 10 %
# data, and the guest's pause at the pivot of a live migration. Needs root,
# libvirtd, qemu and qemu-img (make deps) and about 22 GiB in BENCH_DIR
# (default: the system temporary directory; not a tmpfs). Prints
#   ratio raw-luks-pipeline X     peer time / cryptshift time (goal >= 3)
#   ratio qcow2-luks-pipeline X   peer time / cryptshift time (goal >= 1.0)
#   space X                       target allocation / source data (goal <= 1.15)
#   pause-at-pivot X ms           live mode
# See BenchmarkHostMigratePool in internal/runner/migrate/bench_host_test.go.
set -euo pipefail
cd "$(dirname "$0")/.."
export GOFLAGS="${GOFLAGS:--buildvcs=false}"
CRYPTSHIFT_BENCH_MIGRATE=1 CRYPTSHIFT_TEST_HOST=1 go test -run '^$' -bench '^BenchmarkHostMigratePool$' \
	-benchtime 1x -timeout 60m ./internal/runner/migrate
