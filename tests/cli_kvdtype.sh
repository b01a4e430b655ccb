#!/usr/bin/env bash
# cli_kvdtype.sh — --kv-dtype and --attention on every command that builds a KV
# cache, end to end on stories260K: each runs, reports what it used, and bad
# values are refused with one line.
source "$(dirname "$0")/lib_cli.sh"
M=$SHARED/models/stories260k/stories260K.bin
TEXT=$SHARED/data/tinystories-valid-head.txt

# ---- info and the KV-bytes lines ----------------------------------------------------------
expect_ok "info --kv-dtype bf16" $KVLAB info -m "$M" --kv-dtype bf16
check "info: bf16 K+V, half the fp32 bytes per token (5 layers x 4 KV heads x 8 channels x 2 x 2 bytes = 640)" \
    grep -q "kv cache:    640 bytes per token (bf16 K+V" "$TMP/out"
expect_ok "info (default f32)" $KVLAB info -m "$M"
check "info: f32 K+V, 1280 bytes per token" grep -q "kv cache:    1280 bytes per token (f32 K+V" "$TMP/out"

expect_ok "generate --kv-dtype bf16" $KVLAB generate -m "$M" -p "Once upon a time" -n 16 --kv-dtype bf16
check "generate: the kv line names bf16" grep -qE "^kv: [0-9.]+ MiB in use, bf16 K\+V" "$TMP/err"
expect_ok "generate --compare-full --kv-dtype bf16 --attention fused" \
    $KVLAB generate -m "$M" -p "Once upon a time" -n 16 --kv-dtype bf16 --attention fused --policy l2 --compression-ratio 0.5 --compare-full
check "compare-full: both KV lines name bf16" bash -c "[ \$(grep -c 'MiB of bf16 KV' '$TMP/out') = 2 ]"

# the same greedy text with the fused path (stories260K's logits are far from ties here)
expect_ok "generate exact" $KVLAB generate -m "$M" -p "Once upon a time" -n 24 --print-ids
cp "$TMP/out" "$TMP/exact"
expect_ok "generate --attention fused" $KVLAB generate -m "$M" -p "Once upon a time" -n 24 --print-ids --attention fused
check "fused: the same greedy tokens" cmp "$TMP/out" "$TMP/exact"

# ---- every cache-building command runs on a bf16 cache ------------------------------------
expect_ok "ppl lagkv --kv-dtype bf16 (reads 2L cached rows)" \
    $KVLAB ppl -m "$M" -f "$TEXT" --chunk 128 --chunks 1 --policy lagkv:lag=16 --kv-dtype bf16 -o "$TMP/ppl"
check "ppl: stderr names bf16 K+V bytes" grep -qE "MiB of bf16 K\+V\)" "$TMP/err"
check "ppl: config.json records kv_dtype bf16" grep -q '"kv_dtype":"bf16"' "$TMP/ppl/config.json"
expect_ok "ppl default: no kv_dtype in config.json" \
    $KVLAB ppl -m "$M" -f "$TEXT" --chunk 128 --chunks 1 --policy window --compression-ratio 0.5 -o "$TMP/ppl32"
check "ppl default config has no kv_dtype key" bash -c "! grep -q kv_dtype '$TMP/ppl32/config.json'"
expect_ok "trace --kv-dtype bf16 (key/value norms read from the cache)" \
    $KVLAB trace -m "$M" -p "Once upon a time there was" --gen 4 --kv-dtype bf16 -o "$TMP/trace"
expect_ok "correlate --kv-dtype bf16" $KVLAB correlate -m "$M" -f "$TEXT" --chunk 64 --chunks 1 --kv-dtype bf16 -o "$TMP/corr"
expect_ok "passkey --kv-dtype bf16 --attention fused" \
    $KVLAB passkey -m "$M" --lengths 200 --depths 50 --trials 1 --kv-dtype bf16 --attention fused -o "$TMP/pk"
expect_ok "logits --kv-dtype bf16 --attention fused" \
    $KVLAB logits -m "$M" --ids 1,400,20,33,99 --kv-dtype bf16 --attention fused -o "$TMP/l.npy"

# ---- bad values ---------------------------------------------------------------------------------
expect_fail "--kv-dtype f16 refused" "--kv-dtype: 'f16' is not a KV cache dtype" $KVLAB generate -m "$M" -p x --kv-dtype f16
expect_fail "--attention flash refused" "--attention: 'flash' is not exact or fused" $KVLAB generate -m "$M" -p x --attention flash
finish
