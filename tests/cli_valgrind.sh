#!/usr/bin/env bash
# cli_valgrind.sh — valgrind memcheck on whole runs: no invalid read
# or write, no use of uninitialised memory, no leak, on a generate run of
# stories260k (one thread: libgomp's pool threads are never joined, which
# memcheck reports as "possibly lost"), with and without an eviction policy,
# and on a logits run. Skipped (as one passing line) without valgrind, or when
# $KVLAB is a sanitizer build (make test-asan: ASan and valgrind exclude each other).
source "$(dirname "$0")/lib_cli.sh"
S260=$SHARED/models/stories260k/stories260K.bin
if ! command -v valgrind >/dev/null 2>&1; then
    pass "skipped: valgrind is not installed (apt-get install valgrind)"; finish; exit
fi
if grep -qa __asan_init "$KVLAB" 2>/dev/null; then
    pass "skipped: $KVLAB is an AddressSanitizer build"; finish; exit
fi
VG=(valgrind -q --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite,indirect,possible)

expect_ok "memcheck: generate stories260k -n 8" "${VG[@]}" $KVLAB generate -m "$S260" -p "Once" -n 8 --threads 1
check "  ... and the text is there" grep -q "Once upon a time" "$TMP/out"
expect_ok "memcheck: generate with h2o evicting" "${VG[@]}" $KVLAB generate -m "$S260" -p "Once upon a time" -n 24 --threads 1 --policy h2o --compression-ratio 0.5
expect_ok "memcheck: logits to .npy" "${VG[@]}" $KVLAB logits -m "$S260" --ids 1,403,407 --threads 1 -o "$TMP/l.npy"
finish
