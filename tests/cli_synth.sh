#!/usr/bin/env bash
# cli_synth.sh — `kvlab synth` and the safetensors loader's errors through the
# real binary: exit statuses, one-line "kvlab: ..." messages naming the option
# or file, determinism, sharding, --force, --tokenizer. Run from the repository
# root (KVLAB=path/to/kvlab and KVLAB_SHARED=path/to/shared override the
# defaults). Prints "RESULT cli_synth.sh passed=N failed=M" last.
set -u
. "$(dirname "$0")/lib_cli.sh"
SHAPE=dim=64,layers=2,heads=4,kv_heads=2,ffn=96,vocab=300

synth() { "$KVLAB" synth --quiet "$@" >/dev/null; }

if [ ! -x "$KVLAB" ]; then fail "no $KVLAB binary (make kvlab first)"; finish; exit 1; fi

# --help documents every option
help_documents_all() {
    local help; help=$("$KVLAB" synth --help) || return 1
    for opt in -o --output --shape --dtype --shards --seed --tied --tokenizer --force --quiet llama2-7b demo-25m; do
        [[ $help == *"$opt"* ]] || { echo "missing $opt" >&2; return 1; }
    done
}
check "--help documents every option" help_documents_all

# the same seed twice gives identical bytes; another seed differs
same_seed_same_bytes() {
    synth -o "$TMP/a" --shape "$SHAPE" --dtype bf16 --seed 5 && synth -o "$TMP/b" --shape "$SHAPE" --dtype bf16 --seed 5 &&
    synth -o "$TMP/c" --shape "$SHAPE" --dtype bf16 --seed 6 &&
    cmp -s "$TMP/a/model.safetensors" "$TMP/b/model.safetensors" &&
    ! cmp -s "$TMP/a/model.safetensors" "$TMP/c/model.safetensors"
}
check "same seed -> same file, other seed -> other file" same_seed_same_bytes
expect_ok "kvlab info loads a synth checkpoint" "$KVLAB" info -m "$TMP/a"

# matrices wider than 1024 columns are copied into column panels (model.h Mat);
# in place from the file (--mmap) they stay row-major; logits agree within rounding
panels() {
    synth -o "$TMP/wide" --shape dim=64,layers=2,heads=4,kv_heads=2,ffn=1100,vocab=300 --dtype f32 --seed 3 &&
    "$KVLAB" info -m "$TMP/wide" | grep -q "^layout:      2 of 16 weight matrices in column panels of 1024" &&
    "$KVLAB" info -m "$TMP/wide" --mmap | grep -q "^layout:      0 of 16 weight matrices" &&
    "$KVLAB" logits -m "$TMP/wide" --ids 1,5,9,200,7,3 -o "$TMP/wide-panels.npy" 2>/dev/null &&
    "$KVLAB" logits -m "$TMP/wide" --ids 1,5,9,200,7,3 --mmap -o "$TMP/wide-rows.npy" 2>/dev/null &&
    /usr/bin/python3 - "$TMP/wide-panels.npy" "$TMP/wide-rows.npy" <<'PY'
import sys, numpy as np
a, b = np.load(sys.argv[1]), np.load(sys.argv[2])
d = float(np.abs(a - b).max())
sys.exit(0 if a.shape == b.shape == (6, 300) and d <= 1e-5 * (1 + float(np.abs(b).max())) else 1)
PY
}
check "wide matrices in column panels; --mmap row-major; same logits within 1e-5" panels

sharded() {
    synth -o "$TMP/s3" --shape "$SHAPE" --dtype f16 --shards 3 --tied 1 &&
    [ -f "$TMP/s3/model.safetensors.index.json" ] && [ -f "$TMP/s3/model-00003-of-00003.safetensors" ] &&
    ! ls "$TMP" | grep -q '\.tmp\.' && grep -q '"tie_word_embeddings":[[:space:]]*true' "$TMP/s3/config.json"
}
check "--shards 3 writes 3 files + index, --tied 1" sharded
expect_ok "kvlab info loads the shards" "$KVLAB" info -m "$TMP/s3"

TOK="$SHARED/models/llama2-tokenizer/tokenizer.model"
if [ -f "$TOK" ]; then
    copies_tokenizer() {
        synth -o "$TMP/tok" --shape demo-25m --dtype bf16 --tokenizer "$TOK" && cmp -s "$TMP/tok/tokenizer.model" "$TOK"
    }
    check "--tokenizer copies tokenizer.model" copies_tokenizer
    rm -rf "$TMP/tok"
fi

# refusing to overwrite; --force replacing only a checkpoint directory
expect_fail "existing DIR refused" "already exists.*--force" "$KVLAB" synth --quiet -o "$TMP/a" --shape "$SHAPE"
forced() { synth -o "$TMP/a" --shape "$SHAPE" --dtype f32 --force && grep -q float32 "$TMP/a/config.json"; }
check "--force replaces a checkpoint directory" forced
mkdir -p "$TMP/home" && echo keep >"$TMP/home/notes.txt"
expect_fail "--force refuses a non-checkpoint directory" "refusing" "$KVLAB" synth --quiet -o "$TMP/home" --shape "$SHAPE" --force
check "the user's file is kept" test -f "$TMP/home/notes.txt"

# bad option values: one line naming the option
expect_fail "bad --dtype" "--dtype.*q4" "$KVLAB" synth -o "$TMP/x" --shape "$SHAPE" --dtype q4
expect_fail "bad --shape" "--shape.*missing vocab" "$KVLAB" synth -o "$TMP/x" --shape dim=64,layers=2,heads=4,ffn=96
expect_fail "heads not dividing dim" "--shape.*not a multiple" "$KVLAB" synth -o "$TMP/x" --shape dim=64,layers=2,heads=5,ffn=96,vocab=9
expect_fail "bad --shards" "--shards" "$KVLAB" synth -o "$TMP/x" --shape "$SHAPE" --shards 0
expect_fail "bad --seed" "--seed.*not an integer" "$KVLAB" synth -o "$TMP/x" --shape "$SHAPE" --seed abc
expect_fail "bad --tied" "--tied" "$KVLAB" synth -o "$TMP/x" --shape "$SHAPE" --tied 2
expect_fail "missing tokenizer file" "--tokenizer.*no such file" "$KVLAB" synth -o "$TMP/x" --shape "$SHAPE" --tokenizer "$TMP/nope.model"
expect_fail "unknown option" "unknown option '--colour'" "$KVLAB" synth -o "$TMP/x" --shape "$SHAPE" --colour red
expect_fail "no -o" "-o DIR is required" "$KVLAB" synth --shape "$SHAPE"
nothing_left() { [ ! -e "$TMP/x" ] && ! ls "$TMP" | grep -q '\.tmp\.'; }
check "failed runs leave nothing behind" nothing_left

# the loader's errors through the binary
synth -o "$TMP/bad1" --shape "$SHAPE" --dtype f32
printf '{"hidden_size": 64,, }' >"$TMP/bad1/config.json"
expect_fail "invalid config.json" "bad1/config.json: invalid JSON near byte" "$KVLAB" info -m "$TMP/bad1"
synth -o "$TMP/bad2" --shape "$SHAPE" --dtype f32
truncate -s -100 "$TMP/bad2/model.safetensors"
expect_fail "truncated safetensors" "bad2/model.safetensors: .*past the end" "$KVLAB" info -m "$TMP/bad2"
synth -o "$TMP/bad3" --shape "$SHAPE" --dtype bf16 --shards 3
rm "$TMP/bad3/model-00002-of-00003.safetensors"
expect_fail "index names a missing shard" "model-00002-of-00003.safetensors: missing" "$KVLAB" info -m "$TMP/bad3"
synth -o "$TMP/bad4" --shape "$SHAPE"
sed -i 's/"rope_scaling":[[:space:]]*null/"rope_scaling": {"type": "linear", "factor": 2.0}/' "$TMP/bad4/config.json"
expect_fail "rope_scaling linear refused" "config.json: RoPE scaling type 'linear'" "$KVLAB" info -m "$TMP/bad4"

finish
