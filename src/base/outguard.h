/* outguard.h — what keeps outputs sound when several processes or a signal
 * get in the way:
 *
 *  - One writer per output. outlock_acquire takes an exclusive lock on
 *    "TARGET.lock", a file BESIDE the output (beside, not inside: a checkpoint
 *    directory is built as DIR.tmp.PID and renamed onto DIR, so a lock inside
 *    would not outlive the rename). A second writer gets
 *    "TARGET: in use by pid N (...)". The lock is a POSIX record lock: the
 *    kernel drops it when the process ends however it ends, so a killed run
 *    never leaves a directory locked; the lock file itself is removed when the
 *    holder releases it or exits.
 *
 *  - Temporary outputs removed on interrupt. Every temporary output (the
 *    PATH.tmp.PID of an atomic file, the DIR.tmp.PID of a checkpoint
 *    directory) is registered while it exists. On SIGINT, SIGTERM or SIGHUP
 *    the handler removes every registered path, prints one line
 *    "kvlab: interrupted (SIGINT) while writing TARGET" and exits with status
 *    128 + the signal number. The same removal runs at exit() (die() in the
 *    middle of a write). The handler only calls async-signal-safe functions
 *    (unlink, rmdir, open, getdents64, write, _exit) and works only in the
 *    main thread: a signal that lands on an OpenMP worker is passed on to the
 *    main thread, which can therefore hold signals off (outguard_hold) while
 *    it renames a finished output into place.
 *
 * A process that never registered anything keeps the default signal actions'
 * behaviour (the handler re-raises the signal). */
#ifndef KVLAB_OUTGUARD_H
#define KVLAB_OUTGUARD_H

#include "base/util.h"

/* Install the SIGINT/SIGTERM/SIGHUP handlers and the exit-time cleanup; call
 * once from main() before any thread starts. Without it nothing is removed on
 * a signal (the library still works: tests and fuzzers do not install it). */
void outguard_install(void);

/* Register a temporary output: a file, or a directory of plain files (removed
 * with its files, never recursively). `target` is what it will become (named
 * in the interrupt line). Returns a handle for outguard_forget (-1 if the
 * table is full: then the path is just not removed on interrupt). Register
 * BEFORE creating the path and forget AFTER renaming it: a removal of a path
 * that does not exist yet or any more is harmless. */
int  outguard_add_file(const char *tmp_path, const char *target);
int  outguard_add_dir(const char *tmp_dir, const char *target);
void outguard_forget(int handle);

/* Hold interrupts off in this thread (the main thread) across a few renames
 * that must not be cut in two; they arrive at outguard_release. Nests. */
void outguard_hold(void);
void outguard_release(void);

/* The exclusive lock of one output (a file or a directory). */
typedef struct {
    int fd;            /* -1: not held */
    int handle;        /* its outguard registration (the lock file is removed at exit) */
    char path[4200];   /* TARGET.lock */
} OutLock;

/* Lock `target` (trailing slashes ignored) for this process's lifetime or
 * until outlock_release. Creates target's parent directories. Fails with
 * "TARGET: in use by pid N (another kvlab is writing it)". */
int  outlock_acquire(OutLock *lock, const char *target, Err *err);
void outlock_release(OutLock *lock);

#endif
