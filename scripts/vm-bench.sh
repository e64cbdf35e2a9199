#!/bin/bash
# Measures the VM tier: boot-to-command time and dm-crypt throughput in the
# guest, for each qemu CPU model given (default: max qemu64). max emulates
# AES-NI, so dm-crypt uses aesni-intel; qemu64 has no AES-NI and falls back
# to the generic C AES. Usage: scripts/vm-bench.sh [-n RUNS] [CPU...]
set -euo pipefail
cd "$(dirname "$0")/.."
export GOFLAGS="${GOFLAGS:--buildvcs=false}"
runs=1
if [ "${1:-}" = "-n" ]; then runs=$2; shift 2; fi
cpus=("$@")
[ ${#cpus[@]} -gt 0 ] || cpus=(max qemu64)

bin=$(mktemp -d)
trap 'rm -rf "$bin"' EXIT
go build -o "$bin/vmkit" ./internal/harness/vmtest/cmd/vmkit
"$bin/vmkit" build >/dev/null

# The guest side: 128 MiB through dm-crypt (direct I/O, so the page cache
# does not flatter it), the same through the bare loop device for scale,
# and the kernel's own cipher benchmark through AF_ALG.
guest='
set -e
truncate -s 160M /tmp/d.img
dev=$(losetup --find --show /tmp/d.img)
printf bench | cryptsetup luksFormat -q --type luks2 --pbkdf argon2id \
  --pbkdf-force-iterations 4 --pbkdf-memory 32768 --key-file - "$dev"
printf bench | cryptsetup open --key-file - "$dev" bench
rate() { sed -n "s/.*copied, \([0-9.]*\) s, \(.*\)/\2 (\1 s)/p"; }
echo "aes driver: $(awk "/^name/{n=\$3} /^driver/{if (n==\"xts(aes)\") {print \$3; exit}}" /proc/crypto)"
echo "dm-crypt write: $(dd if=/dev/zero of=/dev/mapper/bench bs=1M count=128 oflag=direct 2>&1 | rate)"
echo "dm-crypt read:  $(dd if=/dev/mapper/bench of=/dev/null bs=1M count=128 iflag=direct 2>&1 | rate)"
echo "plain loop write: $(dd if=/dev/zero of="$dev" bs=1M count=128 oflag=direct 2>&1 | rate)"
cryptsetup benchmark -c aes-xts -s 512 2>/dev/null | tail -1
cryptsetup close bench
losetup --detach "$dev"
'
for cpu in "${cpus[@]}"; do
  for i in $(seq "$runs"); do
    echo "== -cpu $cpu (run $i), load average $(cut -d" " -f1-3 /proc/loadavg)"
    "$bin/vmkit" run -cpu "$cpu" -- sh -c "$guest"
  done
done
