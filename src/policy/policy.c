/* policy.c — the policy runtime (see policy.h): the registry, creating a
 * policy and its per-slot columns, the attention observer, the schedule, and
 * applying a selection to the cache. The knobs live in policy_opts.c, the
 * selection toolkit in policy_select.c. */
#include "policy/policy.h"

#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <omp.h>

/* ---- the registry: one X(...) line per policy ------------------------------ */

#define POLICY_LIST(X) \
    X(policy_full)     \
    X(policy_l2)       \
    X(policy_l2_high)  \
    X(policy_random)   \
    X(policy_window)   \
    X(policy_h2o)      \
    X(policy_snapkv)   \
    X(policy_tova)     \
    X(policy_pyramid)  \
    X(policy_lagkv)    \
    X(policy_zigzag)   \
    X(policy_vnorm)    \
    X(policy_keydiff)  \
    X(policy_lagkv_l2)

#define POLICY_DECLARE(def) extern const PolicyDef def;
POLICY_LIST(POLICY_DECLARE)
#define POLICY_ENTRY(def) &def,
#define N_BUILTIN (int)(sizeof (const PolicyDef *[]){ POLICY_LIST(POLICY_ENTRY) } / sizeof(const PolicyDef *))
#define POLICY_MAX_ADDED 8
static const PolicyDef *registry[N_BUILTIN + POLICY_MAX_ADDED] = { POLICY_LIST(POLICY_ENTRY) };
static int n_policies = N_BUILTIN;

int policy_count(void) { return n_policies; }
const PolicyDef *policy_at(int i) { return i >= 0 && i < n_policies ? registry[i] : NULL; }

const PolicyDef *policy_find(const char *name) {
    for (int i = 0; i < n_policies; i++)
        if (!strcmp(registry[i]->name, name)) return registry[i];
    return NULL;
}

int policy_register(const PolicyDef *def) {
    if (policy_find(def->name) || n_policies == N_BUILTIN + POLICY_MAX_ADDED) return -1;
    registry[n_policies++] = def;
    return 0;
}

/* ---- parameters ------------------------------------------------------------ */

const char *policy_param_str_or(const Policy *p, const char *key, const char *fallback) {
    for (int i = 0; i < p->o.n_params; i++)
        if (!strcmp(p->o.param_key[i], key)) return p->o.param_val[i];
    return fallback;
}

double policy_param_or(const Policy *p, const char *key, double fallback) {
    const char *v = policy_param_str_or(p, key, NULL);
    return v ? strtod(v, NULL) : fallback;
}

const char *policy_param_str(const Policy *p, const char *key) {
    const char *v = policy_param_str_or(p, key, NULL);
    if (!v) {
        fprintf(stderr, "kvlab: bug: policy %s has no parameter '%s'\n", p->def->name, key);
        abort();
    }
    return v;
}

double policy_param(const Policy *p, const char *key) { return strtod(policy_param_str(p, key), NULL); }

/* ---- create / free ---------------------------------------------------------- */

/* One scratch per thread that may run a decision. */
static void ensure_scratch(Policy *p, int n_threads) {
    if (n_threads <= p->n_scratch) return;
    p->scratch = xrealloc(p->scratch, (size_t)n_threads * sizeof(PolicyScratch));
    size_t T = (size_t)p->max_tokens, F = T > 2 * (size_t)p->head_dim ? T : 2 * (size_t)p->head_dim;
    for (int i = p->n_scratch; i < n_threads; i++) {
        PolicyScratch *s = &p->scratch[i];
        s->score = xcalloc(F, sizeof(float));
        s->sum = xcalloc(F, sizeof(float));
        s->tmp = xcalloc(F, sizeof(float));
        s->dtmp = xcalloc(T, sizeof(double));
        s->order = xcalloc(T, sizeof(int));
        s->itmp = xcalloc(T, sizeof(int));
        s->mark = xcalloc(T, 1);
        s->rows = NULL;
        s->rows_cap = 0;
    }
    p->n_scratch = n_threads;
}

PolicyScratch *policy_scratch(Policy *p) { return &p->scratch[omp_get_thread_num()]; }

float *policy_rows(Policy *p, int n) {
    PolicyScratch *s = policy_scratch(p);
    size_t need = (size_t)n * p->head_dim;
    if (need > s->rows_cap) {
        free(s->rows);
        s->rows = xmalloc((need > 0 ? need : 1) * sizeof(float));
        s->rows_cap = need;
    }
    return s->rows;
}

/* The columns of d not listed yet (a borrowed score brings its own). */
static int add_columns(Policy *p, const PolicyDef *d, Err *err) {
    for (const PolicyColumn *const *col = d->columns; col && *col; col++) {
        int i = 0;
        while (i < p->n_columns && p->columns[i] != *col) i++;
        if (i < p->n_columns) continue;
        if (p->n_columns == POLICY_MAX_COLUMNS)
            return err_set(err, "policy %s: more than %d per-slot columns", d->name, POLICY_MAX_COLUMNS);
        p->columns[p->n_columns] = *col;
        p->cache_columns[p->n_columns] = (KVColumn){ (*col)->name, (*col)->per_query_head ? p->group : 1, (*col)->fill };
        p->n_columns++;
    }
    return 0;
}

float *policy_column(const Policy *p, const KVCache *c, const char *name, int layer, int head) {
    for (int i = 0; i < p->n_columns; i++)
        if (!strcmp(p->columns[i]->name, name))
            return p->columns[i]->per_query_head ? kvcache_column(c, layer, head / p->group, i, head % p->group)
                                                 : kvcache_column(c, layer, head, i, 0);
    fprintf(stderr, "kvlab: bug: policy %s has no column '%s'\n", p->def->name, name);
    abort();
}

Policy *policy_create(const PolicyOpts *opts, const Config *cfg, int max_tokens, Err *err) {
    PolicyOpts o = *opts;
    if (policy_resolve(&o, err) != 0) return NULL;
    if (cfg->n_layers > POLICY_MAX_LAYERS) {
        err_set(err, "policy: %d layers, more than the %d supported", cfg->n_layers, POLICY_MAX_LAYERS);
        return NULL;
    }
    for (int i = 0; i < o.n_skip; i++)
        if (o.skip[i] >= cfg->n_layers) {
            err_set(err, "--skip-layers: layer %d does not exist (the model has %d layers)", o.skip[i], cfg->n_layers);
            return NULL;
        }
    Policy *p = xcalloc(1, sizeof *p);
    p->o = o;
    p->def = p->scorer = policy_find(o.name);
    p->n_layers = cfg->n_layers;
    p->n_heads = cfg->n_heads;
    p->n_kv_heads = cfg->n_kv_heads;
    p->head_dim = cfg->head_dim;
    p->group = cfg->n_heads / cfg->n_kv_heads;
    p->max_tokens = max_tokens;
    p->skip = xcalloc((size_t)p->n_layers, 1);
    for (int i = 0; i < o.n_skip; i++) p->skip[o.skip[i]] = 1;
    size_t L = (size_t)p->n_layers, T = (size_t)max_tokens;
    p->budget = xcalloc(L, sizeof(int));
    p->last_budget = xcalloc(L, sizeof(int));
    p->head_budget = xcalloc(L * p->n_kv_heads, sizeof(int));
    p->last_head_budget = xcalloc(L * p->n_kv_heads, sizeof(int));
    if (o.head_alloc == ALLOC_ADAPTIVE) {
        p->alloc_score = xcalloc(p->n_kv_heads * T, sizeof(float));
        p->alloc_key = xcalloc(p->n_kv_heads * T, sizeof(int));
        p->alloc_idx = xcalloc(p->n_kv_heads * T, sizeof(int));
    }
    p->keeps = xcalloc(L * p->n_kv_heads * T, sizeof(int));
    p->n_keeps = xcalloc(L * p->n_kv_heads, sizeof(int));
    p->evicts = xcalloc(L * p->n_kv_heads * POLICY_FEW, sizeof(int));
    p->n_evicts = xcalloc(L * p->n_kv_heads, sizeof(int));
    ensure_scratch(p, 1);
    if (p->def->init && p->def->init(p, err) != 0) { policy_free(p); return NULL; }
    p->flags = p->def->flags | p->scorer->flags;
    if (add_columns(p, p->def, err) != 0 || add_columns(p, p->scorer, err) != 0) { policy_free(p); return NULL; }
    return p;
}

void policy_free(Policy *p) {
    if (!p) return;
    if (p->def->free) p->def->free(p);
    free(p->head_budget); free(p->last_head_budget); free(p->alloc_score); free(p->alloc_key); free(p->alloc_idx);
    free(p->skip); free(p->budget); free(p->last_budget); free(p->keeps); free(p->n_keeps); free(p->evicts); free(p->n_evicts);
    for (int i = 0; i < p->n_scratch; i++) {
        PolicyScratch *s = &p->scratch[i];
        free(s->score); free(s->sum); free(s->tmp); free(s->dtmp); free(s->order); free(s->itmp); free(s->mark); free(s->rows);
    }
    free(p->scratch);
    free(p);
}

const PolicyOpts *policy_opts(const Policy *p) { return &p->o; }
int policy_needs_attention(const Policy *p) {
    for (int i = 0; i < p->n_columns; i++)
        if (p->columns[i]->observe) return 1;
    return 0;
}

int policy_observer(Policy *p, AttentionObserver *out) {
    if (!p || !policy_needs_attention(p)) return 0;
    *out = (AttentionObserver){ p, policy_observe };
    return 1;
}
PolicyTiming policy_timing(const Policy *p) { return p->timing; }
void policy_timing_reset(Policy *p) { memset(&p->timing, 0, sizeof p->timing); }
const int *policy_last_budgets(const Policy *p) { return p->last_budget; }
int policy_evicts(const Policy *p) { return p && !(p->flags & POLICY_NEVER_EVICTS); }
const int *policy_last_head_budgets(const Policy *p) { return p->last_head_budget; }

static void json_budget(FILE *f, int b) {
    if (b < 0 || b == INT_MAX) fputs("null", f);
    else fprintf(f, "%d", b);
}

char *policy_budgets_json(const Policy *p) {
    char *buf = NULL;
    size_t size = 0;
    FILE *f = open_memstream(&buf, &size);
    if (!f) die("out of memory writing the policy's budgets");
    fputs("{\"layer\":[", f);
    for (int l = 0; l < p->n_layers; l++) {
        if (l) fputc(',', f);
        json_budget(f, p->timing.decisions ? p->budget[l] : -1);
    }
    fputs("],\"head\":[", f);
    for (int l = 0; l < p->n_layers; l++) {
        fputs(l ? ",[" : "[", f);
        for (int g = 0; g < p->n_kv_heads; g++) {
            if (g) fputc(',', f);
            json_budget(f, p->timing.decisions ? p->head_budget[l * p->n_kv_heads + g] : -1);
        }
        fputc(']', f);
    }
    fputs("]}", f);
    fclose(f);
    return buf;
}

/* ---- observing attention (spec: h2o, snapkv, tova, pyramid, zigzag) ---------- */

/* Runs inside the forward pass. forward.h guarantees that one (layer, head)
 * is only ever handled by one thread at a time, in query order, so each head
 * adds into its own rows without locks, and the sums are reproducible. */
void policy_observe(void *ctx, int layer, int head, int query_pos, const float *probs, const int *key_pos, int n_keys) {
    (void)key_pos;
    Policy *p = ctx;
    if (p->skip[layer]) return;
    for (int i = 0; i < p->n_columns; i++) {
        const PolicyColumn *col = p->columns[i];
        if (col->observe)
            col->observe(p, kvcache_column(p->cache, layer, head / p->group, i, head % p->group), layer, head,
                         query_pos, probs, n_keys);
    }
}

/* A new sequence (the cache is empty): forget everything. */
static int start_sequence(Policy *p, KVCache *c, Err *err) {
    if (kvcache_set_shifted(c, p->o.positions_shifted, err) != 0) return -1;
    if (kvcache_set_columns(c, p->cache_columns, p->n_columns, err) != 0) return -1;
    p->decode_steps = 0;
    if (p->def->reset) p->def->reset(p);
    return 0;
}

int policy_before_forward(Policy *p, KVCache *c, int n, Err *err) {
    if (!p) return 0;
    if (c->max_tokens > p->max_tokens)
        return err_set(err, "policy: created for %d tokens, the cache holds up to %d", p->max_tokens, c->max_tokens);
    if (c->next_pos == 0) {
        if (start_sequence(p, c, err) != 0) return -1;
    } else if (c->shifted != p->o.positions_shifted) {
        return err_set(err, "policy: the cache holds keys with positions %s, the policy wants %s",
                       c->shifted ? "shifted" : "true", p->o.positions_shifted ? "shifted" : "true");
    } else if (!kvcache_has_columns(c, p->cache_columns, p->n_columns)) {
        return err_set(err, "policy %s: the cache's sequence was started without this policy's per-slot columns",
                       p->def->name);
    }
    p->cache = c;
    for (int i = 0; i < p->n_columns; i++)
        if (p->columns[i]->begin) p->columns[i]->begin(p, c, n);
    return 0;
}

void policy_layer_budgets(Policy *p, const KVCache *c, int avg, int *out) {
    if (p->def->budgets) p->def->budgets(p, c, avg, out);
    else for (int l = 0; l < p->n_layers; l++) out[l] = avg;
    for (int l = 0; l < p->n_layers; l++) if (p->skip[l]) out[l] = INT_MAX;
}

/* Decisions over fewer slots than this (all heads together) run on one thread. */
#define POLICY_PARALLEL_SLOTS (1L << 16)

/* ---- deciding and applying ------------------------------------------------------ */

/* Decide (layer, g): the slots to keep (or the few to evict, *n_evict >= 0),
 * or -1 when the head stays as it is. */
static int decide_head(Policy *p, const KVCache *c, int layer, int g, int budget, int *keep,
                       int *evict, int *n_evict) {
    const KVHead *h = kvcache_head(c, layer, g);
    *n_evict = -1;
    if (p->def->select) {
        int n = p->def->select(p, c, layer, g, budget, keep);
        return n < h->len ? n : -1;
    }
    if (h->len <= budget) return -1;
    const float *score = p->scorer->score(p, c, layer, g, policy_scratch(p)->score);
    return policy_select_top_few(p, h->pos, h->len, score, budget, p->o.sinks, p->o.recent, keep, evict, n_evict);
}

int policy_head_scores(Policy *p, const KVCache *c, int layer, int kv_head, float *out) {
    if (!p || p->skip[layer] || (p->flags & POLICY_NEVER_EVICTS) || !p->scorer->score) return -1;
    ensure_scratch(p, 1);
    int len = kvcache_head(c, layer, kv_head)->len;
    const float *score = p->scorer->score(p, c, layer, kv_head, p->scratch[0].score);
    memcpy(out, score, (size_t)len * sizeof(float));
    return 0;
}

/* Granularity `layer` (TOVA): one token set for every head of the layer,
 * chosen by the score averaged over its KV heads, which must hold the same
 * tokens. Returns the count, -1 to leave the layer alone, -2 on mismatch. */
static int decide_layer(Policy *p, const KVCache *c, int layer, int budget, int *keep) {
    const KVHead *h0 = kvcache_head(c, layer, 0);
    int len = h0->len;
    if (len <= budget) return -1;
    PolicyScratch *sc = policy_scratch(p);
    for (int g = 0; g < p->n_kv_heads; g++) {
        const KVHead *h = kvcache_head(c, layer, g);
        if (h->len != len || memcmp(h->pos, h0->pos, (size_t)len * sizeof(int)) != 0) return -2;
        const float *score = p->scorer->score(p, c, layer, g, sc->score);
        for (int j = 0; j < len; j++) sc->sum[j] = g ? sc->sum[j] + policy_rank(score[j]) : policy_rank(score[j]);
    }
    for (int j = 0; j < len; j++) sc->sum[j] /= (float)p->n_kv_heads;
    return policy_select_top(p, h0->pos, len, sc->sum, budget, p->o.sinks, p->o.recent, keep);
}

static int layer_longest(const KVCache *c, int layer) {
    int n = 0;
    for (int g = 0; g < c->n_kv_heads; g++)
        if (kvcache_head(c, layer, g)->len > n) n = kvcache_head(c, layer, g)->len;
    return n;
}

/* The budget of each layer for this eviction (-1: leave the layer alone). */
static void eviction_budgets(Policy *p, const KVCache *c) {
    if (p->o.schedule == SCHED_THRESHOLD) {
        /* l2compress prune_after: a layer at >= T tokens keeps keep_ratio of its length */
        for (int l = 0; l < p->n_layers; l++) {
            int n = layer_longest(c, l);
            p->budget[l] = p->skip[l] || n < p->o.schedule_n ? -1 : policy_budget_of(&p->o, n);
        }
    } else {
        policy_layer_budgets(p, c, policy_budget_of(&p->o, c->next_pos), p->budget);
        for (int l = 0; l < p->n_layers; l++) if (p->skip[l]) p->budget[l] = -1;
    }
    /* each KV head's share: the layer's budget, or Ada-KV's (policy_headalloc.c) */
    int KV = p->n_kv_heads;
    for (int l = 0; l < p->n_layers; l++) {
        int *hb = p->head_budget + (size_t)l * KV;
        if (p->budget[l] >= 0 && p->o.head_alloc == ALLOC_ADAPTIVE) {
            policy_adaptive_head_budgets(p, c, l, p->budget[l], hb);
            /* threshold:T promises every head below T after an eviction ("max kv T"):
             * a head's share may not reach it */
            if (p->o.schedule == SCHED_THRESHOLD)
                for (int g = 0; g < KV; g++) if (hb[g] >= p->o.schedule_n) hb[g] = p->o.schedule_n - 1;
        } else {
            for (int g = 0; g < KV; g++) hb[g] = p->budget[l];
        }
    }
}

static int schedule_fires(Policy *p, int start_pos) {
    switch (p->o.schedule) {
    case SCHED_PREFILL: return start_pos == 0;
    case SCHED_INTERVAL:   /* kvpress DecodingPress: every N decode steps (not after the prompt) */
        return start_pos > 0 && ++p->decode_steps % p->o.schedule_n == 0;
    default: return 1;     /* step and threshold look after every forward */
    }
}

/* Phase 1: every (layer, KV head) — or every layer with granularity layer —
 * decides what it keeps (p->keeps, p->n_keeps). Called by every thread of the
 * team (an orphaned `omp for`); a layer whose heads disagree (granularity
 * layer) is reported in *bad_layer and left alone. */
static void decide_all(Policy *p, const KVCache *c, int *bad_layer) {
    int KV = p->n_kv_heads, per_layer = p->o.granularity == GRAN_LAYER;
    int n_tasks = per_layer ? p->n_layers : p->n_layers * KV;
    size_t T = (size_t)p->max_tokens;
    #pragma omp for schedule(dynamic, 1)
    for (int task = 0; task < n_tasks; task++) {
        int l = per_layer ? task : task / KV, g = per_layer ? 0 : task % KV;
        int *n_keep = &p->n_keeps[l * KV + g], *keep = p->keeps + ((size_t)l * KV + g) * T;
        int *n_evict = &p->n_evicts[l * KV + g], *evict = p->evicts + ((size_t)l * KV + g) * POLICY_FEW;
        *n_keep = *n_evict = -1;
        if (p->budget[l] < 0) continue;
        *n_keep = per_layer ? decide_layer(p, c, l, p->budget[l], keep)
                            : decide_head(p, c, l, g, p->head_budget[l * KV + g], keep, evict, n_evict);
        if (*n_keep == -2) {
            *n_keep = -1;
            #pragma omp critical(policy_bad_layer)
            *bad_layer = l;
        }
    }
}

/* Phase 2: compact every head that keeps fewer than it holds (orphaned `omp for`). */
static void apply_all(Policy *p, KVCache *c) {
    int KV = p->n_kv_heads, per_layer = p->o.granularity == GRAN_LAYER;
    size_t T = (size_t)p->max_tokens;
    #pragma omp for schedule(dynamic, 1)
    for (int task = 0; task < p->n_layers * KV; task++) {
        int l = task / KV, g = task % KV, src = per_layer ? l * KV : task;
        int n_keep = p->n_keeps[src], n_evict = p->n_evicts[src];
        if (n_keep < 0) continue;
        long evicted = kvcache_head(c, l, g)->len - n_keep;
        if (n_evict >= 0) kvcache_evict(c, l, g, p->evicts + (size_t)src * POLICY_FEW, n_evict);
        else kvcache_keep(c, l, g, p->keeps + (size_t)src * T, n_keep);
        #pragma omp atomic
        p->timing.evicted += evicted;
    }
}

int policy_after_forward(Policy *p, KVCache *c, int start_pos, Err *err) {
    if (!p) return 0;
    int decode = start_pos > 0, bad_layer = -1;
    p->timing.forwards++;
    if (decode) p->timing.decode_forwards++;
    for (int l = 0; l < p->n_layers; l++) p->last_budget[l] = -1;
    for (int i = 0; i < p->n_layers * p->n_kv_heads; i++) p->last_head_budget[i] = -1;
    if ((p->flags & POLICY_NEVER_EVICTS) || !schedule_fires(p, start_pos)) return 0;
    p->timing.decisions++;
    ensure_scratch(p, omp_get_max_threads());
    double t0 = now_seconds(), t1 = t0;
    eviction_budgets(p, c);
    /* One team for both phases; the barrier after phase 1 is where the decide
     * time ends and the apply time starts. A decode step of a few thousand
     * slots per head runs on one thread: it is cheaper than waking a team
     * (and than waiting for one on a busy machine). */
    long slots = 0;
    for (int l = 0; l < p->n_layers; l++)
        if (p->budget[l] >= 0) slots += (long)layer_longest(c, l) * p->n_kv_heads;
    #pragma omp parallel if (slots >= POLICY_PARALLEL_SLOTS)
    {
        decide_all(p, c, &bad_layer);
        #pragma omp master
        t1 = now_seconds();
        apply_all(p, c);
    }
    p->timing.decide_s += t1 - t0;
    if (decode) p->timing.decide_decode_s += t1 - t0;
    p->timing.apply_s += now_seconds() - t1;
    memcpy(p->last_budget, p->budget, (size_t)p->n_layers * sizeof(int));
    memcpy(p->last_head_budget, p->head_budget, (size_t)p->n_layers * p->n_kv_heads * sizeof(int));
    if (bad_layer >= 0)
        return err_set(err, "granularity layer: the KV heads of layer %d hold different tokens", bad_layer);
    return 0;
}

int policy_forward(Policy *p, Forward *f, KVCache *c, const int *tokens, int n, float *logits_all, Err *err) {
    if (!p) return forward(f, c, tokens, n, logits_all, err);
    int start = c->next_pos;
    if (policy_before_forward(p, c, n, err) != 0) return -1;
    /* l2, window, random, lagkv, full observe nothing: their forward keeps the
     * observer-free schedule of the attention rows (forward.h) */
    AttentionObserver obs;
    int observes = policy_observer(p, &obs);
    if (observes) forward_add_observer(f, &obs);
    int rc = forward(f, c, tokens, n, logits_all, err);
    if (observes) forward_remove_observer(f, &obs);
    if (rc != 0) return -1;
    return policy_after_forward(p, c, start, err);
}
