#!/usr/bin/env bash
# bench/build.sh: prints build figures for hakube-build (reports, never asserts).
#   cold build of one image (empty cache), warm rebuild, all 4 images of the
#   default cluster, each image's qcow2 size.
# Targets on a 2-core machine: cold < 120 s, warm < 15 s, 4 images < 1.5x one
# image, worker qcow2 < 350 MB. Needs root (mmdebstrap), network to Debian.
# Usage: bench/build.sh [WORKDIR]   (default: a fresh temporary directory)
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
work=${1:-$(mktemp -d /var/tmp/hakube-bench.XXXXXX)}
mkdir -p "$work"
cd "$repo"
cargo build --quiet --release -p hakube-build -p hakube-firstboot
bin=${CARGO_TARGET_DIR:-$repo/target}/release/hakube-build
[[ -d $work/mirror ]] || tests/make-mirror "$work/mirror" >/dev/null

build() { # build OUT CACHE ARGS...
    local out=$1 cache=$2
    shift 2
    local t0 t1
    t0=$(date +%s.%N)
    "$bin" --artifacts "$work/mirror" --state "$work/state" --lock "$work/hakube.lock" \
        --cache-dir "$cache" --out "$out" "$@" 2>>"$work/bench.log" >/dev/null
    t1=$(date +%s.%N)
    echo "$t1 - $t0" | bc
}

rm -rf "$work/cache-cold"
cold=$(build "$work/out-cold" "$work/cache-cold" --profile worker --node worker-1)
warm=$(build "$work/out-warm" "$work/cache-cold" --profile worker --node worker-1)
t_master=$(build "$work/out-all" "$work/cache-cold" --profile master)
t_worker=$(build "$work/out-all" "$work/cache-cold" --profile worker)
all=$(echo "$t_master + $t_worker" | bc)

printf '%-44s %8.1f s   (target < 120 s)\n' "cold build, worker-1, empty cache" "$cold"
printf '%-44s %8.1f s   (target < 15 s)\n' "warm rebuild, worker-1" "$warm"
printf '%-44s %8.1f s   (target < %.1f s = 1.5x warm one image)\n' \
    "all 4 images of the default cluster (warm)" "$all" "$(echo "1.5 * $warm" | bc)"
for f in "$work"/out-all/hakube/*.qcow2; do
    printf '%-44s %8.1f MB  (worker target < 350 MB)\n' "qcow2 $(basename "$f")" \
        "$(echo "$(stat -c %s "$f") / 1000000" | bc -l)"
done
cmp -s "$work/out-cold/hakube/worker-1.qcow2" "$work/out-warm/hakube/worker-1.qcow2" &&
    echo "cold and warm worker-1.qcow2: bit-identical" ||
    echo "cold and warm worker-1.qcow2: DIFFER"
echo "(log: $work/bench.log)"
