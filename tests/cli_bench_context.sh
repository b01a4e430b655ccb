#!/usr/bin/env bash
# cli_bench_context.sh — `kvlab bench` beyond the weight table: --attention and
# --kv-dtype as configurations, the huge-page share line, and the decode-vs-context
# sweep (--context) with its figure (experiments/plots/decode_vs_context.py).
source "$(dirname "$0")/lib_cli.sh"
M=$SHARED/models/stories260k/stories260K.bin
PY=${PLOT_PYTHON:-/usr/bin/python3}

expect_ok "bench --attention exact,fused --kv-dtype f32,bf16 --interleave" \
    $KVLAB bench -m "$M" --prompt 64 --gen 4 --repeat 1 --threads 1 --attention exact,fused --kv-dtype f32,bf16 \
    --interleave --no-machine --json "$TMP/paths.json"
check "bench: four rows f32/exact, f32/exact/kv-bf16, f32, f32/kv-bf16 in that order (fused is the default)" bash -c \
    "[ \"\$(grep -oE '^f32[a-z/0-9-]* ' '$TMP/out' | tr -d ' ' | tr '\n' ' ')\" = 'f32/exact f32/exact/kv-bf16 f32 f32/kv-bf16 ' ]"
check "bench: a huge-page line per row" bash -c "[ \$(grep -c '      huge pages: weights' '$TMP/out') = 4 ]"
check "bench json: attention and kv_dtype per row" bash -c \
    "grep -q '\"attention\":[[:space:]]*\"fused\"' '$TMP/paths.json' && grep -q '\"kv_dtype\":[[:space:]]*\"bf16\"' '$TMP/paths.json' && grep -q weights_huge_page_frac '$TMP/paths.json'"

# Decode bytes per token: the weights plus the keys and values attention reads, the mean
# over the steps: 64 prompt tokens + 4 steps -> 64 + 1.5 slots x 5 layers x 4 KV heads x
# 2 x 8 x 4 bytes = 83840 (fp32 KV), half of the K/V bytes with a bf16 cache; %bw is the
# median of each run's GB/s over the bandwidth of that run (measured just before it for
# a model this small).
expect_ok "bench --kv-dtype f32,bf16 --interleave --repeat 3 (with the bandwidth before each run)" \
    $KVLAB bench -m "$M" --prompt 64 --gen 4 --repeat 3 --threads 1 --kv-dtype f32,bf16 --interleave \
    --json "$TMP/share.json"
"$PY" - "$TMP/share.json" <<'PYEOF' >"$TMP/share_check" 2>&1
import json, sys
runs = json.load(open(sys.argv[1]))["runs"]
bad = []
want_kv = {"f32": 83840, "bf16": 41920}
for r in runs:
    kv = r["decode_kv_bytes_per_token"]
    if kv != want_kv[r["kv_dtype"]]: bad.append(f"{r['kv_dtype']}: KV bytes per token {kv}, want {want_kv[r['kv_dtype']]}")
    tps, gbs, bw, share = (r[k] for k in ("decode_tok_s_per_run", "decode_gb_s_per_run", "read_gb_s_per_run",
                                           "decode_frac_of_bandwidth_per_run"))
    if not len(tps) == len(gbs) == len(bw) == len(share) == 3: bad.append("not 3 runs per array")
    for t, g, b, f in zip(tps, gbs, bw, share):
        # GB/s of a run = bytes per token x its tok/s (the decode time is the same)
        if abs(g - (r["decode_weight_bytes_per_token"] + kv) * t / 1e9) > 1e-6 * g: bad.append(f"GB/s {g} != bytes x {t} tok/s")
        if not b > 0 or abs(f - g / b) > 1e-9 * f: bad.append(f"share {f} != {g} / {b}")
    if r["decode_frac_of_bandwidth"] != sorted(share)[1]: bad.append("decode_frac_of_bandwidth is not the median share")
    if r["decode_gb_s"] != sorted(gbs)[1]: bad.append("decode_gb_s is not the median")
    if r["read_gb_s"] != sorted(bw)[1]: bad.append("read_gb_s is not the median of read_gb_s_per_run")
print("\n".join(bad) if bad else "ok")
sys.exit(1 if bad else 0)
PYEOF
check "bench json: KV bytes per token exact for fp32 and bf16 caches, per-run GB/s and shares, medians" grep -qx ok "$TMP/share_check"
check "bench json: a model below 256 MiB has its bandwidth read before each run, not between the steps" \
    grep -q '"bandwidth_read_between_steps":[[:space:]]*false' "$TMP/share.json"

# Weights of 256 MiB and more (here 3 layers of dim 1024 in fp32: 330 MB a step): the
# bandwidth is read between the decode steps, and each run's share is its GB/s over it
expect_ok "synth a model of 330 MB of fp32 decode weights" \
    $KVLAB synth -o "$TMP/m330" --shape dim=1024,layers=3,heads=8,kv_heads=8,ffn=4096,vocab=32000,seq=64 --dtype bf16
expect_ok "bench on it: --dtype f32 --repeat 2 --interleave" \
    $KVLAB bench -m "$TMP/m330" --dtype f32 --prompt 8 --gen 4 --repeat 2 --threads 1 --interleave --json "$TMP/probe.json"
"$PY" - "$TMP/probe.json" <<'PYEOF' >"$TMP/probe_check" 2>&1
import json, sys
r = json.load(open(sys.argv[1]))["runs"][0]
bad = []
if r["bandwidth_read_between_steps"] is not True: bad.append("not read between the steps")
if r["decode_weight_bytes_per_token"] < 256 * 2**20: bad.append(f"weights {r['decode_weight_bytes_per_token']} below 256 MiB")
for g, b, f in zip(r["decode_gb_s_per_run"], r["read_gb_s_per_run"], r["decode_frac_of_bandwidth_per_run"]):
    if not (b > 0 and g > 0) or abs(f - g / b) > 1e-9 * f: bad.append(f"share {f} != {g} / {b}")
print("\n".join(bad) if bad else "ok")
sys.exit(1 if bad else 0)
PYEOF
check "bench json: bandwidth read between the steps for 256 MiB of weights, each run's share against it" grep -qx ok "$TMP/probe_check"
rm -rf "$TMP/m330"

# ---- the sweep: 2 contexts x the 6 default caches ----------------------------------------
expect_ok "bench --context 96,192 (random fill)" \
    $KVLAB bench -m "$M" --context 96,192 --gen 4 --repeat 2 --threads 1 --no-machine --json "$TMP/sweep.json"
check "sweep: 12 rows (2 contexts x full, l2, window at 50/90 %, h2o 50 %)" bash -c \
    "[ \$(grep -cE '^f32 +1 +(96|192) ' '$TMP/out') = 12 ]"
# KV bytes: full = 5 layers x 4 KV heads x (2 x 8 x 4 + 4) bytes per token = 1360 bytes per token
# (+2 untimed +4 timed decode tokens); every compressed cache holds less, 90 % less than 50 %
"$PY" - "$TMP/sweep.json" <<'PYEOF' >"$TMP/sweep_check" 2>&1
import json, sys
rows = json.load(open(sys.argv[1]))["context_sweep"]
kv = {(r["context"], r["cache"]): r["kv_bytes_in_use"] for r in rows}
bad = []
for c in (96, 192):
    full = kv[(c, "full")]
    if full != 1360 * (c + 6): bad.append(f"full at {c}: {full} bytes, want {1360 * (c + 6)}")
    for p in ("l2", "window"):
        if not kv[(c, p + ":0.9")] < kv[(c, p + ":0.5")] < full: bad.append(f"{p} at {c}: not 90% < 50% < full")
    if not kv[(c, "h2o:0.5")] < full: bad.append(f"h2o at {c} not below full")
for r in rows:
    if not (r["decode_tok_s_median"] > 0 and r["kv_bytes_read_per_token"] > 0 and r["achieved_gb_s"] > 0):
        bad.append(f"{r['cache']} at {r['context']}: a zero figure")
    if r["frac_of_bandwidth"] != -1: bad.append("frac_of_bandwidth without a machine measurement")
    # interleaved rounds: one tok/s per repeat, and the ratio to the full cache of the same round
    full = [f for f in rows if f["context"] == r["context"] and f["cache"] == "full"][0]
    if len(r["decode_tok_s_per_round"]) != 2: bad.append(f"{r['cache']} at {r['context']}: not 2 rounds")
    want = [a / b for a, b in zip(r["decode_tok_s_per_round"], full["decode_tok_s_per_round"])]
    if any(abs(x - y) > 1e-9 * y for x, y in zip(r["vs_full_per_round"], want)): bad.append(f"{r['cache']}: vs_full_per_round")
    if abs(r["vs_full_median"] - sum(want) / 2) > 1e-9 * r["vs_full_median"]: bad.append(f"{r['cache']}: vs_full_median")
    if r["cache"] == "full" and r["vs_full_median"] != 1: bad.append("full vs full is not 1")
    if sorted(r["decode_tok_s_per_round"])[0] != r["decode_tok_s_min"]: bad.append(f"{r['cache']}: min is not the rounds' min")
print("\n".join(bad) if bad else "ok")
sys.exit(1 if bad else 0)
PYEOF
check "sweep json: KV bytes of the full cache exact, compressed caches smaller, every figure > 0, per-round ratios to the full cache" grep -qx ok "$TMP/sweep_check"
expect_ok "bench --context 128 --fill prefill --sweep-policies full,l2:0.75 --kv-dtype bf16" \
    $KVLAB bench -m "$M" --context 128 --fill prefill --sweep-policies full,l2:0.75 --kv-dtype bf16 --gen 2 --repeat 1 \
    --threads 1 --no-machine
check "sweep: bf16 rows for full and l2:0.75" bash -c "[ \$(grep -cE '^f32/kv-bf16 +1 +128 +(full|l2:0.75) ' '$TMP/out') = 2 ]"
# Both KV storages in the same rounds: each bf16 row is compared with the fp32 full cache
# of its round, and the bf16 full cache holds half the K/V bytes (the key-norm column stays)
expect_ok "bench --context 96 --kv-dtype f32,bf16 (interleaved in the rounds)" \
    $KVLAB bench -m "$M" --context 96 --sweep-policies full,window:0.5 --kv-dtype f32,bf16 --gen 2 --repeat 2 \
    --threads 1 --no-machine --json "$TMP/kvd.json"
"$PY" - "$TMP/kvd.json" <<'PYEOF' >"$TMP/kvd_check" 2>&1
import json, sys
rows = json.load(open(sys.argv[1]))["context_sweep"]
bad = []
order = [(r["kv_dtype"], r["cache"]) for r in rows]
if order != [("f32", "full"), ("f32", "window:0.5"), ("bf16", "full"), ("bf16", "window:0.5")]: bad.append(f"rows {order}")
full = [r for r in rows if r["kv_dtype"] == "f32" and r["cache"] == "full"][0]
for r in rows:
    want = [a / b for a, b in zip(r["decode_tok_s_per_round"], full["decode_tok_s_per_round"])]
    if any(abs(x - y) > 1e-9 * y for x, y in zip(r["vs_full_per_round"], want)): bad.append(f"{r['config']} {r['cache']}: not against the fp32 full cache")
kv = {(r["kv_dtype"], r["cache"]): r["kv_bytes_in_use"] for r in rows}
# 5 layers x 4 KV heads x (2 x 8 x 2 + 4) bytes per token with bf16 K/V and the fp32 key norm
if kv[("bf16", "full")] != 720 * (96 + 4): bad.append(f"bf16 full {kv[('bf16', 'full')]} bytes, want {720 * 100}")
print("\n".join(bad) if bad else "ok")
sys.exit(1 if bad else 0)
PYEOF
check "sweep json: fp32 and bf16 caches interleaved, every ratio against the fp32 full cache of the round" grep -qx ok "$TMP/kvd_check"
if "$PY" -c 'import matplotlib, numpy' 2>/dev/null; then
    expect_ok "plot: decode vs context" "$PY" experiments/plots/decode_vs_context.py "$TMP/sweep.json" -o "$TMP/plots"
    check "plot: PNG and PDF" test -s "$TMP/plots/decode_vs_context_sweep.png" -a -s "$TMP/plots/decode_vs_context_sweep.pdf"
    check "plot: the PNG is an image" bash -c "head -c 8 '$TMP/plots/decode_vs_context_sweep.png' | grep -q PNG"
    check "plot: a JSON without sweep rows is refused, naming the file" bash -c \
        "! '$PY' experiments/plots/decode_vs_context.py '$TMP/paths.json' -o '$TMP/plots' 2>'$TMP/plot_err' && grep -q 'paths.json: no context_sweep rows' '$TMP/plot_err'"
else
    echo "plot test skipped: no matplotlib/numpy for $PY"
fi

# ---- refusals -------------------------------------------------------------------------------
expect_fail "bench --context beyond the model's context" "--context 600 \\+ --gen 4 exceeds the model's context \\(512" \
    $KVLAB bench -m "$M" --context 600 --gen 4 --no-machine
expect_fail "bench --sweep-policies without a compression" "--sweep-policies: 'l2' needs a compression" \
    $KVLAB bench -m "$M" --context 64 --sweep-policies full,l2 --no-machine
expect_fail "bench --context with --policy" "--context compares its own policies" \
    $KVLAB bench -m "$M" --context 64 --policy l2 --budget 8 --no-machine
expect_fail "bench --attention with an unknown path" "--attention: 'exact,flash' is not a list" \
    $KVLAB bench -m "$M" --attention exact,flash --no-machine
expect_fail "bench --fill with an unknown way" "--fill: 'zeros' is not random or prefill" \
    $KVLAB bench -m "$M" --context 64 --fill zeros --no-machine
finish
