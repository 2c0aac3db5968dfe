#!/usr/bin/env bash
# bench/fuzz.sh: runs every cargo-fuzz (libFuzzer) target of fuzz/ for a set
# time and prints, per target, executions, executions per second and corpus
# size (figures, never assertions). A crash stops with libFuzzer's report and
# the input in fuzz/artifacts/<target>/: copy it into fuzz/regressions/<target>/
# (replayed by `cargo test --manifest-path fuzz/Cargo.toml`), then fix the parser.
#
# Usage: bench/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]   (default 60, all)
#
# Toolchain: the pinned stable (rust-toolchain.toml). libFuzzer needs rustc's
# -Z flags (-Zsanitizer, -Cpasses=sancov-module via cargo-fuzz), which stable
# accepts only with RUSTC_BOOTSTRAP=1; that is what this script sets. Set
# FUZZ_TOOLCHAIN=nightly to use a nightly toolchain instead, and
# FUZZ_SANITIZER=address for ASan (default none: hakube's crates have no
# unsafe code, and ASan costs ~2x executions on two cores).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
secs=${1:-60}
shift || true
cd "$repo/fuzz"
command -v cargo-fuzz >/dev/null || {
    echo "bench/fuzz.sh: cargo-fuzz missing: cargo install cargo-fuzz --locked" >&2
    exit 1
}
toolchain=()
if [[ -n ${FUZZ_TOOLCHAIN:-} ]]; then
    toolchain=("+$FUZZ_TOOLCHAIN")
else
    export RUSTC_BOOTSTRAP=1
fi
san=${FUZZ_SANITIZER:-none}
targets=("$@")
((${#targets[@]})) || mapfile -t targets < <(cargo "${toolchain[@]}" fuzz list)
corpus_root=${FUZZ_CORPUS:-$repo/target/fuzz-corpus}
cargo "${toolchain[@]}" fuzz build -s "$san" -O
printf '%-14s %10s %10s %8s\n' target execs exec/s corpus
for t in "${targets[@]}"; do
    corpus=$corpus_root/$t
    mkdir -p "$corpus"
    log=$(mktemp)
    # Seeds and every kept regression input start the corpus.
    if ! cargo "${toolchain[@]}" fuzz run -s "$san" -O "$t" "$corpus" "seeds/$t" "regressions/$t" -- \
        -max_total_time="$secs" -print_final_stats=1 -close_fd_mask=3 >"$log" 2>&1; then
        cat "$log" >&2
        echo "bench/fuzz.sh: $t found a crash: see fuzz/artifacts/$t/" >&2
        exit 1
    fi
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log")
    printf '%-14s %10s %10s %8s\n' "$t" "${execs:-?}" "${rate:-?}" "$(find "$corpus" -type f | wc -l)"
    rm -f "$log"
done
