#!/bin/bash
# Benchmarks: Go benchmarks, then tool comparisons.
set -euo pipefail
cd "$(dirname "$0")/.."
go test -run '^$' -bench . -benchmem ./...
# Copier against qemu-img and dd on real images (prints ratio/limit lines).
scripts/bench-copy.sh
# cryptshift migrate onto a pool: against qemu-img pipelines (prints
# ratio/space/pause-at-pivot lines).
scripts/bench-migrate.sh
