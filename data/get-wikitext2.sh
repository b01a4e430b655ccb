#!/usr/bin/env bash
# get-wikitext2.sh — the wikitext-2-raw-v1 test split as one UTF-8 text file with LF line
# endings: the text `kvlab ppl` and `kvlab correlate` score (../shared/data has a copy).
set -euo pipefail

URL_DEFAULT=https://wikitext.smerity.com/wikitext-2-raw-v1.zip
# sha256 of ../shared/data/wikitext-2-raw-test.txt, the file the README's figures come from
SHA_SHARED=bbf94c53a05abe9ee670d3b6343608095822c85e26de37c70b24fc571964574a

usage() {
    cat <<USAGE
usage: data/get-wikitext2.sh [--out FILE] [--from PATH] [--url URL]

Downloads wikitext-2-raw-v1 (Merity et al. 2016; CC BY-SA 3.0) as a zip, takes its test
split (wikitext-2-raw/wiki.test.raw), turns CRLF into LF and writes FILE atomically;
then compares it with the copy the project's figures were measured on.

  --out FILE     the text [data/local/wikitext-2-raw-test.txt; data/local/ is ignored by git]
  --from PATH    no download: a local wikitext-2-raw-v1.zip, a wiki.test.raw, or an already
                 prepared text (e.g. ../shared/data/wikitext-2-raw-test.txt); the network
                 step is skipped and says so
  --url URL      where the zip is [$URL_DEFAULT]
  -h, --help     this text

Needs curl or wget for the download, and unzip or python3 to open the zip.
(The Hugging Face copy, dataset Salesforce/wikitext, config wikitext-2-raw-v1, is parquet:
  read its "text" column and join the rows to get the same text.)
USAGE
}

die() { echo "get-wikitext2.sh: $*" >&2; exit 1; }

out=""; from=""; url=$URL_DEFAULT
while [ $# -gt 0 ]; do
    case $1 in
        -h|--help) usage; exit 0 ;;
        --out|--from|--url)
            [ $# -ge 2 ] || die "$1 needs a value"
            case $1 in --out) out=$2 ;; --from) from=$2 ;; --url) url=$2 ;; esac
            shift 2 ;;
        *) die "unknown option '$1' (--help)" ;;
    esac
done
[ -n "$out" ] || out="$(dirname "$0")/local/wikitext-2-raw-test.txt"
mkdir -p "$(dirname "$out")"
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT

if [ -n "$from" ]; then
    [ -f "$from" ] || die "--from: '$from' is not a file"
    echo "get-wikitext2.sh: --from $from: no download (network step skipped)"
    src=$from
else
    src=$work/wikitext-2-raw-v1.zip
    echo "get-wikitext2.sh: downloading $url"
    if command -v curl >/dev/null 2>&1; then curl -fL --retry 2 -o "$src" "$url" || die "download failed: $url"
    elif command -v wget >/dev/null 2>&1; then wget -O "$src" "$url" || die "download failed: $url"
    else die "neither curl nor wget is installed: download $url yourself and give it with --from"; fi
fi

# A zip (magic PK\3\4): its test split. Anything else: already the text.
if [ "$(head -c 4 "$src" | od -An -tx1 | tr -d ' \n')" = 504b0304 ]; then
    member=wikitext-2-raw/wiki.test.raw
    if command -v unzip >/dev/null 2>&1; then
        unzip -p "$src" "$member" >"$work/raw" || die "$src: no $member in the zip"
    elif command -v python3 >/dev/null 2>&1; then
        python3 -c 'import sys, zipfile; sys.stdout.buffer.write(zipfile.ZipFile(sys.argv[1]).read(sys.argv[2]))' \
            "$src" "$member" >"$work/raw" || die "$src: no $member in the zip"
    else die "neither unzip nor python3 is installed to open $src"; fi
else
    cp -- "$src" "$work/raw"
fi
[ -s "$work/raw" ] || die "$src: empty"
head -c 64 "$work/raw" | grep -q ' = ' || die "$src: does not look like wikitext (it starts with a ' = Title = ' line)"

tr -d '\r' <"$work/raw" >"$out.tmp.$$"
mv -f -- "$out.tmp.$$" "$out"
sha=$(sha256sum "$out" | cut -d' ' -f1)
echo "get-wikitext2.sh: wrote $out ($(wc -c <"$out") bytes, $(wc -l <"$out") lines)"
if [ "$sha" = "$SHA_SHARED" ]; then
    echo "get-wikitext2.sh: identical to the copy the project's figures were measured on (sha256 $sha)"
else
    echo "get-wikitext2.sh: note: differs from the project's copy (sha256 $sha, expected $SHA_SHARED): figures may not match"
fi
