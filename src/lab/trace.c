/* trace.c — see trace.h. The tracer is an AttentionObserver that copies the
 * selected rows into one NaN-filled array sized up front (so memory is bounded
 * and known before the run starts), plus the key/value norms read from the
 * cache after every forward(). */
#include "lab/trace.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "simd/kernels.h"
#include "formats/npy.h"
#include "engine/numcheck.h"
#include "engine/ops.h"
#include "policy/policy.h"
#include "engine/sampler.h"
#include "lab/runmeta.h"

/* ---- the plan ------------------------------------------------------------------- */

int trace_plan_queries(const TracePlan *p, int *pos) {
    int first = (p->steps & TRACE_PREFILL) ? 0 : p->n_prompt;
    int end = (p->steps & TRACE_DECODE) ? p->n_prompt + p->n_gen : p->n_prompt;
    int every = p->every > 0 ? p->every : 1, q = 0;
    for (int x = first; x < end; x++)
        if ((end - 1 - x) % every == 0) {      /* counted back from the last candidate */
            if (pos) pos[q] = x;
            q++;
        }
    return q;
}

size_t trace_plan_bytes(const TracePlan *p, const Config *cfg) {
    size_t S = (size_t)p->n_seqs, P = (size_t)p->n_prompt + p->n_gen, Q = (size_t)trace_plan_queries(p, NULL);
    size_t attn = S * p->n_layers * p->n_heads * Q * P;
    size_t norms = 2 * S * p->n_layers * cfg->n_kv_heads * P;
    size_t bytes = (attn + norms + S * P) * sizeof(float);
    if (p->with_policy)   /* score, evicted_at, kv_bytes */
        bytes += (S * p->n_layers * cfg->n_kv_heads * (Q + 1) * P) * sizeof(float) + S * Q * 2 * sizeof(int64_t);
    return bytes;
}

/* ---- the tracer ----------------------------------------------------------------- */

struct Tracer {
    TracePlan plan;
    int *layers, *heads;          /* copies of the plan's lists */
    int L, H, KV, hd, group, vocab;
    int P, Q;
    int *layer_sel, *head_sel;    /* [L], [H]: index in the selection, or -1 */
    int *query_row;               /* [P]: row of the query at that position, or -1 */
    int *query_pos;               /* [Q] */
    float *attn, *key_norm, *value_norm;
    int *ids;                     /* [S, P] */
    /* with_policy: what the policy saw and did (trace.h) */
    float *score;                 /* [S, NL, KV, Q, P] */
    int *evicted_at;              /* [S, NL, KV, P] */
    int64_t *kv_bytes;            /* [S, Q, 2] */
    unsigned char *cached;        /* [NL, KV, P] the token is in the cache (this sequence) */
    float *head_scores;           /* [P] one head's scores, by slot */
    int seq;                      /* the sequence being run */
    Policy *policy;               /* evicts from the traced cache (NULL: none) */
    NumGuard *guard;              /* checks each forward's logits (NULL: none) */
};

void tracer_set_policy(Tracer *t, Policy *p) { t->policy = p; }
void tracer_set_guard(Tracer *t, NumGuard *g) { t->guard = g; }

static int check_selection(const char *what, const int *v, int n, int limit, Err *err) {
    if (n <= 0) return err_set(err, "trace: no %s selected", what);
    for (int i = 0; i < n; i++) {
        if (v[i] < 0 || v[i] >= limit)
            return err_set(err, "--%s: %d is out of range (the model has %d: 0..%d)", what, v[i], limit, limit - 1);
        if (i > 0 && v[i] <= v[i - 1])
            return err_set(err, "--%s: the list must be ascending without repeats (%d after %d)", what, v[i], v[i - 1]);
    }
    return 0;
}

static int *index_of(const int *sel, int n_sel, int n_all) {
    int *idx = xmalloc((size_t)n_all * sizeof(int));
    for (int i = 0; i < n_all; i++) idx[i] = -1;
    for (int i = 0; i < n_sel; i++) idx[sel[i]] = i;
    return idx;
}

static float *nan_array(size_t n) {
    float *a = malloc(n * sizeof(float) + 1);
    if (a) for (size_t i = 0; i < n; i++) a[i] = NAN;
    return a;
}

Tracer *tracer_create(const Config *cfg, const TracePlan *plan, size_t max_bytes, Err *err) {
    if (check_selection("layers", plan->layers, plan->n_layers, cfg->n_layers, err) ||
        check_selection("heads", plan->heads, plan->n_heads, cfg->n_heads, err))
        return NULL;
    if (plan->n_prompt < 1 || plan->n_gen < 0 || plan->n_seqs < 1) {
        err_set(err, "trace: empty plan (%d prompt tokens, %d decode steps, %d sequences)",
                plan->n_prompt, plan->n_gen, plan->n_seqs);
        return NULL;
    }
    int Q = trace_plan_queries(plan, NULL);
    if (Q == 0) {
        err_set(err, "--steps: no query selected (%s rows requested, --gen %d)",
                plan->steps == TRACE_DECODE ? "decode" : "prefill", plan->n_gen);
        return NULL;
    }
    size_t need = trace_plan_bytes(plan, cfg);
    if (need > max_bytes) {
        char a[32], b[32];
        err_set(err, "--max-bytes: this selection needs %zu bytes (%s) of trace memory, more than the limit %zu (%s): "
                "select fewer --layers/--heads/--steps, a larger --every, or raise --max-bytes",
                need, format_bytes((double)need, a, sizeof a), max_bytes, format_bytes((double)max_bytes, b, sizeof b));
        return NULL;
    }
    Tracer *t = xcalloc(1, sizeof *t);
    t->plan = *plan;
    t->L = cfg->n_layers; t->H = cfg->n_heads; t->KV = cfg->n_kv_heads; t->hd = cfg->head_dim;
    t->group = cfg->n_heads / cfg->n_kv_heads; t->vocab = cfg->vocab_size;
    t->P = plan->n_prompt + plan->n_gen;
    t->Q = Q;
    t->layers = xmalloc((size_t)plan->n_layers * sizeof(int));
    memcpy(t->layers, plan->layers, (size_t)plan->n_layers * sizeof(int));
    t->heads = xmalloc((size_t)plan->n_heads * sizeof(int));
    memcpy(t->heads, plan->heads, (size_t)plan->n_heads * sizeof(int));
    t->plan.layers = t->layers;
    t->plan.heads = t->heads;
    t->layer_sel = index_of(t->layers, plan->n_layers, t->L);
    t->head_sel = index_of(t->heads, plan->n_heads, t->H);
    t->query_pos = xmalloc((size_t)Q * sizeof(int));
    trace_plan_queries(plan, t->query_pos);
    t->query_row = index_of(t->query_pos, Q, t->P);
    size_t S = (size_t)plan->n_seqs, NL = (size_t)plan->n_layers, NH = (size_t)plan->n_heads;
    t->attn = nan_array(S * NL * NH * Q * t->P);
    t->key_norm = nan_array(S * NL * t->KV * t->P);
    t->value_norm = nan_array(S * NL * t->KV * t->P);
    t->ids = xcalloc(S * t->P, sizeof(int));
    int policy_ok = 1;
    if (plan->with_policy) {
        size_t heads = NL * t->KV;
        t->score = nan_array(S * heads * Q * t->P);
        t->evicted_at = malloc(S * heads * t->P * sizeof(int) + 1);
        if (t->evicted_at) for (size_t i = 0; i < S * heads * t->P; i++) t->evicted_at[i] = -1;
        t->kv_bytes = xcalloc(S * Q * 2, sizeof(int64_t));
        t->cached = xcalloc(heads * t->P, 1);
        t->head_scores = xmalloc((size_t)t->P * sizeof(float));
        policy_ok = t->score && t->evicted_at;
    }
    if (!t->attn || !t->key_norm || !t->value_norm || !policy_ok) {
        tracer_free(t);
        err_set(err, "trace: out of memory for %zu bytes of trace", need);
        return NULL;
    }
    return t;
}

void tracer_free(Tracer *t) {
    if (!t) return;
    free(t->layers); free(t->heads); free(t->layer_sel); free(t->head_sel);
    free(t->query_row); free(t->query_pos);
    free(t->attn); free(t->key_norm); free(t->value_norm); free(t->ids);
    free(t->score); free(t->evicted_at); free(t->kv_bytes); free(t->cached); free(t->head_scores);
    free(t);
}

/* The observer (several threads at once, each its own (layer, head, query):
 * they write disjoint rows of t->attn). Slot j holds the token at ORIGINAL
 * position key_pos[j]: the row is stored by position, so a trace lines up
 * with the sequence even when a policy has compacted the cache. */
static void tracer_observe(void *ctx, int layer, int head, int query_pos,
                           const float *probs, const int *key_pos, int n_keys) {
    Tracer *t = ctx;
    if (query_pos >= t->P) return;
    int li = t->layer_sel[layer], hi = t->head_sel[head], q = t->query_row[query_pos];
    if (li < 0 || hi < 0 || q < 0) return;
    size_t row = (((size_t)t->seq * t->plan.n_layers + li) * t->plan.n_heads + hi) * t->Q + q;
    float *out = t->attn + row * t->P;
    for (int j = 0; j < n_keys; j++)
        if (key_pos[j] >= 0 && key_pos[j] < t->P) out[key_pos[j]] = probs[j];
}

/* sqrt(Σ x²), as the l2 policy and the golden test take it (here of the
 * cached key: after RoPE with `true` positions; the policy's is before). */
static float l2_norm(const float *x, int n) {
    return sqrtf(kernels_get()->sum_squares(x, n));
}

/* ‖k‖ and ‖v‖ of every cached token of the selected layers not measured yet
 * (read after each forward(), so tokens a policy evicts later are measured too). */
static void record_norms(Tracer *t, const KVCache *cache) {
    float *rows = xmalloc(2 * (size_t)t->hd * sizeof(float));    /* a bf16 cache's row, widened */
    for (int li = 0; li < t->plan.n_layers; li++)
        for (int g = 0; g < t->KV; g++) {
            const KVHead *kv = kvcache_head(cache, t->layers[li], g);
            size_t base = (((size_t)t->seq * t->plan.n_layers + li) * t->KV + g) * t->P;
            for (int slot = 0; slot < kv->len; slot++) {
                int p = kv->pos[slot];
                if (p < 0 || p >= t->P || !isnan(t->key_norm[base + p])) continue;
                t->key_norm[base + p] = l2_norm(kvcache_key_rows(cache, kv, slot, 1, rows), t->hd);
                t->value_norm[base + p] = l2_norm(kvcache_value_rows(cache, kv, slot, 1, rows + t->hd), t->hd);
            }
        }
    free(rows);
}

/* with_policy, after forward() and before the policy's eviction: the bytes
 * in use, the new tokens marked cached and, when the forward's last token is a
 * recorded query, the score the policy is about to rank each cached token by. */
static void record_policy_view(Tracer *t, const KVCache *cache, int last_pos) {
    int q = last_pos < t->P ? t->query_row[last_pos] : -1;
    size_t S = (size_t)t->seq, NL = (size_t)t->plan.n_layers;
    if (q >= 0) t->kv_bytes[(S * t->Q + q) * 2] = (int64_t)kvcache_bytes_used(cache);
    for (int li = 0; li < t->plan.n_layers; li++)
        for (int g = 0; g < t->KV; g++) {
            const KVHead *kv = kvcache_head(cache, t->layers[li], g);
            unsigned char *cached = t->cached + ((size_t)li * t->KV + g) * t->P;
            for (int slot = 0; slot < kv->len; slot++)
                if (kv->pos[slot] >= 0 && kv->pos[slot] < t->P) cached[kv->pos[slot]] = 1;
            if (q < 0 || policy_head_scores(t->policy, cache, t->layers[li], g, t->head_scores) != 0) continue;
            float *row = t->score + (((S * NL + li) * t->KV + g) * t->Q + q) * t->P;
            for (int slot = 0; slot < kv->len; slot++)
                if (kv->pos[slot] >= 0 && kv->pos[slot] < t->P) row[kv->pos[slot]] = t->head_scores[slot];
        }
}

/* with_policy, after the eviction: tokens cached before and gone now were
 * evicted after the forward whose last token sits at last_pos. */
static void record_evictions(Tracer *t, const KVCache *cache, int last_pos) {
    int q = last_pos < t->P ? t->query_row[last_pos] : -1;
    size_t S = (size_t)t->seq, NL = (size_t)t->plan.n_layers;
    if (q >= 0) t->kv_bytes[(S * t->Q + q) * 2 + 1] = (int64_t)kvcache_bytes_used(cache);
    for (int li = 0; li < t->plan.n_layers; li++)
        for (int g = 0; g < t->KV; g++) {
            const KVHead *kv = kvcache_head(cache, t->layers[li], g);
            unsigned char *cached = t->cached + ((size_t)li * t->KV + g) * t->P;
            int *evicted_at = t->evicted_at + ((S * NL + li) * t->KV + g) * t->P;
            for (int slot = 0; slot < kv->len; slot++)       /* 2 = still cached */
                if (kv->pos[slot] >= 0 && kv->pos[slot] < t->P) cached[kv->pos[slot]] = 2;
            for (int p = 0; p < t->P; p++) {
                if (cached[p] == 1) { evicted_at[p] = last_pos; cached[p] = 0; }
                else if (cached[p] == 2) cached[p] = 1;
            }
        }
}

/* One forward(), between the policy's two halves when there is one, so the
 * norms of this forward's tokens are recorded before the policy may evict
 * them. Our observer is added only when one of these positions is a recorded
 * query, the policy's only when it scores by attention (the engine's
 * observer-free attention path is faster). */
static int traced_forward(Tracer *t, Forward *f, KVCache *cache, const int *ids, int n,
                          const StepHook *hook, Err *err) {
    int p0 = cache->next_pos, wanted = 0;
    for (int p = p0; p < p0 + n && p < t->P && !wanted; p++) wanted = t->query_row[p] >= 0;
    AttentionObserver mine = { t, tracer_observe }, policy_obs;
    int policy_sees = policy_observer(t->policy, &policy_obs);
    if (policy_before_forward(t->policy, cache, n, err) != 0) return -1;
    if (wanted) forward_add_observer(f, &mine);
    if (policy_sees) forward_add_observer(f, &policy_obs);
    int rc = forward(f, cache, ids, n, NULL, err);
    forward_remove_observer(f, &mine);
    forward_remove_observer(f, &policy_obs);
    if (rc != 0) return -1;
    if (t->guard && numguard_check(t->guard, forward_last_logits(f), 1, err) != 0) return -1;
    record_norms(t, cache);
    int view = t->policy && t->plan.with_policy;
    if (view) record_policy_view(t, cache, p0 + n - 1);
    if (policy_after_forward(t->policy, cache, p0, err) != 0) return -1;
    if (view) record_evictions(t, cache, p0 + n - 1);
    if (hook && hook->step) hook->step(hook->ctx, n);
    return 0;
}

int tracer_run(Tracer *t, Forward *f, KVCache *cache, const int *prompt, int seq_index,
               const StepHook *hook, Err *err) {
    if (seq_index < 0 || seq_index >= t->plan.n_seqs)
        return err_set(err, "trace: sequence %d outside the plan's %d", seq_index, t->plan.n_seqs);
    int n = t->plan.n_prompt, *ids = t->ids + (size_t)seq_index * t->P;
    memcpy(ids, prompt, (size_t)n * sizeof(int));
    t->seq = seq_index;
    kvcache_reset(cache);
    if (t->cached) memset(t->cached, 0, (size_t)t->plan.n_layers * t->KV * t->P);
    int rc = traced_forward(t, f, cache, ids, n, hook, err);
    for (int s = 0; rc == 0 && s < t->plan.n_gen; s++) {
        ids[n + s] = argmax(forward_last_logits(f), t->vocab);    /* greedy */
        rc = traced_forward(t, f, cache, &ids[n + s], 1, hook, err);
    }
    return rc;
}

static int write_policy_view(const Tracer *t, NpzWriter *w, Err *err) {
    const TracePlan *p = &t->plan;
    int64_t S = p->n_seqs, NL = p->n_layers, Q = t->Q, P = t->P, KV = t->KV;
    int64_t score_shape[5] = { S, NL, KV, Q, P }, evicted_shape[4] = { S, NL, KV, P }, bytes_shape[3] = { S, Q, 2 };
    return npz_add(w, "score", NPY_F32, 5, score_shape, t->score, err) != 0 ||
           npz_add(w, "evicted_at", NPY_I32, 4, evicted_shape, t->evicted_at, err) != 0 ||
           npz_add(w, "kv_bytes", NPY_I64, 3, bytes_shape, t->kv_bytes, err) != 0 ? -1 : 0;
}

int tracer_write_npz(const Tracer *t, const char *path, Err *err) {
    const TracePlan *p = &t->plan;
    int64_t S = p->n_seqs, NL = p->n_layers, NH = p->n_heads, Q = t->Q, P = t->P, KV = t->KV;
    int64_t attn_shape[5] = { S, NL, NH, Q, P }, norm_shape[4] = { S, NL, KV, P }, ids_shape[2] = { S, P };
    int *key_pos = xmalloc((size_t)P * sizeof(int)), *kv_head = xmalloc((size_t)NH * sizeof(int));
    for (int i = 0; i < P; i++) key_pos[i] = i;
    for (int i = 0; i < NH; i++) kv_head[i] = t->heads[i] / t->group;
    int n_prompt = p->n_prompt, rc = -1;
    NpzWriter *w = npz_open(path, err);
    if (w && npz_add(w, "attn", NPY_F32, 5, attn_shape, t->attn, err) == 0 &&
        npz_add(w, "key_norm", NPY_F32, 4, norm_shape, t->key_norm, err) == 0 &&
        npz_add(w, "value_norm", NPY_F32, 4, norm_shape, t->value_norm, err) == 0 &&
        npz_add(w, "query_pos", NPY_I32, 1, &Q, t->query_pos, err) == 0 &&
        npz_add(w, "key_pos", NPY_I32, 1, &P, key_pos, err) == 0 &&
        npz_add(w, "layers", NPY_I32, 1, &NL, t->layers, err) == 0 &&
        npz_add(w, "heads", NPY_I32, 1, &NH, t->heads, err) == 0 &&
        npz_add(w, "kv_head", NPY_I32, 1, &NH, kv_head, err) == 0 &&
        npz_add(w, "ids", NPY_I32, 2, ids_shape, t->ids, err) == 0 &&
        npz_add(w, "n_prompt", NPY_I32, 0, NULL, &n_prompt, err) == 0 &&
        (!p->with_policy || write_policy_view(t, w, err) == 0))
        rc = npz_close(w, err);
    else if (w)
        npz_abort(w);
    free(key_pos); free(kv_head);
    return rc;
}
