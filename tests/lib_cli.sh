# lib_cli.sh — helpers for shell tests of the kvlab command line (source it).
#   expect_ok   NAME CMD...            exit status 0
#   expect_fail NAME PATTERN CMD...    exit status != 0 and exactly one line on
#                                      stderr, starting "kvlab: " and matching PATTERN
#   check       NAME CONDITION-CMD...  any command that must succeed
#   finish                             prints the RESULT line, exits 0/1
KVLAB=${KVLAB:-./kvlab}
SHARED=${KVLAB_SHARED:-../shared}
TEST_NAME=$(basename "$0")
PASSED=0; FAILED=0
TMP=$(mktemp -d); trap '[ -n "${KEEP_TMP:-}" ] || rm -rf "$TMP"' EXIT

pass() { PASSED=$((PASSED + 1)); echo "ok    $1"; }
fail() { FAILED=$((FAILED + 1)); echo "FAIL  $1"; shift; [ $# -gt 0 ] && printf '    %s\n' "$@"; }

expect_ok() {
    local name=$1; shift
    if "$@" >"$TMP/out" 2>"$TMP/err"; then pass "$name"; else fail "$name" "exit $?: $(tail -n 3 "$TMP/err")"; fi
}

expect_fail() {
    local name=$1 pattern=$2; shift 2
    "$@" >"$TMP/out" 2>"$TMP/err"
    local rc=$? lines; lines=$(wc -l <"$TMP/err")
    if [ $rc -eq 0 ]; then fail "$name" "exit status 0, expected failure"; return; fi
    if [ $rc -ge 128 ]; then fail "$name" "killed by signal $((rc - 128))"; return; fi
    if [ "$lines" -ne 1 ]; then fail "$name" "expected one line on stderr, got $lines:" "$(head -n 5 "$TMP/err")"; return; fi
    if ! grep -q '^kvlab: ' "$TMP/err"; then fail "$name" "stderr does not start with 'kvlab: ': $(cat "$TMP/err")"; return; fi
    if ! grep -qE -- "$pattern" "$TMP/err"; then fail "$name" "stderr '$(cat "$TMP/err")' does not match /$pattern/"; return; fi
    pass "$name"
}

check() {   # does not touch $TMP/out and $TMP/err: it usually inspects them
    local name=$1; shift
    if "$@" >"$TMP/check.out" 2>"$TMP/check.err"; then pass "$name"; else fail "$name" "$(tail -n 3 "$TMP/check.err")"; fi
}

finish() {
    echo "RESULT $TEST_NAME passed=$PASSED failed=$FAILED"
    [ "$FAILED" -eq 0 ]
}
