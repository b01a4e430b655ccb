#!/usr/bin/env bash
# cli_bad_inputs.sh — the bad-input catalogue: models, tokenizers,
# prompts, numeric options and output paths that kvlab must refuse with exit
# status != 0, ONE line on stderr "kvlab: ..." naming the file or option and the
# problem, and no output file (nor a leftover temporary) where it would have
# written one. The bad files are made by tests/bad_inputs/gen.sh into a
# temporary directory. Cases that cli_engine.sh, cli_synth.sh and cli_gguf.sh
# already cover are not repeated here.
source "$(dirname "$0")/lib_cli.sh"
S260=$SHARED/models/stories260k/stories260K.bin
B=$TMP/bad
if ! bash "$(dirname "$0")/bad_inputs/gen.sh" "$B" "$KVLAB" "$SHARED" >"$TMP/gen.log" 2>&1; then
    fail "tests/bad_inputs/gen.sh" "$(tail -n 5 "$TMP/gen.log")"; finish; exit 1
fi

# no_output NAME PATH: neither PATH nor a temporary PATH.tmp.* is left behind
no_output() {
    local p=$1
    check "  ... no output left at $(basename "$p")" bash -c "[ ! -e '$p' ] && ! ls '$(dirname "$p")' 2>/dev/null | grep -qF '$(basename "$p").tmp.'"
}

# ---- models: llama2.c headers ------------------------------------------------------
expect_fail "llama2.c: dim not a multiple of heads" "l2c-dim-not-multiple.bin: dim=12 is not a multiple of n_heads=5" $KVLAB info -m "$B/l2c-dim-not-multiple.bin"
expect_fail "llama2.c: zero layers" "l2c-zero-layers.bin: invalid shape .*layers=0.*must be positive" $KVLAB info -m "$B/l2c-zero-layers.bin"
expect_fail "llama2.c: more KV heads than heads" "l2c-kv-heads-above-heads.bin: n_heads=4 is not a multiple of n_kv_heads=8" $KVLAB info -m "$B/l2c-kv-heads-above-heads.bin"
expect_fail "llama2.c: implausible dim" "l2c-implausible-dim.bin: implausible shape \\(dim=1048576" $KVLAB info -m "$B/l2c-implausible-dim.bin"
expect_fail "llama2.c: odd head_dim" "l2c-odd-head-dim.bin: head_dim=3 must be even" $KVLAB info -m "$B/l2c-odd-head-dim.bin"
expect_fail "llama2.c: vocab INT32_MIN" "l2c-vocab-int-min.bin: invalid shape .*vocab=0" $KVLAB info -m "$B/l2c-vocab-int-min.bin"
expect_fail "llama2.c: negative seq_len" "l2c-negative-seq.bin: invalid shape .*seq_len=-1" $KVLAB generate -m "$B/l2c-negative-seq.bin" --ids 1

# ---- models: HF config.json ---------------------------------------------------------
expect_fail "config: model_type mistral" "st-model-type/config.json: model_type 'mistral' is not supported" $KVLAB info -m "$B/st-model-type"
expect_fail "config: hidden_size missing" "st-no-hidden-size/config.json: missing \"hidden_size\"" $KVLAB info -m "$B/st-no-hidden-size"
expect_fail "config: kv heads not dividing heads" "st-kv-heads-3/config.json: n_heads=2 is not a multiple of n_kv_heads=3" $KVLAB info -m "$B/st-kv-heads-3"
expect_fail "config: negative rms_norm_eps" "st-negative-eps/config.json: rms_norm_eps=-1e-05 out of range" $KVLAB info -m "$B/st-negative-eps"
expect_fail "config: layers as a string" "st-layers-string/config.json: \"num_hidden_layers\" must be an integer" $KVLAB info -m "$B/st-layers-string"
expect_fail "config: an array, not an object" "st-config-array/config.json: not a JSON object" $KVLAB info -m "$B/st-config-array"
expect_fail "config: missing" "st-no-config/config.json: cannot open: No such file" $KVLAB info -m "$B/st-no-config"

# ---- models: safetensors files and index ----------------------------------------------
expect_fail "safetensors: no weights in the directory" "st-no-weights: no model.safetensors or model.safetensors.index.json" $KVLAB info -m "$B/st-no-weights"
expect_fail "safetensors: integer dtype refused by name" "st-dtype-i16/model.safetensors: tensor '.*' has dtype I16: only F32, BF16 and F16" $KVLAB info -m "$B/st-dtype-i16"
expect_fail "safetensors: shape against config.json" "st-shape-mismatch/model.safetensors: tensor 'model.embed_tokens.weight' has shape \\[16, 512\\] but config.json implies \\[512, 16\\]" $KVLAB info -m "$B/st-shape-mismatch"
expect_fail "safetensors: data_offsets against the shape" "st-offsets-mismatch/model.safetensors: tensor 'model.embed_tokens.weight': data_offsets \\[0, 16000\\]" $KVLAB info -m "$B/st-offsets-mismatch"
expect_fail "safetensors: duplicate tensor name (fuzz finding)" "st-duplicate-name/model.safetensors: tensor 'model.norm.weight' appears twice" $KVLAB info -m "$B/st-duplicate-name"
expect_fail "safetensors: two tensors on the same bytes" "st-overlap/model.safetensors: tensors 'model.layers.0.input_layernorm.weight' \\[16384, 16416\\] and 'model.layers.0.post_attention_layernorm.weight' \\[16384, 16416\\] overlap" $KVLAB info -m "$B/st-overlap"
expect_fail "safetensors: header not JSON" "st-header-not-json/model.safetensors: invalid JSON in the safetensors header near byte" $KVLAB info -m "$B/st-header-not-json"
expect_fail "safetensors: header length past the end" "st-header-too-long/model.safetensors: header length 1099511627776 is past the end" $KVLAB info -m "$B/st-header-too-long"
expect_fail "safetensors: a required tensor renamed" "st-missing-tensor/model.safetensors: required tensor 'model.layers.1.mlp.up_proj.weight' is missing" $KVLAB info -m "$B/st-missing-tensor"
expect_fail "index: shard outside the directory" "model.safetensors.index.json: shard name '../model-00002-of-00002.safetensors' is not a file name inside the directory" $KVLAB info -m "$B/st-index-traversal"
expect_fail "index: no weight_map" "st-index-no-map/model.safetensors.index.json: no \"weight_map\" object" $KVLAB info -m "$B/st-index-no-map"

# ---- models: GGUF ---------------------------------------------------------------------
expect_fail "GGUF version 1" "gguf-v1.gguf: GGUF version 1 is not supported" $KVLAB info -m "$B/gguf-v1.gguf"
expect_fail "GGUF: unknown value type" "gguf-bad-value-type.gguf: corrupt GGUF: .*value type 99" $KVLAB info -m "$B/gguf-bad-value-type.gguf"
expect_fail "GGUF: tensor count larger than the file" "gguf-huge-tensor-count.gguf: .*tensor count 1099511627776 cannot fit" $KVLAB info -m "$B/gguf-huge-tensor-count.gguf"
expect_fail "GGUF: key length larger than the file" "gguf-huge-key.gguf: truncated or corrupt GGUF" $KVLAB info -m "$B/gguf-huge-key.gguf"
expect_fail "GGUF: not GGUF at all" "gguf-not-gguf.gguf: not a GGUF file" $KVLAB info -m "$B/gguf-not-gguf.gguf"
expect_fail "GGUF: tensor offset past the end" "gguf-offset-past-end.gguf: truncated GGUF: tensor 'token_embd.weight'.*past the end" $KVLAB info -m "$B/gguf-offset-past-end.gguf"

# ---- tokenizers ----------------------------------------------------------------------
expect_fail "tokenizer: empty file" "tok-empty.model: empty file, not a tokenizer" $KVLAB tokenize -t "$B/tok-empty.model" -p hi
expect_fail "tokenizer.bin: truncated" "tok-truncated.bin: token [0-9]+: .*truncated" $KVLAB tokenize -t "$B/tok-truncated.bin" -p hi
expect_fail "tokenizer.bin: piece longer than max_token_length" "tok-huge-piece.bin: token 0: length 1073741824 exceeds max_token_length 16" $KVLAB tokenize -t "$B/tok-huge-piece.bin" -p hi
expect_fail "tokenizer.model: truncated protobuf" "tok-truncated.model: corrupt SentencePiece model" $KVLAB tokenize -t "$B/tok-truncated.model" -p hi
expect_fail "tokenizer.model: field past its end" "tok-bad-varint.model: corrupt SentencePiece model" $KVLAB tokenize -t "$B/tok-bad-varint.model" -p hi
expect_fail "tokenizer: a directory" "$B: not a regular file \(a directory\)" $KVLAB generate -m "$S260" -t "$B" -p hi
expect_fail "tokenizer: missing file" "nope.model: cannot open: No such file" $KVLAB generate -m "$S260" -t "$B/nope.model" -p hi

# ---- prompts -------------------------------------------------------------------------
expect_fail "--ids negative id" "--ids: -1 is out of range \\[0, 511\\]" $KVLAB generate -m "$S260" --ids 1,-1
expect_fail "--ids empty element" "--ids: bad list element in '1,,2'" $KVLAB generate -m "$S260" --ids 1,,2
expect_fail "both -p and --ids" "give exactly one of -p PROMPT, -f FILE or --ids LIST" $KVLAB generate -m "$S260" -p hi --ids 1
expect_fail "--ids beyond --ctx" "prompt has 5 tokens, longer than the context \\(4" $KVLAB logits -m "$S260" --ids 1,2,3,4,5 --ctx 4 -o "$TMP/ctx.npy"
no_output "$TMP/ctx.npy"

# ---- numeric options -----------------------------------------------------------------
expect_fail "-n negative" "-n: -5 is out of range" $KVLAB generate -m "$S260" -p hi -n -5
expect_fail "--ctx 0" "--ctx: 0 is out of range \\[1," $KVLAB generate -m "$S260" -p hi --ctx 0
expect_fail "--batch 0" "--batch: 0 is out of range \\[1, 65536\\]" $KVLAB generate -m "$S260" -p hi --batch 0
expect_fail "--seed not an integer" "--seed: '1e3' is not an integer" $KVLAB generate -m "$S260" -p hi --seed 1e3
expect_fail "--threads 0" "--threads: 0 is out of range \\[1, 1024\\]" $KVLAB generate -m "$S260" -p hi --threads 0
expect_fail "--top-p 0" "--top-p: 0 is out of range" $KVLAB generate -m "$S260" -p hi --top-p 0
expect_fail "--temp inf" "--temp: 'inf' is not a finite number" $KVLAB generate -m "$S260" -p hi --temp inf
expect_fail "--compression-ratio 1" "--compression-ratio: 1 is out of range \\[0, 1\\)" $KVLAB generate -m "$S260" -p hi --policy h2o --compression-ratio 1
expect_fail "--compression-ratio 1.5: the same range as 1" "--compression-ratio: 1.5 is out of range \\[0, 1\\)$" $KVLAB generate -m "$S260" -p hi --policy h2o --compression-ratio 1.5
expect_fail "--compression-ratio -0.5: the same range" "--compression-ratio: -0.5 is out of range \\[0, 1\\)$" $KVLAB generate -m "$S260" -p hi --policy h2o --compression-ratio -0.5
expect_fail "--keep-ratio 0" "--keep-ratio: 0 is out of range \\(0, 1\\]$" $KVLAB generate -m "$S260" -p hi --policy h2o --keep-ratio 0
expect_fail "--keep-ratio 1.5: the same range as 0" "--keep-ratio: 1.5 is out of range \\(0, 1\\]$" $KVLAB generate -m "$S260" -p hi --policy h2o --keep-ratio 1.5
expect_fail "--policy unknown" "--policy: unknown policy 'bogus'" $KVLAB generate -m "$S260" -p hi --policy bogus
expect_fail "--policy without a budget" "--policy h2o needs a budget" $KVLAB generate -m "$S260" -p hi --policy h2o
expect_fail "--budget 0" "--budget: 0 is out of range" $KVLAB generate -m "$S260" -p hi --policy h2o --budget 0
expect_fail "--schedule interval:0" "--schedule interval:N: 0 is out of range" $KVLAB generate -m "$S260" -p hi --policy h2o --budget 8 --schedule interval:0
expect_fail "policy parameter out of range" "--policy lagkv: lag=1 is out of range \\[2," $KVLAB generate -m "$S260" -p hi --policy lagkv:lag=1

# ---- the context against the memory (KV cache grows lazily: refused up front) --------
# 8 layers x 2 KV heads x head_dim 1024: 128 KiB of KV cache per token; seq 4M
"$KVLAB" synth --quiet -o "$TMP/wide" --shape dim=16,layers=8,heads=2,kv_heads=2,head_dim=1024,ffn=16,vocab=64,seq=4194304 >/dev/null
expect_fail "model's context beyond memory" "the model's context of 4194304 tokens \\(no --ctx given\\) needs 512.00 GiB of KV cache .*only [0-9.]+ GiB of memory available: give a smaller --ctx" $KVLAB generate -m "$TMP/wide" --ids 1,2 -n 2
expect_fail "--ctx beyond memory" "--ctx 4000000 needs 488.28 GiB of KV cache" $KVLAB generate -m "$TMP/wide" --ids 1,2 -n 2 --ctx 4000000
expect_ok "... a --ctx that fits runs" $KVLAB generate -m "$TMP/wide" --ids 1,2 -n 2 --ctx 64
expect_fail "--ctx against a small MemAvailable" "--ctx 512 needs 0.00 GiB of KV cache \\(655360 bytes\\) plus 0.00 GiB of mapped weights, only 0.00 GiB" \
    env KVLAB_MEM_AVAILABLE=1000000 $KVLAB logits -m "$S260" --mmap --ids 1,2 --ctx 512 -o "$TMP/mem.npy"
no_output "$TMP/mem.npy"
expect_fail "--ctx against a small MemAvailable, weights copied (not counted again)" "--ctx 512 needs 0.00 GiB of KV cache \\(655360 bytes\\), only 0.00 GiB" \
    env KVLAB_MEM_AVAILABLE=600000 $KVLAB logits -m "$S260" --ids 1,2 --ctx 512 -o "$TMP/mem.npy"
expect_ok "... the same without --mmap fits in 1000000 bytes" env KVLAB_MEM_AVAILABLE=1000000 $KVLAB logits -m "$S260" --ids 1,2 --ctx 512 -o "$TMP/mem.npy"

# ---- NaN / Inf weights: an error naming the layer and tensor, not garbage text --------
expect_fail "NaN in wq[2] (llama2.c)" "nan-wq2.bin: NaN in the logits .*output of layer 2 \\(of 5\\) went non-finite first; tensor 'wq\\[2\\]' holds NaN at \\[5, 7\\]" $KVLAB generate -m "$B/nan-wq2.bin" -p "Once upon" -n 8
expect_fail "... and logits writes no .npy" "nan-wq2.bin: NaN in the logits" $KVLAB logits -m "$B/nan-wq2.bin" --ids 1,2,3 -o "$TMP/nan.npy"
printf 'Once upon a time there was a little cat. It liked to play in the sun every day.\n%.0s' $(seq 40) >"$TMP/nan-text.txt"
expect_fail "ppl stops at NaN logits, naming the tensor" "nan-wq2.bin: NaN in the logits .*tensor 'wq\\[2\\]'" $KVLAB ppl -m "$B/nan-wq2.bin" -t "$SHARED/models/stories260k/tok512.bin" -f "$TMP/nan-text.txt" --chunk 64 --chunks 1 -o "$TMP/nan-ppl"
expect_fail "passkey stops at NaN logits, naming the tensor" "nan-wq2.bin: NaN in the logits .*tensor 'wq\\[2\\]'" $KVLAB passkey -m "$B/nan-wq2.bin" -t "$SHARED/models/stories260k/tok512.bin" --lengths 256 --trials 1 -o "$TMP/nan-pk"
no_output "$TMP/nan.npy"
expect_fail "trace stops at NaN logits, naming the tensor" "nan-wq2.bin: NaN in the logits .*tensor 'wq\\[2\\]'" $KVLAB trace -m "$B/nan-wq2.bin" -t "$SHARED/models/stories260k/tok512.bin" -p "Once upon a time" -o "$TMP/nan-trace"
no_output "$TMP/nan-trace/trace.npz"
expect_fail "+Inf in a bf16 down_proj (HF)" "st-inf-down1: NaN in the logits .*layer 1 \\(of 2\\).*'model.layers.1.mlp.down_proj.weight' holds \\+Inf at \\[0, 0\\]" $KVLAB generate -m "$B/st-inf-down1" --dtype bf16 -p hi -n 4
cp "$B/nan-wq2.bin" "$TMP/nan.bin"
"$KVLAB" convert -m "$TMP/nan.bin" -t "$SHARED/models/stories260k/tok512.bin" -o "$TMP/nan.gguf" >/dev/null 2>&1
expect_fail "... named the GGUF way after convert" "nan.gguf: NaN in the logits .*tensor 'blk.2.attn_q.weight' holds NaN" $KVLAB generate -m "$TMP/nan.gguf" --ids 1,2 -n 2

# ---- output paths --------------------------------------------------------------------
expect_fail "logits into /proc (unwritable even for root)" "/proc/kvlab-bad.npy: cannot write" $KVLAB logits -m "$S260" --ids 1,2 -o /proc/kvlab-bad.npy
echo keep >"$TMP/file"
expect_fail "logits under a regular file" "$TMP/file/l.npy: cannot write: Not a directory" $KVLAB logits -m "$S260" --ids 1,2 -o "$TMP/file/l.npy"
mkdir -p "$TMP/outdir"
expect_fail "logits onto an existing directory" "$TMP/outdir: cannot rename temporary file into place: Is a directory" $KVLAB logits -m "$S260" --ids 1,2 -o "$TMP/outdir"
check "  ... no temporary left next to it" bash -c "! ls '$TMP' | grep -q '^outdir\\.tmp\\.'"
expect_fail "synth onto an existing file without --force" "$TMP/file: already exists \\(--force replaces it\\)" $KVLAB synth --quiet -o "$TMP/file" --shape dim=16,layers=1,heads=2,ffn=24,vocab=40
check "  ... the file is untouched" grep -qx keep "$TMP/file"
expect_fail "synth into /proc" "/proc/kvlab-synth: cannot write: No such file or directory" $KVLAB synth --quiet -o /proc/kvlab-synth --shape dim=16,layers=1,heads=2,ffn=24,vocab=40
expect_fail "convert to an existing HF directory without --force" "st-good: already exists \\(--force replaces it\\)" $KVLAB convert -m "$S260" -o "$B/st-good"
check "  ... the directory is untouched" test -f "$B/st-good/tokenizer.bin"
expect_fail "convert into /proc" "/proc/kvlab-bad.gguf: cannot write" $KVLAB convert -m "$S260" -o /proc/kvlab-bad.gguf
expect_fail "convert under a regular file" "$TMP/file/x.gguf: cannot write: Not a directory" $KVLAB convert -m "$S260" -o "$TMP/file/x.gguf"
expect_fail "convert a bad model writes nothing" "l2c-zero-layers.bin: invalid shape" $KVLAB convert -m "$B/l2c-zero-layers.bin" -o "$TMP/never.gguf"
no_output "$TMP/never.gguf"
finish
