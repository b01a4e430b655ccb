# doc_examples.awk — the command lines of a Markdown file, one per output line:
#   FILE:LINE <TAB> KIND <TAB> TEXT
# KIND "cmd": a shell command, from a fenced block (backslash continuations joined,
# a trailing "   # comment" dropped) or from an inline `./kvlab ...` span;
# KIND "conf": a line of a fenced block that is a sweep.sh config ("models = ...").
# Used by tests/cli_doc_examples.sh.
function emit(kind, line, text) {
    sub(/[[:space:]][[:space:]]+#.*$/, "", text)
    sub(/[[:space:]]+$/, "", text)
    if (text != "") printf "%s:%d\t%s\t%s\n", FILENAME, line, kind, text
}
/^```/ {
    if (!fence) { fence = 1; conf = 0; pending = ""; next }
    fence = 0; next
}
fence {
    if (pending != "") {
        text = pending " " $0; gsub(/^[[:space:]]+/, "", $0)
        if (text ~ /\\$/) { sub(/\\$/, "", text); pending = text; next }
        pending = ""; emit("cmd", start, text); next
    }
    if ($0 ~ /^models[[:space:]]*=/) conf = 1
    if (conf) { emit("conf", NR, $0); next }
    if ($0 ~ /^[a-z]+\/[[:space:]]/) next     # a folder listing ("models/   notes ..."), not a command
    if ($0 ~ /^(\.\/kvlab|experiments\/|models\/|data\/|\/usr\/bin\/python3|make |[A-Z_]+=[^ ]* make )/) {
        if ($0 ~ /\\$/) { pending = $0; sub(/\\$/, "", pending); start = NR; next }
        emit("cmd", NR, $0)
    }
    next
}
{
    rest = $0
    while (match(rest, /`\.\/kvlab [^`]*`/)) {
        emit("cmd", NR, substr(rest, RSTART + 1, RLENGTH - 2))
        rest = substr(rest, RSTART + RLENGTH)
    }
}
