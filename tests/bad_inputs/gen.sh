#!/usr/bin/env bash
# gen.sh DIR [KVLAB] [SHARED] — write the bad-input catalogue's files into DIR
# (tests/cli_bad_inputs.sh runs kvlab on each). Every file is small (< 40 KB),
# made from a tiny synthetic checkpoint (kvlab synth), the stories260k files,
# or bytes spelled out here; nothing is committed but this script.
#
#   l2c-*       llama2.c .bin headers that are wrong in one way
#   st-*/       HF checkpoint directories with one thing wrong (config.json,
#               model.safetensors header, index)
#   gguf-*      GGUF files wrong in one way
#   tok-*       tokenizers wrong in one way
#   nan-*       models that load but hold a NaN/Inf weight
set -euo pipefail
out=$1; kvlab=${2:-./kvlab}; shared=${3:-../shared}
kvlab=$(realpath "$kvlab"); shared=$(realpath "$shared")
mkdir -p "$out"
cd "$out"
S260=$shared/models/stories260k/stories260K.bin
TOK512=$shared/models/stories260k/tok512.bin

# ---- llama2.c headers (28 bytes: dim hidden layers heads kv_heads vocab seq) ----
l2c() { local name=$1; shift; perl -e 'print pack("l<7", @ARGV)' "$@" >"$name"; }
l2c l2c-dim-not-multiple.bin 12 32 1 5 5 32 8
l2c l2c-zero-layers.bin 64 172 0 8 4 512 512
l2c l2c-kv-heads-above-heads.bin 64 172 5 4 8 512 512
l2c l2c-implausible-dim.bin 1048576 172 5 8 4 512 512
l2c l2c-odd-head-dim.bin 24 64 1 8 8 32 8
l2c l2c-vocab-int-min.bin 64 172 5 8 4 -2147483648 512
l2c l2c-negative-seq.bin 64 172 5 8 4 512 -1

# ---- HF checkpoints: a tiny valid one, then copies with one thing wrong ----
tiny=dim=16,layers=2,heads=2,kv_heads=1,ffn=24,vocab=512,seq=64
"$kvlab" synth --quiet -o st-good --shape "$tiny" --dtype bf16 --tokenizer "$TOK512" >/dev/null
"$kvlab" synth --quiet -o st-sharded --shape "$tiny" --dtype bf16 --shards 2 >/dev/null
variant() { rm -rf "$2"; cp -r "$1" "$2"; }
# config.json: replace the first match of a perl regex
cfg_edit() { perl -0pi -e "$2" "$1/config.json"; }
variant st-good st-model-type;       cfg_edit st-model-type 's/"model_type":\s*"llama"/"model_type": "mistral"/'
variant st-good st-no-hidden-size;   cfg_edit st-no-hidden-size 's/"hidden_size":\s*16,//'
variant st-good st-kv-heads-3;       cfg_edit st-kv-heads-3 's/"num_key_value_heads":\s*1/"num_key_value_heads": 3/'
variant st-good st-negative-eps;     cfg_edit st-negative-eps 's/"rms_norm_eps":\s*[0-9.e-]+/"rms_norm_eps": -1e-5/'
variant st-good st-layers-string;    cfg_edit st-layers-string 's/"num_hidden_layers":\s*2/"num_hidden_layers": "2"/'
variant st-good st-config-array;     echo '[1, 2, 3]' >st-config-array/config.json
variant st-good st-no-config;        rm st-no-config/config.json
variant st-good st-no-weights;       rm st-no-weights/model.safetensors
# model.safetensors: rewrite the header JSON (the data offsets stay relative to its end)
st_edit() {
    perl -e 'open F, "<", $ARGV[0] or die; binmode F; local $/; my $d = <F>; close F;
             my $n = unpack("Q<", substr($d, 0, 8)); my $h = substr($d, 8, $n); my $rest = substr($d, 8 + $n);
             eval $ARGV[1]; die $@ if $@;
             open F, ">", $ARGV[0] or die; binmode F; print F pack("Q<", length $h), $h, $rest; close F' \
        "$1/model.safetensors" "$2"
}
variant st-good st-dtype-i16;         st_edit st-dtype-i16 '$h =~ s/"dtype":"BF16"/"dtype":"I16"/'
variant st-good st-shape-mismatch;   st_edit st-shape-mismatch '$h =~ s/"shape":\[512,16\]/"shape":[16,512]/'
variant st-good st-offsets-mismatch; st_edit st-offsets-mismatch '$h =~ s/"data_offsets":\[0,16384\]/"data_offsets":[0,16000]/'
variant st-good st-duplicate-name;   st_edit st-duplicate-name '$h =~ s/("model\.norm\.weight":\{[^}]*\})/$1,$1/'
variant st-good st-overlap;          st_edit st-overlap '$h =~ s/("model\.layers\.0\.post_attention_layernorm\.weight":\{[^}]*"data_offsets":)\[\d+,\d+\]/$1\[16384,16416\]/ or die'
variant st-good st-header-not-json;  st_edit st-header-not-json '$h =~ s/\{"__metadata__"/{__metadata__/'
variant st-good st-header-too-long;  perl -e 'open F, "+<", $ARGV[0] or die; binmode F; print F pack("Q<", 1 << 40); close F' st-header-too-long/model.safetensors
variant st-good st-missing-tensor;   st_edit st-missing-tensor '$h =~ s/"model\.layers\.1\.mlp\.up_proj\.weight"/"model.layers.1.mlp.up.weight"/'
# index: a shard name outside the directory; no weight_map
variant st-sharded st-index-traversal
perl -0pi -e 's/"model-00002-of-00002\.safetensors"/"..\/model-00002-of-00002.safetensors"/' st-index-traversal/model.safetensors.index.json
variant st-sharded st-index-no-map
echo '{"metadata": {"total_size": 0}}' >st-index-no-map/model.safetensors.index.json

# ---- GGUF ----
"$kvlab" convert -m st-good -o good.gguf >/dev/null 2>&1
perl -e 'print "GGUF", pack("L<", 1), pack("L<L<", 0, 0)' >gguf-v1.gguf
perl -e 'print "GGUF", pack("L<", 3), pack("Q<Q<", 0, 1), pack("Q<", 5), "hello", pack("L<", 99), "x" x 16' >gguf-bad-value-type.gguf
perl -e 'print "GGUF", pack("L<", 3), pack("Q<Q<", 1 << 40, 0)' >gguf-huge-tensor-count.gguf
perl -e 'print "GGUF", pack("L<", 3), pack("Q<Q<", 0, 1), pack("Q<", 1 << 50), "k"' >gguf-huge-key.gguf
printf 'not a gguf at all, just text\n' >gguf-not-gguf.gguf
# a tensor offset pushed past the end of the data: token_embd.weight's u64 offset
# follows its name (u64 length + bytes), u32 n_dims = 2, two u64 dims, u32 type
cp good.gguf gguf-offset-past-end.gguf
at=$(grep -obaF "token_embd.weight" gguf-offset-past-end.gguf | head -n 1 | cut -d: -f1)
perl -e 'open F, "+<", $ARGV[0] or die; binmode F; seek F, $ARGV[1], 0; print F pack("Q<", 1 << 40); close F' \
    gguf-offset-past-end.gguf $((at + 17 + 4 + 16 + 4))

# ---- tokenizers ----
: >tok-empty.model
head -c 3000 "$TOK512" >tok-truncated.bin
head -c 20000 "$shared/models/llama2-tokenizer/tokenizer.model" >tok-truncated.model
perl -e 'print pack("L<", 16), pack("f<L<", 0.0, 1 << 30), "abc"' >tok-huge-piece.bin
printf '\x0a\x05\x0a\x03abc\x0a\xff\xff\xff\xff\x0f' >tok-bad-varint.model

# ---- NaN/Inf weights in models that load ----
cp "$S260" nan-wq2.bin
cp "$TOK512" tok512.bin
# wq[2] row 5 col 7 (dim 64, vocab 512, 5 layers): header, embedding, rms_att, wq[0], wq[1]
perl -e 'open F, "+<", $ARGV[0] or die; binmode F; seek F, $ARGV[1], 0; print F pack("L<", 0x7fc00000); close F' \
    nan-wq2.bin $((28 + 4 * (512 * 64 + 5 * 64 + 2 * 64 * 64 + 5 * 64 + 7)))
variant st-good st-inf-down1
# +Inf (bf16 0x7F80) in the first element of model.layers.1.mlp.down_proj.weight
off=$(perl -e 'open F, $ARGV[0]; binmode F; read F, $b, 8; $n = unpack("Q<", $b); read F, $h, $n;
               $h =~ /"model\.layers\.1\.mlp\.down_proj\.weight":\{[^}]*"data_offsets":\[(\d+)/ or die; print 8 + $n + $1' \
      st-inf-down1/model.safetensors)
perl -e 'open F, "+<", $ARGV[0] or die; binmode F; seek F, $ARGV[1], 0; print F pack("S<", 0x7F80); close F' \
    st-inf-down1/model.safetensors "$off"
