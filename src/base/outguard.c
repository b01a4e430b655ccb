/* outguard.c — see outguard.h. */
#include "base/outguard.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

/* ---- the table of temporary outputs --------------------------------------------------
 * A fixed table, so the signal handler reads it without locks or malloc. A slot
 * is filled while its kind is SLOT_FREE and published by setting kind last; the
 * handler only runs in the main thread (see on_signal), which is also the thread
 * that fills and empties slots, so it never sees a half-written one. */
enum { SLOT_FREE = 0, SLOT_FILE, SLOT_DIR };
#define N_SLOTS 64

typedef struct {
    volatile sig_atomic_t kind;
    char path[4200];     /* what to remove */
    char target[4200];   /* what it becomes: named in the interrupt line */
} Slot;

static Slot slots[N_SLOTS];
static pthread_t main_thread;
static int hold_depth;
static sigset_t mask_before_hold;

static int add_slot(int kind, const char *path, const char *target) {
    if (strlen(path) >= sizeof slots[0].path) return -1;
    for (int i = 0; i < N_SLOTS; i++) {
        if (slots[i].kind != SLOT_FREE) continue;
        snprintf(slots[i].path, sizeof slots[i].path, "%s", path);
        snprintf(slots[i].target, sizeof slots[i].target, "%s", target ? target : path);
        atomic_signal_fence(memory_order_seq_cst);   /* the strings before the kind */
        slots[i].kind = kind;
        return i;
    }
    return -1;
}

int outguard_add_file(const char *tmp_path, const char *target) { return add_slot(SLOT_FILE, tmp_path, target); }
int outguard_add_dir(const char *tmp_dir, const char *target) { return add_slot(SLOT_DIR, tmp_dir, target); }

void outguard_forget(int handle) {
    if (handle >= 0 && handle < N_SLOTS) slots[handle].kind = SLOT_FREE;
}

/* Remove a directory of plain files with async-signal-safe calls only (no
 * opendir: it allocates). Entries are read raw with getdents64; since removing
 * while reading may skip entries, the scan repeats until rmdir succeeds. */
static void remove_dir_files(const char *dir) {
    for (int pass = 0; pass < 8; pass++) {
        int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd < 0) return;
        char buf[4096] __attribute__((aligned(8)));
        long n;
        while ((n = syscall(SYS_getdents64, fd, buf, sizeof buf)) > 0) {
            /* struct linux_dirent64: u64 ino, s64 off, u16 reclen, u8 type, char name[] */
            for (long off = 0; off < n;) {
                unsigned short reclen;
                memcpy(&reclen, buf + off + 16, sizeof reclen);
                const char *name = buf + off + 19;
                if (strcmp(name, ".") != 0 && strcmp(name, "..") != 0) unlinkat(fd, name, 0);
                off += reclen;
            }
        }
        close(fd);
        if (rmdir(dir) == 0 || errno == ENOENT) return;
    }
}

/* Remove every registered path, newest slots first. Returns the target of the
 * first (oldest) one, NULL if there was none. */
static const char *remove_all(void) {
    const char *first = NULL;
    for (int i = N_SLOTS - 1; i >= 0; i--) {
        int kind = slots[i].kind;
        if (kind == SLOT_FREE) continue;
        if (kind == SLOT_DIR) remove_dir_files(slots[i].path);
        else unlink(slots[i].path);
        slots[i].kind = SLOT_FREE;
        first = slots[i].target;
    }
    return first;
}

static void put(char *line, size_t *len, size_t size, const char *s) {
    size_t n = strlen(s);
    if (n > size - 1 - *len) n = size - 1 - *len;
    memcpy(line + *len, s, n);
    *len += n;
}

static void on_signal(int sig) {
    if (!pthread_equal(pthread_self(), main_thread)) {
        /* an OpenMP worker caught it: the main thread owns the cleanup (and may be
         * holding signals off across a rename: then it gets it right after) */
        pthread_kill(main_thread, sig);
        return;
    }
    const char *target = remove_all();
    if (!target) {   /* nothing being written: the default action, as without the handler */
        signal(sig, SIG_DFL);
        raise(sig);
        return;
    }
    char line[4400];
    size_t len = 0;
    put(line, &len, sizeof line, "kvlab: interrupted (");
    put(line, &len, sizeof line, sig == SIGINT ? "SIGINT" : sig == SIGTERM ? "SIGTERM" : sig == SIGHUP ? "SIGHUP" : "signal");
    put(line, &len, sizeof line, ") while writing ");
    put(line, &len, sizeof line, target);
    put(line, &len, sizeof line, "; temporary files removed\n");
    ssize_t ignored = write(STDERR_FILENO, line, len);
    (void)ignored;
    _exit(128 + sig);
}

static void at_exit(void) { remove_all(); }

void outguard_install(void) {
    main_thread = pthread_self();
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaddset(&sa.sa_mask, SIGINT);   /* one handler at a time */
    sigaddset(&sa.sa_mask, SIGTERM);
    sigaddset(&sa.sa_mask, SIGHUP);
    sa.sa_flags = SA_RESTART;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
    atexit(at_exit);
}

void outguard_hold(void) {
    if (hold_depth++ > 0) return;
    sigset_t s;
    sigemptyset(&s);
    sigaddset(&s, SIGINT);
    sigaddset(&s, SIGTERM);
    sigaddset(&s, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &s, &mask_before_hold);
}

void outguard_release(void) {
    if (hold_depth > 0 && --hold_depth == 0) pthread_sigmask(SIG_SETMASK, &mask_before_hold, NULL);
}

/* ---- one writer per output ---------------------------------------------------------- */

int outlock_acquire(OutLock *l, const char *target, Err *err) {
    l->fd = -1;
    l->handle = -1;
    size_t len = strlen(target);
    while (len > 1 && target[len - 1] == '/') len--;
    char name[4096];
    if (len == 0 || len + 6 > sizeof name) return err_set(err, "'%s': not a usable output name", target);
    snprintf(name, sizeof name, "%.*s", (int)len, target);
    snprintf(l->path, sizeof l->path, "%s.lock", name);
    /* The holder removes the lock file when it is done. If that happens between
     * our open and our lock, we hold a file nobody else will see: check that the
     * path still names what we locked, else start over.
     * The file is registered for removal only once it is ours (never remove
     * another's), so interrupts wait from its creation to its registration: an
     * interrupt in between would leave it behind, without the interrupt line. */
    int state = 0;   /* 0: try again, 1: locked, -1: refused (err set) */
    outguard_hold();
    for (int attempt = 0; attempt < 100 && state == 0; attempt++) {
        int fd = open(l->path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
        if (fd < 0) { state = err_set(err, "%s: cannot write: %s (creating its lock file %s)", name, strerror(errno), l->path); break; }
        struct flock fl = { .l_type = F_WRLCK, .l_whence = SEEK_SET };
        if (fcntl(fd, F_SETLK, &fl) != 0) {
            int e = errno;
            struct flock holder = { .l_type = F_WRLCK, .l_whence = SEEK_SET };
            long pid = (e == EACCES || e == EAGAIN) && fcntl(fd, F_GETLK, &holder) == 0 && holder.l_type != F_UNLCK
                     ? (long)holder.l_pid : 0;
            close(fd);
            if (pid > 0) { state = err_set(err, "%s: in use by pid %ld (another kvlab is writing it)", name, pid); break; }
            if (e == EACCES || e == EAGAIN) continue;   /* released meanwhile */
            state = err_set(err, "%s: cannot lock %s: %s", name, l->path, strerror(e));
            break;
        }
        struct stat held, named;
        if (fstat(fd, &held) == 0 && stat(l->path, &named) == 0 && held.st_ino == named.st_ino && held.st_dev == named.st_dev) {
            l->fd = fd;
            l->handle = outguard_add_file(l->path, name);   /* after locking: never remove another's */
            char pid[32];
            int n = snprintf(pid, sizeof pid, "%ld\n", (long)getpid());   /* for a person looking */
            if (ftruncate(fd, 0) != 0 || write(fd, pid, (size_t)n) != n) { /* the lock holds without it */ }
            state = 1;
        } else {
            close(fd);
        }
    }
    if (state == 0) state = err_set(err, "%s: cannot lock %s: it keeps being replaced", name, l->path);
    outguard_release();   /* an interrupt that came meanwhile lands here, the lock file registered */
    return state == 1 ? 0 : -1;
}

void outlock_release(OutLock *l) {
    if (l->fd < 0) return;
    outguard_hold();   /* forgotten and removed at once: an interrupt in between would leave it */
    outguard_forget(l->handle);
    unlink(l->path);   /* while still holding it (see outlock_acquire) */
    close(l->fd);
    outguard_release();
    l->fd = -1;
    l->handle = -1;
}
