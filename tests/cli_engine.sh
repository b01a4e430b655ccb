#!/usr/bin/env bash
# cli_engine.sh — the engine's command line end to end: good runs and bad input.
source "$(dirname "$0")/lib_cli.sh"
S260=$SHARED/models/stories260k/stories260K.bin
TOK512=$SHARED/models/stories260k/tok512.bin
DEMO=$SHARED/models/demo-25m

# ---- good runs -----------------------------------------------------------------
expect_ok "info stories260k" $KVLAB info -m "$S260"
check "info reports GQA and the tokenizer" grep -q "kv_heads 4 (GQA)" "$TMP/out"
expect_ok "info demo-25m" $KVLAB info -m "$DEMO"
check "info demo: 25.1 M parameters, bf16 file" grep -q "file bf16" "$TMP/out"

expect_ok "generate greedy" $KVLAB generate -m "$S260" -p "Once upon a time" -n 24
cp "$TMP/out" "$TMP/greedy1"
expect_ok "generate greedy again" $KVLAB generate -m "$S260" -p "Once upon a time" -n 24
check "greedy output is reproducible" cmp "$TMP/out" "$TMP/greedy1"
check "prefill/decode speed on stderr" grep -qE "prefill: [0-9]+ tokens .* tok/s \| decode: [0-9]+ tokens" "$TMP/err"

expect_ok "sampled, seed 7" $KVLAB generate -m "$S260" -p "Once upon a time" -n 24 --temp 0.9 --top-p 0.9 --seed 7
cp "$TMP/out" "$TMP/seed7"
expect_ok "sampled, seed 7 again" $KVLAB generate -m "$S260" -p "Once upon a time" -n 24 --temp 0.9 --top-p 0.9 --seed 7
check "same seed, same text" cmp "$TMP/out" "$TMP/seed7"
expect_ok "sampled, seed 8" $KVLAB generate -m "$S260" -p "Once upon a time" -n 24 --temp 0.9 --top-p 0.9 --seed 8
check "another seed, other text" bash -c "! cmp -s '$TMP/out' '$TMP/seed7'"

expect_ok "generate stops at the context" $KVLAB generate -m "$S260" --ids 1,403,407 --ctx 12 -n 100 --print-ids
check "stop reason is the context" grep -q "stop: context" "$TMP/err"
check "9 tokens fill a 12-token context after 3" bash -c "[ \$(tr ',' '\n' < '$TMP/out' | grep -c .) -eq 9 ]"

# -f FILE: the prompt is the file's text, exactly as -p would give it
printf 'Once upon a time' >"$TMP/prompt.txt"
expect_ok "generate -f FILE" $KVLAB generate -m "$S260" -f "$TMP/prompt.txt" -n 24
check "-f FILE gives the text of -p with the same prompt" cmp -s "$TMP/out" "$TMP/greedy1"

# --compare-full: the full cache's continuation and the policy's, each equal to a
# plain run of that cache, then the agreement and the KV memory of each
SINK=$SHARED/models/sink-26m
expect_ok "generate full cache, tour prompt" $KVLAB generate -m "$SINK" -f docs/tour-prompt.txt -n 12 --print-ids
tail -n 1 "$TMP/out" >"$TMP/full_ids"
expect_ok "generate l2 50%, tour prompt" $KVLAB generate -m "$SINK" -f docs/tour-prompt.txt -n 12 --print-ids --policy l2 --compression-ratio 0.5
tail -n 1 "$TMP/out" >"$TMP/l2_ids"
expect_ok "generate --compare-full" $KVLAB generate -m "$SINK" -f docs/tour-prompt.txt -n 12 --print-ids --policy l2 --compression-ratio 0.5 --compare-full
check "the full cache's continuation is the plain full-cache run's" bash -c "grep -A1 '^--- full cache' '$TMP/out' | tail -n 1 | cmp -s - '$TMP/full_ids'"
check "the policy's continuation is the plain policy run's" bash -c "grep -A1 '^--- l2:' '$TMP/out' | tail -n 1 | cmp -s - '$TMP/l2_ids'"
check "the full cache retrieves the tour's pass key" bash -c "$KVLAB tokenize -m '$SINK' --decode \$(cat '$TMP/full_ids') | grep -q 68217"
# 403 prompt tokens; the full cache stops at EOS after 7 tokens (410 cached), l2 runs
# all 12 (414 cached): layers 0,1 whole, the other 6 keep floor(414/2) = 207 per head
check "the full cache holds 8 layers x 6 heads x 410 slots" grep -qF "(19680 slots, 410 tokens)" "$TMP/out"
check "l2 at 50% with layers 0,1 whole holds 62.5% of a full cache" grep -qF "(12420 slots, 62.5% of a full cache of 414 tokens)" "$TMP/out"
check "agreement line counts the identical leading tokens" bash -c "
    a=\$(tr ',' ' ' <'$TMP/full_ids'); b=\$(tr ',' ' ' <'$TMP/l2_ids'); set -- \$a; n=\$#; k=0
    read -ra B <<<\"\$b\"; for x in \$a; do [ \"\$x\" = \"\${B[\$k]:-}\" ] || break; k=\$((k+1)); done
    grep -q \"the first \$k of \$n generated tokens are identical\" '$TMP/out'"
check "--compare-full prints no JSON (make run's tour reads it)" bash -c "! grep -q '{' '$TMP/out'"
# the generated text ends its line: the statistics on stderr start a line of their own
# even when both streams go to one pipe
check "generate's text ends with a newline before the statistics" bash -c \
    "$KVLAB generate -m '$S260' -p 'Once upon a time' -n 8 2>&1 | grep -q '^prefill: '"
check "no --help cites the spec (not in the repository) by section" bash -c '
    for c in info tokenize generate logits bench trace correlate ppl passkey needle synth convert; do
        '"$KVLAB"' $c --help >"'"$TMP"'/help.txt" || exit 1
        if grep -E "§|methods\.md" "'"$TMP"'/help.txt"; then echo "$c --help cites the spec" >&2; exit 1; fi
    done'
expect_fail "--compare-full without a policy" "--compare-full: give a policy" $KVLAB generate -m "$S260" -p "Hi" -n 2 --compare-full
expect_fail "generate -f and -p together" "give exactly one of -p PROMPT, -f FILE or --ids LIST" $KVLAB generate -m "$S260" -p "Hi" -f "$TMP/prompt.txt"
expect_fail "generate -f a missing file" "nope.txt: cannot open" $KVLAB generate -m "$S260" -f "$TMP/nope.txt"

expect_ok "logits to .npy" $KVLAB logits -m "$S260" --ids 1,403,407,261 -o "$TMP/l.npy"
check "npy file has the magic and a [4, 512] shape" bash -c "head -c 6 '$TMP/l.npy' | grep -q NUMPY && head -c 128 '$TMP/l.npy' | grep -q \"(4, 512)\""
expect_ok "bf16 generate on demo-25m" $KVLAB generate -m "$DEMO" --dtype bf16 -p "The river" -n 8 --print-ids
cp "$TMP/out" "$TMP/bf16_copy"
expect_ok "bf16 generate, weights in place (--mmap)" $KVLAB generate -m "$DEMO" --dtype bf16 -p "The river" -n 8 --print-ids --mmap
check "--mmap gives the same tokens as the copied weights" cmp "$TMP/out" "$TMP/bf16_copy"
if grep -qw avx512_bf16 /proc/cpuinfo 2>/dev/null && [ "$(uname -m)" = x86_64 ]; then
    expect_ok "bf16 generate with --bf16-dot (avx512_bf16)" $KVLAB generate -m "$DEMO" --dtype bf16 -p "The river" -n 8 --print-ids --bf16-dot
    check "--bf16-dot: same greedy tokens as exact bf16 on demo-25m" cmp "$TMP/out" "$TMP/bf16_copy"
    expect_ok "bench --bf16-dot" $KVLAB bench -m "$S260" --prompt 32 --gen 8 --repeat 1 --threads 1 --dtype f32,bf16 --bf16-dot --no-machine
    check "bench labels the bf16 rows bf16d, the f32 rows f32" bash -c "grep -qE '^bf16d +1 \|' '$TMP/out' && grep -qE '^f32 +1 \|' '$TMP/out'"
    expect_ok "bench --interleave with bf16 and bf16d (one model for both)" $KVLAB bench -m "$S260" --prompt 16 --gen 4 --repeat 2 --threads 1 --dtype f32,bf16,bf16d --interleave --no-machine --json "$TMP/bd.json"
    check "bench: rows f32, bf16, bf16d in order" bash -c \
        "grep -oE '^(f32|bf16d?) +1 \|' '$TMP/out' | tr -s ' ' | tr '\n' ';' | grep -qx 'f32 1 |;bf16 1 |;bf16d 1 |;'"
    check "bench: the progress lines name bf16d runs" bash -c "tr '\r' '\n' <'$TMP/err' | grep -q 'bf16d 1 threads: run 2/2'"
    check "bench json: bf16_dot true only for the bf16d row" bash -c \
        "grep -oE '\"bf16_dot\":[[:space:]]*(true|false)' '$TMP/bd.json' | tr -d ' \t' | tr '\n' ';' | grep -qx '\"bf16_dot\":false;\"bf16_dot\":false;\"bf16_dot\":true;'"
fi
expect_fail "bench --dtype bf16d on kernels without it" "--dtype bf16d / --bf16-dot: the scalar kernels have no bf16 dot product" $KVLAB bench -m "$S260" --dtype bf16d --isa scalar --no-machine
expect_fail "bench --dtype with an unknown entry" "--dtype: 'f32,bf8' is not a list of up to 4 compute dtypes" $KVLAB bench -m "$S260" --dtype f32,bf8 --no-machine
expect_fail "--bf16-dot without --dtype bf16" "--bf16-dot: needs --dtype bf16" $KVLAB generate -m "$DEMO" -p "x" -n 2 --bf16-dot
expect_fail "--bf16-dot on kernels without it" "--bf16-dot: the scalar kernels have no bf16 dot product" $KVLAB generate -m "$DEMO" --dtype bf16 --isa scalar -p "x" -n 2 --bf16-dot
expect_ok "info --mmap" $KVLAB info -m "$DEMO" --dtype bf16 --mmap
check "info says the weights are in place" grep -q "in place from the file, --mmap" "$TMP/out"
expect_ok "info without --mmap" $KVLAB info -m "$DEMO" --dtype bf16
check "info says the weights were copied" grep -q "(copied at load)" "$TMP/out"
check "info: demo-25m's matrices (none wider than 1024) row-major" grep -q "^layout:      0 of 85 weight matrices in column panels of 1024" "$TMP/out"

expect_ok "bench (no machine part)" $KVLAB bench -m "$S260" --prompt 64 --gen 16 --repeat 2 --threads 1 --no-machine --json "$TMP/b.json"
check "bench prints prefill and decode rows" grep -qE "^f32 +1 \| +[0-9.]+ " "$TMP/out"
check "bench --no-machine prints - for the fractions of the limits" grep -qE "^f32 +1 \| .* - \| .* -$" "$TMP/out"
check "bench json has the figures" grep -q '"decode_tok_s_median"' "$TMP/b.json"
expect_ok "bench with a policy" $KVLAB bench -m "$S260" --prompt 64 --gen 16 --repeat 2 --threads 1 --no-machine --policy l2 --budget 32 --schedule step
check "bench reports the policy's decide cost" grep -qE "policy l2: decide [0-9.]+ ms \+ compaction [0-9.]+ ms per decode step" "$TMP/out"
expect_fail "bench with an unknown policy" "--policy.*nosuch" $KVLAB bench -m "$S260" --no-machine --policy nosuch
expect_ok "bench --interleave" $KVLAB bench -m "$S260" --prompt 16 --gen 4 --repeat 2 --threads 1,2 --dtype f32,bf16 --interleave --no-machine --json "$TMP/bi.json"
check "bench --interleave: one row per configuration, in order" bash -c \
    "grep -oE '^(f32|bf16) +[12] \|' '$TMP/out' | tr -s ' ' | tr '\n' ';' | grep -qx 'f32 1 |;f32 2 |;bf16 1 |;bf16 2 |;'"
# the progress lines show the order the runs were done in: run 1 of every configuration, then run 2
check "bench --interleave runs the configurations' repeats in turn" bash -c \
    "tr '\r' '\n' <'$TMP/err' | grep -oE '(f32|bf16) [12] threads: run [12]/2' | tr '\n' ';' | grep -qx 'f32 1 threads: run 1/2;f32 2 threads: run 1/2;bf16 1 threads: run 1/2;bf16 2 threads: run 1/2;f32 1 threads: run 2/2;f32 2 threads: run 2/2;bf16 1 threads: run 2/2;bf16 2 threads: run 2/2;'"
check "bench --interleave is recorded in the JSON" grep -qE '"interleave":[[:space:]]*true' "$TMP/bi.json"

# ---- bad input: one line, names the file/option, exit != 0 -----------------------------
expect_fail "missing model file" "nope.bin: no such file" $KVLAB info -m "$TMP/nope.bin"
head -c 1000 "$S260" >"$TMP/trunc.bin"
expect_fail "truncated llama2.c file" "trunc.bin: truncated" $KVLAB info -m "$TMP/trunc.bin"
head -c 20 "$S260" >"$TMP/short.bin"
expect_fail "file shorter than the header" "short.bin: too short" $KVLAB info -m "$TMP/short.bin"
printf '\x32\x34\x6b\x61\x01\x00\x00\x00' >"$TMP/v1.bin"; head -c 300 /dev/zero >>"$TMP/v1.bin"
expect_fail "llama2.c version 1 refused" "v1.bin: llama2.c version 1/2" $KVLAB info -m "$TMP/v1.bin"
head -c 4096 /dev/urandom >"$TMP/garbage.bin"
expect_fail "random bytes as a model" "garbage.bin: " $KVLAB info -m "$TMP/garbage.bin"
{ cat "$S260"; printf 'extra'; } >"$TMP/long.bin"
expect_fail "trailing bytes after the tensors" "long.bin: .*bytes more" $KVLAB info -m "$TMP/long.bin"
: >"$TMP/empty.bin"
expect_fail "empty model file" "empty.bin: file is empty" $KVLAB info -m "$TMP/empty.bin"
echo x >"$TMP/m.pth"
expect_fail ".pth refused with the conversion hint" "m.pth: .*safetensors" $KVLAB info -m "$TMP/m.pth"
expect_fail "prompt longer than the context" "prompt has [0-9]+ tokens, longer than the context \\(4" $KVLAB generate -m "$S260" -p "Once upon a time there was a cat" --ctx 4
expect_fail "--ctx above the model's context" "--ctx 9999: longer than the model's context length \\(512\\)" $KVLAB generate -m "$S260" -p "Hi" --ctx 9999
expect_fail "--threads not a number" "--threads: 'abc' is not an integer" $KVLAB generate -m "$S260" -p "Hi" --threads abc
expect_fail "--temp negative" "--temp: -1 is out of range" $KVLAB generate -m "$S260" -p "Hi" --temp -1
expect_fail "--top-p not finite" "--top-p: 'nan' is not a finite number" $KVLAB generate -m "$S260" -p "Hi" --top-p nan
expect_fail "--ids outside the vocabulary" "--ids: 99999 is out of range \\[0, 511\\]" $KVLAB generate -m "$S260" --ids 1,99999
expect_fail "--ids trailing comma" "--ids: trailing comma" $KVLAB generate -m "$S260" --ids 1,2,
expect_fail "-n needs a value" "-n needs a value" $KVLAB generate -m "$S260" -p "Hi" -n
expect_fail "unknown option" "unknown option '--bogus'" $KVLAB generate -m "$S260" -p "Hi" --bogus
expect_fail "--dtype not a compute dtype" "--dtype: 'f8' is not a compute dtype" $KVLAB generate -m "$S260" -p "Hi" --dtype f8
expect_fail "--isa unknown" "--isa" $KVLAB info --isa sparc
expect_fail "logits into a missing directory" "$TMP/no/dir/l.npy.*cannot write" $KVLAB logits -m "$S260" --ids 1,2 -o "$TMP/no/dir/l.npy"
check "no partial output left behind" bash -c "! ls '$TMP'/no 2>/dev/null"
cp "$S260" "$TMP/alone.bin"
expect_fail "no tokenizer next to the model" "alone.bin: no tokenizer next to the model .*-t FILE" $KVLAB generate -m "$TMP/alone.bin" -p "Hi"
expect_ok "... but -t gives one" $KVLAB generate -m "$TMP/alone.bin" -t "$TOK512" -p "Hi" -n 4
expect_fail "tokenizer of another vocabulary" "tokenizer has 32000 tokens but the model .* vocabulary of 512" $KVLAB generate -m "$S260" -t "$SHARED/models/llama2-tokenizer/tokenizer.model" -p "Hi"
expect_fail "unknown subcommand" "unknown subcommand 'frobnicate'" $KVLAB frobnicate
finish
