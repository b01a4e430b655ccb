/* forward.c — the Llama-2 forward pass (see forward.h for the math). Reads top
 * to bottom like the model: embed, then per layer attention and FFN blocks,
 * then the classifier. All heavy arithmetic goes through ops.h / kernels.h. */
#include "engine/forward.h"

#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/ops.h"

struct Forward {
    const Model *m;
    int max_batch;
    /* activations for a block of up to max_batch tokens */
    float *x;        /* [B, dim]    the residual stream */
    float *xb;       /* [B, dim]    normalised input of a block / block output */
    float *q;        /* [B, H*hd] */
    float *k;        /* [B, KV*hd] */
    float *v;        /* [B, KV*hd] */
    float *att;      /* [B, H*hd]   attention output, all heads */
    float *hb;       /* [B, hidden] gate, then silu(gate)*up */
    float *hb2;      /* [B, hidden] up */
    float *rope_cos; /* [B, hd/2] */
    float *rope_sin; /* [B, hd/2] */
    float *inv_freq; /* [hd/2]     theta^(-2i/hd) */
    float *logits_last;   /* [vocab] */
    /* attention scores, one row per thread */
    float *scores;
    int scores_cap, scores_threads;
    /* positions `shifted` (../shared/spec/methods.md §0): cos/sin of every position 0..pos_cap-1
     * [pos_cap, hd/2], and the keys of the current layer rotated to their slot
     * index [KV, krot_cap, hd] */
    float *pos_cos, *pos_sin;
    int pos_cap;
    float *krot;
    int krot_cap;
    AttentionObserver observers[FORWARD_MAX_OBSERVERS];
    int n_observers;
    AttentionPath attention;  /* exact or fused when no observer is attached (forward.h) */
    LayerHook layer_hook;     /* numerical guard (numcheck.h); NULL: none */
    void *layer_hook_ctx;
    AttentionOutputHook output_hook;   /* sees att before Wo; NULL: none */
    void *output_hook_ctx;
};

static float *alloc_floats(size_t n) {
    float *p = aligned_alloc64(n * sizeof(float));
    if (!p) die("out of memory allocating %zu floats for activations", n);
    memset(p, 0, n * sizeof(float));
    return p;
}

/* What forward_cache_init and forward_create give a new cache / forward
 * (forward_set_defaults: the command line's --kv-dtype and --attention). */
static DType default_kv_dtype = DTYPE_F32;
static AttentionPath default_attention = ATTENTION_EXACT;

void forward_set_defaults(DType kv_dtype, AttentionPath attention) {
    default_kv_dtype = kv_dtype;
    default_attention = attention;
}

void forward_defaults(DType *kv_dtype, AttentionPath *attention) {
    *kv_dtype = default_kv_dtype;
    *attention = default_attention;
}

const char *attention_path_name(AttentionPath a) { return a == ATTENTION_FUSED ? "fused" : "exact"; }

int attention_path_parse(const char *s, AttentionPath *out) {
    if (!strcmp(s, "exact")) *out = ATTENTION_EXACT;
    else if (!strcmp(s, "fused")) *out = ATTENTION_FUSED;
    else return -1;
    return 0;
}

void forward_set_attention(Forward *f, AttentionPath attention) { f->attention = attention; }

Forward *forward_create(const Model *m, int max_batch) {
    const Config *c = &m->cfg;
    Forward *f = xcalloc(1, sizeof *f);
    f->m = m;
    f->max_batch = max_batch > 0 ? max_batch : 1;
    size_t B = (size_t)f->max_batch;
    size_t q_dim = (size_t)c->n_heads * c->head_dim, kv_dim = (size_t)c->n_kv_heads * c->head_dim;
    f->x = alloc_floats(B * c->dim);
    f->xb = alloc_floats(B * c->dim);
    f->q = alloc_floats(B * q_dim);
    f->k = alloc_floats(B * kv_dim);
    f->v = alloc_floats(B * kv_dim);
    f->att = alloc_floats(B * q_dim);
    f->hb = alloc_floats(B * c->hidden_dim);
    f->hb2 = alloc_floats(B * c->hidden_dim);
    f->rope_cos = alloc_floats(B * (c->head_dim / 2));
    f->rope_sin = alloc_floats(B * (c->head_dim / 2));
    f->inv_freq = alloc_floats((size_t)c->head_dim / 2);
    /* As Hugging Face computes it, in fp32: inv_freq[i] = 1 / theta^(2i/hd). */
    for (int i = 0; i < c->head_dim / 2; i++)
        f->inv_freq[i] = 1.0f / powf(c->rope_theta, (float)(2 * i) / (float)c->head_dim);
    f->logits_last = alloc_floats((size_t)c->vocab_size);
    f->attention = default_attention;
    return f;
}

void forward_free(Forward *f) {
    if (!f) return;
    free(f->x); free(f->xb); free(f->q); free(f->k); free(f->v); free(f->att);
    free(f->hb); free(f->hb2); free(f->rope_cos); free(f->rope_sin); free(f->inv_freq);
    free(f->logits_last); free(f->scores);
    free(f->pos_cos); free(f->pos_sin); free(f->krot);
    free(f);
}

int forward_cache_init(const Model *m, KVCache *cache, int max_tokens, Err *err) {
    const Config *c = &m->cfg;
    if (kvcache_init(cache, c->n_layers, c->n_kv_heads, c->head_dim, max_tokens, err) != 0) return -1;
    return kvcache_set_dtype(cache, default_kv_dtype, err);
}

void forward_add_observer(Forward *f, const AttentionObserver *obs) {
    if (f->n_observers == FORWARD_MAX_OBSERVERS) {
        fprintf(stderr, "kvlab: bug: more than %d attention observers\n", FORWARD_MAX_OBSERVERS);
        abort();
    }
    f->observers[f->n_observers++] = *obs;
}

void forward_remove_observer(Forward *f, const AttentionObserver *obs) {
    for (int i = 0; i < f->n_observers; i++)
        if (f->observers[i].ctx == obs->ctx && f->observers[i].attention == obs->attention) {
            memmove(&f->observers[i], &f->observers[i + 1], (size_t)(f->n_observers - i - 1) * sizeof *obs);
            f->n_observers--;
            return;
        }
}

const float *forward_last_logits(const Forward *f) { return f->logits_last; }

void forward_set_layer_hook(Forward *f, LayerHook fn, void *ctx) {
    f->layer_hook = fn;
    f->layer_hook_ctx = ctx;
}

void forward_set_output_hook(Forward *f, AttentionOutputHook fn, void *ctx) {
    f->output_hook = fn;
    f->output_hook_ctx = ctx;
}

/* ---- the pieces of a layer ---------------------------------------------- */

static void embed(Forward *f, const int *tokens, int n) {
    const Config *c = &f->m->cfg;
    const Mat *E = &f->m->w.token_embedding;
    for (int t = 0; t < n; t++) {
        float *out = f->x + (size_t)t * c->dim;
        size_t row = mat_offset(E, tokens[t], 0);   /* row-major: the embedding is never in panels */
        if (E->dtype == DTYPE_F32) memcpy(out, (const float *)E->data + row, (size_t)c->dim * sizeof(float));
        else for (int i = 0; i < c->dim; i++) out[i] = bf16_to_f32(((const uint16_t *)E->data)[row + i]);
    }
}

static void rmsnorm_rows(float *out, const float *x, const float *weight, int n, int dim, float eps) {
    const Kernels *k = kernels_get();
    #pragma omp parallel for schedule(static) if (n > 8)
    for (int t = 0; t < n; t++) k->rmsnorm(out + (size_t)t * dim, x + (size_t)t * dim, weight, dim, eps);
}

static void add_rows(float *x, const float *y, size_t count) {
    for (size_t i = 0; i < count; i++) x[i] += y[i];
}

/* hb = silu(hb) * hb2, row by row.   hb, hb2: [n, hidden] */
static void silu_mul_rows(Forward *f, int n) {
    const Kernels *k = kernels_get();
    int hidden = f->m->cfg.hidden_dim;
    #pragma omp parallel for schedule(static) if (n > 8)
    for (int t = 0; t < n; t++) k->silu_mul(f->hb + (size_t)t * hidden, f->hb2 + (size_t)t * hidden, hidden);
}

/* ---- positions (../shared/spec/methods.md §0): true, or shifted ----------- */

/* cos/sin of pos * inv_freq[i], i < hd/2. The angle is formed in fp32 as
 * Hugging Face does, then cos/sin are taken in double. */
static void rope_row(const Forward *f, int pos, float *cos_out, float *sin_out) {
    for (int i = 0; i < f->m->cfg.head_dim / 2; i++) {
        float angle = (float)pos * f->inv_freq[i];
        cos_out[i] = (float)cos((double)angle);
        sin_out[i] = (float)sin((double)angle);
    }
}

/* The angles of each token of the block (positions pos0..pos0+n-1). */
static void rope_angles(Forward *f, int pos0, int n) {
    int half = f->m->cfg.head_dim / 2;
    for (int t = 0; t < n; t++)
        rope_row(f, pos0 + t, f->rope_cos + (size_t)t * half, f->rope_sin + (size_t)t * half);
}

/* Positions `shifted` re-rotates cached keys to their slot index at every step:
 * a table of every position's angles [n_pos, hd/2] (the same numbers
 * rope_row gives, so both modes agree bit for bit while nothing is evicted). */
static void ensure_pos_table(Forward *f, int n_pos) {
    if (n_pos <= f->pos_cap) return;
    int half = f->m->cfg.head_dim / 2, cap = f->pos_cap ? f->pos_cap : 256;
    while (cap < n_pos) cap *= 2;
    float *c = alloc_floats((size_t)cap * half), *sn = alloc_floats((size_t)cap * half);
    for (int p = 0; p < cap; p++) rope_row(f, p, c + (size_t)p * half, sn + (size_t)p * half);
    free(f->pos_cos); free(f->pos_sin);
    f->pos_cos = c; f->pos_sin = sn; f->pos_cap = cap;
}

static void ensure_krot(Forward *f, int n_slots) {
    if (n_slots <= f->krot_cap) return;
    int cap = f->krot_cap ? f->krot_cap : 256;
    while (cap < n_slots) cap *= 2;
    free(f->krot);
    f->krot = alloc_floats((size_t)f->m->cfg.n_kv_heads * cap * f->m->cfg.head_dim);
    f->krot_cap = cap;
}

/* Positions `shifted`: rotate the query of token t of the n-token block, head
 * h, to position len_g + t, where len_g is the length of its KV head before
 * the block: the query sits right after the cache, whatever was evicted. */
static void rope_queries_shifted(Forward *f, const KVCache *cache, int layer, int n, int t) {
    const Config *c = &f->m->cfg;
    const Kernels *k = kernels_get();
    int half = c->head_dim / 2, group = c->n_heads / c->n_kv_heads;
    for (int h = 0; h < c->n_heads; h++) {
        size_t p = (size_t)kvcache_head(cache, layer, h / group)->len - n + t;
        k->rope(f->q + ((size_t)t * c->n_heads + h) * c->head_dim, 1, c->head_dim,
                f->pos_cos + p * half, f->pos_sin + p * half, c->rope_pairing_halves);
    }
}

/* RoPE for the block's queries (q: [n, H*hd]) and its keys, which an fp32
 * cache already holds as they came out of Wk (its last n slots per KV head): so
 * anything the cache derives from a key on append — a cached norm — sees the
 * key before RoPE, and two equal keys at different positions stay equal there.
 * Positions `true`: token t at its position next_pos + t (rope_angles), the
 * cached keys rotated in place. `shifted`: only the queries, to the slot after
 * their KV head's cache; the keys stay as they are, rotated to their slot
 * index when attended (rotate_cached_keys). A bf16 cache rounds each key once,
 * after its RoPE: rope_new_keys rotates the block's keys before they are
 * appended, so rope_block leaves them alone. */
static void rope_block(Forward *f, KVCache *cache, int layer, int n) {
    const Config *c = &f->m->cfg;
    const Kernels *k = kernels_get();
    int hd = c->head_dim, q_dim = c->n_heads * hd;
    for (int t = 0; t < n; t++) {
        if (cache->shifted) {
            rope_queries_shifted(f, cache, layer, n, t);
            continue;
        }
        const float *cs = f->rope_cos + (size_t)t * (hd / 2), *sn = f->rope_sin + (size_t)t * (hd / 2);
        k->rope(f->q + (size_t)t * q_dim, c->n_heads, hd, cs, sn, c->rope_pairing_halves);
        if (cache->kv_dtype != DTYPE_F32) continue;
        for (int g = 0; g < c->n_kv_heads; g++) {
            KVHead *kv = kvcache_head(cache, layer, g);
            k->rope(kv->keys + (size_t)(kv->len - n + t) * hd, 1, hd, cs, sn, c->rope_pairing_halves);
        }
    }
}

/* A bf16 cache with positions `true`: the block's keys (f->k [n, KV*hd]) at
 * their positions, before kvcache_append rounds them. */
static void rope_new_keys(Forward *f, const KVCache *cache, int n) {
    const Config *c = &f->m->cfg;
    if (cache->kv_dtype == DTYPE_F32 || cache->shifted) return;
    int hd = c->head_dim;
    for (int t = 0; t < n; t++)
        kernels_get()->rope(f->k + (size_t)t * c->n_kv_heads * hd, c->n_kv_heads, hd, f->rope_cos + (size_t)t * (hd / 2),
                            f->rope_sin + (size_t)t * (hd / 2), c->rope_pairing_halves);
}

/* Positions `shifted`: krot[g] = the pre-RoPE keys of KV head g (the block's
 * included), slot i rotated to position i.   krot: [KV, krot_cap, hd] */
static void rotate_cached_keys(Forward *f, const KVCache *cache, int layer) {
    const Config *c = &f->m->cfg;
    const Kernels *k = kernels_get();
    int hd = c->head_dim, half = hd / 2;
    for (int g = 0; g < c->n_kv_heads; g++) {
        const KVHead *kv = kvcache_head(cache, layer, g);
        float *dst = f->krot + (size_t)g * f->krot_cap * hd;
        int n_slots = kv->len;
        #pragma omp parallel for schedule(static) if (n_slots > 256)
        for (int i = 0; i < n_slots; i++) {
            float *row = dst + (size_t)i * hd;
            const float *key = kvcache_key_rows(cache, kv, i, 1, row);   /* bf16: widened into row */
            if (key != row) memcpy(row, key, (size_t)hd * sizeof(float));
            k->rope(row, 1, hd, f->pos_cos + (size_t)i * half, f->pos_sin + (size_t)i * half, c->rope_pairing_halves);
        }
    }
}

/* The keys KV head g is attended with: as cached (fp32 or bf16), or (shifted)
 * rotated to their slot indices by rotate_cached_keys (fp32).   [len, hd] */
typedef struct { const void *keys, *values; int keys_bf16, values_bf16; } AttendedRows;

static AttendedRows attended_rows(const Forward *f, const KVCache *cache, int layer, int g) {
    const KVHead *kv = kvcache_head(cache, layer, g);
    int bf16 = cache->kv_dtype == DTYPE_BF16;
    AttendedRows r = { bf16 ? (const void *)kv->keys_bf16 : kv->keys, bf16 ? (const void *)kv->values_bf16 : kv->values,
                       bf16, bf16 };
    if (cache->shifted) {
        r.keys = f->krot + (size_t)g * f->krot_cap * f->m->cfg.head_dim;
        r.keys_bf16 = 0;
    }
    return r;
}

/* ---- attention -------------------------------------------------------------- */

/* One attention row: query t of the n-token block, head h, over the n_keys
 * slots it may see; writes the head's output into f->att. */
static void attend_row(Forward *f, const KVCache *cache, int layer, int n, int t, int h) {
    const Config *c = &f->m->cfg;
    const Kernels *k = kernels_get();
    int H = c->n_heads, hd = c->head_dim, g = h / (c->n_heads / c->n_kv_heads);
    const KVHead *kv = kvcache_head(cache, layer, g);
    AttendedRows rows = attended_rows(f, cache, layer, g);
    int n_keys = kv->len - n + t + 1;    /* the block is cached: its later tokens are masked */
    float *scores = f->scores + (size_t)omp_get_thread_num() * f->scores_cap;
    const float *q = f->q + ((size_t)t * H + h) * hd;
    float scale = 1.0f / sqrtf((float)hd);
    if (rows.keys_bf16) k->attn_scores_bf16(scores, q, rows.keys, n_keys, hd, scale);
    else k->attn_scores(scores, q, rows.keys, n_keys, hd, scale);
    k->softmax(scores, n_keys);
    for (int i = 0; i < f->n_observers; i++)
        f->observers[i].attention(f->observers[i].ctx, layer, h, cache->next_pos + t, scores, kv->pos, n_keys);
    float *out = f->att + ((size_t)t * H + h) * hd;
    if (rows.values_bf16) k->attn_values_bf16(out, scores, rows.values, n_keys, hd);
    else k->attn_values(out, scores, rows.values, n_keys, hd);
}

/* Queries [t0, t0 + n_q) of the block, head h, in one pass over the keys
 * (attn_fused, simd/kernels.h): no probability row is ever stored. */
static void attend_tile(Forward *f, const KVCache *cache, int layer, int n, int t0, int n_q, int h) {
    const Config *c = &f->m->cfg;
    int H = c->n_heads, hd = c->head_dim, g = h / (c->n_heads / c->n_kv_heads);
    const KVHead *kv = kvcache_head(cache, layer, g);
    AttendedRows rows = attended_rows(f, cache, layer, g);
    long ld = (long)H * hd;
    attn_fused(kernels_get(), f->att + ((size_t)t0 * H + h) * hd, ld, f->q + ((size_t)t0 * H + h) * hd, ld, n_q,
               rows.keys, rows.keys_bf16, rows.values, rows.values_bf16, kv->len - n + t0 + n_q, hd,
               1.0f / sqrtf((float)hd), f->scores + (size_t)omp_get_thread_num() * f->scores_cap);
}

/* Queries per fused task: each block of keys and values is read once for this
 * many queries of a head (from the CPU's caches after the first). */
#define FUSED_QUERY_TILE 16

/* Causal attention of the block's queries over the cache, which already holds
 * the block. Query t of the block sees every slot that was cached before the
 * block plus the block's first t+1 tokens (its own key included).
 * Without an observer every (query, head) row is its own task, or with the
 * fused path every (head, tile of queries); with one, each head is one task
 * that runs its queries in order, so an observer may accumulate per head
 * without locks and always in the same order (forward.h). */
static void attention(Forward *f, const KVCache *cache, int layer, int n) {
    int H = f->m->cfg.n_heads;
    if (cache->shifted) rotate_cached_keys(f, cache, layer);
    /* A decode step (one query) takes the exact rows either way: one row of
     * scores is all the exact path stores, it reads each key and value once,
     * and it measured as fast as the fused loop or faster at 4096-8192 keys. */
    if (f->n_observers == 0 && f->attention == ATTENTION_FUSED && n > 1) {
        int tiles = (n + FUSED_QUERY_TILE - 1) / FUSED_QUERY_TILE;
        #pragma omp parallel for schedule(dynamic, 1) if (tiles * H > 1)
        for (int task = 0; task < tiles * H; task++) {
            int h = task / tiles, t0 = task % tiles * FUSED_QUERY_TILE;
            attend_tile(f, cache, layer, n, t0, n - t0 < FUSED_QUERY_TILE ? n - t0 : FUSED_QUERY_TILE, h);
        }
    } else if (f->n_observers == 0) {
        #pragma omp parallel for schedule(dynamic, 1) if (n * H > 1)
        for (int th = 0; th < n * H; th++) attend_row(f, cache, layer, n, th / H, th % H);
    } else {
        #pragma omp parallel for schedule(dynamic, 1) if (H > 1)
        for (int h = 0; h < H; h++)
            for (int t = 0; t < n; t++) attend_row(f, cache, layer, n, t, h);
    }
}

/* ---- room for a block ----------------------------------------------------------- */

static void ensure_scores(Forward *f, int n_keys) {
    int threads = omp_get_max_threads();
    long fused = attn_fused_scratch_floats(FUSED_QUERY_TILE, f->m->cfg.head_dim);   /* attend_tile's scratch */
    if (n_keys < fused) n_keys = (int)fused;
    if (n_keys <= f->scores_cap && threads <= f->scores_threads) return;
    free(f->scores);
    f->scores_cap = n_keys > f->scores_cap ? n_keys : f->scores_cap;
    f->scores_threads = threads;
    f->scores = alloc_floats((size_t)f->scores_cap * threads);
}

/* Room for n more tokens: slots in every head of the cache, and scratch for
 * the longest head's attention rows (and, shifted, its rotated keys). */
static int make_room(Forward *f, KVCache *cache, int n, Err *err) {
    const Config *c = &f->m->cfg;
    for (int l = 0; l < c->n_layers; l++)
        if (kvcache_reserve(cache, l, n, err) != 0) return -1;
    int longest = 0;
    for (int i = 0; i < c->n_layers * c->n_kv_heads; i++)
        if (cache->heads[i].len > longest) longest = cache->heads[i].len;
    ensure_scores(f, longest + n);
    if (cache->shifted) {
        ensure_pos_table(f, longest + n);
        ensure_krot(f, longest + n);
    }
    return 0;
}

/* ---- one pass over a block of at most max_batch tokens -------------------- */

/* The model, in the order of forward.h's math. Shapes are per block of n
 * tokens; H query heads and KV key/value heads of hd channels. */
static int forward_block(Forward *f, KVCache *cache, const int *tokens, int n, float *logits_all, Err *err) {
    const Model *m = f->m;
    const Config *c = &m->cfg;
    int dim = c->dim, hidden = c->hidden_dim, q_dim = c->n_heads * c->head_dim, kv_dim = c->n_kv_heads * c->head_dim;
    if (make_room(f, cache, n, err) != 0) return -1;

    embed(f, tokens, n);                                       /* x = the tokens' embedding rows      [n, dim] */
    rope_angles(f, cache->next_pos, n);                        /* cos/sin of each token's position   [n, hd/2] */

    for (int l = 0; l < c->n_layers; l++) {
        const LayerWeights *w = &m->w.layers[l];
        /* attention block */
        rmsnorm_rows(f->xb, f->x, w->attn_norm, n, dim, c->norm_eps);   /* xb = rmsnorm(x)       [n, dim] */
        const MatmulOut qkv[3] = {{f->q, q_dim, &w->wq}, {f->k, kv_dim, &w->wk}, {f->v, kv_dim, &w->wv}};
        op_matmul_many(qkv, 3, f->xb, dim, n);     /* q = xb Wq^T [n, H*hd]; k, v = xb Wk^T, xb Wv^T [n, KV*hd] */
        rope_new_keys(f, cache, n);                /* bf16 cache, positions true: k rotated before it is rounded */
        if (kvcache_append(cache, l, f->k, f->v, n, err) != 0) return -1;   /* cache <- k, v: n more slots per KV head */
        rope_block(f, cache, l, n);                                     /* rotate q and the cached k by position */
        attention(f, cache, l, n);                 /* att_h = softmax(q_h K_g^T / sqrt(hd)) V_g  [n, H*hd] */
        if (f->output_hook) f->output_hook(f->output_hook_ctx, l, cache->next_pos, f->att, n);
        op_matmul(f->xb, dim, f->att, q_dim, &w->wo, n);                /* xb = att Wo^T         [n, dim] */
        add_rows(f->x, f->xb, (size_t)n * dim);                         /* x += xb (residual) */
        /* feed-forward block (SwiGLU) */
        rmsnorm_rows(f->xb, f->x, w->ffn_norm, n, dim, c->norm_eps);    /* xb = rmsnorm(x)       [n, dim] */
        const MatmulOut gate_up[2] = {{f->hb, hidden, &w->w_gate}, {f->hb2, hidden, &w->w_up}};
        op_matmul_many(gate_up, 2, f->xb, dim, n);                      /* hb, hb2 = xb Wgate^T, xb Wup^T [n, hidden] */
        silu_mul_rows(f, n);                                            /* hb = silu(hb) * hb2   [n, hidden] */
        op_matmul(f->xb, dim, f->hb, hidden, &w->w_down, n);            /* xb = hb Wdown^T       [n, dim] */
        add_rows(f->x, f->xb, (size_t)n * dim);                         /* x += xb (residual) */
        if (f->layer_hook) f->layer_hook(f->layer_hook_ctx, l, f->x, n, dim);
    }
    cache->next_pos += n;

    /* classifier: logits = rmsnorm(x) Wcls^T, every row if asked [n, vocab], else only the last [1, vocab] */
    if (logits_all) {
        rmsnorm_rows(f->xb, f->x, m->w.final_norm, n, dim, c->norm_eps);
        op_matmul(logits_all, c->vocab_size, f->xb, dim, &m->w.classifier, n);
        memcpy(f->logits_last, logits_all + (size_t)(n - 1) * c->vocab_size, (size_t)c->vocab_size * sizeof(float));
    } else {
        kernels_get()->rmsnorm(f->xb, f->x + (size_t)(n - 1) * dim, m->w.final_norm, dim, c->norm_eps);
        op_matmul(f->logits_last, c->vocab_size, f->xb, dim, &m->w.classifier, 1);
    }
    return 0;
}

int forward(Forward *f, KVCache *cache, const int *tokens, int n, float *logits_all, Err *err) {
    const Config *c = &f->m->cfg;
    if (n <= 0) return err_set(err, "forward: no tokens to run");
    for (int i = 0; i < n; i++)
        if (tokens[i] < 0 || tokens[i] >= c->vocab_size)
            return err_set(err, "token id %d at index %d is outside the vocabulary (0..%d)", tokens[i], i, c->vocab_size - 1);
    /* refuse up front, so a failure never leaves half a sequence in the cache */
    for (int i = 0; i < c->n_layers * c->n_kv_heads; i++)
        if ((long)cache->heads[i].len + n > cache->max_tokens)
            return err_set(err, "%d tokens do not fit in the context: the cache holds %d of at most %d tokens (--ctx)",
                           n, cache->heads[i].len, cache->max_tokens);
    for (int off = 0; off < n; off += f->max_batch) {
        int nb = n - off < f->max_batch ? n - off : f->max_batch;
        float *rows = logits_all ? logits_all + (size_t)off * c->vocab_size : NULL;
        if (forward_block(f, cache, tokens + off, nb, rows, err) != 0) return -1;
    }
    return 0;
}
