#!/usr/bin/env bash
# run.sh FUZZ_BUILD SECONDS PARALLEL TARGET... — run each libFuzzer target
# (FUZZ_BUILD/fuzz_TARGET) for SECONDS on its corpus FUZZ_BUILD/corpus/TARGET,
# PARALLEL at a time; print executions per target; exit 1 if any crashed,
# leaked, timed out or ran out of memory (the input is in FUZZ_BUILD/crashes/TARGET/:
# copy it to tests/fuzz/regress/TARGET/ so test_fuzz_regress replays it, then fix).
set -u
build=$1 secs=$2 par=$3; shift 3
mkdir -p "$build/logs"
run_one() {   # target, CPU
    local t=$1 cpu=$2
    mkdir -p "$build/crashes/$t" "$build/corpus/$t"
    local pin=(taskset -c "$cpu")
    "${pin[@]}" true 2>/dev/null || pin=()   # no taskset, or CPU not ours: unpinned
    # one OpenMP thread (libFuzzer runs one input at a time); -timeout: a hang is a bug;
    # -rss_limit_mb / -malloc_limit_mb: so is an allocation sized by the input
    # pinned to one CPU: unmapping memory (every model load does) then needs no
    # TLB-shootdown IPIs to other CPUs, which in a VM halved the executions
    OMP_NUM_THREADS=1 ASAN_OPTIONS=detect_leaks=1:allocator_may_return_null=0 \
    UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
        "${pin[@]}" "$build/fuzz_$t" -max_total_time="$secs" -timeout=20 -rss_limit_mb=2560 -malloc_limit_mb=2048 \
        -print_final_stats=1 -artifact_prefix="$build/crashes/$t/" "$build/corpus/$t" \
        >"$build/logs/$t.log" 2>&1
    echo $? >"$build/logs/$t.rc"
}
# PARALLEL lanes, lane k on CPU k running targets k, k+PARALLEL, ... in turn
targets=("$@")
for ((lane = 0; lane < par; lane++)); do
    ( for ((i = lane; i < ${#targets[@]}; i += par)); do run_one "${targets[i]}" "$lane"; done ) &
done
wait
bad=0
printf '%-12s %12s %10s %8s  %s\n' target executions exec/s corpus status
for t in "$@"; do
    log=$build/logs/$t.log rc=$(cat "$build/logs/$t.rc" 2>/dev/null || echo 1)
    execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -n 1)
    rate=$(grep -o 'stat::average_exec_per_sec: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -n 1)
    corpus=$(ls "$build/corpus/$t" | wc -l)
    status=ok
    if [ "$rc" != 0 ]; then
        status="FAILED (exit $rc): $(grep -m1 -E 'ERROR: |SUMMARY: |runtime error' "$log" | cut -c1-120); see $log"
        bad=1
    fi
    printf '%-12s %12s %10s %8s  %s\n' "$t" "${execs:-?}" "${rate:-?}" "$corpus" "$status"
done
exit $bad
