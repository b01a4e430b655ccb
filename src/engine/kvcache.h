/* kvcache.h — the key/value cache, one slot list per (layer, KV head).
 *
 * Each (layer, KV head) owns its own arrays, so an eviction policy can keep a
 * different set of tokens per head and a different count per layer:
 *
 *   keys   [cap][head_dim]   positions `true`: RoPE applied at the token's original
 *                            position; `shifted`: stored before RoPE (see below)
 *   values [cap][head_dim]
 *                            in fp32 (keys, values) or bf16 (keys_bf16,
 *                            values_bf16): the cache's kv_dtype, one per cache
 *   pos    [cap]             the token's ORIGINAL position in the sequence
 *   columns[rows][cap]       side columns: per-slot floats someone registered
 *                            (a policy's accumulated attention, a cached key norm)
 *
 * Slots [0, len) are in use, in the order tokens arrived (eviction compacts them,
 * keeping that order, side columns included: the cache is the one owner of
 * slot order). Arrays grow by doubling up to `max_tokens` and shrink
 * again when an eviction leaves them mostly empty, so KV bytes in use are real.
 * Arrays of 2 MiB and more are on transparent huge pages (big_alloc).
 *
 * A bf16 cache (kvcache_set_dtype) halves the bytes of keys and values: each
 * is rounded to bf16 (nearest even) once, when it is stored, and widened
 * exactly to fp32 whenever it is read; attention sums in fp32. */
#ifndef KVLAB_KVCACHE_H
#define KVLAB_KVCACHE_H

#include <stddef.h>
#include <stdint.h>

#include "base/dtype.h"

#include "base/util.h"

typedef struct {
    float *keys;              /* fp32 cache: [cap][head_dim]; NULL in a bf16 cache */
    float *values;
    uint16_t *keys_bf16;      /* bf16 cache: [cap][head_dim] bf16 bit patterns; NULL in fp32 */
    uint16_t *values_bf16;
    int *pos;
    float *columns;   /* [n_column_rows][cap]: the side columns' rows (kvcache_column) */
    int len;     /* slots in use */
    int cap;     /* slots allocated */
} KVHead;

/* A side column: `rows` floats per slot of every (layer, KV head), e.g. one
 * row per query head of the group for an attention statistic, or one row for
 * a value computed from the key. A new slot gets fill(its key, its value) in
 * every row (0 without fill), called with what the cache holds for the slot:
 * in a bf16 cache the rounded key and value, widened to fp32; eviction moves the rows with the slots. fill
 * is a plain function of the slot's key and value: it must not depend on
 * anything that may be gone when the cache appends (a column outlives the
 * code that registered it until the next kvcache_set_columns). */
typedef float (*KVColumnFill)(const float *key, const float *value, int head_dim);
typedef struct {
    const char *name;
    int rows;
    KVColumnFill fill;
} KVColumn;

#define KVCACHE_MAX_COLUMNS 8

typedef struct {
    int n_layers, n_kv_heads, head_dim;
    int max_tokens;     /* the most one (layer, head) may ever hold: the context length */
    int next_pos;       /* position the next token gets (= tokens seen so far) */
    /* ../shared/spec/methods.md §0 "positions". 0 = true: keys carry the RoPE of their original
     * position, a new token gets position next_pos. 1 = shifted (StreamingLLM):
     * keys are stored pre-RoPE and the forward pass rotates slot i to position i
     * at attention time; a new token's query gets position = the head's length.
     * Set before the first token (kvcache_set_shifted); both modes give the same
     * logits while nothing has been evicted (in fp32: a bf16 cache rounds a key
     * after its RoPE with `true` positions, before it when `shifted`, so there
     * the two agree to bf16 rounding). */
    int shifted;
    DType kv_dtype;     /* DTYPE_F32 (default) or DTYPE_BF16: how keys and values are stored */
    float *fill_rows;   /* bf16: [2][head_dim] a stored key and value widened for the side-column fills */
    int n_columns;      /* side columns (kvcache_set_columns) */
    KVColumn columns[KVCACHE_MAX_COLUMNS];
    int column_row[KVCACHE_MAX_COLUMNS];   /* the first row of each in KVHead.columns */
    int n_column_rows;
    KVHead *heads;      /* [n_layers * n_kv_heads] */
} KVCache;

int  kvcache_init(KVCache *c, int n_layers, int n_kv_heads, int head_dim, int max_tokens, Err *err);
void kvcache_free(KVCache *c);
void kvcache_reset(KVCache *c);      /* empty every head; next_pos = 0 */
/* Choose the positions mode (0 true, 1 shifted); only on an empty cache. */
int  kvcache_set_shifted(KVCache *c, int shifted, Err *err);
/* Store keys and values as DTYPE_F32 or DTYPE_BF16; only on an empty cache. */
int  kvcache_set_dtype(KVCache *c, DType kv_dtype, Err *err);

static inline KVHead *kvcache_head(const KVCache *c, int layer, int kv_head) {
    return &c->heads[(size_t)layer * c->n_kv_heads + kv_head];
}

/* Replace the side columns by cols[0..n) (only on an empty cache; the same
 * set again keeps them as they are). */
int kvcache_set_columns(KVCache *c, const KVColumn *cols, int n, Err *err);
/* 1 if the cache's side columns are exactly cols[0..n) (same names and rows). */
int kvcache_has_columns(const KVCache *c, const KVColumn *cols, int n);
/* Row `row` of side column `column` of (layer, kv_head), indexed by slot:
 * valid for slots [0, len) until the next append, keep or evict. */
static inline float *kvcache_column(const KVCache *c, int layer, int kv_head, int column, int row) {
    const KVHead *h = kvcache_head(c, layer, kv_head);
    return h->columns + (size_t)(c->column_row[column] + row) * h->cap;
}

/* The keys (values) of slots [first, first + n) of head h as fp32 rows
 * [n][head_dim]. Code outside the forward pass reads cached keys and values
 * only through these, so the storage type of the cache can change without
 * touching it: `scratch` (n * head_dim floats) receives a converted copy when
 * the cache stores another type; in fp32 the rows are returned in place. */
void kvcache_widen_rows(float *out, const uint16_t *rows, size_t count);
static inline const float *kvcache_key_rows(const KVCache *c, const KVHead *h, int first, int n, float *scratch) {
    size_t at = (size_t)first * c->head_dim;
    if (c->kv_dtype == DTYPE_F32) return h->keys + at;
    kvcache_widen_rows(scratch, h->keys_bf16 + at, (size_t)n * c->head_dim);
    return scratch;
}
static inline const float *kvcache_value_rows(const KVCache *c, const KVHead *h, int first, int n, float *scratch) {
    size_t at = (size_t)first * c->head_dim;
    if (c->kv_dtype == DTYPE_F32) return h->values + at;
    kvcache_widen_rows(scratch, h->values_bf16 + at, (size_t)n * c->head_dim);
    return scratch;
}

/* Make room for `extra` more slots in every head of `layer` (grows the arrays).
 * Returns -1 if a head would exceed max_tokens. */
int kvcache_reserve(KVCache *c, int layer, int extra, Err *err);

/* Append n tokens to every KV head of `layer`: token t, head g takes the key
 * keys[(t * n_kv_heads + g) * head_dim ..] and the value at the same place in
 * values (the forward pass's [n, KV, head_dim] rows), the position
 * next_pos + t, and in every side column its fill value. The heads' lengths grow by n at once; next_pos is the
 * caller's to advance once every layer has the block (forward() does).
 * Returns -1 (and appends nothing) if a head would exceed max_tokens. */
int kvcache_append(KVCache *c, int layer, const float *keys, const float *values, int n, Err *err);

/* Keep only the slots listed in keep[0..n_keep) (strictly ascending slot
 * indices) of one head, compacting them (keys, values, positions and side
 * columns) to the front in that order (runs of consecutive kept slots move
 * with one memmove); releases memory when the head becomes much smaller than
 * its allocation. */
void kvcache_keep(KVCache *c, int layer, int kv_head, const int *keep, int n_keep);
/* The same, given the n slots to remove instead (strictly ascending): cheaper
 * when a decode step evicts a few tokens of a long head. */
void kvcache_evict(KVCache *c, int layer, int kv_head, const int *slots, int n);

/* Bytes of keys+values+positions allocated / in use, over all heads (side
 * columns are bookkeeping of whoever registered them, not KV memory); per slot
 * 2 * head_dim * (4 in fp32, 2 in bf16) + 4 bytes of position. */
size_t kvcache_bytes_allocated(const KVCache *c);
size_t kvcache_bytes_used(const KVCache *c);
/* Slots in use over all heads (bytes_used / bytes per slot). */
long   kvcache_slots_used(const KVCache *c);
size_t kvcache_slot_bytes(const KVCache *c);

#endif
