#!/usr/bin/env bash
# reproduce-l2.sh — the experiment set of the L2-norm paper (Devoto et al. 2024,
# arXiv 2406.11430; ../shared/spec/methods.md §1, §6) at the scale these machines allow.
#
# Per model (--models; default sink-26m, the fixture that has attention sinks):
#   correlation  kvlab correlate (first generated query, the paper's protocol) and kvlab
#                trace: Fig. 1 (attention vs key norm), Fig. 2 (ALR heat map), Spearman rho
#                per layer, the sink diagnostics per layer
#   ablation     full, l2 (keep low key norms), l2-high and random (the paper's ablations)
#                x compression 10, 30, 50, 70, 90 % at skip layers {0,1} (the paper's),
#                and 10, 50, 90 % at skip layers {0} and {0,1,2}, on
#                  ppl       token by token, --schedule threshold:T, T = chunk/4 (the paper's
#                            "max kv T" saw-tooth protocol)
#                  ppl@step  --schedule step: the cache always holds (1 - ratio) of the
#                            tokens seen, so the ratio is the real compression
#                  passkey, needle  full prefill, compress once (--schedule prefill), skip {0,1}
#   compare      every policy at equal memory (no skipped layers, the same budget per layer):
#                l2 random window h2o snapkv tova lagkv (lag 128) pyramid zigzag on ppl@step and
#                passkey (sink-26m only unless --compare-all)
# then collects each part into one CSV and draws the paper's figures 3 and 4, the needle
# heat maps and the equal-memory comparison. Finished points are skipped, so an
# interrupted run continues where it stopped.
set -euo pipefail

usage() {
    cat <<'EOF'
usage: experiments/reproduce-l2.sh [--out DIR] [-j N] [--models LIST] [--quick] [--plots-only]

  --out DIR        where the run directories, CSVs, tables and plots/ go [runs/reproduce-l2];
                   one run at a time writes it (a lock on DIR.lock: a second one is refused)
  -j N             points at once [2]
  --models LIST    comma-separated: sink-26m, demo-25m, stories260k, or all [sink-26m]
  --no-compare     skip the every-policy comparison
  --compare-all    run the every-policy comparison on every model (default: sink-26m only)
  --quick          stories260k only, ratios 0.5 0.9, skip {0,1}, no comparison:
                   a smoke test of the pipeline (40 s of CPU time)
  --plots-only     only collect and plot what is finished
  -h, --help       this text

Outputs under DIR:
  ablation/MODEL/TASK/POLICY_rRATIO_sSKIP/   run directories (kvlab ppl/passkey/needle)
  compare/MODEL/TASK/POLICY_rRATIO_snone/    the every-policy comparison
  correlate/MODEL/, trace/MODEL/             kvlab correlate and kvlab trace outputs
  ablation.csv, compare.csv, positions.csv   collected results (experiments/collect.py)
  table.txt, compare-table.txt               headline tables
  plots/                                     PNG + PDF of every figure
Needs ./kvlab (make kvlab) and, for the plots, Debian's python3-numpy and python3-matplotlib
(/usr/bin/python3; PLOT_PYTHON=... to use another).
Cost in CPU time (measured per point with one thread on this 2-core VM; wall time is about
half with -j 2 on 2 idle cores): sink-26m about 45 CPU-minutes (a ppl point of 2 x 512 tokens
15 s, a passkey point 14 s, a needle point 8 s), demo-25m + stories260k about 22 CPU-minutes,
--quick 40 CPU-seconds.
EOF
}

out=runs/reproduce-l2; jobs=2; quick=0; plots_only=0; models_arg=sink-26m; compare=1; compare_all=0
while [ $# -gt 0 ]; do
    case $1 in
        -h|--help) usage; exit 0 ;;
        --out) out=${2:?--out needs a directory}; shift 2 ;;
        -j|--jobs) jobs=${2:?-j needs a number}; shift 2 ;;
        --models) models_arg=${2:?--models needs a list}; shift 2 ;;
        --no-compare) compare=0; shift ;;
        --compare-all) compare_all=1; shift ;;
        --quick) quick=1; shift ;;
        --plots-only) plots_only=1; shift ;;
        *) echo "reproduce-l2.sh: unknown option '$1' (--help)" >&2; exit 2 ;;
    esac
done

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
shared=${KVLAB_SHARED:-$root/../shared}
py=${PLOT_PYTHON:-/usr/bin/python3}
t0=$SECONDS

[ "$models_arg" = all ] && models_arg=sink-26m,demo-25m,stories260k
ratios="0.1 0.3 0.5 0.7 0.9"; skips="0 0,1 0,1,2"; other_skip_ratios="0.1 0.5 0.9"
if [ $quick = 1 ]; then models_arg=stories260k; ratios="0.5 0.9"; other_skip_ratios=$ratios; skips="0,1"; compare=0; fi
declare -A PATHS=([sink-26m]=$shared/models/sink-26m [demo-25m]=$shared/models/demo-25m
                  [stories260k]=$shared/models/stories260k/stories260K.bin)
models=""; compare_models=""
for m in ${models_arg//,/ }; do
    [ -n "${PATHS[$m]-}" ] || { echo "reproduce-l2.sh: --models: unknown model '$m' (sink-26m, demo-25m, stories260k, all)" >&2; exit 2; }
    models+="$m=${PATHS[$m]} "
    if [ $compare = 1 ] && { [ $compare_all = 1 ] || [ "$m" = sink-26m ]; }; then compare_models+="$m=${PATHS[$m]} "; fi
done
mkdir -p "$out"
out=$(cd "$out" && pwd)
# one run at a time writes DIR (its configs, binary copy, tables and plots): a lock on DIR.lock
source "$here/outlock.sh"
out_lock "$out" reproduce-l2.sh
kvlab=$out/bin/kvlab
wiki=$shared/data/wikitext-2-raw-test.txt; tiny=$shared/data/tinystories-valid-head.txt
wp=$shared/data/war-and-peace.txt

# The evaluations' arguments per model, shared by the ablation and the comparison.
# sink-26m runs with its bf16 weights as they are in the file (sums in fp32): the same
# weights as --dtype f32, a third less time per point.
task_args() {
    cat <<EOF
args.all.sink-26m         = --dtype bf16
# perplexity: the paper's protocol, max kv T = chunk/4
args.ppl.stories260k      = -f $tiny --chunk 512 --chunks 4 --schedule threshold:128
args.ppl.demo-25m         = -f $wiki --chunk 1024 --chunks 1 --schedule threshold:256
args.ppl.sink-26m         = -f $wiki --chunk 512 --chunks 2 --schedule threshold:128
args.ppl@step.stories260k = -f $tiny --chunk 512 --chunks 4 --schedule step
args.ppl@step.demo-25m    = -f $wiki --chunk 1024 --chunks 1 --schedule step
args.ppl@step.sink-26m    = -f $wiki --chunk 512 --chunks 2 --schedule step
# passkey / needle: --schedule prefill (the evaluations' default = the paper's)
args.passkey.stories260k  = --lengths 256,448 --depths 0,50,100 --trials 2 --seed 1
args.passkey.demo-25m     = --lengths 512,1024 --depths 0,50,100 --trials 1 --seed 1
args.passkey.sink-26m     = --lengths 512,1024,2048 --depths 0,25,50,75,100 --trials 1 --seed 1
args.needle.stories260k   = --haystack $tiny --lengths 384,512 --depths 0,25,50,75,100 --buffer 150 --max-new 32
args.needle.demo-25m      = --haystack $wp --lengths 512,1024 --depths 0,50,100
args.needle.sink-26m      = --haystack $wp --lengths 1024,2048 --depths 0,50,100
EOF
}

cat >"$out/ablation.conf" <<EOF
# written by experiments/reproduce-l2.sh: the paper's ablation
models   = $models
tasks    = ppl ppl@step passkey needle
policies = full l2 l2-high random
ratios   = $ratios
skips    = $skips
skips.passkey = 0,1
skips.needle  = 0,1
out      = $out/ablation
jobs     = $jobs
threads  = 1
kvlab    = $kvlab
$(task_args)
EOF
cat >"$out/compare.conf" <<EOF
# written by experiments/reproduce-l2.sh: every policy at equal memory (no skipped layers)
models   = $compare_models
tasks    = ppl@step passkey
# lagkv with lag 128: its default lag of 1024 first compresses at 16 + 2 x 1024 tokens,
# longer than every text here, so it would never evict
policies = full l2 random window h2o snapkv tova lagkv:lag=128 pyramid zigzag
ratios   = $ratios
skips    = none
out      = $out/compare
jobs     = $jobs
threads  = 1
kvlab    = $kvlab
$(task_args)
EOF

[ -x "$root/kvlab" ] || [ $plots_only = 1 ] || { echo "reproduce-l2.sh: build kvlab first (make kvlab)" >&2; exit 1; }
status=0
if [ $plots_only = 0 ]; then
    # every point of one run uses the same binary, even if ./kvlab is rebuilt meanwhile
    mkdir -p "$out/bin" && cp "$root/kvlab" "$out/bin/kvlab.tmp" && mv "$out/bin/kvlab.tmp" "$out/bin/kvlab"
    for m in $models; do   # correlation: Fig. 1 (trace), Fig. 2 and rho per layer (correlate)
        name=${m%%=*}; path=${m#*=}
        if [ "$name" = stories260k ]; then text=$tiny; chunk=256; chunks=8
        else text=$wiki; chunk=1024; chunks=4; fi
        mkdir -p "$out/correlate" "$out/trace"
        if [ ! -f "$out/correlate/$name/meta.json" ]; then
            echo "correlate $name" >&2
            "$kvlab" correlate -m "$path" -f "$text" --chunk $chunk --chunks $chunks -o "$out/correlate/$name" --threads "$jobs" \
                >"$out/correlate/$name.txt" 2>"$out/correlate-$name.log" || { status=1; echo "FAILED correlate $name (see $out/correlate-$name.log)" >&2; }
        fi
        if [ ! -f "$out/trace/$name/meta.json" ]; then
            echo "trace $name" >&2
            # the first generated query of 2 chunks, as correlate measures it: Fig. 1 per layer
            "$kvlab" trace -m "$path" -f "$text" --chunk $((chunk / 2)) --chunks 2 --gen 1 --steps decode \
                -o "$out/trace/$name" --threads "$jobs" 2>"$out/trace-$name.log" || { status=1; echo "FAILED trace $name" >&2; }
        fi
    done
    # the paper's default skip set first, then the comparison, then the other skip sets
    # (at 10, 50 and 90 %): an interrupted run has the headline results first
    "$here/sweep.sh" -c "$out/ablation.conf" --skips 0,1 || status=$?
    if [ -n "$compare_models" ]; then "$here/sweep.sh" -c "$out/compare.conf" || status=$?; fi
    "$here/sweep.sh" -c "$out/ablation.conf" --ratios "$other_skip_ratios" || status=$?
fi

"$py" "$here/collect.py" "$out/ablation" -o "$out/ablation.csv" --positions "$out/positions.csv" --table 2>"$out/table.txt" || status=$?
cat "$out/table.txt" >&2
if [ -d "$out/compare" ]; then
    "$py" "$here/collect.py" "$out/compare" -o "$out/compare.csv" --table 2>"$out/compare-table.txt" || status=$?
    cat "$out/compare-table.txt" >&2
fi
if "$py" -c 'import matplotlib, numpy' 2>/dev/null; then
    p=$here/plots
    "$py" "$p/ppl_vs_length.py" "$out/positions.csv" -o "$out/plots" || status=$?
    "$py" "$p/accuracy_vs_ratio.py" "$out/ablation.csv" -o "$out/plots" || status=$?
    "$py" "$p/needle_heatmap.py" "$out/ablation.csv" -o "$out/plots" || status=$?
    "$py" "$p/needle_heatmap.py" "$out/ablation.csv" -o "$out/plots" --task passkey || status=$?
    if [ -f "$out/compare.csv" ]; then
        "$py" "$p/accuracy_vs_ratio.py" "$out/compare.csv" -o "$out/plots" --skip none --name compare \
            --title "every policy at equal memory (no skipped layers)" || status=$?
    fi
    runs=()
    for m in $models; do
        name=${m%%=*}
        [ -f "$out/correlate/$name/meta.json" ] && runs+=("$out/correlate/$name")
        [ -f "$out/trace/$name/meta.json" ] && runs+=("$out/trace/$name")
    done
    [ ${#runs[@]} = 0 ] || "$py" "$p/plot_all.py" "${runs[@]}" -o "$out/plots" || status=$?
else
    echo "reproduce-l2.sh: no matplotlib/numpy for $py: plots skipped (apt-get install python3-matplotlib)" >&2
fi
echo "reproduce-l2.sh: $((SECONDS - t0)) s; results in $out (ablation.csv, compare.csv, table.txt, plots/)" >&2
exit $status
