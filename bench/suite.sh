#!/usr/bin/env bash
# bench/suite.sh: runs the README test command (scripts/test-all) and keeps
# its phase table, so the suite's time is tracked across commits (figures,
# never assertions). Appends one line per phase to bench/results/suite.tsv:
#   date  commit  cold|warm  phase  seconds  state
# "cold" when the shared cargo target directory did not exist before the run
# (a machine with nothing compiled), "warm" otherwise; pass --label LABEL to
# say more (e.g. "purged" after removing every cache). The table itself also
# goes to bench/results/suite-<commit>-<time>.txt. The exit code is the test
# command's.
set -uo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
label=
if [[ ${1:-} == --label ]]; then label=${2:?usage: bench/suite.sh [--label LABEL]}; fi
target=${CARGO_TARGET_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/hakube/cargo-target}
kind=$([[ -d $target ]] && echo warm || echo cold)
[[ -z $label ]] || kind="$kind/$label"
commit=$(git rev-parse --short HEAD)
stamp=$(date -u +%Y-%m-%dT%H:%M:%SZ)
mkdir -p bench/results
table=bench/results/suite-$commit-$(date -u +%Y%m%d%H%M%S).txt
HAKUBE_PHASES_FILE=$table scripts/test-all
rc=$?
# Rows of the table: NAME (may hold spaces) SECONDS [STATE]
sed -n '2,$p' "$table" | while IFS= read -r line; do
    [[ $line =~ ^(.*[^ ])\ +([0-9]+)(\ +(.*))?$ ]] || continue
    printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$stamp" "$commit" "$kind" \
        "$(sed 's/^ *//' <<<"${BASH_REMATCH[1]}")" "${BASH_REMATCH[2]}" "${BASH_REMATCH[4]}"
done >>bench/results/suite.tsv
echo "bench/suite.sh: $kind run at $commit: exit $rc; table in $table, history in bench/results/suite.tsv"
exit $rc
