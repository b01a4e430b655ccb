#!/usr/bin/env bash
# check_docs.sh — the prose names only code that exists. In README.md,
# ARCHITECTURE.md and docs/*.md:
#   - every backticked function, `name()` or `snake_name(args)`, must occur as
#     `name(` in the code of src/, simd/ or tests/ (comments are stripped by the
#     C preprocessor first, so a comment naming a function that is gone does
#     not count). With arguments only names with an underscore count: `pos(p)`
#     and `a(p)` are the maths' notation, not functions;
#   - every source path written as src/.../FILE.c|h, simd/FILE.c|h or
#     tests/FILE must exist (NAME in a path is a placeholder: not checked);
#   - README.md, experiments/, models/ and data/README.md cite no § section of the
#     spec (it is not in the repository): they name the paper and equation.
# usage: bash tests/check_docs.sh [ROOT]   (default: the repository root)
set -u
cd "${1:-$(dirname "$0")/..}" || exit 2
TEST_NAME=check_docs.sh
CC=${CC:-gcc}
passed=0; failed=0
code=$(mktemp); trap 'rm -f "$code"' EXIT
for f in src/*/*.[ch] simd/*.[ch] tests/*.[ch] tests/fuzz/*.[ch]; do
    [ -f "$f" ] || continue
    # -fpreprocessed: remove comments, expand nothing; -dD keeps the #defines
    "$CC" -x c -fpreprocessed -dD -E -P "$f" 2>/dev/null || echo "check_docs: $CC could not read $f" >&2
done > "$code"
docs=(README.md ARCHITECTURE.md docs/*.md)

declare -A seen=()
while IFS=: read -r file line span; do
    name=${span#\`}; name=${name%%(*}
    case $span in *"()\`") ;; *) [ "${name#*_}" = "$name" ] && continue ;; esac
    key="$file:$name"
    [ -n "${seen[$key]:-}" ] && continue
    seen[$key]=1
    if grep -qE "(^|[^A-Za-z0-9_])${name}[[:space:]]*\(" "$code"; then
        passed=$((passed + 1))
    else
        echo "FAIL  $file:$line names \`$name()\`: no such function in src/, simd/ or tests/"
        failed=$((failed + 1))
    fi
done < <(grep -noE '`[A-Za-z_][A-Za-z0-9_]*\([^`]*\)`' "${docs[@]}")

while IFS=: read -r file line path; do
    case $path in *NAME*) continue ;; esac
    key="$file:$path"
    [ -n "${seen[$key]:-}" ] && continue
    seen[$key]=1
    if [ -e "$path" ]; then
        passed=$((passed + 1))
    else
        echo "FAIL  $file:$line names $path: no such file"
        failed=$((failed + 1))
    fi
done < <(grep -noE '(^|[^A-Za-z0-9_./-])(src/[a-z]+/[A-Za-z0-9_]+\.[ch]|simd/[A-Za-z0-9_]+\.[ch]|tests/[A-Za-z0-9_]+\.(c|h|sh))' "${docs[@]}" \
         | sed -E 's/^([^:]*):([0-9]+):[^a-z]?/\1:\2:/')

# The READMEs a user reads first cite papers and equations, not sections (§) of the spec
# in ../shared, which is not part of the repository.
for f in README.md experiments/README.md models/README.md data/README.md; do
    [ -f "$f" ] || continue
    if grep -n "§" "$f" >/dev/null; then
        echo "FAIL  $f cites a spec section: $(grep -n "§" "$f" | head -n 3 | tr '\n' ' ')"
        failed=$((failed + 1))
    else
        passed=$((passed + 1))
    fi
done

# The run times of experiments/reproduce-l2.sh are stated in three places: the same figures
# everywhere (the first "N CPU-minutes" is the default run's; every --quick figure).
times=$(for f in README.md experiments/README.md experiments/reproduce-l2.sh; do
    perl -0ne 'tr/`//d; my $m = /(\d+)\s+CPU-minutes/s ? $1 : "none"; my %q;
               $q{$1} = 1 while /--quick\b.{0,120}?(\d+)\s+(?:CPU-seconds|s of CPU time)/sg;
               print "default $m CPU-minutes, --quick ", (join(",", sort keys %q) || "none"), " CPU-seconds\n"' "$f"
done | sort -u)
if [ "$(echo "$times" | wc -l)" = 1 ] && ! echo "$times" | grep -q none; then
    passed=$((passed + 1))
else
    echo "FAIL  README.md, experiments/README.md and reproduce-l2.sh state different run times:"; echo "$times"
    failed=$((failed + 1))
fi

echo "checked $((passed + failed)) function names and paths in ${docs[*]}, the READMEs for § citations and the run times"
echo "RESULT $TEST_NAME passed=$passed failed=$failed"
[ "$failed" -eq 0 ]
