#!/usr/bin/env bash
# get-pg19.sh — a long book as PG-19 prepares them (Rae et al. 2019: Project Gutenberg books
# published before 1919, the Gutenberg licence header and footer removed), for long-context
# perplexity and as a needle-in-a-haystack haystack.
set -euo pipefail

usage() {
    cat <<'USAGE'
usage: data/get-pg19.sh [--book N] [--out FILE] [--from FILE] [--keep-header]

Downloads Project Gutenberg ebook N as plain text, keeps what lies between the
"*** START OF ..." and "*** END OF ..." lines (PG-19's cleaning; --keep-header keeps
the file whole, as ../shared/data/war-and-peace.txt is), turns CRLF into LF and writes
FILE atomically.

  --book N       Gutenberg ebook number [2600: Tolstoy, War and Peace (1869), ~835k
                 Llama-2 tokens]; e.g. 1399 Anna Karenina, 2554 Crime and Punishment
  --out FILE     the text [data/local/pg-N.txt; data/local/ is ignored by git]
  --from FILE    no download: a local Gutenberg .txt (e.g. ../shared/data/war-and-peace.txt);
                 the network step is skipped and says so
  --keep-header  keep the licence header and footer
  -h, --help     this text

The whole PG-19 set (28,752 books, 11 GB) is the Hugging Face dataset deepmind/pg19;
one long book is what kvlab's evaluations need. Then e.g.:
  ./kvlab needle -m ../shared/models/sink-26m --haystack data/local/pg-2600.txt --lengths 1024 -o runs/nd
USAGE
}

die() { echo "get-pg19.sh: $*" >&2; exit 1; }

book=2600; out=""; from=""; keep=0
while [ $# -gt 0 ]; do
    case $1 in
        -h|--help) usage; exit 0 ;;
        --book|--out|--from)
            [ $# -ge 2 ] || die "$1 needs a value"
            case $1 in --book) book=$2 ;; --out) out=$2 ;; --from) from=$2 ;; esac
            shift 2 ;;
        --keep-header) keep=1; shift ;;
        *) die "unknown option '$1' (--help)" ;;
    esac
done
[[ $book =~ ^[1-9][0-9]*$ ]] || die "--book: '$book' is not an ebook number"
[ -n "$out" ] || out="$(dirname "$0")/local/pg-$book.txt"
mkdir -p "$(dirname "$out")"
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT

if [ -n "$from" ]; then
    [ -f "$from" ] || die "--from: '$from' is not a file"
    echo "get-pg19.sh: --from $from: no download (network step skipped)"
    cp -- "$from" "$work/raw"
else
    url=https://www.gutenberg.org/cache/epub/$book/pg$book.txt
    echo "get-pg19.sh: downloading $url"
    if command -v curl >/dev/null 2>&1; then curl -fL --retry 2 -o "$work/raw" "$url" || die "download failed: $url"
    elif command -v wget >/dev/null 2>&1; then wget -O "$work/raw" "$url" || die "download failed: $url"
    else die "neither curl nor wget is installed: download $url yourself and give it with --from"; fi
fi
tr -d '\r' <"$work/raw" >"$work/lf"

if [ "$keep" = 1 ]; then
    cp "$work/lf" "$work/text"
else
    # the body: after the "*** START OF ..." line, before the "*** END OF ..." line
    awk '/^\*\*\* ?START OF (THE|THIS) PROJECT GUTENBERG/ {on=1; found=1; next}
         /^\*\*\* ?END OF (THE|THIS) PROJECT GUTENBERG/   {on=0; ended=1}
         on {print}
         END {exit found && ended ? 0 : 1}' "$work/lf" >"$work/text" \
        || die "${from:-ebook $book}: no '*** START OF ... PROJECT GUTENBERG' / '*** END OF' lines: not a Gutenberg text? (--keep-header keeps it as it is)"
    # the "End of the Project Gutenberg EBook" line just before the footer marker
    # and the blank lines at the start
    sed -i -e '/^End of \(the \)\?Project Gutenberg/I d' -e '/./,$!d' "$work/text"
fi
[ -s "$work/text" ] || die "${from:-ebook $book}: no text left"
mv -f -- "$work/text" "$out"
echo "get-pg19.sh: wrote $out ($(wc -c <"$out") bytes, $(wc -w <"$out") words)"
