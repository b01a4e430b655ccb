#!/usr/bin/env bash
# bench-7b.sh — benchmark kvlab on Llama-2-7B-shaped random weights (kvlab synth),
# since the real checkpoint cannot be downloaded on these machines.
#
# fp32 weights of the full 7B need 27 GB, more than these 24 GB machines have, so
# the weight-dtype comparison runs on an 8-layer slice with exactly the 7B layer
# shape (dim 4096, 32 heads, FFN 11008, vocab 32000): decode reads every layer once
# per token, so tokens/s scale with 1/layers and GB/s is the same. It runs
# --interleave (the f32 and bf16 copies, 11 GB, both in memory; repeat 1 of every
# configuration, then repeat 2, ...), so the drift of a shared machine's bandwidth
# hits every configuration alike; bf16d (the bf16 dot kernel) joins when the CPU
# has avx512_bf16. The full 32-layer model (13.5 GB in bf16) is benchmarked in bf16.
#
# Long contexts (the 8-layer slice and a 2-layer one are written with a context of
# 8448 tokens, which random weights do not mind):
#   - prefill of 4096 and 8192 tokens, the fused attention path against the exact
#     one, interleaved, on 2 layers of the 7B shape (prefill is FMA-bound: 2 layers
#     keep a run under a minute; the attention share of the time is the same per layer)
#   - decode against context length (512..8192 cached tokens) for the full cache and
#     l2 / window at 50 % and 90 % compression and h2o at 50 %, fp32 and bf16 KV cache,
#     on the 8-layer slice (bench --context, random fill), drawn by
#     experiments/plots/decode_vs_context.py when matplotlib is there
#
#   experiments/bench-7b.sh [DIR]     (default /tmp/kvlab-bench; needs ~18 GB free)
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${1:-${BENCH_DIR:-/tmp/kvlab-bench}}
out=${BENCH_OUT:-build/bench}
prompt=${BENCH_PROMPT:-512}
gen=${BENCH_GEN:-32}
repeat=${BENCH_REPEAT:-3}
mkdir -p "$dir" "$out"

need_gb=18
free_gb=$(df -Pk "$dir" | awk 'NR==2 {print int($4 / 1048576)}')
have() { [ -f "$1/config.json" ]; }
if ! have "$dir/7b-8layers-seq8k-bf16" || ! have "$dir/7b-2layers-seq8k-bf16" || ! have "$dir/7b-bf16"; then
    if [ "$free_gb" -lt "$need_gb" ]; then
        echo "bench-7b: only ${free_gb} GB free in $dir, need ${need_gb} GB for the 7B-shaped checkpoints: skipped" >&2
        exit 0
    fi
fi
shape8="dim=4096,layers=8,heads=32,kv_heads=32,ffn=11008,vocab=32000,seq=8448"
shape2="dim=4096,layers=2,heads=32,kv_heads=32,ffn=11008,vocab=32000,seq=8448"
have "$dir/7b-8layers-seq8k-bf16" || ./kvlab synth -o "$dir/7b-8layers-seq8k-bf16" --shape "$shape8" --dtype bf16 --seed 1
have "$dir/7b-2layers-seq8k-bf16" || ./kvlab synth -o "$dir/7b-2layers-seq8k-bf16" --shape "$shape2" --dtype bf16 --seed 1
have "$dir/7b-bf16" || ./kvlab synth -o "$dir/7b-bf16" --shape llama2-7b --dtype bf16 --shards 2 --seed 1

dtypes=f32,bf16 dtypes32=bf16
if [ "$(uname -m)" = x86_64 ] && grep -qw avx512_bf16 /proc/cpuinfo; then dtypes=f32,bf16,bf16d dtypes32=bf16,bf16d; fi
echo "== Llama-2-7B layer shape, 8 layers: weights $dtypes, 1 and 2 threads, interleaved"
./kvlab bench -m "$dir/7b-8layers-seq8k-bf16" --prompt "$prompt" --gen "$gen" --repeat "$repeat" \
    --threads 1,2 --dtype "$dtypes" --interleave --json "$out/bench-7b-8layers.json"
echo "== Llama-2-7B shape, 32 layers: weights $dtypes32 (one bf16 copy), 2 threads"
./kvlab bench -m "$dir/7b-bf16" --prompt "$prompt" --gen "$gen" --repeat "$repeat" \
    --threads 2 --dtype "$dtypes32" --interleave --json "$out/bench-7b.json"
contexts=${BENCH_CONTEXTS:-512,2048,4096,8192}
for p in 4096 8192; do
    echo "== prefill of $p tokens, Llama-2-7B layer shape (2 layers), attention exact vs fused, 2 threads, interleaved"
    ./kvlab bench -m "$dir/7b-2layers-seq8k-bf16" --prompt "$p" --gen 4 --repeat "$repeat" --threads 2 \
        --dtype bf16 --attention exact,fused --interleave --json "$out/prefill-$p-attention.json"
done
echo "== decode against context ($contexts cached tokens), Llama-2-7B layer shape (8 layers), fp32 and bf16 KV cache"
./kvlab bench -m "$dir/7b-8layers-seq8k-bf16" --context "$contexts" --gen "$gen" --repeat "$repeat" --threads 2 \
    --dtype bf16 --kv-dtype f32,bf16 --json "$out/decode-vs-context-7b-8layers.json"
if /usr/bin/python3 -c 'import matplotlib, numpy' 2>/dev/null; then
    /usr/bin/python3 experiments/plots/decode_vs_context.py "$out/decode-vs-context-7b-8layers.json" -o "$out/plots"
fi
