#!/usr/bin/env bash
# reproduce-l2.sh — the experiment set of the L2-norm paper (Devoto et al. 2024,
# arXiv 2406.11430; ../shared/spec/methods.md §1, §6) at the scale these machines allow:
#   models      stories260k (in-domain TinyStories text) and demo-25m (wikitext-2)
#   policies    full, l2 (keep low key norms), l2-high and random (the paper's ablations)
#   compression 10, 30, 50, 70, 90 % of the cache removed
#   skip layers {0}, {0,1} (the paper's default), {0,1,2}
#   tasks       ppl (token by token, the policy after each step, --schedule threshold:T
#               with T = chunk/4: the paper's "max kv T" saw-tooth), ppl@step (the same
#               with --schedule step: the cache always holds (1 - ratio) of the tokens
#               seen, so the ratio is the real compression; skip {0,1} only), passkey and
#               needle (full prefill, first token from the full cache, compress once: prefill)
# then collects everything into one CSV and draws the paper's figures 3 and 4 and the
# needle heat maps. About 20 minutes on 2 idle cores (-j 2, one thread per point).
# Finished points are skipped, so an interrupted run continues where it stopped.
set -euo pipefail

usage() {
    cat <<'EOF'
usage: experiments/reproduce-l2.sh [--out DIR] [-j N] [--quick] [--plots-only]

  --out DIR      where the run directories, all.csv, table.txt and plots/ go [runs/reproduce-l2]
  -j N           points at once [2]
  --quick        stories260k only, ratios 0.5 0.9, skip {0,1}: a smoke test of the pipeline (~1 min)
  --plots-only   only collect and plot what is finished
  -h, --help     this text
Needs ./kvlab (make kvlab) and, for the plots, Debian's python3-numpy and python3-matplotlib
(/usr/bin/python3; PLOT_PYTHON=... to use another).
EOF
}

out=runs/reproduce-l2; jobs=2; quick=0; plots_only=0
while [ $# -gt 0 ]; do
    case $1 in
        -h|--help) usage; exit 0 ;;
        --out) out=${2:?--out needs a directory}; shift 2 ;;
        -j|--jobs) jobs=${2:?-j needs a number}; shift 2 ;;
        --quick) quick=1; shift ;;
        --plots-only) plots_only=1; shift ;;
        *) echo "reproduce-l2.sh: unknown option '$1' (--help)" >&2; exit 2 ;;
    esac
done

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
shared=${KVLAB_SHARED:-$root/../shared}
py=${PLOT_PYTHON:-/usr/bin/python3}
mkdir -p "$out"
conf=$out/l2.conf
t0=$SECONDS

if [ $quick = 1 ]; then
    models="stories260k=$shared/models/stories260k/stories260K.bin"; ratios="0.5 0.9"; skips="0,1"
else
    models="stories260k=$shared/models/stories260k/stories260K.bin demo-25m=$shared/models/demo-25m"
    ratios="0.1 0.3 0.5 0.7 0.9"; skips="0 0,1 0,1,2"
fi
cat >"$conf" <<EOF
# written by experiments/reproduce-l2.sh
models   = $models
tasks    = ppl ppl@step passkey needle
skips.ppl@step = 0,1
policies = full l2 l2-high random
ratios   = $ratios
skips    = $skips
out      = $out
jobs     = $jobs
threads  = 1
kvlab    = $(cd "$out" && pwd)/bin/kvlab
# perplexity: the paper's protocol, max kv T = chunk/4
args.ppl.stories260k     = -f $shared/data/tinystories-valid-head.txt --chunk 512 --chunks 4 --schedule threshold:128
args.ppl.demo-25m        = -f $shared/data/wikitext-2-raw-test.txt --chunk 1024 --chunks 1 --schedule threshold:256
args.ppl@step.stories260k = -f $shared/data/tinystories-valid-head.txt --chunk 512 --chunks 4 --schedule step
args.ppl@step.demo-25m    = -f $shared/data/wikitext-2-raw-test.txt --chunk 1024 --chunks 1 --schedule step
# passkey / needle: --schedule prefill (the evaluations' default = the paper's)
args.passkey.stories260k = --lengths 256,448 --depths 0,50,100 --trials 2 --seed 1
args.passkey.demo-25m    = --lengths 512,1024 --depths 0,50,100 --trials 1 --seed 1
args.needle.stories260k  = --haystack $shared/data/tinystories-valid-head.txt --lengths 384,512 --depths 0,25,50,75,100 --buffer 150 --max-new 32
args.needle.demo-25m     = --haystack $shared/data/war-and-peace.txt --lengths 512,1024 --depths 0,50,100
EOF

[ -x "$root/kvlab" ] || { echo "reproduce-l2.sh: build kvlab first (make kvlab)" >&2; exit 1; }
status=0
if [ $plots_only = 0 ]; then
    # every point of one sweep runs the same binary, even if ./kvlab is rebuilt meanwhile
    mkdir -p "$out/bin" && cp "$root/kvlab" "$out/bin/kvlab.tmp" && mv "$out/bin/kvlab.tmp" "$out/bin/kvlab"
    "$here/sweep.sh" -c "$conf" || status=$?
fi

"$py" "$here/collect.py" "$out" -o "$out/all.csv" --positions "$out/positions.csv" --table 2>"$out/table.txt" || status=$?
cat "$out/table.txt" >&2
if "$py" -c 'import matplotlib, numpy' 2>/dev/null; then
    "$py" "$here/plots/ppl_vs_length.py" "$out/positions.csv" -o "$out/plots" || status=$?
    "$py" "$here/plots/accuracy_vs_ratio.py" "$out/all.csv" -o "$out/plots" || status=$?
    "$py" "$here/plots/needle_heatmap.py" "$out/all.csv" -o "$out/plots" || status=$?
else
    echo "reproduce-l2.sh: no matplotlib/numpy for $py: plots skipped (apt-get install python3-matplotlib)" >&2
fi
echo "reproduce-l2.sh: $((SECONDS - t0)) s; results in $out (all.csv, table.txt, plots/)" >&2
exit $status
