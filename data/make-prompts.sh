#!/usr/bin/env bash
# make-prompts.sh — the passkey and needle prompts of kvlab's evaluations as text files a
# user can read (and feed to `kvlab generate -f FILE`), from `kvlab passkey/needle
# --dump-prompts`: the same prompts, byte for byte, that a run with these options scores.
set -euo pipefail

usage() {
    cat <<'USAGE'
usage: data/make-prompts.sh [-m MODEL] [--out DIR] [--lengths L,...] [--depths D,...]
                            [--trials N] [--seed S] [--haystack FILE] [--kvlab PATH]

Writes DIR/passkey/ (one file per length x depth x trial: the Landmark-attention passkey
prompt, sized in the model's tokens) and DIR/needle/ (one per length x depth: Kamradt's
needle in the haystack, the L2 paper's question), each with prompts.csv listing the
files with their key or needle position and token count. No model is run.

  -m MODEL        the model whose tokenizer sizes the prompts [../shared/models/sink-26m]
  --out DIR       [data/local/prompts; data/local/ is ignored by git]
  --lengths LIST  prompt lengths in tokens [512,1024]
  --depths LIST   depths in percent [0,50,100]
  --trials N      passkey prompts per length x depth, a new key each [1]
  --seed S        the keys come from it, as in `kvlab passkey --seed` [1]
  --haystack FILE needle's haystack [../shared/data/war-and-peace.txt, or data/get-pg19.sh's]
  --kvlab PATH    [./kvlab]
  -h, --help      this text

Then e.g.:  ./kvlab generate -m ../shared/models/sink-26m -f data/local/prompts/passkey/passkey_L512_D50_T0.txt -n 8
USAGE
}

die() { echo "make-prompts.sh: $*" >&2; exit 1; }

here=$(dirname "$0")
model=$here/../../shared/models/sink-26m; out=$here/local/prompts
lengths=512,1024; depths=0,50,100; trials=1; seed=1
haystack=$here/../../shared/data/war-and-peace.txt; kvlab=./kvlab
while [ $# -gt 0 ]; do
    case $1 in
        -h|--help) usage; exit 0 ;;
        -m|--out|--lengths|--depths|--trials|--seed|--haystack|--kvlab)
            [ $# -ge 2 ] || die "$1 needs a value"
            v=$2; case $1 in -m) model=$v ;; --out) out=$v ;; --lengths) lengths=$v ;; --depths) depths=$v ;;
                             --trials) trials=$v ;; --seed) seed=$v ;; --haystack) haystack=$v ;; --kvlab) kvlab=$v ;; esac
            shift 2 ;;
        *) die "unknown option '$1' (--help)" ;;
    esac
done
[ -x "$kvlab" ] || die "kvlab binary '$kvlab' not found (make, or --kvlab PATH)"
[ -e "$model" ] || die "-m: '$model' not found"
[ -f "$haystack" ] || die "--haystack: '$haystack' not found (data/get-pg19.sh fetches one)"

"$kvlab" passkey -m "$model" --lengths "$lengths" --depths "$depths" --trials "$trials" --seed "$seed" \
    --dump-prompts "$out/passkey"
"$kvlab" needle -m "$model" --haystack "$haystack" --lengths "$lengths" --depths "$depths" \
    --dump-prompts "$out/needle"
echo "make-prompts.sh: $out/passkey/prompts.csv and $out/needle/prompts.csv list the prompt files"
