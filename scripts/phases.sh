# Sourced by scripts/test-all: named, timed phases and the table printed at
# the end of every run, passed or failed, so a regression in any phase shows
# at once. bench/suite.sh keeps the tables across commits.
#   phase NAME        starts a phase (and ends the one before)
#   phase_rows FILE   records one row per line of FILE: "NAME<TAB>SECONDS"
#                     (sub-phases measured elsewhere, e.g. each test binary)
#   phases_report RC  ends the current phase (FAILED when RC != 0), prints
#                     the table and writes it to $HAKUBE_PHASES_FILE if set
phases_start=$SECONDS
phases_rows=()
phases_current=
phases_t0=0

phase() {
    phases_end ok
    phases_current=$1
    phases_t0=$SECONDS
    echo "== $1"
}

phases_end() { # ok|FAILED
    [[ -n $phases_current ]] || return 0
    phases_rows+=("$phases_current"$'\t'"$((SECONDS - phases_t0))"$'\t'"$1")
    phases_current=
}

phase_rows() {
    local name secs
    while IFS=$'\t' read -r name secs; do
        [[ -n $name ]] && phases_rows+=("  $name"$'\t'"$secs"$'\t'"")
    done <"$1"
}

phases_report() {
    local rc=$1 row name secs state total=$((SECONDS - phases_start))
    phases_end "$([[ $rc == 0 ]] && echo ok || echo FAILED)"
    {
        echo
        printf '%-52s %7s  %s\n' "phase" "seconds" ""
        for row in "${phases_rows[@]}"; do
            IFS=$'\t' read -r name secs state <<<"$row"
            printf '%-52s %7s  %s\n' "$name" "$secs" "$state"
        done
        printf '%-52s %7s  %s\n' "total" "$total" "$([[ $rc == 0 ]] && echo passed || echo "FAILED (exit $rc)")"
    } | tee ${HAKUBE_PHASES_FILE:+"$HAKUBE_PHASES_FILE"} >&2
}
