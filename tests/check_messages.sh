#!/usr/bin/env bash
# check_messages.sh — what kvlab prints names options, files and the problem, never
# its own internals: no string literal in src/ or simd/ holds "NAME:" where NAME is a
# function defined there (a message like "tokenizer_encode: ..." or "(policy_print_help:
# ...)" tells a user nothing), and no code prints __func__ or __FUNCTION__. A name that
# the same file also writes as a field of an output ("key_norm_ratio") may be defined.
# Comments are stripped by the C preprocessor first.
# usage: bash tests/check_messages.sh [ROOT]   (default: the repository root)
set -u
export LC_ALL=C   # one byte order for sort and comm
cd "${1:-$(dirname "$0")/..}" || exit 2
TEST_NAME=check_messages.sh
CC=${CC:-gcc}
passed=0; failed=0
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT

files=(src/*/*.c simd/*.c)
for f in "${files[@]}"; do
    "$CC" -x c -fpreprocessed -E -P "$f" 2>/dev/null >"$work/$(echo "$f" | tr / _)" ||
        echo "check_messages: $CC could not read $f" >&2
done
# the functions defined in src/ and simd/ whose names have an underscore (a plain word
# such as "length:" is English in a message)
cat "$work"/* | grep -oE '^[A-Za-z_][A-Za-z0-9_ *]*[ *]([a-z][a-z0-9]*_[a-z0-9_]+)\(' |
    grep -oE '[a-z][a-z0-9]*_[a-z0-9_]+\($' | tr -d '(' | sort -u | sed 's/$/:/' >"$work.names"
n_names=$(wc -l <"$work.names")
[ "$n_names" -gt 100 ] || { echo "FAIL  found only $n_names function names: the scan is broken"; failed=$((failed + 1)); }

for f in "${files[@]}"; do
    pre=$work/$(echo "$f" | tr / _)
    # a name the file also writes as a literal of its own ("key_norm_ratio") is a field
    # of an output, which a message may define: not counted
    grep -oE '"[a-z0-9_]+"' "$pre" | tr -d '"' | sed 's/$/:/' | sort -u >"$work.fields"
    bad=$(grep -oE '"([^"\\]|\\.)*"' "$pre" | grep -wF -f <(comm -23 "$work.names" "$work.fields"))
    func=$(grep -nE '__func__|__FUNCTION__' "$pre")
    if [ -z "$bad$func" ]; then
        passed=$((passed + 1))
    else
        [ -z "$bad" ] || echo "FAIL  $f: a message names an internal function: $bad"
        [ -z "$func" ] || echo "FAIL  $f: prints __func__: $func"
        failed=$((failed + 1))
    fi
done
rm -f "$work.names" "$work.fields"
echo "checked the string literals of ${#files[@]} files against $n_names function names"
echo "RESULT $TEST_NAME passed=$passed failed=$failed"
[ "$failed" -eq 0 ]
