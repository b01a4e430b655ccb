#!/usr/bin/env bash
# cli_doc_examples.sh — every command line the documentation prints (README.md,
# experiments/README.md, models/README.md, data/README.md, docs/*.md; found by
# tests/doc_examples.awk) runs, from a scratch copy of the repository with ../shared beside
# it, as a user on a fresh clone would type it. A few cannot run here and are skipped
# with the reason (the network, real Llama-2 weights, make's own targets, a 13.5 GB write);
# a new example is run without anyone listing it.
#
# By default the long ones run shortened (fewer chunks, one length, one depth, one trial,
# and the sweep on two policies at one ratio); KVLAB_DOC_EXAMPLES=full runs every line
# exactly as printed (minutes to an hour). The sweep's config as printed is also checked in
# full with --dry-run: every point must fit its model's context.
set -u
cd "$(dirname "$0")/.." || exit 1
source tests/lib_cli.sh
ROOT=$PWD
KVLAB_ABS=$(readlink -f "$KVLAB")
SHARED_ABS=$(readlink -f "$SHARED")
MODE=${KVLAB_DOC_EXAMPLES:-quick}
# one thread per example: the suite runs beside other jobs, and OpenMP threads spin
# while they wait for a busy core
export OMP_NUM_THREADS=1 OMP_WAIT_POLICY=passive
PY=/usr/bin/python3
HAVE_PLOTS=0; "$PY" -c 'import matplotlib, numpy' 2>/dev/null && HAVE_PLOTS=1

# The scratch clone: the repository's scripts and docs, ./kvlab, and ../shared beside it.
CLONE=$TMP/repo
mkdir -p "$CLONE" "$TMP/tmp"
for d in experiments docs data models; do cp -r "$ROOT/$d" "$CLONE/"; done
rm -rf "$CLONE/models/local" "$CLONE/data/local"
ln -s "$KVLAB_ABS" "$CLONE/kvlab"
ln -s "$SHARED_ABS" "$TMP/shared"

# Why a line is not run (empty: it runs).
skip_reason() {
    case $1 in
        make\ *|*=*\ make\ *) echo "a make target (make runs it)" ;;
        *get-llama2.sh*--from\ /path/to*) echo "a placeholder path" ;;
        models/get-llama2.sh*|data/get-wikitext2.sh*|data/get-pg19.sh*)
            case $1 in *--from*) ;; *) echo "downloads (tests/cli_scripts.sh runs it with --from)" ;; esac ;;
        *models/local/*|*stories15M.bin*|*/path/to/*) echo "needs a downloaded Llama-2 or llama2.c checkpoint" ;;
        *--shape\ llama2-7b*) echo "writes 13.5 GB" ;;
    esac
}

# The shortened form of a line (quick mode): the same command and options, less work.
shorten() {
    local c=$1
    [ "$MODE" = full ] && { echo "$c"; return; }
    c=$(echo "$c" | sed -E -e 's/--chunks [0-9]+/--chunks 1/' -e 's/--chunk (1024|2048|512)/--chunk 256/' \
        -e 's/--lengths ([0-9]+)(,[0-9]+)+/--lengths \1/' -e 's/--trials [0-9]+/--trials 1/' \
        -e 's/--depths [0-9]+(,[0-9]+)+/--depths 50/' -e 's/--gen ([0-9]{3,})/--gen 16/' \
        -e 's/threshold:(256|512)/threshold:64/')
    case $c in
        ./kvlab\ needle*) case $c in *--depths*) ;; *) c="$c --depths 50" ;; esac ;;
        ./kvlab\ bench*) c="$c --repeat 1 --prompt 32 --gen 4 --no-machine" ;;
        experiments/sweep.sh*) c="$c --policies 'full l2' --ratios 0.5 --skips 0,1" ;;
    esac
    echo "$c"
}

# What some examples promise, checked on their output ($1 = the line as printed).
expect_for() {
    case $1 in
        *generate*--compare-full*)
            check "  the full cache's and the policy's continuations agree, as the README says" \
                grep -qE 'the first ([0-9]+) of \1 generated tokens are identical' "$TMP/out" ;;
        *generate*passkey_L512_D50_T0.txt*)
            key=$(grep '^passkey_L512_D50_T0.txt,' "$CLONE/data/local/prompts/passkey/prompts.csv" | cut -d, -f5)
            check "  sink-26m answers the dumped passkey prompt with its key ($key)" grep -q "$key" "$TMP/out" ;;
    esac
}

n_run=0; n_skip=0
run_line() {   # where, line
    local where=$1 line=$2 reason
    reason=$(skip_reason "$line")
    if [ -n "$reason" ]; then echo "skip  $where: $line  ($reason)"; n_skip=$((n_skip + 1)); return; fi
    case $line in /usr/bin/python3\ experiments/plots/*) [ $HAVE_PLOTS = 1 ] || { echo "skip  $where: no matplotlib"; return; } ;; esac
    case $line in /usr/bin/python3*) [ -x "$PY" ] || { echo "skip  $where: no $PY"; return; } ;; esac
    local cmd; cmd=$(shorten "$line")
    cmd=${cmd//\/tmp\//$TMP/tmp/}
    n_run=$((n_run + 1))
    expect_ok "$where: $cmd" bash -c "cd '$CLONE' && $cmd"
    expect_for "$line"
}

for doc in README.md experiments/README.md models/README.md data/README.md docs/*.md; do
    # a sweep config printed in this file is the sweep.conf its commands use (the file may
    # print the command before the config)
    awk -f tests/doc_examples.awk "$doc" | awk -F'\t' '$2 == "conf" {print $3}' >"$TMP/conf"
    if [ -s "$TMP/conf" ]; then
        cp "$TMP/conf" "$CLONE/sweep.conf"
        expect_ok "$doc: the sweep.conf as printed: every point fits its model's context" \
            bash -c "cd '$CLONE' && experiments/sweep.sh -c sweep.conf --dry-run --out '$TMP/sweep-dry'"
        [ "$MODE" = full ] || sed -E -i -e 's/--chunks [0-9]+/--chunks 1/' -e 's/--chunk [0-9]+/--chunk 256/' \
            -e 's/--lengths ([0-9]+)(,[0-9]+)+/--lengths \1/' -e 's/--trials [0-9]+/--trials 1/' \
            -e 's/--depths [0-9]+(,[0-9]+)+/--depths 50/' -e 's/threshold:[0-9]+/threshold:64/' "$CLONE/sweep.conf"
    fi
    n_doc=0
    while IFS=$'\t' read -r where kind text; do
        [ "$kind" = cmd ] || continue
        run_line "$where" "$text"
        n_doc=$((n_doc + 1))
    done < <(awk -f tests/doc_examples.awk "$doc")
    case $doc in README.md|experiments/README.md)
        check "$doc: command lines found ($n_doc)" test "$n_doc" -ge 4 ;;
    esac
done
echo "$n_run lines run ($MODE), $n_skip skipped"
finish
