#!/usr/bin/env bash
# bench/images.sh: figures for the container images inside the disks (reports,
# never asserts): the qcow2 size of a worker and a master with their images,
# the size of the images per node, and the build time the images add (the
# "container images" step cold and warm, the containerd image store step
# cold and warm, and the var partition step that writes the store).
#
# Needs what a build needs (root, mmdebstrap, network to Debian) plus the real
# images in a local registry: HAKUBE_TEST_REGISTRY=127.0.0.1:PORT and
# HAKUBE_TEST_REGISTRY_CA=FILE (helper srcbuild's tests/registry start), and an
# artifact mirror HAKUBE_TEST_MIRROR (tests/make-mirror) whose kubeadm prints
# the image list.
# Usage: bench/images.sh [WORKDIR]   (default: a fresh temporary directory)
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
: "${HAKUBE_TEST_REGISTRY:?set HAKUBE_TEST_REGISTRY=127.0.0.1:PORT (a registry holding the images)}"
: "${HAKUBE_TEST_REGISTRY_CA:?set HAKUBE_TEST_REGISTRY_CA=FILE (the registry CA, PEM)}"
: "${HAKUBE_TEST_MIRROR:?set HAKUBE_TEST_MIRROR=DIR (tests/make-mirror DIR)}"
work=${1:-$(mktemp -d /var/tmp/hakube-bench-images.XXXXXX)}
mkdir -p "$work"
cd "$repo"
cargo build --quiet --release -p hakube-build -p hakube-firstboot
bin=${CARGO_TARGET_DIR:-$repo/target}/release/hakube-build
reg=https://$HAKUBE_TEST_REGISTRY
mirrors=()
for r in registry.k8s.io ghcr.io docker.io quay.io; do
    mirrors+=(--registry-mirror "$r=$reg/$r")
done

build() { # build OUT CACHE ARGS... -> prints the --json result
    local out=$1 cache=$2
    shift 2
    "$bin" --artifacts "$HAKUBE_TEST_MIRROR" --state "$work/state" --lock "$work/hakube.lock" \
        --cache-dir "$cache" --out "$out" "${mirrors[@]}" --registry-ca "$HAKUBE_TEST_REGISTRY_CA" \
        --json "$@" 2>>"$work/bench.log"
}
step() { # step JSON NAME-PREFIX -> seconds summed over steps whose name starts with it
    python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print("%.1f" % sum(t["seconds"] for t in r["timings"] if t["name"].startswith(sys.argv[2]) or t["name"].endswith(sys.argv[2])))' "$1" "$2"
}

rm -rf "$work/cache"
build "$work/out" "$work/cache" --profile worker --node worker-1 >"$work/worker-cold.json"
build "$work/out" "$work/cache" --profile worker --node worker-1 >"$work/worker-warm.json"
build "$work/out" "$work/cache" --profile master --node master-1 >"$work/master.json"

printf '%-52s %8s s\n' "container images step, cold cache (worker-1)" "$(step "$work/worker-cold.json" "container images")"
printf '%-52s %8s s\n' "container images step, warm cache (worker-1)" "$(step "$work/worker-warm.json" "container images")"
printf '%-52s %8s s\n' "containerd image store step, cold (worker-1)" "$(step "$work/worker-cold.json" "containerd image store (cached)")"
printf '%-52s %8s s\n' "containerd image store step, warm (worker-1)" "$(step "$work/worker-warm.json" "containerd image store (cached)")"
printf '%-52s %8s s\n' "containerd image store step, cold (master-1)" "$(step "$work/master.json" "containerd image store (cached)")"
printf '%-52s %8s s\n' "var partition step (lays the store), worker-1" "$(step "$work/worker-warm.json" ": var partition")"
printf '%-52s %8s s\n' "var partition step (lays the store), master-1" "$(step "$work/master.json" ": var partition")"
for n in worker-1 master-1; do
    f=$work/out/hakube/$n.qcow2
    printf '%-52s %8.1f MB\n' "qcow2 $n (with its images)" "$(echo "$(stat -c %s "$f") / 1000000" | bc -l)"
    python3 - "$work/out/hakube/manifest.json" "$n" <<'PY'
import json, sys
m = json.load(open(sys.argv[1]))
imgs = m["images"][sys.argv[2]]["containerImages"]
print("  %d images: %s" % (len(imgs), ", ".join(i["image"] for i in imgs)))
PY
done
echo "(log: $work/bench.log)"
