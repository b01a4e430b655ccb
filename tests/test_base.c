/* test_base.c — the small shared pieces of src/base/ that every layer uses:
 * splitmix64 (every seeded choice in kvlab; a changed output would change
 * every random policy, passkey key and synthetic checkpoint), the growable
 * buffer and the running mean / standard deviation. */
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"
#include "base/buf.h"
#include "base/outguard.h"
#include "base/runstat.h"
#include "base/splitmix64.h"

static void splitmix64_cases(void) {
    CASE("splitmix64: the reference stream from state 0 (Vigna's splitmix64.c)") {
        uint64_t s = 0;
        const uint64_t want[3] = { 0xe220a8397b1dcdafull, 0x6e789e6aa1b965f4ull, 0x06c45d188009454full };
        for (int k = 0; k < 3; k++) {
            uint64_t x = splitmix64_next(&s);
            CHECK(x == want[k], "output %d: %016llx", k, (unsigned long long)x);
        }
        CHECK(s == 3 * SPLITMIX64_GAMMA, "the state is a counter");
    }
    CASE("splitmix64: random access and the hash are the same stream") {
        uint64_t s = 12345, ok = 1;
        for (uint64_t k = 0; k < 100; k++) ok &= splitmix64_next(&s) == splitmix64_at(12345, k);
        CHECK(ok, "splitmix64_at(seed, k) == the k-th output of the stream");
        CHECK(splitmix64(77) == splitmix64_at(77, 0), "splitmix64(x) == splitmix64_at(x, 0)");
        s = 0;
        double u = splitmix64_unit(&s);
        CHECK(u == (double)(0xe220a8397b1dcdafull >> 11) * 0x1.0p-53 && u >= 0 && u < 1, "unit: top 53 bits, %.17g", u);
    }
}

static void buf_cases(void) {
    CASE("buf: appends and printf grow it; always NUL-terminated, even when empty") {
        Buf b = { 0 };
        buf_append(&b, NULL, 0);
        CHECK(b.data && b.len == 0 && b.data[0] == '\0', "an empty append allocates an empty string");
        for (int i = 0; i < 1000; i++) buf_printf(&b, "%d,", i % 10);
        buf_append(&b, "end", 3);
        CHECK(b.len == 2003 && b.cap > b.len && b.data[b.len] == '\0', "len %zu cap %zu", b.len, b.cap);
        CHECK(!strncmp(b.data, "0,1,2,", 6) && !strcmp(b.data + 1990, "5,6,7,8,9,end"), "contents in order");
        b.len = 0;
        buf_append(&b, "\0x", 2);
        CHECK(b.len == 2 && b.data[0] == '\0' && b.data[1] == 'x' && b.data[2] == '\0', "bytes, NUL included, after a reset");
        buf_free(&b);
        CHECK(!b.data && !b.len && !b.cap, "freed back to {0}");
    }
}

static void runstat_cases(void) {
    CASE("runstat: Welford's mean and sample std equal the two-pass formulas; NaN is skipped") {
        RunStat s = { 0 };
        CHECK(isnan(runstat_mean(&s)) && isnan(runstat_std(&s)), "empty: NaN");
        double x[5] = { 1e9 + 1, 1e9 + 4, 1e9 + 7, 1e9 + 13, 1e9 + 25 }, sum = 0, ss = 0;
        for (int i = 0; i < 5; i++) { runstat_add(&s, x[i]); runstat_add(&s, NAN); sum += x[i]; }
        double mean = sum / 5;
        for (int i = 0; i < 5; i++) ss += (x[i] - mean) * (x[i] - mean);
        CHECK(s.n == 5, "n %lld", (long long)s.n);
        CHECK_CLOSE(runstat_mean(&s), mean, 1e-6, "mean");
        CHECK_CLOSE(runstat_std(&s), sqrt(ss / 4), 1e-6, "std");
        RunStat one = { 0 };
        runstat_add(&one, 3.0);
        CHECK(runstat_mean(&one) == 3.0 && isnan(runstat_std(&one)), "one value: its mean, no std");
    }
}

static void utf8_cases(void) {
    CASE("utf8_invalid_offset: valid texts, then the first bad byte") {
        const char *ok = "abc \xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80";   /* a, é, €, U+1F600 */
        CHECK(utf8_invalid_offset(ok, strlen(ok)) == strlen(ok), "valid text");
        struct { const char *s; size_t at; } bad[] = {
            { "ab\xff", 2 },               /* never in UTF-8 */
            { "a\x80", 1 },                /* stray continuation byte */
            { "\xc0\xaf", 0 },             /* overlong '/' */
            { "xy\xe0\x80\xaf", 2 },       /* overlong, 3 bytes */
            { "\xed\xa0\x80", 0 },         /* UTF-16 surrogate */
            { "\xf4\x90\x80\x80", 0 },     /* above U+10FFFF */
            { "abc\xe2\x82", 3 },          /* cut short at the end */
            { "\xc3(", 0 },                /* lead byte without its continuation */
        };
        for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
            CHECK(utf8_invalid_offset(bad[i].s, strlen(bad[i].s)) == bad[i].at, "case %zu: %zu", i,
                  utf8_invalid_offset(bad[i].s, strlen(bad[i].s)));
    }
}

static void read_file_cases(void) {
    char dir[] = "/tmp/kvlab_test_base.XXXXXX";
    if (!mkdtemp(dir)) return;
    char path[256], *data = NULL;
    size_t size;
    Err err;
    CASE("read_file refuses what is not a regular file, before reading") {
        CHECK(read_file("/dev/zero", &data, &size, &err) != 0 && strstr(err.msg, "/dev/zero: not a regular file (a device)"),
              "%s", err.msg);
        CHECK(read_file(dir, &data, &size, &err) != 0 && strstr(err.msg, "not a regular file (a directory)"), "%s", err.msg);
        snprintf(path, sizeof path, "%s/fifo", dir);
        CHECK(mkfifo(path, 0600) == 0, "mkfifo");
        /* no writer: a plain open() would wait forever */
        CHECK(read_file(path, &data, &size, &err) != 0 && strstr(err.msg, "not a regular file (a pipe)"), "%s", err.msg);
        CHECK(file_head(path, path, 4) == -1, "file_head of a fifo");
        unlink(path);
    }
    CASE("read_file refuses a file over its limit, naming the limit") {
        snprintf(path, sizeof path, "%s/big", dir);
        int fd = open(path, O_WRONLY | O_CREAT, 0600);
        CHECK(fd >= 0 && ftruncate(fd, (off_t)READ_FILE_MAX_BYTES + 1) == 0, "sparse file");
        if (fd >= 0) close(fd);
        CHECK(read_file(path, &data, &size, &err) != 0 && strstr(err.msg, "bytes, larger than the limit of 256 MiB"), "%s", err.msg);
        unlink(path);
    }
    CASE("read_text_file: invalid UTF-8 named with its byte offset") {
        snprintf(path, sizeof path, "%s/latin1.txt", dir);
        FILE *f = fopen(path, "wb");
        fputs("caf\xe9 au lait\n", f);
        fclose(f);
        CHECK(read_text_file(path, &data, &size, &err) != 0 && strstr(err.msg, "latin1.txt: invalid UTF-8 at byte 3"), "%s", err.msg);
        CHECK(read_file(path, &data, &size, &err) == 0 && size == 13, "read_file takes any bytes: %zu", size);
        free(data);
        unlink(path);
    }
    rmdir(dir);
}

/* A second process locking the same output is refused with the holder's pid;
 * after the holder is gone (even killed), the lock is free again. */
static void outlock_cases(void) {
    char dir[] = "/tmp/kvlab_test_lock.XXXXXX";
    if (!mkdtemp(dir)) return;
    char target[256], lockfile[300];
    snprintf(target, sizeof target, "%s/run", dir);
    snprintf(lockfile, sizeof lockfile, "%s/run.lock", dir);
    CASE("outlock: one holder; the second is told the holder's pid") {
        int ready[2];
        CHECK(pipe(ready) == 0, "pipe");
        pid_t child = fork();
        if (child == 0) {
            OutLock l;
            Err e;
            char c = outlock_acquire(&l, target, &e) == 0 ? 'y' : 'n';
            if (write(ready[1], &c, 1) != 1) _exit(2);
            pause();   /* hold it until killed */
            _exit(0);
        }
        char c = 0;
        CHECK(read(ready[0], &c, 1) == 1 && c == 'y', "child locked");
        OutLock l;
        Err err;
        char want[64];
        snprintf(want, sizeof want, "in use by pid %ld", (long)child);
        CHECK(outlock_acquire(&l, target, &err) != 0 && strstr(err.msg, want), "%s", err.msg);
        kill(child, SIGKILL);
        waitpid(child, NULL, 0);
        CHECK(outlock_acquire(&l, target, &err) == 0, "after the holder died: %s", err.msg);
        outlock_release(&l);
        CHECK(access(lockfile, F_OK) != 0, "the lock file is removed on release");
        close(ready[0]);
        close(ready[1]);
    }
    rmdir(dir);
}

int main(void) {
    splitmix64_cases();
    buf_cases();
    runstat_cases();
    utf8_cases();
    read_file_cases();
    outlock_cases();
    return check_summary();
}
