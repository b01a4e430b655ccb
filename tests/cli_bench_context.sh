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
