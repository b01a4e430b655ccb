#!/usr/bin/env bash
# Run the source checks tests/check_*.sh, every test program in $1 (default
# build/tests) and every tests/cli_*.sh, add up their RESULT lines and print
# "N passed, N failed".
set -u
dir=${1:-build/tests}
passed=0; failed=0; broken=()
run_one() {   # name, command...
    local name=$1; shift
    local log; log=$(mktemp)
    local t0=$SECONDS
    "$@" >"$log" 2>&1
    local rc=$?
    local line; line=$(grep '^RESULT ' "$log" | tail -n 1)
    local p=0 f=0
    if [[ $line =~ passed=([0-9]+)\ failed=([0-9]+) ]]; then p=${BASH_REMATCH[1]}; f=${BASH_REMATCH[2]}; fi
    if [ $rc -ne 0 ] && [ "$f" = 0 ]; then f=1; fi          # crashed or exited non-zero without saying why
    if [ "$p" = 0 ] && [ "$f" = 0 ]; then f=1; echo "  (no RESULT line)" >>"$log"; fi
    passed=$((passed + p)); failed=$((failed + f))
    printf '%-32s %3d passed %3d failed  %3ds\n' "$name" "$p" "$f" $((SECONDS - t0))
    grep '^skip ' "$log" | sed 's/^/    /'          # a part not run, and why
    if [ "$f" != 0 ]; then broken+=("$name"); sed 's/^/    /' "$log" | grep -v '^    ok ' | tail -n 40; fi
    rm -f "$log"
}
for s in tests/check_*.sh; do
    [ -f "$s" ] || continue
    run_one "$(basename "$s")" bash "$s"
done
for t in "$dir"/test_*; do
    [ -x "$t" ] || continue
    run_one "$(basename "$t")" "$t"
done
for s in tests/cli_*.sh; do
    [ -f "$s" ] || continue
    run_one "$(basename "$s")" bash "$s"
done
# ---- aarch64 test programs cross-built by simd/simd.mk, run under qemu-user ----
# $KVLAB_ARM64_TESTS (set by make; default build-arm64/tests, empty = skip).
arm_dir=${KVLAB_ARM64_TESTS-build-arm64/tests}
if [ -n "$arm_dir" ] && [ -d "$arm_dir" ]; then
    if command -v qemu-aarch64 >/dev/null 2>&1; then
        for t in "$arm_dir"/test_*; do
            [ -x "$t" ] || continue
            # one OpenMP thread: emulated spin-waits at OpenMP barriers cost minutes
            OMP_NUM_THREADS=1 KVLAB_GOLDEN_QUICK=1 run_one "arm64/$(basename "$t")" qemu-aarch64 -L /usr/aarch64-linux-gnu "$t"
        done
    else
        echo "arm64 tests in $arm_dir not run: qemu-aarch64 not installed"
    fi
fi
# ---- end of aarch64 tests ----
[ ${#broken[@]} -eq 0 ] || echo "failing: ${broken[*]}"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
