#!/bin/bash
# Benchmarks: Go benchmarks, then tool comparisons.
set -euo pipefail
cd "$(dirname "$0")/.."
go test -run '^$' -bench . -benchmem ./...
