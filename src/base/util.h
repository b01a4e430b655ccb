/* util.h — the small things every module needs: errors, memory, time, files.
 *
 * Error convention: library functions return 0 on success and -1 on failure,
 * filling an Err with ONE line that names the file or option and the problem
 * ("model.safetensors: tensor 'x' data_offsets [0, 9] past end of file (8 bytes)").
 * Only the command-line layer prints it and exits; the library never exits,
 * so tests and fuzzers can call it on bad input. */
#ifndef KVLAB_UTIL_H
#define KVLAB_UTIL_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

typedef struct { char msg[1024]; } Err;

/* Set err->msg printf-style; always returns -1 so callers can `return err_set(...)`. */
int err_set(Err *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Print "kvlab: MSG" on stderr and exit(1). For the command-line layer only. */
_Noreturn void die(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Allocation that dies on failure (out of memory is not a recoverable input error). */
void *xmalloc(size_t n_bytes);
void *xcalloc(size_t count, size_t size);
void *xrealloc(void *p, size_t n_bytes);
char *xstrdup(const char *s);

/* 64-byte aligned allocation (free with free()); returns NULL on failure. */
void *aligned_alloc64(size_t n_bytes);

/* Big read-mostly buffers (model weights, the bandwidth test): anonymous memory,
 * 2 MiB-aligned, with transparent huge pages requested (madvise). One TLB entry
 * then covers 2 MiB instead of 4 KiB; streaming gigabytes of weights through
 * 4 KiB pages costs measurable bandwidth, and on virtual machines (nested
 * paging) much more: decode with 2 threads over 4 KiB file pages ran ~7x slower
 * than over huge pages on the development VM. Below 2 MiB it is aligned_alloc64.
 * Returns NULL when out of memory; free with big_free and the same size. */
void *big_alloc(size_t n_bytes);

/* The memory of ranges [ptrs[i], ptrs[i] + sizes[i]) as the kernel reports it
 * in /proc/self/smaps: resident bytes and the part on transparent huge pages
 * (AnonHugePages), summed over the mappings that hold the ranges (a whole
 * mapping is counted once, however many ranges lie in it). Returns -1 when
 * smaps cannot be read (not Linux). */
typedef struct { size_t resident_bytes, huge_bytes; } HugePageShare;
int huge_page_share(const void *const *ptrs, const size_t *sizes, int n, HugePageShare *out);
void  big_free(void *p, size_t n_bytes);

double now_seconds(void);          /* monotonic clock */

/* Read a whole file into memory (NUL-terminated for convenience). Only a
 * regular file of at most READ_FILE_MAX_BYTES: a fifo, a device (/dev/zero)
 * or a directory is refused before anything is read, naming the file. Every
 * input read whole goes through here: texts, prompt files, tokenizers, JSON. */
#define READ_FILE_MAX_BYTES ((size_t)256 << 20)
int read_file(const char *path, char **data_out, size_t *size_out, Err *err);

/* read_file of a text: also refused unless it is valid UTF-8 ("FILE: invalid
 * UTF-8 at byte N"). Every text input (-f, --haystack, prompt files) uses it. */
int read_text_file(const char *path, char **data_out, size_t *size_out, Err *err);
/* The offset of the first byte that does not start a valid UTF-8 sequence
 * (overlong forms and surrogates are invalid), or n if all of text is valid. */
size_t utf8_invalid_offset(const char *text, size_t n);

/* The first n bytes (or fewer) of a regular file, for sniffing a format: the
 * count read, -1 if it is not a regular file or cannot be read. Never blocks
 * on a fifo nor reads a device. */
int file_head(const char *path, void *buf, size_t n);

/* A read-only memory map of a whole regular file (not read: no size limit). */
typedef struct { void *data; size_t size_bytes; } FileMap;
int  filemap_open(FileMap *map, const char *path, Err *err);
void filemap_close(FileMap *map);
/* Drop the whole pages of [p, p + n_bytes), part of a file mapping, from memory
 * (MADV_PAGEOUT: clean file pages leave the page cache; a later read faults
 * them in again). For a file read once and copied: the copy then does not
 * share memory with a second, cached copy of the file. */
void filemap_release(const void *p, size_t n_bytes);

/* Atomic output: write to "PATH.tmp.PID", rename onto PATH on commit, so an
 * interrupted run never leaves a file that looks finished. The temporary file
 * is registered with outguard (outguard.h): an interrupt removes it. */
typedef struct { FILE *f; char path[4096]; char tmp_path[4200]; int guard; } AtomicFile;
int  atomic_open(AtomicFile *af, const char *path, Err *err);
int  atomic_commit(AtomicFile *af, Err *err);   /* fclose + fsync-free rename */
void atomic_abort(AtomicFile *af);              /* fclose + unlink the temp file */

/* mkdir -p */
int make_dirs(const char *path, Err *err);

/* Path helpers. */
int  path_is_dir(const char *path);
int  path_exists(const char *path);
void path_join(char *out, size_t out_size, const char *dir, const char *name);
void path_dirname(char *out, size_t out_size, const char *path);

/* fp16/bf16 <-> fp32 (round to nearest even when narrowing). */
static inline float bf16_to_f32(uint16_t h) {
    union { uint32_t u; float f; } v = { (uint32_t)h << 16 };
    return v.f;
}
uint16_t f32_to_bf16(float f);
float    f16_to_f32(uint16_t h);
uint16_t f32_to_f16(float f);

#endif
