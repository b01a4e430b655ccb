/* util.c — see util.h. */
#include "base/util.h"

#include "base/outguard.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

int err_set(Err *err, const char *fmt, ...) {
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
    }
    return -1;
}

void die(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fputs("kvlab: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(1);
}

void *xmalloc(size_t n) {
    void *p = malloc(n ? n : 1);
    if (!p) die("out of memory allocating %zu bytes", n);
    return p;
}
void *xcalloc(size_t count, size_t size) {
    void *p = calloc(count ? count : 1, size ? size : 1);
    if (!p) die("out of memory allocating %zu x %zu bytes", count, size);
    return p;
}
void *xrealloc(void *p, size_t n) {
    void *q = realloc(p, n ? n : 1);
    if (!q) die("out of memory allocating %zu bytes", n);
    return q;
}
char *xstrdup(const char *s) {
    size_t n = strlen(s) + 1;
    char *d = xmalloc(n);
    memcpy(d, s, n);
    return d;
}

void *aligned_alloc64(size_t n) {
    void *p = NULL;
    if (posix_memalign(&p, 64, n ? n : 64) != 0) return NULL;
    return p;
}

#define BIG_ALIGN ((size_t)2 << 20)

void *big_alloc(size_t n_bytes) {
    if (n_bytes < BIG_ALIGN) return aligned_alloc64(n_bytes);
    size_t size = (n_bytes + BIG_ALIGN - 1) / BIG_ALIGN * BIG_ALIGN;
    /* map one alignment unit more, then trim both ends to a 2 MiB boundary */
    char *raw = mmap(NULL, size + BIG_ALIGN, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (raw == MAP_FAILED) return NULL;
    uintptr_t start = ((uintptr_t)raw + BIG_ALIGN - 1) & ~(uintptr_t)(BIG_ALIGN - 1);
    char *p = (char *)start;
    if (p > raw) munmap(raw, (size_t)(p - raw));
    size_t tail = (size_t)(raw + size + BIG_ALIGN - (p + size));
    if (tail) munmap(p + size, tail);
#ifdef MADV_HUGEPAGE
    madvise(p, size, MADV_HUGEPAGE);   /* a hint: without THP the memory still works */
#endif
#ifdef MADV_POPULATE_WRITE
    /* Fault every page in now (Linux 5.14+), while the madvise above lets the
     * kernel compact memory for whole huge pages; faulting them one by one
     * later, when the caller fills the buffer, more often finds no free 2 MiB
     * block left and falls back to 4 KiB pages. Unsupported: the pages come on
     * first touch as before. */
    madvise(p, size, MADV_POPULATE_WRITE);
#endif
    return p;
}

/* One mapping of /proc/self/smaps: "start-end perms ..." then "Key: N kB" lines. */
int huge_page_share(const void *const *ptrs, const size_t *sizes, int n, HugePageShare *out) {
    memset(out, 0, sizeof *out);
    FILE *f = fopen("/proc/self/smaps", "r");
    if (!f) return -1;
    char line[512];
    int in_range = 0;
    while (fgets(line, sizeof line, f)) {
        unsigned long start, end, kb;
        char key[64];
        if (sscanf(line, "%lx-%lx ", &start, &end) == 2 && strchr(line, '-') < strchr(line, ' ')) {
            in_range = 0;
            for (int i = 0; i < n && !in_range; i++) {
                uintptr_t a = (uintptr_t)ptrs[i], b = a + sizes[i];
                in_range = ptrs[i] && sizes[i] && a < end && b > start;
            }
        } else if (in_range && sscanf(line, "%63[^:]: %lu kB", key, &kb) == 2) {
            if (!strcmp(key, "Rss")) out->resident_bytes += (size_t)kb << 10;
            else if (!strcmp(key, "AnonHugePages")) out->huge_bytes += (size_t)kb << 10;
        }
    }
    fclose(f);
    return 0;
}

void big_free(void *p, size_t n_bytes) {
    if (!p) return;
    if (n_bytes < BIG_ALIGN) { free(p); return; }
    munmap(p, (n_bytes + BIG_ALIGN - 1) / BIG_ALIGN * BIG_ALIGN);
}

double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Open a file to read it whole or map it: only a regular file (a fifo or
 * /dev/zero would be read forever; O_NONBLOCK keeps open() from waiting for a
 * fifo's writer) of at most max_bytes (0: no limit). */
static int open_regular(const char *path, size_t max_bytes, const char *max_what, struct stat *st, Err *err) {
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) return err_set(err, "%s: cannot open: %s", path, strerror(errno));
    if (fstat(fd, st) != 0) { int e = errno; close(fd); return err_set(err, "%s: cannot stat: %s", path, strerror(e)); }
    if (!S_ISREG(st->st_mode)) {
        close(fd);
        return err_set(err, "%s: not a regular file (%s)", path,
                       S_ISDIR(st->st_mode) ? "a directory" : S_ISFIFO(st->st_mode) ? "a pipe" :
                       S_ISCHR(st->st_mode) || S_ISBLK(st->st_mode) ? "a device" : "a socket or special file");
    }
    if (max_bytes && (uint64_t)st->st_size > (uint64_t)max_bytes) {
        close(fd);
        return err_set(err, "%s: %lld bytes, larger than the limit of %zu MiB for %s", path, (long long)st->st_size,
                       max_bytes >> 20, max_what);
    }
    fcntl(fd, F_SETFL, 0);   /* back to blocking reads */
    return fd;
}

int read_file(const char *path, char **data_out, size_t *size_out, Err *err) {
    struct stat st;
    int fd = open_regular(path, READ_FILE_MAX_BYTES, "a file read whole", &st, err);
    if (fd < 0) return -1;
    FILE *f = fdopen(fd, "rb");
    if (!f) { close(fd); return err_set(err, "%s: cannot open: %s", path, strerror(errno)); }
    /* read to the end rather than trusting st_size (the file may change), but
     * never past the limit */
    char *buf = NULL;
    size_t size = 0, cap = 0;
    for (;;) {
        if (cap - size < 65536) {
            cap = cap ? cap * 2 : 65536 * 2;
            buf = xrealloc(buf, cap + 1);
        }
        size_t got = fread(buf + size, 1, cap - size, f);
        size += got;
        if (got == 0) break;
        if (size > READ_FILE_MAX_BYTES) {
            fclose(f);
            free(buf);
            return err_set(err, "%s: grew past the limit of %zu MiB for a file read whole while being read", path,
                           READ_FILE_MAX_BYTES >> 20);
        }
    }
    int bad = ferror(f), e = errno;
    fclose(f);
    if (bad) { free(buf); return err_set(err, "%s: cannot read: %s", path, strerror(e)); }
    buf[size] = '\0';
    *data_out = buf;
    if (size_out) *size_out = size;
    return 0;
}

int read_text_file(const char *path, char **data_out, size_t *size_out, Err *err) {
    char *text;
    size_t size;
    if (read_file(path, &text, &size, err) != 0) return -1;
    size_t bad = utf8_invalid_offset(text, size);
    if (bad < size) {
        free(text);
        return err_set(err, "%s: invalid UTF-8 at byte %zu (texts are read as UTF-8: convert it, e.g. iconv -f latin1 -t utf-8)",
                       path, bad);
    }
    *data_out = text;
    if (size_out) *size_out = size;
    return 0;
}

size_t utf8_invalid_offset(const char *text, size_t n) {
    const unsigned char *s = (const unsigned char *)text;
    size_t i = 0;
    while (i < n) {
        unsigned c = s[i];
        if (c < 0x80) { i++; continue; }
        int len;
        unsigned min;
        if (c >= 0xC2 && c <= 0xDF) { len = 2; min = 0x80; }
        else if (c >= 0xE0 && c <= 0xEF) { len = 3; min = 0x800; }
        else if (c >= 0xF0 && c <= 0xF4) { len = 4; min = 0x10000; }
        else return i;                                   /* stray continuation byte, C0/C1, F5..FF */
        if (n - i < (size_t)len) return i;               /* cut short by the end */
        unsigned cp = c & (0x7Fu >> len);
        for (int k = 1; k < len; k++) {
            if ((s[i + k] & 0xC0) != 0x80) return i;
            cp = (cp << 6) | (s[i + k] & 0x3Fu);
        }
        if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return i;   /* overlong, surrogate */
        i += (size_t)len;
    }
    return n;
}

int file_head(const char *path, void *buf, size_t n) {
    struct stat st;
    int fd = open_regular(path, 0, NULL, &st, NULL);
    if (fd < 0) return -1;
    ssize_t got = read(fd, buf, n);
    close(fd);
    return got < 0 ? -1 : (int)got;
}

int filemap_open(FileMap *map, const char *path, Err *err) {
    map->data = NULL;
    map->size_bytes = 0;
    struct stat st;
    int fd = open_regular(path, 0, NULL, &st, err);
    if (fd < 0) return -1;
    if (st.st_size == 0) { close(fd); return err_set(err, "%s: file is empty", path); }
    void *p = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (p == MAP_FAILED) return err_set(err, "%s: mmap failed: %s", path, strerror(errno));
    map->data = p;
    map->size_bytes = (size_t)st.st_size;
    return 0;
}

void filemap_release(const void *p, size_t n_bytes) {
#ifdef MADV_PAGEOUT
    const uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
    uintptr_t first = ((uintptr_t)p + page - 1) / page * page, end = ((uintptr_t)p + n_bytes) / page * page;
    if (end > first) madvise((void *)first, end - first, MADV_PAGEOUT);   /* a hint: failure changes nothing */
#else
    (void)p; (void)n_bytes;
#endif
}

void filemap_close(FileMap *map) {
    if (map->data) munmap(map->data, map->size_bytes);
    map->data = NULL;
    map->size_bytes = 0;
}

int atomic_open(AtomicFile *af, const char *path, Err *err) {
    memset(af, 0, sizeof *af);
    af->guard = -1;
    if (strlen(path) >= sizeof af->path) return err_set(err, "%s: path too long", path);
    snprintf(af->path, sizeof af->path, "%s", path);
    snprintf(af->tmp_path, sizeof af->tmp_path, "%s.tmp.%ld", path, (long)getpid());
    af->guard = outguard_add_file(af->tmp_path, path);   /* removed if interrupted */
    af->f = fopen(af->tmp_path, "wb");
    if (!af->f) {
        int e = errno;
        outguard_forget(af->guard);
        af->guard = -1;
        return err_set(err, "%s: cannot write: %s", path, strerror(e));
    }
    return 0;
}

int atomic_commit(AtomicFile *af, Err *err) {
    int bad = ferror(af->f);
    if (fclose(af->f) != 0) bad = 1;
    af->f = NULL;
    if (bad) {
        atomic_abort(af);
        return err_set(err, "%s: write failed (disk full?)", af->path);
    }
    if (rename(af->tmp_path, af->path) != 0) {
        int e = errno;
        atomic_abort(af);
        return err_set(err, "%s: cannot rename temporary file into place: %s", af->path, strerror(e));
    }
    outguard_forget(af->guard);
    af->guard = -1;
    return 0;
}

void atomic_abort(AtomicFile *af) {
    if (af->f) fclose(af->f);
    af->f = NULL;
    if (af->tmp_path[0]) unlink(af->tmp_path);
    outguard_forget(af->guard);
    af->guard = -1;
}

int path_is_dir(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}
int path_exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0;
}
int make_dirs(const char *path, Err *err) {
    char buf[4096];
    if (snprintf(buf, sizeof buf, "%s", path) >= (int)sizeof buf) return err_set(err, "%s: path too long", path);
    for (char *p = buf + 1; ; p++) {
        if (*p == '/' || *p == '\0') {
            char saved = *p;
            *p = '\0';
            if (mkdir(buf, 0777) != 0 && errno != EEXIST)
                return err_set(err, "%s: cannot create directory: %s", buf, strerror(errno));
            *p = saved;
            if (!saved) break;
        }
    }
    if (!path_is_dir(path)) return err_set(err, "%s: exists and is not a directory", path);
    return 0;
}

void path_join(char *out, size_t out_size, const char *dir, const char *name) {
    size_t n = strlen(dir);
    if (n > 0 && dir[n - 1] == '/') snprintf(out, out_size, "%s%s", dir, name);
    else snprintf(out, out_size, "%s/%s", dir, name);
}
void path_dirname(char *out, size_t out_size, const char *path) {
    const char *slash = strrchr(path, '/');
    if (!slash) snprintf(out, out_size, ".");
    else if (slash == path) snprintf(out, out_size, "/");
    else snprintf(out, out_size, "%.*s", (int)(slash - path), path);
}

uint16_t f32_to_bf16(float f) {
    union { float f; uint32_t u; } v = { f };
    if ((v.u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((v.u >> 16) | 0x40); /* quiet NaN */
    uint32_t rounding = 0x7fffu + ((v.u >> 16) & 1u);                  /* nearest even */
    return (uint16_t)((v.u + rounding) >> 16);
}

float f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu;
    uint32_t mant = h & 0x3ffu;
    union { uint32_t u; float f; } v;
    if (exp == 0) {
        /* zero or subnormal: mant * 2^-24 is exact in fp32 */
        float mag = (float)mant * 0x1p-24f;
        v.f = mag;
        v.u |= sign;
        return v.f;
    }
    if (exp == 31) v.u = sign | 0x7f800000u | (mant << 13);
    else v.u = sign | ((exp + 112u) << 23) | (mant << 13);
    return v.f;
}

uint16_t f32_to_f16(float f) {
    union { float f; uint32_t u; } v = { f };
    uint16_t sign = (uint16_t)((v.u >> 16) & 0x8000u);
    uint32_t abs = v.u & 0x7fffffffu;
    if (abs > 0x7f800000u) return sign | 0x7e00u;     /* NaN */
    if (abs >= 0x477ff000u) return sign | 0x7c00u;    /* overflow (rounds to >= 65520) -> inf */
    if (abs < 0x38800000u) {                          /* below 2^-14: subnormal or zero */
        float mag = fabsf(f) * 0x1p24f;               /* exact scaling, then RNE via rintf */
        return sign | (uint16_t)lrintf(mag);
    }
    uint32_t mant = abs & 0x7fffffu;
    uint32_t exp = (abs >> 23) - 112u;
    uint32_t h = (exp << 10) | (mant >> 13);
    uint32_t rest = mant & 0x1fffu;
    if (rest > 0x1000u || (rest == 0x1000u && (h & 1u))) h++;   /* nearest even; may carry into exp */
    return sign | (uint16_t)h;
}
