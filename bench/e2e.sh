#!/usr/bin/env bash
# bench/e2e.sh: the cluster scenarios of builder/tests/vm_cluster.rs with their
# figures (reports, never asserts times): per node power-on to first boot
# complete, power-on to every node Ready ("cluster formed in N s"), and for
# the HA scenario the time until the API answers through the VIP again after
# the VIP holder is powered off.
#   forms: 1 master (stacked etcd, VIP) + 1 worker  (about 30 min under TCG:
#          ignored in scripts/test-all, run here)
#   ha:    3 masters + 1 worker, the VIP holder killed (only here: 4 VMs under
#          TCG do not fit CI's budget)
#   etcd:  external etcd (3 etcd VMs, a master, a worker): a power cut in an
#          etcd VM's first boot, then an etcd VM reimaged (only here: 5 VMs)
# Needs root. Builds (or takes from their caches) what scripts/test-all does:
# the real binaries (srcbuild/build, unless HAKUBE_SRCBUILD_BIN names them),
# the test mirror (HAKUBE_TEST_MIRROR, default target/test-mirror), the
# container images (HAKUBE_TEST_IMAGES, default target/test-images) and the
# TLS test registry serving them (started here and stopped on exit, unless
# HAKUBE_TEST_REGISTRY and HAKUBE_TEST_REGISTRY_CA name a running one).
# Usage: bench/e2e.sh [forms|ha|etcd|all]   (default all). Figures: target/e2e-timings.txt
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
which=${1:-all}
case $which in forms | ha | etcd | all) ;; *) echo "usage: $0 [forms|ha|etcd|all]" >&2; exit 2 ;; esac
if [[ -z ${HAKUBE_SRCBUILD_BIN:-} ]]; then
    HAKUBE_SRCBUILD_BIN=$(srcbuild/build | tail -n1)
fi
export HAKUBE_SRCBUILD_BIN
export HAKUBE_TEST_MIRROR="${HAKUBE_TEST_MIRROR:-$repo/target/test-mirror}"
tests/make-mirror "$HAKUBE_TEST_MIRROR" >/dev/null
if [[ -z ${HAKUBE_TEST_REGISTRY:-} || -z ${HAKUBE_TEST_REGISTRY_CA:-} ]]; then
    export HAKUBE_TEST_IMAGES="${HAKUBE_TEST_IMAGES:-$repo/target/test-images}"
    tests/make-images "$HAKUBE_TEST_IMAGES" >/dev/null
    registry_dir=${CARGO_TARGET_DIR:-$repo/target}/test-registry
    trap 'tests/registry stop "$registry_dir"' EXIT
    while read -r line; do export "${line?}"; done < <(tests/registry start "$registry_dir" "$HAKUBE_TEST_IMAGES")
    [[ -n ${HAKUBE_TEST_REGISTRY:-} && -n ${HAKUBE_TEST_REGISTRY_CA:-} ]] || { echo "e2e: tests/registry start failed" >&2; exit 1; }
fi
timings=${CARGO_TARGET_DIR:-$repo/target}/e2e-timings.txt
: >"$timings"
export HAKUBE_E2E_TIMINGS=$timings

run() { # run SCENARIO TEST_TARGET TEST_NAME
    local scenario=$1 target=$2 name=$3
    local t0=$SECONDS rc=0 log
    log=$(mktemp)
    # --include-ignored: the scenarios too slow for CI are ignored there.
    cargo test -q --workspace --test "$target" -- --exact "$name" \
        --include-ignored --nocapture 2>&1 | tee "$log" || rc=$?
    # A filter that matched nothing, or a test that did not run, is a failure.
    grep -q '^test result: ok. 1 passed' "$log" || { [[ $rc != 0 ]] || rc=1; }
    rm -f "$log"
    echo "$scenario scenario-wall $((SECONDS - t0))" >>"$timings"
    echo "== $scenario: $([[ $rc == 0 ]] && echo passed || echo "FAILED (exit $rc)") in $((SECONDS - t0)) s"
    return $rc
}

rc=0
case $which in
forms | all) run forms vm_cluster forms_a_working_cluster_with_nothing_done_after_power_on || rc=1 ;;&
ha | all) run ha vm_cluster ha_survives_losing_the_vip_holder || rc=1 ;;&
etcd | all) run etcd-faults vm_etcd_faults \
    etcd_survives_a_power_cut_in_first_boot_and_a_reimaged_member || rc=1 ;;&
forms | ha | etcd | all) ;;
*) echo "usage: $0 [forms|ha|etcd|all]" >&2; exit 2 ;;
esac

echo
echo "scenario  figure                          seconds"
while read -r scenario key secs; do
    printf '%-9s %-31s %7s\n' "$scenario" "$key" "$secs"
done <"$timings"
echo "(figures: $timings; logs of a failed scenario: target/e2e-artifacts/)"
exit $rc
