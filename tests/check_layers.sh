#!/usr/bin/env bash
# check_layers.sh — the include rule of ARCHITECTURE.md: a file in src/ or simd/
# includes only headers of its own folder or of a folder below it. The layers,
# lowest first (one rank may not include another folder of the same rank):
#   0 base, simd   1 formats   2 model   3 engine   4 policy   5 lab   6 cli
# A src/ file names the folder of every project header ("engine/ops.h");
# simd/ files include their siblings by name ("kernels.h").
# usage: bash tests/check_layers.sh [ROOT]   (default: the repository root)
set -u
cd "${1:-$(dirname "$0")/..}" || exit 2
TEST_NAME=check_layers.sh
passed=0; failed=0

rank() {
    case $1 in
    base|simd) echo 0 ;; formats) echo 1 ;; model) echo 2 ;; engine) echo 3 ;;
    policy) echo 4 ;; lab) echo 5 ;; cli) echo 6 ;; *) echo -1 ;;
    esac
}

for file in src/*/*.[ch] simd/*.[ch]; do
    [ -f "$file" ] || continue
    case $file in simd/*) own=simd ;; *) own=${file#src/}; own=${own%%/*} ;; esac
    own_rank=$(rank "$own")
    problems=()
    if [ "$own_rank" -lt 0 ]; then
        problems+=("src/$own/ is not a layer (add it to ARCHITECTURE.md and tests/check_layers.sh)")
    fi
    while IFS= read -r line; do
        inc=${line#*\"}; inc=${inc%%\"*}
        if [ "${inc#*/}" = "$inc" ]; then        # no folder: a sibling
            if [ "$own" = simd ] && [ -f "simd/$inc" ]; then continue; fi
            problems+=("includes \"$inc\": name its folder (\"FOLDER/$inc\")")
            continue
        fi
        dep=${inc%%/*}
        if [ "$dep" = simd ]; then path=$inc; else path=src/$inc; fi
        if [ ! -f "$path" ]; then problems+=("includes \"$inc\": no such file $path"); continue; fi
        [ "$dep" = "$own" ] && continue
        dep_rank=$(rank "$dep")
        if [ "$dep_rank" -lt 0 ]; then
            problems+=("includes \"$inc\": $dep/ is not a layer")
        elif [ "$dep_rank" -ge "$own_rank" ]; then
            problems+=("includes \"$inc\": $dep/ is not below $own/")
        fi
    done < <(grep -E '^[[:space:]]*#[[:space:]]*include[[:space:]]*"' "$file")
    if [ ${#problems[@]} -eq 0 ]; then
        passed=$((passed + 1))
    else
        for p in "${problems[@]}"; do echo "FAIL  $file $p"; done
        failed=$((failed + 1))
    fi
done
echo "checked the includes of $((passed + failed)) files"
echo "RESULT $TEST_NAME passed=$passed failed=$failed"
[ "$failed" -eq 0 ]
