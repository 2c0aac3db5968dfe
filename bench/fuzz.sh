#!/usr/bin/env bash
# bench/fuzz.sh: runs every libFuzzer target of fuzz/ for a set time and
# prints, per target, executions, executions per second and corpus size
# (figures, never assertions). The corpus grows across runs in
# target/fuzz-corpus/<target>/. A crash stops with libFuzzer's report, the
# panic message and the input in target/fuzz-artifacts/<target>/: copy it
# into fuzz/regressions/<target>/ (replayed by `cargo test --manifest-path
# fuzz/Cargo.toml`), then fix the parser.
#
# Usage: bench/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]   (default 60, all)
#
# Built by tests/fuzz-run on the pinned stable toolchain (LLVM's sancov pass
# through -Cpasses, libFuzzer compiled by libfuzzer-sys): no nightly and no
# cargo-fuzz needed. scripts/test-all makes the short, fixed-seed run.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
secs=${1:-60}
shift || true
exec "$repo/tests/fuzz-run" "$secs" "$@"
