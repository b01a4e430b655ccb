#!/usr/bin/env bash
# cli_scripts.sh — the user's scripts in models/ and data/, offline on the fixtures of
# ../shared: each one's --help, its local-source path (--from: the network step skipped
# with a message), what it writes, and its refusals. Nothing here touches the network:
# the Hugging Face CLI is replaced by a stand-in (KVLAB_HF_CLI) that records its arguments.
set -u
cd "$(dirname "$0")/.." || exit 1
source tests/lib_cli.sh

S=$SHARED
SINK=$S/models/sink-26m
S260=$S/models/stories260k/stories260K.bin
PY=/usr/bin/python3

for s in models/get-llama2.sh models/convert.sh data/get-wikitext2.sh data/get-pg19.sh data/make-prompts.sh; do
    expect_ok "$s --help" "$s" --help
    check "$s --help: a usage line" grep -q "^usage: $s" "$TMP/out"
done

# ---- models/get-llama2.sh --------------------------------------------------------------
expect_ok "get-llama2.sh --from a local HF directory" models/get-llama2.sh --from "$SINK" --out "$TMP/m1" --kvlab "$KVLAB"
check "get-llama2.sh --from: says the network step is skipped" grep -q "no download (network step skipped)" "$TMP/out"
check "get-llama2.sh --from: the model files, byte for byte, and kvlab loads them" bash -c "
    for f in config.json model.safetensors tokenizer.model; do cmp -s '$SINK/'\$f '$TMP/m1/'\$f || exit 1; done
    grep -q '^layers 8, dim 384' '$TMP/out' && grep -q 'ready: $TMP/m1' '$TMP/out'"
check "get-llama2.sh: no temporary file left" bash -c "[ -z \"\$(ls -A '$TMP/m1' | grep tmp)\" ]"
KVLAB_HF_CLI=none models/get-llama2.sh --out "$TMP/m2" --kvlab "$KVLAB" >"$TMP/out" 2>"$TMP/err"
check "get-llama2.sh without the HF CLI: exit 1, install/licence/login steps, nothing written" bash -c "
    [ $? = 1 ] && grep -q 'pip install -U huggingface_hub' '$TMP/err' && grep -q 'licence' '$TMP/err' &&
    grep -q 'hf auth login' '$TMP/err' && [ ! -e '$TMP/m2' ]"
# a stand-in for `hf`: records its arguments and "downloads" sink-26m
cat >"$TMP/hf" <<STUB
#!/usr/bin/env bash
echo "\$@" >'$TMP/hf.args'
while [ \$# -gt 0 ]; do [ "\$1" = --local-dir ] && dir=\$2; shift; done
cp '$SINK'/config.json '$SINK'/model.safetensors '$SINK'/tokenizer.model "\$dir"/
STUB
chmod +x "$TMP/hf"
expect_ok "get-llama2.sh with the HF CLI (a stand-in)" env KVLAB_HF_CLI="$TMP/hf" models/get-llama2.sh --repo meta-llama/Llama-2-13b-hf --out "$TMP/m3" --kvlab "$KVLAB"
check "get-llama2.sh: hf download REPO --revision main, one --include per file kind, --local-dir" grep -qxF \
    "download meta-llama/Llama-2-13b-hf --revision main --include config.json --include *.safetensors --include model.safetensors.index.json --include tokenizer.model --local-dir $TMP/m3" "$TMP/hf.args"
cp "$TMP/hf" "$TMP/huggingface-cli"
expect_ok "get-llama2.sh with huggingface-cli (a stand-in)" env KVLAB_HF_CLI="$TMP/huggingface-cli" models/get-llama2.sh --out "$TMP/m4" --kvlab "$KVLAB"
check "get-llama2.sh: huggingface-cli takes every pattern after one --include" grep -qxF \
    "download meta-llama/Llama-2-7b-hf --revision main --include config.json *.safetensors model.safetensors.index.json tokenizer.model --local-dir $TMP/m4" "$TMP/hf.args"
check "get-llama2.sh: default --out is models/local/NAME" bash -c "grep -q 'models/local/Llama-2-7b-hf' <(KVLAB_HF_CLI=none models/get-llama2.sh --kvlab '$KVLAB' 2>&1)"
check "get-llama2.sh: --from a directory without config.json refused" bash -c "! models/get-llama2.sh --from '$TMP' --out '$TMP/m5' --kvlab '$KVLAB' 2>'$TMP/e' && grep -q 'no config.json' '$TMP/e'"
check "get-llama2.sh: a bad --repo refused" bash -c "! models/get-llama2.sh --repo 'a b' --kvlab '$KVLAB' 2>/dev/null"

# ---- models/convert.sh -------------------------------------------------------------------
expect_ok "convert.sh llama2.c .bin -> GGUF, checked" models/convert.sh -m "$S260" -o "$TMP/s.gguf" --kvlab "$KVLAB"
check "convert.sh: the GGUF file and the check line" bash -c "head -c 4 '$TMP/s.gguf' | grep -q GGUF && grep -q 'check passed: the same 16 greedy tokens' '$TMP/out'"
expect_ok "convert.sh GGUF -> HF directory, checked" models/convert.sh -m "$TMP/s.gguf" -o "$TMP/s-hf" --kvlab "$KVLAB"
check "convert.sh: an HF directory" test -f "$TMP/s-hf/config.json" -a -f "$TMP/s-hf/model.safetensors"
expect_ok "convert.sh HF bf16 -> GGUF f16 (rounded: a difference is a note)" models/convert.sh -m "$SINK" -o "$TMP/k.gguf" --dtype f16 --kvlab "$KVLAB"
check "convert.sh: an existing output is refused without --force" bash -c "! models/convert.sh -m '$S260' -o '$TMP/s.gguf' --kvlab '$KVLAB' >/dev/null 2>&1"
expect_ok "convert.sh --force --no-check" models/convert.sh -m "$S260" -o "$TMP/s.gguf" --force --no-check --kvlab "$KVLAB"
check "convert.sh: a missing model refused" bash -c "! models/convert.sh -m '$TMP/none' -o '$TMP/x.gguf' --kvlab '$KVLAB' 2>/dev/null"

# ---- data/get-wikitext2.sh ------------------------------------------------------------------
W=$S/data/wikitext-2-raw-test.txt
expect_ok "get-wikitext2.sh --from the prepared text" data/get-wikitext2.sh --from "$W" --out "$TMP/w1.txt"
check "get-wikitext2.sh: network step skipped, identical to the project's copy" bash -c "
    grep -q 'no download (network step skipped)' '$TMP/out' && grep -q 'identical to the copy' '$TMP/out' && cmp -s '$W' '$TMP/w1.txt'"
if [ -x "$PY" ]; then
    # the release's layout: wikitext-2-raw/wiki.test.raw inside the zip, here with CRLF line ends
    "$PY" -c "
import zipfile, sys
data = open('$W', 'rb').read().replace(b'\n', b'\r\n')
with zipfile.ZipFile('$TMP/wt.zip', 'w', zipfile.ZIP_DEFLATED) as z:
    z.writestr('wikitext-2-raw/wiki.test.raw', data)
    z.writestr('wikitext-2-raw/wiki.train.raw', b' = x = \n')
"
    expect_ok "get-wikitext2.sh --from the release zip (CRLF)" data/get-wikitext2.sh --from "$TMP/wt.zip" --out "$TMP/w2.txt"
    check "get-wikitext2.sh: the test split with LF line ends, identical to the project's copy" cmp -s "$W" "$TMP/w2.txt"
fi
check "get-wikitext2.sh: a text that is not wikitext refused" bash -c "! data/get-wikitext2.sh --from '$S/data/tinystories-valid-head.txt' --out '$TMP/w3.txt' 2>/dev/null && [ ! -e '$TMP/w3.txt' ]"

# ---- data/get-pg19.sh -------------------------------------------------------------------------
WP=$S/data/war-and-peace.txt
expect_ok "get-pg19.sh --from a Gutenberg text" data/get-pg19.sh --from "$WP" --out "$TMP/pg.txt"
check "get-pg19.sh: the body only (no licence header or footer), the book's first and last chapters" bash -c "
    grep -q 'no download (network step skipped)' '$TMP/out' && ! grep -qi 'project gutenberg' '$TMP/pg.txt' &&
    grep -q 'Well, Prince, so Genoa and Lucca' '$TMP/pg.txt' && [ \$(wc -c <'$TMP/pg.txt') -gt 3200000 ]"
expect_ok "get-pg19.sh --keep-header" data/get-pg19.sh --from "$WP" --out "$TMP/pg2.txt" --keep-header
check "get-pg19.sh --keep-header: the file as it is" cmp -s "$WP" "$TMP/pg2.txt"
check "get-pg19.sh: a text without Gutenberg markers refused" bash -c "! data/get-pg19.sh --from '$W' --out '$TMP/pg3.txt' 2>/dev/null && [ ! -e '$TMP/pg3.txt' ]"
check "get-pg19.sh: a bad --book refused" bash -c "! data/get-pg19.sh --book x 2>/dev/null"

# ---- data/make-prompts.sh ---------------------------------------------------------------------
expect_ok "make-prompts.sh on sink-26m" data/make-prompts.sh -m "$SINK" --out "$TMP/pr" --lengths 256,512 --depths 0,100 --kvlab "$KVLAB"
check "make-prompts.sh: 4 passkey and 4 needle prompts with their indexes" bash -c "
    [ \$(ls '$TMP'/pr/passkey/*.txt | wc -l) = 4 ] && [ \$(ls '$TMP'/pr/needle/*.txt | wc -l) = 4 ] &&
    [ \$(wc -l <'$TMP/pr/passkey/prompts.csv') = 5 ] && [ \$(wc -l <'$TMP/pr/needle/prompts.csv') = 5 ]"
check "make-prompts.sh: a passkey prompt of 512 tokens ends with the question and holds its key" bash -c "
    line=\$(grep '^passkey_L512_D100_T0.txt,' '$TMP/pr/passkey/prompts.csv'); key=\$(echo \"\$line\" | cut -d, -f5)
    [ \${line##*,} = 512 ] && grep -q \"The pass key is \$key\" '$TMP/pr/passkey/passkey_L512_D100_T0.txt' &&
    tail -c 40 '$TMP/pr/passkey/passkey_L512_D100_T0.txt' | grep -q 'The pass key is\$'"
check "make-prompts.sh: the prompt files give sink-26m's answer (the key, from the full cache)" bash -c "
    line=\$(grep '^passkey_L512_D100_T0.txt,' '$TMP/pr/passkey/prompts.csv'); key=\$(echo \"\$line\" | cut -d, -f5)
    '$KVLAB' generate -m '$SINK' -f '$TMP/pr/passkey/passkey_L512_D100_T0.txt' -n 8 2>/dev/null | tail -n 1 | grep -q \"\$key\""
check "make-prompts.sh: a missing haystack refused" bash -c "! data/make-prompts.sh -m '$SINK' --haystack '$TMP/none' --out '$TMP/pr2' --kvlab '$KVLAB' 2>/dev/null"
finish
