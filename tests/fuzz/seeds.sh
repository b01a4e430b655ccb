#!/usr/bin/env bash
# seeds.sh CORPUS_ROOT [KVLAB] [SHARED] — seed corpora for the fuzz targets:
# CORPUS_ROOT/TARGET/ gets the real files of SHARED (../shared) and small
# synthetic ones made with KVLAB (synth, convert). Nothing big is committed:
# this runs before every `make fuzz` (existing corpus entries are kept, so
# what a run found stays for the next one).
set -euo pipefail
out=$1; kvlab=${2:-./kvlab}; shared=${3:-../shared}
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
tiny=dim=16,layers=2,heads=2,kv_heads=1,ffn=24,vocab=40,seq=64
for t in safetensors st_index config llama2c gguf tok_model tok_bin policy npz; do mkdir -p "$out/$t"; done
seed() { local t=$1 name=$2 src=$3; [ -f "$src" ] && cat "$src" >"$out/$t/seed-$name"; return 0; }

# ---- synthetic checkpoints (a few KB each) ----
synth() { "$kvlab" synth --quiet "$@" >/dev/null; }
synth -o "$tmp/tiny" --shape "$tiny" --dtype f32 --seed 1
synth -o "$tmp/tiny16" --shape "$tiny" --dtype bf16 --seed 2 --tied 1
synth -o "$tmp/shards" --shape "$tiny" --dtype bf16 --shards 2
tok512=$shared/models/stories260k/tok512.bin
synth -o "$tmp/t512" --shape dim=16,layers=1,heads=2,kv_heads=1,ffn=24,vocab=512,seq=64 --dtype f16 --tokenizer "$tok512"
"$kvlab" convert -m "$tmp/t512" -o "$tmp/t512.gguf" --dtype f16 2>/dev/null
"$kvlab" convert -m "$tmp/t512.gguf" -o "$tmp/t512_hf" 2>/dev/null
"$kvlab" convert -m "$shared/models/stories260k/stories260K.bin" -o "$tmp/s260.gguf" 2>/dev/null

seed safetensors tiny-f32 "$tmp/tiny/model.safetensors"
seed safetensors tiny-bf16-tied "$tmp/tiny16/model.safetensors"
seed safetensors shard1 "$tmp/shards/model-00001-of-00002.safetensors"
seed safetensors t512-f16 "$tmp/t512/model.safetensors"
# the header of the real demo-25m checkpoint (u64 length + JSON) and a little data
demo_st=$shared/models/demo-25m/model.safetensors
if [ -f "$demo_st" ]; then
    n=$(perl -e 'open F, $ARGV[0] or die; read F, $b, 8; print unpack("Q<", $b)' "$demo_st")
    head -c $((8 + n + 256)) "$demo_st" >"$out/safetensors/seed-demo25m-head"
fi

seed st_index tiny "$tmp/shards/model.safetensors.index.json"

seed config demo25m "$shared/models/demo-25m/config.json"
seed config tiny "$tmp/tiny/config.json"
seed config tiny-tied "$tmp/tiny16/config.json"
seed config t512-hf "$tmp/t512_hf/config.json"

# llama2.c: the real file; "P" + header + weight bytes (fuzz_llama2c.c pads the file)
seed llama2c stories260k "$shared/models/stories260k/stories260K.bin"
perl -e 'print "P", pack("l<7", 8, 16, 1, 2, 1, 16, 8), pack("f<*", map { sin($_) / 4 } 1..64)' >"$out/llama2c/seed-pad-tiny"
perl -e 'print "P", pack("l<7", 8, 12, 2, 4, 2, -24, 6), pack("f<*", map { cos($_) / 8 } 1..48)' >"$out/llama2c/seed-pad-gqa-untied"
if [ -f "$shared/models/stories260k/stories260K.bin" ]; then
    { printf P; head -c 4124 "$shared/models/stories260k/stories260K.bin"; } >"$out/llama2c/seed-pad-s260"
fi

seed gguf t512 "$tmp/t512.gguf"
seed gguf stories260k "$tmp/s260.gguf"

seed tok_model llama2 "$shared/models/llama2-tokenizer/tokenizer.model"
seed tok_model t512 "$tmp/t512_hf/tokenizer.model"
seed tok_bin tok512 "$tok512"
seed tok_bin llama2 "$shared/models/llama2-tokenizer/tokenizer.bin"

# policy: 8 knob bytes (budget kind/value, rounding, schedule/N, sinks, recent,
# positions|granularity|skip), then the spec
pol() { printf "$1" >"$out/policy/seed-$2"; }
pol '\x01\x10\x00\x02\x00\x02\x02\x00full' full
pol '\x01\x10\x00\x02\x00\x02\x02\x00h2o:recent=4,norm=mean' h2o
pol '\x02\x32\x00\x02\x00\x80\x80\x38l2' l2
pol '\x03\x19\x00\x04\x18\x80\x80\x01window' window-shifted
pol '\x00\x00\x00\x02\x00\x80\x80\x00lagkv:sink=2,lag=4,ratio=0.5' lagkv
pol '\x01\x08\x01\x03\x02\x01\x01\x00snapkv:window=4,kernel=3,pool=avg' snapkv
pol '\x02\x40\x00\x01\x00\x80\x80\x00pyramid:window=4,beta=2,kernel=3,score=l2' pyramid
pol '\x01\x0c\x00\x02\x00\x80\x80\x04tova' tova-layer
pol '\x03\x32\x02\x04\x20\x80\x80\x00random:seed=3' random
pol '\x02\x20\x00\x02\x00\x80\x80\x00zigzag:window=4,tau=0.5,b=0.2,score=h2o' zigzag

seed npz stories260k-random "$shared/golden/golden_stories260K_random.npz"
"$kvlab" logits -m "$shared/models/stories260k/stories260K.bin" --ids 1,2,3 -o "$tmp/l.npy" 2>/dev/null && seed npz logits-npy "$tmp/l.npy"
# the committed regression inputs (past findings and hand-made edge cases) too
regress=$(dirname "$0")/regress
for d in "$regress"/*/; do
    t=$(basename "$d")
    [ -d "$out/$t" ] && for f in "$d"*; do [ -f "$f" ] && cat "$f" >"$out/$t/regress-$(basename "$f")"; done
done
echo "seeds: $(find "$out" -name 'seed-*' -o -name 'regress-*' | wc -l) files in $out"
