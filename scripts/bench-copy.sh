#!/bin/bash
# Copier benchmark: cryptshift's copier (verification included) against
# qemu-img convert and dd at their strongest settings, and against the
# machine's direct-write limit, on the same source images in one run:
#   sparse4g  4 GiB, 25% allocated: 256 extents of 4 MiB of random data
#   dense1g   1 GiB of random data
# Every tool writes a full, non-sparse target on the same filesystem, into a
# fresh file each run; the page cache is dropped before each run when we are
# root. Each tool runs BENCH_REPS times (default 3), interleaved, and the
# median counts. Prints
#   time NAME SECONDS      median wall time (and the single runs)
#   ratio PEER-IMAGE X     peer time / cryptshift time (higher is better)
#   limit IMAGE X          cryptshift time / direct-write limit time
# and, restated against peers that also verify (cryptshift's copy reads
# every chunk back from the disk and compares it; a copy alone verifies
# nothing):
#   ratio qemu-img+compare-IMAGE X   qemu-img convert, then qemu-img compare
#                                    (-T none: from the disk, not the cache)
#   ratio dd+cmp-IMAGE X             dd, cache dropped, then cmp
#   bound IMAGE X          cryptshift time / the disk's bound for a verified
#                          copy: read the source + write the target + read
#                          the target back (direct I/O, each measured on the
#                          same disk in the same run; 1.0 is the limit)
# "cryptshift" is copy plus verify-behind (what migrate runs); the extra
# time lines show cryptshift-noverify (the copy alone) and
# cryptshift-hash-after (copy, then copier.Hash of the target).
# Environment: BENCH_DIR (default .cache in the repository; not a tmpfs),
# BENCH_REPS.
set -euo pipefail
cd "$(dirname "$0")/.."
export GOFLAGS="${GOFLAGS:--buildvcs=false}"

reps=${BENCH_REPS:-3}
base=${BENCH_DIR:-$PWD/.cache}
mkdir -p "$base"
if [ "$(stat -f -c %T "$base")" = tmpfs ]; then
	echo "bench-copy: cannot benchmark in $base: it is a tmpfs (memory, not a disk); set BENCH_DIR" >&2
	exit 1
fi
# sparse4g allocates 1 GiB, dense1g 1 GiB, one target at most 4 GiB.
need_kib=$((8 * 1024 * 1024))
free_kib=$(df -Pk "$base" | awk 'NR==2 {print $4}')
if [ "$free_kib" -lt "$need_kib" ]; then
	echo "bench-copy: cannot benchmark in $base: $((free_kib / 1024)) MiB free, need $((need_kib / 1024)) MiB; set BENCH_DIR" >&2
	exit 1
fi
for tool in qemu-img dd cmp; do
	command -v "$tool" >/dev/null || { echo "bench-copy: cannot find $tool (make deps)" >&2; exit 1; }
done

dir=$(mktemp -d "$base/bench-copy.XXXXXX")
trap 'rm -rf "$dir"' EXIT
go build -o "$dir/copybench" ./internal/runner/copier/internal/copybench

drop=no
if [ -w /proc/sys/vm/drop_caches ]; then drop=yes; fi
dropcaches() {
	sync
	if [ $drop = yes ]; then echo 3 >/proc/sys/vm/drop_caches; fi
}
[ $drop = yes ] || echo "# not root: page cache not dropped between runs" >&2

# Source images.
truncate -s 4G "$dir/sparse4g"
for i in $(seq 0 255); do
	# Extents every 16 MiB, shifted by 0..11 MiB so that they do not line up
	# with any chunk size.
	dd if=/dev/urandom of="$dir/sparse4g" bs=1M seek=$((i * 16 + (i * 5 % 12))) count=4 conv=notrunc status=none
done
dd if=/dev/urandom of="$dir/dense1g" bs=4M count=256 status=none
sync

now() { date +%s.%N; }
# run NAME IMAGE: one timed run of a tool writing $dir/target; prints seconds.
run() {
	local name=$1 img=$2 src=$dir/$2 dst=$dir/target size t0 t1
	size=$(stat -c %s "$src")
	rm -f "$dst"
	# qemu-img creates its target; the others get a fresh empty file.
	case $name in qemu-img | qemu-img+compare) ;; *) truncate -s "$size" "$dst" ;; esac
	dropcaches
	t0=$(now)
	case $name in
	cryptshift) "$dir/copybench" -verify behind "$src" "$dst" >"$dir/result.json" ;;
	cryptshift-hash-after) "$dir/copybench" -verify after "$src" "$dst" >/dev/null ;;
	cryptshift-noverify) "$dir/copybench" -verify none "$src" "$dst" >/dev/null ;;
	qemu-img) qemu-img convert -S 0 -t none -T none -m 16 -W -O raw "$src" "$dst" ;;
	qemu-img+compare)
		qemu-img convert -S 0 -t none -T none -m 16 -W -O raw "$src" "$dst"
		qemu-img compare -q -T none -f raw -F raw "$src" "$dst" ;;
	dd) dd if="$src" of="$dst" bs=4M iflag=direct oflag=direct conv=notrunc status=none ;;
	dd+cmp)
		dd if="$src" of="$dst" bs=4M iflag=direct oflag=direct conv=notrunc status=none
		dropcaches
		cmp "$src" "$dst" ;;
	limit) dd if=/dev/zero of="$dst" bs=4M count=$((size / 4194304)) oflag=direct conv=notrunc status=none ;;
	bound)
		# read the source (holes cost no I/O, as for every tool), write
		# the target, read it back: the I/O a verified copy cannot avoid.
		dd if="$src" of=/dev/null bs=4M iflag=direct status=none
		dd if=/dev/zero of="$dst" bs=4M count=$((size / 4194304)) oflag=direct conv=notrunc status=none
		dd if="$dst" of=/dev/null bs=4M iflag=direct status=none ;;
	esac
	t1=$(now)
	# Every tool must have written every block: a sparse target would not
	# be a fair comparison.
	local alloc=$(($(stat -c %b "$dst") * $(stat -c %B "$dst")))
	if [ "$alloc" -lt "$size" ]; then
		echo "bench-copy: $name left $img's target sparse ($alloc of $size bytes allocated)" >&2
		exit 1
	fi
	if [ "$name" = cryptshift ] && [ ! -e "$dir/checked-$img" ]; then
		cmp "$src" "$dst" || { echo "bench-copy: cryptshift's copy of $img differs from the source" >&2; exit 1; }
		grep -q '"verified":true' "$dir/result.json" || { echo "bench-copy: cryptshift did not verify $img" >&2; exit 1; }
		touch "$dir/checked-$img"
	fi
	echo "$t1 - $t0" | bc -l
}

median() { tr ' ' '\n' | grep . | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
ratio() { echo "scale=4; $1 / $2" | bc -l | awk '{printf "%.2f\n", $1}'; }

# The copier hashes on the CPU and the peers do not: on a machine shared
# with other work, say how busy it was so the ratios can be read.
echo "# load average at start: $(cut -d' ' -f1-3 /proc/loadavg), $(nproc) CPUs"
tools="cryptshift qemu-img dd limit qemu-img+compare dd+cmp bound cryptshift-noverify cryptshift-hash-after"
for img in sparse4g dense1g; do
	declare -A times=()
	for r in $(seq "$reps"); do
		for t in $tools; do
			times[$t]+="$(run "$t" "$img") "
		done
	done
	declare -A med=()
	for t in $tools; do
		med[$t]=$(echo "${times[$t]}" | median)
		printf 'time %s-%s %.2f   # runs: %s\n' "$t" "$img" "${med[$t]}" "${times[$t]% }"
	done
	echo "ratio qemu-img-$img $(ratio "${med[qemu-img]}" "${med[cryptshift]}")"
	echo "ratio dd-$img $(ratio "${med[dd]}" "${med[cryptshift]}")"
	echo "limit $img $(ratio "${med[cryptshift]}" "${med[limit]}")"
	echo "ratio qemu-img+compare-$img $(ratio "${med[qemu-img+compare]}" "${med[cryptshift]}")"
	echo "ratio dd+cmp-$img $(ratio "${med[dd+cmp]}" "${med[cryptshift]}")"
	echo "bound $img $(ratio "${med[cryptshift]}" "${med[bound]}")"
	unset times med
done
echo "# load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"
