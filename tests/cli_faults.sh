#!/usr/bin/env bash
# cli_faults.sh — faults from outside the input files' contents: two processes
# writing one output, inputs that are not regular files (/dev/zero, a fifo, a
# directory) or too big, and SIGINT/SIGTERM/SIGHUP in the middle of every command
# that writes (synth, convert, logits, trace, ppl): one line, status 128+signal,
# no temporary file left, and an interrupted run directory that --resume finishes
# with the same bytes as an uninterrupted run.
set -u
cd "$(dirname "$0")/.." || exit 1
source tests/lib_cli.sh

S260=$SHARED/models/stories260k/stories260K.bin
DEMO=$SHARED/models/demo-25m
TXT=$SHARED/data/tinystories-valid-head.txt
PPL=("$KVLAB" ppl -m "$S260" -f "$TXT" --chunk 256 --no-reference --threads 1)

rows() { echo $(( $(wc -l <"$1") - 1 )); }
no_leftovers() {   # DIR: nothing temporary (*.tmp.*) nor a lock file under DIR
    local left; left=$(find "$1" \( -name '*.tmp.*' -o -name '*.lock' -o -name '*.old.*' \) | head -n 3)
    [ -z "$left" ] || { echo "left behind: $left" >&2; return 1; }
}
mkfifo "$TMP/nap"; exec {NAP}<>"$TMP/nap"
state_of() { local s; { read -r _ _ s _ <"/proc/$1/stat"; } 2>/dev/null || s=X; echo "$s"; }

# run_until SIG WATCH CMD...: run CMD in the background; as soon as the path WATCH
# exists ({PID} in it stands for the command's pid), send SIG. Sets RC (exit status),
# SENT (1 if the signal was sent while WATCH existed); stderr in $TMP/ierr.
run_until() {
    local sig=$1 watch=$2; shift 2
    "$@" >"$TMP/iout" 2>"$TMP/ierr" &
    local pid=$! t0=$SECONDS path
    path=${watch//\{PID\}/$pid}
    SENT=0
    # poll every millisecond or so (read -t on a fifo nobody writes: no process started per
    # poll): the temporary file of a fast write (logits) lives for tens of milliseconds
    while [ $((SECONDS - t0)) -lt 300 ]; do
        if [ -e "$path" ]; then kill -s "$sig" "$pid" && SENT=1; break; fi
        case $(state_of "$pid") in Z|X) break ;; esac
        read -r -t 0.001 -u "$NAP" _
    done
    wait "$pid"; RC=$?
}

# interrupted NAME SIG STATUS TARGET: the checks after run_until
interrupted() {
    local name=$1 sig=$2 status=$3 target=$4
    check "$name: $sig caught while writing (signal sent)" test "$SENT" = 1
    check "$name: exit status $status" test "$RC" = "$status"
    check "$name: one kvlab: line, naming $sig and the output (after any progress lines)" \
        bash -c '[ "$(grep -c "^kvlab: " "$1")" = 1 ] && tail -n 1 "$1" | grep -qF "kvlab: interrupted ($2) while writing $3; temporary files removed"' \
        _ "$TMP/ierr" "$sig" "$target"
}

# ---- one writer per output ------------------------------------------------------------
"${PPL[@]}" --chunks 40 -o "$TMP/two" >/dev/null 2>"$TMP/a.err" &
A=$!
for _ in $(seq 2000); do [ -e "$TMP/two.lock" ] && break; sleep 0.01; done
kill -STOP $A   # holds it while the second one tries, however loaded the machine is
expect_fail "ppl: a second writer of a run directory is refused, naming the holder's pid" \
    "$TMP/two: in use by pid $A " "${PPL[@]}" --chunks 40 --policy l2 --keep-ratio 0.5 -o "$TMP/two"
kill -CONT $A
wait $A; RC=$?
check "ppl: the first writer finishes" test "$RC" = 0
check "ppl: the directory holds the first run only (config, 40 results, no lock file)" bash -c '
    grep -q "\"policy\":\"full\"" "$1/config.json" && ! grep -q "\"policy\":\"l2\"" "$1/config.json" && [ "$(wc -l <"$1/results.csv")" = 41 ]' _ "$TMP/two"
check "ppl: no lock file left" no_leftovers "$TMP"
expect_ok "ppl: --resume accepts it (the first run's options)" "${PPL[@]}" --chunks 40 -o "$TMP/two" --resume

# started together: one wins, the other is refused with one line; the winner's run is whole
"${PPL[@]}" --chunks 30 -o "$TMP/race" >/dev/null 2>"$TMP/r1.err" &
P1=$!
"${PPL[@]}" --chunks 30 --policy l2 --keep-ratio 0.5 -o "$TMP/race" >/dev/null 2>"$TMP/r2.err" &
P2=$!
wait $P1; R1=$?
wait $P2; R2=$?
if [ "$R1" = 0 ]; then WIN=full LOSER=$TMP/r2.err LR=$R2; else WIN=l2 LOSER=$TMP/r1.err LR=$R1; fi
check "two ppl started together on one -o: exactly one succeeds" test "$(( (R1 == 0) + (R2 == 0) ))" = 1
check "two ppl started together: the other exits 1 with one kvlab: line (in use, or finished run)" bash -c '
    [ "$2" = 1 ] && [ "$(wc -l <"$1")" = 1 ] && grep -qE "^kvlab: .*race: (in use by pid [0-9]+|holds a finished run)" "$1"' _ "$LOSER" "$LR"
check "two ppl started together: config.json and results are the winner's" bash -c '
    grep -q "\"policy\":\"$2\"" "$1/config.json" && [ "$(wc -l <"$1/results.csv")" = 31 ] && [ -f "$1/meta.json" ]' _ "$TMP/race" "$WIN"

# every other command that writes a run or output directory, against a held one: a long
# ppl run, stopped (SIGSTOP) once it holds its lock, so the lock stays held while needed
"$KVLAB" ppl -m "$DEMO" -f "$TXT" --chunk 256 --chunks 200 --threads 1 -o "$TMP/held" >/dev/null 2>"$TMP/h.err" &
H=$!
for _ in $(seq 2000); do [ -e "$TMP/held/config.json" ] && break; sleep 0.01; done   # written under the lock
kill -STOP $H
expect_fail "passkey: a held run directory is refused, naming the holder's pid" "$TMP/held: in use by pid $H " \
    "$KVLAB" passkey -m "$S260" --lengths 256 --trials 1 -o "$TMP/held"
expect_fail "needle: a held run directory is refused" "$TMP/held: in use by pid $H " \
    "$KVLAB" needle -m "$S260" --haystack "$TXT" --lengths 400 --depths 50 -o "$TMP/held"
expect_fail "trace: a held run directory is refused" "$TMP/held: in use by pid $H " \
    "$KVLAB" trace -m "$S260" -p "Once upon a time" -o "$TMP/held"
expect_fail "correlate: a held run directory is refused" "$TMP/held: in use by pid $H " \
    "$KVLAB" correlate -m "$S260" -p "Once upon a time" -o "$TMP/held"
expect_fail "convert: a held output directory is refused" "$TMP/held: in use by pid $H " \
    "$KVLAB" convert -m "$S260" -o "$TMP/held" --force
expect_fail "ppl --resume: a held run directory is refused" "$TMP/held: in use by pid $H " \
    "${PPL[@]}" --chunks 40 -o "$TMP/held" --resume
kill -TERM $H; kill -CONT $H
wait $H; RC=$?
check "the held run, ended by SIGTERM, is its own alone (no trace, correlate or convert output)" bash -c '
    [ "$2" = 143 ] && grep -q "\"policy\":\"full\"" "$1/config.json" && [ ! -e "$1/meta.json" ] &&
    [ ! -e "$1/trace.npz" ] && [ ! -e "$1/metrics.csv" ] && [ ! -e "$1/model.safetensors" ]' _ "$TMP/held" "$RC"
check "the held run: no lock file left" test ! -e "$TMP/held.lock"

"$KVLAB" synth -o "$TMP/syn2" --shape dim=512,layers=4,heads=8,ffn=1536,vocab=32000 --dtype f32 --quiet >/dev/null 2>"$TMP/a.err" &
A=$!
for _ in $(seq 2000); do compgen -G "$TMP/syn2.tmp.*" >/dev/null && break; sleep 0.01; done
kill -STOP $A
expect_fail "synth: a second writer of the same -o is refused" "$TMP/syn2: in use by pid $A " \
    "$KVLAB" synth -o "$TMP/syn2" --shape demo-25m --quiet
kill -CONT $A
wait $A
check "synth: the first writer's checkpoint is complete" test -f "$TMP/syn2/config.json" -a -f "$TMP/syn2/model.safetensors"
check "synth: nothing temporary left" no_leftovers "$TMP"

# sweep.sh: one sweep per --out. The first one's kvlab waits at each point until the test
# lets it go (a stand-in that reads a fifo first), so it holds the lock meanwhile.
mkfifo "$TMP/go"
cat >"$TMP/slow-kvlab" <<STUB
#!/usr/bin/env bash
[ "\$1" = info ] || read -r _ <'$TMP/go'
exec '$(readlink -f "$KVLAB")' "\$@"
STUB
chmod +x "$TMP/slow-kvlab"
printf 'args.ppl = -f %s --chunk 64 --chunks 2 --no-reference\n' "$TXT" >"$TMP/swl.conf"
SWL=(experiments/sweep.sh -c "$TMP/swl.conf" --models "s=$S260" --tasks ppl --policies "full l2" --ratios 0.5 --skips 0
     --out "$TMP/swl")
"${SWL[@]}" --kvlab "$TMP/slow-kvlab" >/dev/null 2>"$TMP/swa.err" &
A=$!
for _ in $(seq 2000); do [ -s "$TMP/swl.lock" ] && break; sleep 0.01; done
"${SWL[@]}" --kvlab "$KVLAB" >"$TMP/swb.out" 2>"$TMP/swb.err"; RB=$?
check "sweep: a second sweep into the same --out exits 2 with one line naming it and the first one's pid" bash -c '
    [ "$3" = 2 ] && [ "$(wc -l <"$1")" = 1 ] && grep -qx "sweep.sh: $2: in use by pid $4 (another sweep.sh is writing it)" "$1"' \
    _ "$TMP/swb.err" "$TMP/swl" "$RB" "$A"
check "sweep: the refused one ran no point" test ! -s "$TMP/swb.out"
for _ in 1 2; do timeout 60 bash -c 'echo go >"$1"' _ "$TMP/go"; done     # one line per point (no hang if none reads)
wait $A; RA=$?
check "sweep: the first one finishes both points; its lock file is gone" bash -c '
    [ "$2" = 0 ] && [ -f "$1/s/ppl/full/meta.json" ] && [ -f "$1/s/ppl/l2_r0.5_s0/meta.json" ] && [ ! -e "$1.lock" ]' _ "$TMP/swl" "$RA"
expect_ok "sweep: afterwards the same sweep runs (nothing left to do)" "${SWL[@]}" --kvlab "$KVLAB"
# reproduce-l2.sh locks its --out the same way (held here as a running one holds it)
mkdir -p "$TMP/rep"
exec {REPLOCK}<>"$TMP/rep.lock"; flock -n "$REPLOCK"; echo $$ >"$TMP/rep.lock"
experiments/reproduce-l2.sh --out "$TMP/rep" --plots-only >"$TMP/rep.out" 2>"$TMP/rep.err"; RR=$?
check "reproduce-l2.sh: a held --out exits 2 with one line naming it and the holder's pid, writing nothing" bash -c '
    [ "$3" = 2 ] && [ "$(wc -l <"$1")" = 1 ] && grep -qx "reproduce-l2.sh: $2: in use by pid $4 (another reproduce-l2.sh is writing it)" "$1" &&
    [ -z "$(ls -A "$2")" ]' _ "$TMP/rep.err" "$TMP/rep" "$RR" $$
exec {REPLOCK}>&-; rm -f "$TMP/rep.lock"

# ---- --resume needs something to resume -------------------------------------------------
expect_fail "ppl --resume of a directory that does not exist" "$TMP/none: --resume: nothing to resume" \
    "${PPL[@]}" --chunks 2 -o "$TMP/none" --resume
check "ppl --resume refused: the directory was not created" test ! -e "$TMP/none"
expect_fail "passkey --resume of a directory that does not exist" "$TMP/none: --resume: nothing to resume" \
    "$KVLAB" passkey -m "$S260" --lengths 256 --trials 1 -o "$TMP/none" --resume
expect_fail "needle --resume of a directory that does not exist" "$TMP/none: --resume: nothing to resume" \
    "$KVLAB" needle -m "$S260" --haystack "$TXT" --lengths 400 --depths 50 -o "$TMP/none" --resume
check "passkey, needle --resume refused: the directory was not created" test ! -e "$TMP/none"

# sweep.sh: --resume only for a point whose directory exists (an interrupted point)
SW=(experiments/sweep.sh -c /dev/null --models "s=$S260" --tasks ppl --policies "full l2" --ratios 0.5 --skips 0
    --out "$TMP/sw" --kvlab "$KVLAB")
printf 'args.ppl = -f %s --chunk 64 --chunks 2 --no-reference\n' "$TXT" >"$TMP/sw.conf"
SW[2]=$TMP/sw.conf
KVLAB_EVAL_STOP_AFTER=1 "${SW[@]}" >"$TMP/out" 2>"$TMP/err"
check "sweep: points stopped after their first unit (exit 75): unfinished directories" \
    test -d "$TMP/sw/s/ppl/full" -a ! -e "$TMP/sw/s/ppl/full/meta.json"
expect_ok "sweep again: the interrupted points are resumed" "${SW[@]}"
check "sweep again: both points finished, each with its 2 chunks" bash -c '
    for d in full l2_r0.5_s0; do [ -f "$1/$d/meta.json" ] && [ "$(wc -l <"$1/$d/results.csv")" = 3 ] || exit 1; done' _ "$TMP/sw/s/ppl"

# ---- inputs that are not regular files, or too big ----------------------------------------
mkfifo "$TMP/fifo"
T=(timeout 20)   # a read that waits for the fifo's writer would hang: fail instead
expect_fail "ppl -f /dev/zero" "/dev/zero: not a regular file \(a device\)" "${T[@]}" "${PPL[@]}" --chunks 1 -o "$TMP/z" -f /dev/zero
expect_fail "ppl -f FIFO" "fifo: not a regular file \(a pipe\)" "${T[@]}" "${PPL[@]}" --chunks 1 -o "$TMP/z" -f "$TMP/fifo"
expect_fail "ppl -f DIRECTORY" "$TMP: not a regular file \(a directory\)" "${T[@]}" "${PPL[@]}" --chunks 1 -o "$TMP/z" -f "$TMP"
expect_fail "generate -t /dev/zero" "/dev/zero: not a regular file" "${T[@]}" "$KVLAB" generate -m "$S260" -t /dev/zero -p hi
expect_fail "generate -t FIFO" "fifo: not a regular file \(a pipe\)" "${T[@]}" "$KVLAB" generate -m "$S260" -t "$TMP/fifo" -p hi
expect_fail "generate --prompt-file /dev/zero" "/dev/zero: not a regular file" "${T[@]}" "$KVLAB" generate -m "$S260" --prompt-file /dev/zero
expect_fail "generate -f FIFO" "fifo: not a regular file \(a pipe\)" "${T[@]}" "$KVLAB" generate -m "$S260" -f "$TMP/fifo"
expect_fail "tokenize -f /dev/zero" "/dev/zero: not a regular file" "${T[@]}" "$KVLAB" tokenize -m "$S260" -f /dev/zero
expect_fail "needle --haystack FIFO" "fifo: not a regular file \(a pipe\)" "${T[@]}" "$KVLAB" needle -m "$S260" \
    --haystack "$TMP/fifo" --lengths 400 --depths 50 -o "$TMP/nd"
expect_fail "trace -f /dev/zero" "/dev/zero: not a regular file" "${T[@]}" "$KVLAB" trace -m "$S260" -f /dev/zero -o "$TMP/tz"
expect_fail "-m FIFO (a model)" "fifo: not a regular file \(a pipe\)" "${T[@]}" "$KVLAB" info -m "$TMP/fifo"
expect_fail "synth --tokenizer /dev/zero" "--tokenizer /dev/zero: not a regular file" "${T[@]}" \
    "$KVLAB" synth -o "$TMP/sz" --shape demo-25m --tokenizer /dev/zero --quiet
check "synth --tokenizer /dev/zero: nothing left" no_leftovers "$TMP"
for c in /dev/zero "$TMP/fifo" "$TMP"; do
    "${T[@]}" experiments/sweep.sh -c "$c" --models "$S260" --tasks ppl --kvlab "$KVLAB" >/dev/null 2>"$TMP/swc.err"; RC=$?
    check "sweep.sh -c $(basename "$c"): refused at once (exit 2), one line naming it" bash -c '
        [ "$2" = 2 ] && [ "$(wc -l <"$1")" = 1 ] && grep -qxF "sweep.sh: $3: not a regular file (a config is a text file of '"'key = value'"' lines)" "$1"' \
        _ "$TMP/swc.err" "$RC" "$c"
done
truncate -s 300M "$TMP/huge.txt"
expect_fail "ppl -f of 300 MB: over the limit, refused before reading" "huge.txt: 314572800 bytes, larger than the limit of 256 MiB" \
    "${T[@]}" "${PPL[@]}" --chunks 1 -o "$TMP/z" -f "$TMP/huge.txt"
rm -f "$TMP/huge.txt"
check "README.md states the limit kvlab applies, and the lock and UTF-8 refusals" bash -c '
    limit=$(grep -oE "limit of [0-9]+ MiB" "$1" | grep -oE "[0-9]+") && [ -n "$limit" ] &&
    grep -qF "at most $limit MiB" README.md && grep -qF "in use by pid N" README.md &&
    grep -qF "invalid UTF-8 at byte" README.md && grep -qF "tests/cli_faults.sh" README.md' _ "$TMP/err"

# ---- invalid UTF-8 ------------------------------------------------------------------------
{ head -c 3000 "$TXT"; printf 'caf\xe9\n'; cat "$TXT"; } >"$TMP/latin1.txt"
expect_fail "ppl -f with invalid UTF-8: file and byte offset" "latin1.txt: invalid UTF-8 at byte 3003" \
    "${PPL[@]}" --chunks 1 -o "$TMP/z" -f "$TMP/latin1.txt"
expect_fail "tokenize -f with invalid UTF-8" "latin1.txt: invalid UTF-8 at byte 3003" "$KVLAB" tokenize -m "$S260" -f "$TMP/latin1.txt"
expect_fail "generate -p with invalid UTF-8" "-p: invalid UTF-8 at byte 2" "$KVLAB" generate -m "$S260" -p $'hi\xff there' -n 2
check "refused inputs wrote no run directory" test ! -e "$TMP/z"

# ---- interrupts -----------------------------------------------------------------------------
# synth of a ~190 MB checkpoint: the temporary directory exists from the start
SYN=("$KVLAB" synth --shape dim=512,layers=4,heads=8,ffn=1536,vocab=32000 --dtype f32 --quiet)
run_until INT "$TMP/si.tmp.{PID}" "${SYN[@]}" -o "$TMP/si"
interrupted "synth" SIGINT 130 "$TMP/si"
check "synth SIGINT: no checkpoint, nothing temporary" bash -c '[ ! -e "$1/si" ] && [ -z "$(find "$1" -name "si*")" ]' _ "$TMP"
run_until TERM "$TMP/st.tmp.{PID}/model.safetensors" "${SYN[@]}" -o "$TMP/st"
interrupted "synth" SIGTERM 143 "$TMP/st"
check "synth SIGTERM: nothing left" bash -c '[ -z "$(find "$1" -name "st*")" ]' _ "$TMP"
run_until HUP "$TMP/sh.tmp.{PID}" "${SYN[@]}" -o "$TMP/sh"
interrupted "synth" SIGHUP 129 "$TMP/sh"
# --force over an existing checkpoint, interrupted: the old one stays
"$KVLAB" synth -o "$TMP/sf" --shape demo-25m --quiet >/dev/null 2>&1
cp "$TMP/sf/config.json" "$TMP/sf.config.before"
run_until INT "$TMP/sf.tmp.{PID}" "${SYN[@]}" -o "$TMP/sf" --force
interrupted "synth --force" SIGINT 130 "$TMP/sf"
check "synth --force interrupted: the old checkpoint is untouched" cmp -s "$TMP/sf/config.json" "$TMP/sf.config.before"
check "synth: nothing temporary left" no_leftovers "$TMP"

# convert: an HF directory and a GGUF file of the syn2 checkpoint, as f32
CONV=("$KVLAB" convert -m "$TMP/syn2" -t "$SHARED/models/llama2-tokenizer/tokenizer.model" --dtype f32)
run_until INT "$TMP/ci.tmp.{PID}/model.safetensors" "${CONV[@]}" -o "$TMP/ci"
interrupted "convert (HF directory)" SIGINT 130 "$TMP/ci"
run_until TERM "$TMP/ct.gguf.tmp.{PID}" "${CONV[@]}" -o "$TMP/ct.gguf"
interrupted "convert (GGUF)" SIGTERM 143 "$TMP/ct.gguf"
check "convert: no output, nothing temporary" bash -c '[ ! -e "$1/ci" ] && [ ! -e "$1/ct.gguf" ]' _ "$TMP"
check "convert: nothing temporary left" no_leftovers "$TMP"

# logits: [300, 32000] floats (38 MB) with two OpenMP threads (a worker may catch the signal)
LOG=("$KVLAB" logits -m "$DEMO" --ids "$(seq -s, 1 300)" --threads 2)
# the file exists only while it is written: on a loaded machine the poll may miss it
# (the run then just finishes), so up to 3 tries
logits_until() {
    local try
    for try in 1 2 3; do
        run_until "$1" "$TMP/l.npy.tmp.{PID}" "${LOG[@]}" -o "$TMP/l.npy"
        [ "$SENT" = 1 ] && break
        rm -f "$TMP/l.npy"
    done
}
logits_until INT
interrupted "logits" SIGINT 130 "$TMP/l.npy"
logits_until TERM
interrupted "logits" SIGTERM 143 "$TMP/l.npy"
check "logits: no output, nothing temporary" bash -c '[ ! -e "$1/l.npy" ]' _ "$TMP"
check "logits: nothing temporary left" no_leftovers "$TMP"

# trace: while computing (only the lock exists), and while writing trace.npz (compressed: slow)
TR=("$KVLAB" trace -m "$DEMO" --ids "$(seq -s, 1 300)" --threads 2)
run_until INT "$TMP/tr.lock" "${TR[@]}" -o "$TMP/tr"
interrupted "trace (computing)" SIGINT 130 "$TMP/tr"
run_until TERM "$TMP/tr/trace.npz.tmp.{PID}" "${TR[@]}" -o "$TMP/tr"
interrupted "trace (writing trace.npz)" SIGTERM 143 "$TMP/tr"
check "trace: no trace.npz nor meta.json, nothing temporary" \
    bash -c '[ ! -e "$1/tr/trace.npz" ] && [ ! -e "$1/tr/meta.json" ]' _ "$TMP"
check "trace: nothing temporary left" no_leftovers "$TMP"

# correlate: while computing (its run directory is locked, nothing final written yet)
run_until INT "$TMP/co.lock" "$KVLAB" correlate -m "$DEMO" -f "$TXT" --chunk 256 --chunks 8 --threads 2 -o "$TMP/co"
interrupted "correlate" SIGINT 130 "$TMP/co"
check "correlate: no metrics nor meta.json, nothing temporary" \
    bash -c '[ ! -e "$1/co/metrics.csv" ] && [ ! -e "$1/co/metrics.npz" ] && [ ! -e "$1/co/meta.json" ]' _ "$TMP"
check "correlate: nothing temporary left" no_leftovers "$TMP"

# an interrupt the moment the lock file appears (it is being created and locked): still one
# line, status 130 and no lock file left. Without interrupts held across that step about
# half of these runs died silently and left DIR.lock behind.
n_ok=0
for i in $(seq 10); do
    run_until INT "$TMP/early$i.lock" "$KVLAB" trace -m "$S260" -p "Once upon a time" --gen 200 -o "$TMP/early$i"
    [ "$SENT" = 1 ] && [ "$RC" = 130 ] && [ "$(grep -c '^kvlab: interrupted (SIGINT) while writing' "$TMP/ierr")" = 1 ] &&
        [ ! -e "$TMP/early$i.lock" ] && n_ok=$((n_ok + 1))
done
check "10 interrupts as the lock is taken: each one line, status 130, no lock file left" test "$n_ok" = 10

# passkey: SIGHUP after its first finished trial; --resume = an uninterrupted run
PK=("$KVLAB" passkey -m "$S260" --lengths 256 --depths 0,50,100 --trials 8 --threads 1 --policy l2 --compression-ratio 0.5)
expect_ok "passkey: uninterrupted reference run" "${PK[@]}" -o "$TMP/ku"
run_until HUP "$TMP/kh/log/units.csv" "${PK[@]}" -o "$TMP/kh"
interrupted "passkey" SIGHUP 129 "$TMP/kh"
check "passkey SIGHUP: unfinished run kept, no meta.json" test -f "$TMP/kh/config.json" -a ! -e "$TMP/kh/meta.json"
expect_ok "passkey SIGHUP: --resume" "${PK[@]}" -o "$TMP/kh" --resume
check "passkey SIGHUP: resumed = uninterrupted (results, summary)" bash -c '
    for f in results.csv summary.csv summary.json; do cmp -s "$1/$f" "$2/$f" || { echo "$f differs" >&2; exit 1; }; done' \
    _ "$TMP/kh" "$TMP/ku"
check "passkey: nothing temporary left" no_leftovers "$TMP"

# ppl: interrupted after its first finished chunks; --resume = an uninterrupted run, byte for byte
P=("${PPL[@]}" --chunks 12 --policy l2 --keep-ratio 0.5)
expect_ok "ppl: uninterrupted reference run" "${P[@]}" -o "$TMP/pu"
for sig in INT TERM; do
    run_until "$sig" "$TMP/p$sig/log/units.csv" "${P[@]}" -o "$TMP/p$sig"
    status=$((128 + $(kill -l "$sig")))
    interrupted "ppl" "SIG$sig" "$status" "$TMP/p$sig"
    check "ppl SIG$sig: unfinished run kept (config.json, log), no meta.json" \
        test -f "$TMP/p$sig/config.json" -a -f "$TMP/p$sig/log/units.csv" -a ! -e "$TMP/p$sig/meta.json"
    expect_ok "ppl SIG$sig: --resume" "${P[@]}" -o "$TMP/p$sig" --resume
    check "ppl SIG$sig: resumed = uninterrupted (results, tokens, positions, summary)" bash -c '
        for f in results.csv tokens.csv positions.csv summary.csv summary.json; do cmp -s "$1/$f" "$2/$f" || { echo "$f differs" >&2; exit 1; }; done' \
        _ "$TMP/p$sig" "$TMP/pu"
done
check "ppl: nothing temporary left" no_leftovers "$TMP"

# a command that writes nothing keeps the default action (killed by the signal, no line)
"$KVLAB" generate -m "$DEMO" -p "Once upon a time" -n 3000 --threads 1 >/dev/null 2>"$TMP/gerr" &
G=$!
sleep 1
kill -INT $G; wait $G; RC=$?
check "generate (writes nothing) on SIGINT: status 130, no line" test "$RC" = 130 -a ! -s "$TMP/gerr"

finish
