# outlock.sh — one writer per output directory for the scripts that fill one
# (sweep.sh, reproduce-l2.sh), as kvlab does for each run directory it writes:
# an exclusive lock on DIR.lock, a file beside DIR, for the script's lifetime. A
# second script writing DIR is refused with one line naming DIR and the holder's
# pid. flock(1) locks the open file: the kernel drops the lock when the holder
# ends, however it ends, so a killed sweep never leaves DIR locked; the file itself
# is removed when the holder exits. Source it, then call out_lock DIR PROG once.

# out_lock DIR PROG: take the lock or exit 2 with "PROG: DIR: in use by pid N ...".
# Sets an EXIT trap (removes the lock file) and turns SIGINT/SIGTERM/SIGHUP into
# an exit with status 128 + the signal, so that the trap runs.
out_lock() {
    local dir=${1%/} prog=$2 lock pid attempt
    [ -n "$dir" ] || dir=/
    lock=$dir.lock
    mkdir -p "$(dirname "$dir")" || exit 2
    for attempt in 1 2 3 4 5 6 7 8 9 10; do
        if ! { exec {OUT_LOCK_FD}<>"$lock"; } 2>/dev/null; then echo "$prog: $dir: cannot create its lock file $lock" >&2; exit 2; fi
        if ! flock -n "$OUT_LOCK_FD"; then
            exec {OUT_LOCK_FD}>&-
            pid=$(head -n 1 "$lock" 2>/dev/null) || pid=""
            # the holder writes its pid right after locking: give it that moment
            [ -n "$pid" ] || { sleep 0.2; pid=$(head -n 1 "$lock" 2>/dev/null) || pid=""; }
            echo "$prog: $dir: in use by pid ${pid:-?} (another $prog is writing it)" >&2
            exit 2
        fi
        # The holder removes the file when it is done. If that happened between our
        # open and our lock, we hold a file nobody else will see: start over.
        if [ "/dev/fd/$OUT_LOCK_FD" -ef "$lock" ]; then
            OUT_LOCK_PATH=$lock
            printf '%s\n' "$$" >"$lock"      # for the next writer's message, and a person looking
            trap 'rm -f "$OUT_LOCK_PATH"' EXIT   # while still holding it
            trap 'exit 130' INT; trap 'exit 143' TERM; trap 'exit 129' HUP
            return 0
        fi
        exec {OUT_LOCK_FD}>&-
    done
    echo "$prog: $dir: cannot lock $lock: it keeps being replaced" >&2
    exit 2
}
