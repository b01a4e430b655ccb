#!/usr/bin/env bash
# convert.sh — `kvlab convert` plus a check that the converted model computes the same:
# the greedy continuation of a prompt, source and result, token for token.
set -euo pipefail

usage() {
    cat <<'USAGE'
usage: models/convert.sh -m MODEL -o OUTPUT [-t TOKENIZER] [--dtype f32|bf16|f16]
                         [--prompt TEXT] [--no-check] [--force] [--kvlab PATH]

Converts MODEL (HF directory, llama2.c .bin or .gguf) with `kvlab convert`:
  OUTPUT ending in .gguf   a GGUF file llama.cpp loads (tokenizer embedded)
  any other OUTPUT         a Hugging Face safetensors directory
then runs `kvlab generate --temp 0 -n 16` on MODEL and on OUTPUT and compares the
generated token ids: identical unless --dtype rounds the weights (then a difference is
reported, not an error).

  -m MODEL          source: an HF directory (e.g. from models/get-llama2.sh), a llama2.c
                    checkpoint (Karpathy's stories15M.bin ... stories110M.bin with -t
                    tokenizer.bin), or a GGUF file with F32/F16/BF16 tensors
  -o OUTPUT         FILE.gguf or a directory
  -t TOKENIZER      tokenizer.model / tokenizer.bin when it is not next to MODEL
  --dtype D         weights on disk [the source's own: nothing is rounded]
  --prompt TEXT     prompt of the check ["The capital of France is"]
  --no-check        convert only
  --force           replace an existing OUTPUT
  --kvlab PATH      the kvlab binary [./kvlab]
  -h, --help        this text

examples:
  models/convert.sh -m models/local/Llama-2-7b-hf -o models/local/llama-2-7b.gguf
  models/convert.sh -m ../shared/models/stories260k/stories260K.bin -o /tmp/stories260k-hf
USAGE
}

die() { echo "convert.sh: $*" >&2; exit 1; }

model=""; output=""; tok=""; dtype=""; prompt="The capital of France is"; check=1; force=""; kvlab=./kvlab
while [ $# -gt 0 ]; do
    case $1 in
        -h|--help) usage; exit 0 ;;
        -m|-o|-t|--dtype|--prompt|--kvlab)
            [ $# -ge 2 ] || die "$1 needs a value"
            v=$2; case $1 in -m) model=$v ;; -o) output=$v ;; -t) tok=$v ;; --dtype) dtype=$v ;;
                             --prompt) prompt=$v ;; --kvlab) kvlab=$v ;; esac
            shift 2 ;;
        --no-check) check=0; shift ;;
        --force) force=--force; shift ;;
        *) die "unknown option '$1' (--help)" ;;
    esac
done
[ -n "$model" ] || die "-m MODEL is required (--help)"
[ -n "$output" ] || die "-o OUTPUT is required (--help)"
[ -e "$model" ] || die "-m: '$model' not found"
[ -x "$kvlab" ] || die "kvlab binary '$kvlab' not found (make, or --kvlab PATH)"

tok_args=(); [ -z "$tok" ] || tok_args=(-t "$tok")
conv=("$kvlab" convert -m "$model" -o "$output" "${tok_args[@]}")
[ -z "$dtype" ] || conv+=(--dtype "$dtype")
[ -z "$force" ] || conv+=("$force")
echo "convert.sh: ${conv[*]}"
"${conv[@]}"
[ "$check" = 1 ] || exit 0

greedy() {   # model [tokenizer args] -> the generated ids
    "$kvlab" generate -m "$@" -p "$prompt" -n 16 --temp 0 --print-ids 2>/dev/null | tail -n 1
}
a=$(greedy "$model" "${tok_args[@]}") || die "kvlab generate failed on $model"
b=$(greedy "$output") || die "kvlab generate failed on $output"
if [ "$a" = "$b" ]; then
    echo "convert.sh: check passed: the same 16 greedy tokens from $model and $output"
elif [ -n "$dtype" ]; then
    echo "convert.sh: note: --dtype $dtype rounded the weights and the greedy tokens differ:"
    echo "  $model:  $a"; echo "  $output: $b"
else
    die "check failed: $output continues '$prompt' differently from $model ($a vs $b)"
fi
