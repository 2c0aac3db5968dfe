#!/bin/sh
# Times `hakube-build render` (release build): the embedded default cluster
# (4 nodes) and profiles/examples/external-etcd.yaml (9 nodes), each cold
# (new state directory: CAs, keys and every certificate created) and warm
# (existing state: everything reused). Target: default cluster under 2 s.
set -eu
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
cargo build --release -q -p hakube-build
bin="$CARGO_TARGET_DIR/release/hakube-build"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# Wall-clock seconds of one command (output discarded).
secs() {
    start=$(date +%s.%N)
    "$@" >/dev/null
    end=$(date +%s.%N)
    echo "$end - $start" | bc
}

run() { # label, cluster args...
    label=$1; shift
    state="$work/state-$label"
    cold=$(secs "$bin" render "$@" --state "$state" --out "$work/out-$label")
    warm=$(secs "$bin" render "$@" --state "$state" --out "$work/out-$label")
    nodes=$(find "$work/out-$label" -maxdepth 1 -name '*.ign' | wc -l)
    printf '%-16s %2d nodes   cold %6.3f s   warm %6.3f s\n' "$label" "$nodes" "$cold" "$warm"
}

echo "hakube-build render ($(nproc) cores)"
run default
run external-etcd --cluster profiles/examples/external-etcd.yaml
