#!/usr/bin/env bash
# cli_gguf.sh — kvlab convert end to end: GGUF and HF outputs generate exactly
# what the original models generate (greedy, token ids), and bad input is
# refused with one line.
source "$(dirname "$0")/lib_cli.sh"
S260=$SHARED/models/stories260k/stories260K.bin
DEMO=$SHARED/models/demo-25m

# greedy ids of MODEL for the prompt; extra args follow
ids() { local m=$1; shift; $KVLAB generate -m "$m" -p "Once upon a time" -n 24 --ctx 64 --print-ids "$@" 2>/dev/null; }

# ---- good runs -------------------------------------------------------------------
expect_ok "convert --help" $KVLAB convert --help
check "--help documents every option" bash -c "for o in -m --model -o --output -t --tokenizer --dtype --name --force --help; do grep -q -- \"\$o\" '$TMP/out' || exit 1; done"

expect_ok "convert stories260k to GGUF" $KVLAB convert -m "$S260" -o "$TMP/s.gguf"
ids "$S260" >"$TMP/ids.orig"
ids "$TMP/s.gguf" >"$TMP/ids.gguf"
check "stories260k GGUF generates the same ids (tokenizer from the GGUF)" cmp "$TMP/ids.orig" "$TMP/ids.gguf"
check "... and they are not empty" test -s "$TMP/ids.orig"

expect_ok "GGUF to HF directory" $KVLAB convert -m "$TMP/s.gguf" -o "$TMP/s_hf"
check "HF directory has config, weights and a tokenizer" test -f "$TMP/s_hf/config.json" -a -f "$TMP/s_hf/model.safetensors" -a -f "$TMP/s_hf/tokenizer.model"
ids "$TMP/s_hf" >"$TMP/ids.hf"
check "HF directory generates the same ids" cmp "$TMP/ids.orig" "$TMP/ids.hf"

expect_ok "convert demo-25m (HF bf16) to GGUF" $KVLAB convert -m "$DEMO" -o "$TMP/d.gguf"
ids "$DEMO" >"$TMP/d.orig"
ids "$TMP/d.gguf" >"$TMP/d.gguf.ids"
check "demo-25m GGUF generates the same ids" cmp "$TMP/d.orig" "$TMP/d.gguf.ids"
ids "$DEMO" --dtype bf16 >"$TMP/d.orig16"
ids "$TMP/d.gguf" --dtype bf16 >"$TMP/d.gguf16"
check "... in bf16 compute too" cmp "$TMP/d.orig16" "$TMP/d.gguf16"
expect_ok "kvlab tokenize -t reads a GGUF's embedded tokenizer" $KVLAB tokenize -t "$TMP/d.gguf" -p "Hello world"
check "Hello world -> 1 15043 3186" grep -qE "1[ ,]+15043[ ,]+3186" "$TMP/out"

expect_ok "--force replaces, --dtype f16 --name" $KVLAB convert -m "$S260" -o "$TMP/s.gguf" --force --dtype f16 --name s260
check "the weights are now f16" bash -c "$KVLAB info -m '$TMP/s.gguf' | grep -q 'file f16'"

# ---- refusals ----------------------------------------------------------------------------
expect_fail "existing output without --force" "s.gguf: already exists \\(--force replaces it\\)" $KVLAB convert -m "$S260" -o "$TMP/s.gguf"
expect_fail "bad --dtype" "--dtype: 'q4' is not f32, bf16 or f16" $KVLAB convert -m "$S260" -o "$TMP/x.gguf" --dtype q4
expect_fail "no -o" "-o OUTPUT is required" $KVLAB convert -m "$S260"
expect_fail "output is the input" "that is the input model" $KVLAB convert -m "$TMP/s.gguf" -o "$TMP/s.gguf" --force
# a quantised tensor: blk.0.attn_q.weight's type field (after the name, n_dims = 2
# and two u64 dims) patched to Q4_0 = 2; the name occurs only in its tensor info
cp "$TMP/s.gguf" "$TMP/q4.gguf"
at=$(grep -obaF "blk.0.attn_q.weight" "$TMP/q4.gguf" | head -n 1 | cut -d: -f1)
printf '\x02\x00\x00\x00' | dd of="$TMP/q4.gguf" bs=1 seek=$((at + 19 + 4 + 16)) conv=notrunc status=none
expect_fail "quantised GGUF refused by name" "q4.gguf: tensor 'blk.0.attn_q.weight' has ggml type Q4_0 \\(2\\): quantised" $KVLAB generate -m "$TMP/q4.gguf" --ids 1,2
head -c 5000 "$TMP/s.gguf" >"$TMP/trunc.gguf"
expect_fail "truncated GGUF" "trunc.gguf: .*(truncated|past the end)" $KVLAB info -m "$TMP/trunc.gguf"
check "no temporary files left behind" bash -c "! ls '$TMP' | grep -q '\\.tmp\\.'"
finish
