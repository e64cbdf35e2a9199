#!/bin/bash
# Renders cryptshift's Art. 32 evidence report (HTML) in English and German
# to PNG with headless Chromium, so a person can look at what a client gets.
#
# Usage: scripts/render-reports.sh [FIXTURE] [OUTDIR]
#   FIXTURE  a tree under testdata/verify (default: libvirt-backing-plain)
#   OUTDIR   where report.{en,de}.{html,png} go (default: .cache/reports)
#
# Chromium is large (Debian's chromium 156: about 290 MB installed plus
# about 60 MB of libraries), so it is not in scripts/deps.sh: this script
# installs it (and fonts-dejavu-core) only when run and it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
fixture="${1:-libvirt-backing-plain}"
out="${2:-.cache/reports}"
root="testdata/verify/$fixture/root"
[ -d "$root" ] || { echo "render-reports: no fixture $root" >&2; exit 2; }

need=()
command -v chromium >/dev/null || need+=(chromium)
dpkg-query -W -f='${Status}' fonts-dejavu-core 2>/dev/null | grep -q "install ok installed" || need+=(fonts-dejavu-core)
if ((${#need[@]})); then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  echo "render-reports: installing ${need[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

mkdir -p "$out"
bin=$(mktemp -d)
profile=$(mktemp -d)
trap 'rm -rf "$bin" "$profile"' EXIT
go build -o "$bin/cryptshift" ./cmd/cryptshift
for lang in en de; do
  html="$out/report.$lang.html"
  # Exit status 1 means the report found FAILs: expected for most fixtures.
  "$bin/cryptshift" verify --root "$root" -o html --lang "$lang" --out "$html" || [ $? -eq 1 ]
  # Headless screenshots capture the window, not the page: size the window
  # to the report (about 58 px per table row, plus the header and risks).
  rows=$(grep -o '<tr>' "$html" | wc -l)
  height=${HEIGHT:-$((1400 + rows * 58))}
  # A fresh profile per run, and no network, sync, updates or GPU: the
  # report is self-contained, so nothing needs fetching.
  chromium --headless --no-sandbox --disable-gpu --disable-background-networking \
    --no-first-run --disable-component-update --disable-sync --hide-scrollbars \
    --user-data-dir="$profile/$lang" --window-size=1200,"$height" \
    --screenshot="$out/report.$lang.png" "file://$(realpath "$html")" 2>/dev/null
  echo "render-reports: $out/report.$lang.png"
done
echo "== render-reports: automated check of the rendering (width, text, FAIL banner)"
CRYPTSHIFT_TEST_HOST=1 CRYPTSHIFT_TEST_RENDER=1 go test -count=1 -run '^TestHostRenderReports$' ./internal/audit/verify
