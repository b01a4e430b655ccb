/* kvcache.c — see kvcache.h. */
#include "engine/kvcache.h"

#include <stdlib.h>
#include <string.h>

int kvcache_init(KVCache *c, int n_layers, int n_kv_heads, int head_dim, int max_tokens, Err *err) {
    memset(c, 0, sizeof *c);
    if (n_layers <= 0 || n_kv_heads <= 0 || head_dim <= 0 || max_tokens <= 0)
        return err_set(err, "kv cache: invalid shape (layers=%d kv_heads=%d head_dim=%d max_tokens=%d)",
                       n_layers, n_kv_heads, head_dim, max_tokens);
    c->n_layers = n_layers;
    c->n_kv_heads = n_kv_heads;
    c->head_dim = head_dim;
    c->max_tokens = max_tokens;
    c->heads = xcalloc((size_t)n_layers * n_kv_heads, sizeof(KVHead));
    return 0;
}

/* Keys and values of one head: big_alloc, so arrays of 2 MiB and more (4096
 * slots of head_dim 128 in fp32) sit on transparent huge pages, as the weights do:
 * attention streams them every token, and reads them faster there
 * (simd/NOTES.md, "KV cache rows on huge pages"). Shorter heads stay on
 * malloc's memory (a huge page per small head would waste memory).
 * Rows are handled as bytes here (elem_bytes 4 or 2) so one code path serves
 * both storage types. */
static size_t elem_bytes(const KVCache *c) { return dtype_size(c->kv_dtype); }
static size_t rows_bytes(const KVCache *c, int cap) { return (size_t)cap * (size_t)c->head_dim * elem_bytes(c); }

static void *rows_alloc(const KVCache *c, int cap) {
    void *p = big_alloc(rows_bytes(c, cap));
    if (!p) die("out of memory: kv cache head of %d slots (%zu bytes)", cap, rows_bytes(c, cap));
    return p;
}

/* The head's key (value) array, whatever its type. */
static char *key_bytes(const KVCache *c, const KVHead *h) {
    return c->kv_dtype == DTYPE_F32 ? (char *)h->keys : (char *)h->keys_bf16;
}
static char *value_bytes(const KVCache *c, const KVHead *h) {
    return c->kv_dtype == DTYPE_F32 ? (char *)h->values : (char *)h->values_bf16;
}
static void set_rows(const KVCache *c, KVHead *h, void *keys, void *values) {
    if (c->kv_dtype == DTYPE_F32) { h->keys = keys; h->values = values; }
    else { h->keys_bf16 = keys; h->values_bf16 = values; }
}

void kvcache_widen_rows(float *out, const uint16_t *rows, size_t count) {
    for (size_t i = 0; i < count; i++) out[i] = bf16_to_f32(rows[i]);
}

static void head_free(const KVCache *c, KVHead *h) {
    big_free(key_bytes(c, h), rows_bytes(c, h->cap));
    big_free(value_bytes(c, h), rows_bytes(c, h->cap));
    free(h->pos);
    free(h->columns);
    memset(h, 0, sizeof *h);
}

void kvcache_free(KVCache *c) {
    if (!c->heads) return;
    for (int i = 0; i < c->n_layers * c->n_kv_heads; i++) head_free(c, &c->heads[i]);
    free(c->heads);
    c->heads = NULL;
    free(c->fill_rows);
    c->fill_rows = NULL;
}

void kvcache_reset(KVCache *c) {
    for (int i = 0; i < c->n_layers * c->n_kv_heads; i++) c->heads[i].len = 0;
    c->next_pos = 0;
}

int kvcache_set_shifted(KVCache *c, int shifted, Err *err) {
    if (c->shifted == !!shifted) return 0;
    for (int i = 0; i < c->n_layers * c->n_kv_heads; i++)
        if (c->heads[i].len > 0)
            return err_set(err, "kv cache: the positions mode (true/shifted) can only change on an empty cache");
    c->shifted = !!shifted;
    return 0;
}

int kvcache_set_dtype(KVCache *c, DType kv_dtype, Err *err) {
    if (kv_dtype != DTYPE_F32 && kv_dtype != DTYPE_BF16)
        return err_set(err, "kv cache: keys and values are stored as f32 or bf16, not %s", dtype_name(kv_dtype));
    if (c->kv_dtype == kv_dtype) return 0;
    for (int i = 0; i < c->n_layers * c->n_kv_heads; i++)
        if (c->heads[i].cap > 0)
            return err_set(err, "kv cache: the KV dtype can only change on an empty cache");
    c->kv_dtype = kv_dtype;
    free(c->fill_rows);
    c->fill_rows = kv_dtype == DTYPE_BF16 ? xcalloc(2 * (size_t)c->head_dim, sizeof(float)) : NULL;
    return 0;
}

/* Side-column rows of `cap` slots holding the first `len` of old[rows][old_cap]. */
static float *columns_resize(float *old, int rows, int old_cap, int len, int cap) {
    if (rows == 0) { free(old); return NULL; }
    float *cols = xcalloc((size_t)rows * cap, sizeof(float));
    for (int r = 0; r < rows && len > 0; r++)
        memcpy(cols + (size_t)r * cap, old + (size_t)r * old_cap, (size_t)len * sizeof(float));
    free(old);
    return cols;
}

/* New arrays of `cap` slots holding the `len` slots in use (len <= cap). */
static void head_resize(const KVCache *c, KVHead *h, int cap) {
    void *keys = rows_alloc(c, cap), *values = rows_alloc(c, cap);
    if (h->len > 0) {
        memcpy(keys, key_bytes(c, h), rows_bytes(c, h->len));
        memcpy(values, value_bytes(c, h), rows_bytes(c, h->len));
    }
    big_free(key_bytes(c, h), rows_bytes(c, h->cap));
    big_free(value_bytes(c, h), rows_bytes(c, h->cap));
    set_rows(c, h, keys, values);
    h->pos = xrealloc(h->pos, (size_t)cap * sizeof(int));
    h->columns = columns_resize(h->columns, c->n_column_rows, h->cap, h->len, cap);
    h->cap = cap;
}

static int same_columns(const KVCache *c, const KVColumn *cols, int n) {
    if (n != c->n_columns) return 0;
    for (int i = 0; i < n; i++)
        if (strcmp(cols[i].name, c->columns[i].name) || cols[i].rows != c->columns[i].rows ||
            cols[i].fill != c->columns[i].fill)
            return 0;
    return 1;
}

int kvcache_has_columns(const KVCache *c, const KVColumn *cols, int n) { return same_columns(c, cols, n); }

int kvcache_set_columns(KVCache *c, const KVColumn *cols, int n, Err *err) {
    if (same_columns(c, cols, n)) return 0;
    if (n > KVCACHE_MAX_COLUMNS)
        return err_set(err, "kv cache: %d side columns, at most %d", n, KVCACHE_MAX_COLUMNS);
    for (int i = 0; i < c->n_layers * c->n_kv_heads; i++)
        if (c->heads[i].len > 0)
            return err_set(err, "kv cache: the side columns can only change on an empty cache");
    for (int i = 0; i < n; i++)
        if (cols[i].rows < 1) return err_set(err, "kv cache: side column '%s' has %d rows", cols[i].name, cols[i].rows);
    c->n_columns = n;
    c->n_column_rows = 0;
    for (int i = 0; i < n; i++) {
        c->columns[i] = cols[i];
        c->column_row[i] = c->n_column_rows;
        c->n_column_rows += cols[i].rows;
    }
    for (int i = 0; i < c->n_layers * c->n_kv_heads; i++) {
        KVHead *h = &c->heads[i];
        free(h->columns);
        h->columns = h->cap && c->n_column_rows ? xcalloc((size_t)c->n_column_rows * h->cap, sizeof(float)) : NULL;
    }
    return 0;
}

int kvcache_reserve(KVCache *c, int layer, int extra, Err *err) {
    for (int g = 0; g < c->n_kv_heads; g++) {
        KVHead *h = kvcache_head(c, layer, g);
        long need = (long)h->len + extra;
        if (need > c->max_tokens)
            return err_set(err, "kv cache: layer %d head %d would hold %ld tokens, more than the context (%d)",
                           layer, g, need, c->max_tokens);
        if (need <= h->cap) continue;
        long cap = h->cap ? h->cap : 64;
        while (cap < need) cap *= 2;
        if (cap > c->max_tokens) cap = c->max_tokens;
        head_resize(c, h, (int)cap);
    }
    return 0;
}

/* Store `count` fp32 numbers as the cache's type: copied, or rounded once to bf16. */
static void store_row(const KVCache *c, char *dst, const float *src, size_t count) {
    if (c->kv_dtype == DTYPE_F32) { memcpy(dst, src, count * sizeof(float)); return; }
    uint16_t *d = (uint16_t *)dst;
    for (size_t i = 0; i < count; i++) d[i] = f32_to_bf16(src[i]);
}

int kvcache_append(KVCache *c, int layer, const float *keys, const float *values, int n, Err *err) {
    if (kvcache_reserve(c, layer, n, err) != 0) return -1;
    size_t d = (size_t)c->head_dim, KV = (size_t)c->n_kv_heads, row_bytes = d * elem_bytes(c);
    for (int g = 0; g < c->n_kv_heads; g++) {
        KVHead *h = kvcache_head(c, layer, g);
        for (int t = 0; t < n; t++) {
            size_t slot = (size_t)h->len + t, row = ((size_t)t * KV + g) * d;
            store_row(c, key_bytes(c, h) + slot * row_bytes, keys + row, d);
            store_row(c, value_bytes(c, h) + slot * row_bytes, values + row, d);
            h->pos[slot] = c->next_pos + t;
        }
        for (int col = 0; col < c->n_columns; col++) {
            const KVColumn *sc = &c->columns[col];
            for (int t = 0; t < n; t++) {
                int slot = h->len + t;
                /* the fill sees what the cache holds: in bf16 the rounded rows, widened */
                float *key_scratch = c->fill_rows, *value_scratch = c->fill_rows ? c->fill_rows + d : NULL;
                float v = sc->fill ? sc->fill(kvcache_key_rows(c, h, slot, 1, key_scratch),
                                              kvcache_value_rows(c, h, slot, 1, value_scratch), c->head_dim)
                                   : 0.0f;
                for (int r = 0; r < sc->rows; r++) kvcache_column(c, layer, g, col, r)[slot] = v;
            }
        }
        h->len += n;
    }
    return 0;
}

/* Move slots [src, src+count) down to [dst, dst+count) (dst <= src), side
 * columns included. */
static void move_slots(const KVCache *c, KVHead *h, int dst, int src, int count) {
    if (dst == src || count <= 0) return;
    size_t row = (size_t)c->head_dim * elem_bytes(c);
    memmove(key_bytes(c, h) + (size_t)dst * row, key_bytes(c, h) + (size_t)src * row, (size_t)count * row);
    memmove(value_bytes(c, h) + (size_t)dst * row, value_bytes(c, h) + (size_t)src * row, (size_t)count * row);
    memmove(h->pos + dst, h->pos + src, (size_t)count * sizeof(int));
    for (int r = 0; r < c->n_column_rows; r++) {
        float *row = h->columns + (size_t)r * h->cap;
        memmove(row + dst, row + src, (size_t)count * sizeof(float));
    }
}

/* Give memory back when a head is far below its allocation. */
static void shrink(const KVCache *c, KVHead *h) {
    if (h->cap <= 256 || h->len >= h->cap / 4) return;
    int cap = h->cap;
    while (cap > 64 && h->len < cap / 4) cap /= 2;
    head_resize(c, h, cap);
}

void kvcache_keep(KVCache *c, int layer, int kv_head, const int *keep, int n_keep) {
    KVHead *h = kvcache_head(c, layer, kv_head);
    /* keep[] ascending, so keep[i] >= i: moving down never overwrites a kept slot.
     * A run keep[i..i+r) of consecutive slots moves in one piece (evicting one
     * token of 2048 is one memmove of the tail, not 2047 small ones). */
    for (int i = 0; i < n_keep;) {
        int r = 1;
        while (i + r < n_keep && keep[i + r] == keep[i] + r) r++;
        move_slots(c, h, i, keep[i], r);
        i += r;
    }
    h->len = n_keep;
    shrink(c, h);
}

void kvcache_evict(KVCache *c, int layer, int kv_head, const int *slots, int n) {
    KVHead *h = kvcache_head(c, layer, kv_head);
    /* the run between evicted slot i-1 and slot i moves down by i places */
    for (int i = 0; i < n; i++) {
        int start = slots[i] + 1, end = i + 1 < n ? slots[i + 1] : h->len;
        move_slots(c, h, start - (i + 1), start, end - start);
    }
    h->len -= n;
    shrink(c, h);
}

size_t kvcache_slot_bytes(const KVCache *c) { return 2 * (size_t)c->head_dim * elem_bytes(c) + sizeof(int); }

size_t kvcache_bytes_allocated(const KVCache *c) {
    size_t n = 0;
    for (int i = 0; i < c->n_layers * c->n_kv_heads; i++) n += (size_t)c->heads[i].cap;
    return n * kvcache_slot_bytes(c);
}

size_t kvcache_bytes_used(const KVCache *c) {
    size_t n = 0;
    for (int i = 0; i < c->n_layers * c->n_kv_heads; i++) n += (size_t)c->heads[i].len;
    return n * kvcache_slot_bytes(c);
}

long kvcache_slots_used(const KVCache *c) {
    long n = 0;
    for (int i = 0; i < c->n_layers * c->n_kv_heads; i++) n += c->heads[i].len;
    return n;
}
