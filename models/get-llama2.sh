#!/usr/bin/env bash
# get-llama2.sh — put a Llama-2 checkpoint in the Hugging Face layout (config.json,
# *.safetensors [+ model.safetensors.index.json], tokenizer.model) into a directory
# kvlab reads, then check that kvlab loads it (`kvlab info`).
set -euo pipefail

usage() {
    cat <<'USAGE'
usage: models/get-llama2.sh [--repo ID] [--out DIR] [--revision REV] [--from DIR] [--kvlab PATH]

Downloads the files kvlab needs from the Hugging Face Hub with the Hugging Face CLI
(`hf`, or the older `huggingface-cli`), only those: config.json, the *.safetensors
shards, model.safetensors.index.json, tokenizer.model (not the duplicate PyTorch .bin
files). Then runs `kvlab info` on the result.

  --repo ID        Hub repository [meta-llama/Llama-2-7b-hf]; also Llama-2-13b-hf,
                   Llama-2-7b-chat-hf, or any Llama-2-architecture repo in the HF layout
  --out DIR        where the files go [models/local/NAME, NAME = the repo's last part;
                   models/local/ is ignored by git: no weights are ever committed]
  --revision REV   branch, tag or commit of the repo [main]
  --from DIR       no download: take the files from a local HF directory (a copy you
                   downloaded elsewhere, or ../shared/models/sink-26m to try the script
                   offline). The network step is skipped and says so.
  --kvlab PATH     the kvlab binary for the check [./kvlab]
  -h, --help       this text

meta-llama repositories are gated: accept Meta's Llama 2 licence on the repository's
page (https://huggingface.co/meta-llama/Llama-2-7b-hf) with your Hugging Face account,
then log in once on this machine (`hf auth login`, or `huggingface-cli login`, or set
HF_TOKEN=hf_... in the environment). Sizes: 7B 13.5 GB, 13B 26 GB (F16 files).
Without the CLI: pip install -U huggingface_hub  (it provides `hf`).

Then, e.g.:
  ./kvlab generate -m models/local/Llama-2-7b-hf --dtype bf16 -p "The capital of France is" -n 16
  models/convert.sh -m models/local/Llama-2-7b-hf -o models/local/llama-2-7b.gguf
USAGE
}

die() { echo "get-llama2.sh: $*" >&2; exit 1; }

repo=meta-llama/Llama-2-7b-hf; out=""; revision=main; from=""; kvlab=./kvlab
while [ $# -gt 0 ]; do
    case $1 in
        -h|--help) usage; exit 0 ;;
        --repo|--out|--revision|--from|--kvlab)
            [ $# -ge 2 ] || die "$1 needs a value"
            v=$2; case $1 in --repo) repo=$v ;; --out) out=$v ;; --revision) revision=$v ;;
                             --from) from=$v ;; --kvlab) kvlab=$v ;; esac
            shift 2 ;;
        *) die "unknown option '$1' (--help)" ;;
    esac
done
[[ $repo =~ ^[A-Za-z0-9._-]+/[A-Za-z0-9._-]+$ ]] || die "--repo: '$repo' is not OWNER/NAME"
[ -n "$out" ] || out="$(dirname "$0")/local/${repo##*/}"
[ -x "$kvlab" ] || die "kvlab binary '$kvlab' not found (make, or --kvlab PATH)"

# The files kvlab reads from an HF directory.
PATTERNS=("config.json" "*.safetensors" "model.safetensors.index.json" "tokenizer.model")

if [ -n "$from" ]; then
    [ -d "$from" ] || die "--from: '$from' is not a directory"
    [ -f "$from/config.json" ] || die "--from: $from has no config.json (not a Hugging Face model directory)"
    echo "get-llama2.sh: --from $from: no download (network step skipped); copying the model files"
    mkdir -p "$out"
    n=0
    for p in "${PATTERNS[@]}"; do
        for f in "$from"/$p; do
            [ -f "$f" ] || continue
            cp -- "$f" "$out/.$(basename "$f").tmp.$$" && mv -- "$out/.$(basename "$f").tmp.$$" "$out/$(basename "$f")"
            n=$((n + 1))
        done
    done
    echo "get-llama2.sh: $n files copied to $out"
else
    # KVLAB_HF_CLI: the CLI to use (a path), or "none" to act as if none were installed.
    cli=${KVLAB_HF_CLI-}
    if [ -z "$cli" ]; then
        if command -v hf >/dev/null 2>&1; then cli=hf
        elif command -v huggingface-cli >/dev/null 2>&1; then cli=huggingface-cli
        fi
    fi
    if [ -z "$cli" ] || [ "$cli" = none ]; then
        cat >&2 <<MSG
get-llama2.sh: the Hugging Face CLI is not installed (neither 'hf' nor 'huggingface-cli').
  1. pip install -U huggingface_hub          (provides 'hf')
  2. accept the Llama 2 licence on https://huggingface.co/$repo (meta-llama repos are gated)
  3. hf auth login                           (or export HF_TOKEN=hf_...)
  4. run this script again.
Or download config.json, the *.safetensors files, model.safetensors.index.json and
tokenizer.model by hand into one directory and run: $0 --from THAT_DIR --out $out
MSG
        exit 1
    fi
    mkdir -p "$out"
    echo "get-llama2.sh: downloading ${PATTERNS[*]} of $repo@$revision with $cli into $out"
    # `hf download` takes --include once per pattern; huggingface-cli (argparse) takes
    # them all after one --include (a second --include would replace the first).
    include=()
    case $(basename "$cli") in
        huggingface-cli*) include=(--include "${PATTERNS[@]}") ;;
        *) for p in "${PATTERNS[@]}"; do include+=(--include "$p"); done ;;
    esac
    if ! "$cli" download "$repo" --revision "$revision" "${include[@]}" --local-dir "$out"; then
        die "download of $repo failed. A 401/403 error means the repository is gated: accept its licence on https://huggingface.co/$repo and log in (hf auth login, or HF_TOKEN=...)"
    fi
fi

for f in config.json tokenizer.model; do
    [ -f "$out/$f" ] || die "$out/$f is missing after the copy"
done
ls "$out"/*.safetensors >/dev/null 2>&1 || die "no .safetensors file in $out"
echo "get-llama2.sh: checking that kvlab loads it:"
"$kvlab" info -m "$out" || die "kvlab cannot load $out (its message above)"
echo "get-llama2.sh: ready: $out"
