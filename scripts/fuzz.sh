#!/bin/bash
# Runs every Fuzz* target in the module for a bounded time each.
set -euo pipefail
cd "$(dirname "$0")/.."
FUZZTIME="${FUZZTIME:-8s}"
# Minimising a new interesting input may take 60 s by default; a minimisation
# cut short by -fuzztime is reported as "context deadline exceeded", a
# failure. Keep it well inside the fuzz time.
MINIMIZE="${FUZZMINIMIZETIME:-1s}"
n=0
while IFS= read -r line; do
  file="${line%%:*}"
  name="$(sed -E 's/^.*func (Fuzz[A-Za-z0-9_]+).*/\1/' <<<"$line")"
  pkg="./$(dirname "$file")"
  echo "fuzz: $pkg $name ($FUZZTIME)"
  go test -run '^$' -fuzz "^${name}\$" -fuzztime "$FUZZTIME" -fuzzminimizetime "$MINIMIZE" "$pkg"
  n=$((n+1))
done < <(grep -rn --include='*_test.go' -E '^func Fuzz[A-Za-z0-9_]+\(' . | sort)
echo "fuzz: $n targets ran without a crash"
