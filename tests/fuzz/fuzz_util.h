/* fuzz_util.h — what the fuzz targets share (tests/fuzz/fuzz_*.c).
 *
 * Each target is built two ways: with libFuzzer (tests/fuzz/fuzz.mk, `make
 * fuzz`), and into tests/test_fuzz_regress.c, which includes every target and
 * replays the committed inputs (files in tests/fuzz/regress/TARGET/) with gcc in the
 * normal and the ASan suite. So everything here is static, and each target
 * names its own statics with its own prefix.
 *
 * Loaders that take a path get the input written to a file in a private
 * temporary directory (removed at exit). A small random-weight checkpoint
 * (synth.h) is written there once, for the targets that fuzz one file of a
 * checkpoint directory and keep the others valid. */
#ifndef KVLAB_FUZZ_UTIL_H
#define KVLAB_FUZZ_UTIL_H

#include <dirent.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "engine/forward.h"
#include "model/model.h"
#include "engine/numcheck.h"
#include "engine/ops.h"
#include "model/synth.h"
#include "model/tokenizer.h"
#include "base/util.h"

/* The tiny checkpoint's shape: everything small, GQA, so a forward pass costs
 * microseconds. */
#define FUZZ_TINY_SHAPE "dim=16,layers=2,heads=2,kv_heads=1,ffn=24,vocab=40,seq=64"

static char fuzz_tmp_dir[4096];

static inline void fuzz_rm_tree(const char *path) {
    DIR *d = opendir(path);
    if (d) {
        struct dirent *e;
        while ((e = readdir(d))) {
            if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
            char sub[sizeof fuzz_tmp_dir + 260];
            if (snprintf(sub, sizeof sub, "%s/%s", path, e->d_name) < (int)sizeof sub) fuzz_rm_tree(sub);
        }
        closedir(d);
        rmdir(path);
    } else {
        unlink(path);
    }
}

static inline void fuzz_cleanup(void) {
    if (fuzz_tmp_dir[0]) fuzz_rm_tree(fuzz_tmp_dir);
    fuzz_tmp_dir[0] = '\0';
}

/* The private temporary directory (created on first use). */
static inline const char *fuzz_dir(void) {
    if (fuzz_tmp_dir[0]) return fuzz_tmp_dir;
    /* tmpfs if there is one: on ext4 rewriting a file starts writeback at
     * close (auto_da_alloc), which made the targets wait on the disk */
    const char *base = getenv("TMPDIR");
    if (access("/dev/shm", W_OK) == 0) base = "/dev/shm";
    snprintf(fuzz_tmp_dir, sizeof fuzz_tmp_dir, "%s/kvlab-fuzz-XXXXXX", base && *base ? base : "/tmp");
    if (!mkdtemp(fuzz_tmp_dir)) { perror("mkdtemp"); abort(); }
    atexit(fuzz_cleanup);
    /* one thread: the targets are about parsing, and libFuzzer runs one input at a time */
    ops_set_threads(1);
    return fuzz_tmp_dir;
}

/* DIR/name into out. */
static inline void fuzz_path(char *out, size_t size, const char *name) {
    snprintf(out, size, "%s/%s", fuzz_dir(), name);
}

/* Replace the file at path with bytes[0..n). */
static inline void fuzz_write(const char *path, const uint8_t *bytes, size_t n) {
    unlink(path);   /* a new file, not a truncated one (see fuzz_dir) */
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0644);
    if (fd < 0) { perror(path); abort(); }
    size_t done = 0;
    while (done < n) {
        ssize_t w = write(fd, bytes + done, n - done);
        if (w <= 0) { perror(path); abort(); }
        done += (size_t)w;
    }
    close(fd);
}

/* Write the tiny checkpoint into DIR/name once (shards 1 or 2); returns its path. */
static inline const char *fuzz_tiny_checkpoint(const char *name, int shards, char *out, size_t size) {
    fuzz_path(out, size, name);
    struct stat st;
    if (stat(out, &st) == 0) return out;
    SynthOpts o;
    synth_defaults(&o);
    o.progress = 0;
    o.shards = shards;
    o.seed = 7;
    Err err;
    if (synth_shape_parse(FUZZ_TINY_SHAPE, &o.cfg, &err) != 0 || synth_write(&o, out, &err) != 0) {
        fprintf(stderr, "fuzz: %s\n", err.msg);
        abort();
    }
    return out;
}

/* The NUL-terminated copy of an input (for parsers that take C strings). */
static inline char *fuzz_cstr(const uint8_t *data, size_t size) {
    char *s = xmalloc(size + 1);
    memcpy(s, data, size);
    s[size] = '\0';
    return s;
}

/* A loaded model small enough to run: a forward pass of a few tokens with the
 * numerical guard, so shapes the loaders accept are also exercised by the
 * engine (and NaN/Inf weights by the guard's diagnosis). */
static inline void fuzz_run_model(const Model *m, const uint8_t *data, size_t size) {
    const Config *c = &m->cfg;
    if (m->n_params > 200000 || c->dim > 256 || c->hidden_dim > 1024 || c->vocab_size > 4096 ||
        c->n_heads * c->head_dim > 1024 || c->n_layers > 8)
        return;
    int ids[4], n = c->max_seq_len < 4 ? c->max_seq_len : 4;
    for (int i = 0; i < n; i++) ids[i] = (int)((i < (int)size ? data[i] : i) % c->vocab_size);
    Err err;
    KVCache cache;
    if (forward_cache_init(m, &cache, n, &err) != 0) return;
    Forward *f = forward_create(m, 2);   /* batch 2: both the block and the split path */
    NumGuard *g = numguard_attach(f, m);
    if (forward(f, &cache, ids, n, NULL, &err) == 0) (void)numguard_check(g, forward_last_logits(f), 1, &err);
    numguard_free(g);
    forward_free(f);
    kvcache_free(&cache);
}

/* Load the model at path (the input decides f32 or bf16 where the target says
 * so) and, if it loads, run it (fuzz_run_model). */
static inline void fuzz_load_model(const char *path, DType dtype, const uint8_t *data, size_t size) {
    Model m;
    Err err;
    if (model_load(&m, path, dtype, &err) == 0) {
        fuzz_run_model(&m, data, size);
        model_free(&m);
    }
}

/* The input as `file` inside the tiny checkpoint DIR/name (its other files
 * stay valid), then the checkpoint loaded and run. */
static inline void fuzz_checkpoint_input(const char *name, int shards, const char *file, DType dtype,
                                         const uint8_t *data, size_t size) {
    char dir[4200], path[4400];
    fuzz_tiny_checkpoint(name, shards, dir, sizeof dir);
    snprintf(path, sizeof path, "%s/%s", dir, file);
    fuzz_write(path, data, size);
    fuzz_load_model(dir, dtype, data, size);
}

/* Exercise a loaded tokenizer: encode a fixed text and the input's bytes,
 * decode the ids back, and the pieces one by one. */
static inline void fuzz_use_tokenizer(const Tokenizer *t, const uint8_t *data, size_t size) {
    Err err;
    int ids[512];
    size_t len = size < 256 ? size : 256;
    const char *texts[2] = { "Hello world, \xE2\x96\x81 caf\xC3\xA9 \xF0\x9F\x98\x80!", (const char *)data };
    size_t lens[2] = { strlen(texts[0]), len };
    for (int k = 0; k < 2; k++) {
        int n = tokenizer_encode_len(t, texts[k], lens[k], 1, ids, 512, &err);
        if (n < 0) continue;
        if (n > 512) n = 512;
        size_t out_len;
        char *s = tokenizer_decode_len(t, ids, n, &out_len, &err);
        free(s);
        char buf[8];
        for (int i = 0; i < n; i++) (void)tokenizer_piece(t, i ? ids[i - 1] : -1, ids[i], buf);
    }
    /* ids straight from the input, in range and not */
    int V = tokenizer_vocab_size(t), n = 0;
    for (size_t i = 0; i + 1 < len && n < 64; i += 2) ids[n++] = (int)((data[i] | data[i + 1] << 8) % (V + 2)) - 1;
    char *s = tokenizer_decode(t, ids, n, &err);
    free(s);
}

/* Load the tokenizer at path and, if it loads, exercise it with the input. */
static inline void fuzz_load_tokenizer(const char *path, const uint8_t *data, size_t size) {
    Err err;
    Tokenizer *t = tokenizer_load(path, &err);
    if (t) {
        fuzz_use_tokenizer(t, data, size);
        tokenizer_free(t);
    }
}

/* The input as the tokenizer file DIR/name with its first byte (if any)
 * replaced by `first` (the byte that picks the reader), loaded and exercised. */
static inline void fuzz_tokenizer_input(const char *name, uint8_t first, const uint8_t *data, size_t size) {
    uint8_t *copy = xmalloc(size ? size : 1);
    memcpy(copy, data, size);
    if (size) copy[0] = first;
    char path[4400];
    fuzz_path(path, sizeof path, name);
    fuzz_write(path, copy, size);
    free(copy);
    fuzz_load_tokenizer(path, data, size);
}

#endif
