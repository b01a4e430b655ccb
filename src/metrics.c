/* metrics.c — see metrics.h. The row metrics in the order the paper gives them,
 * then the accumulators, then the correlator that feeds them from a model run. */
#include "metrics.h"

#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "npy.h"
#include "sampler.h"

int metrics_ratio_pct(int i) { return 10 * (i + 1); }

int metrics_keep(int n, int pct) {
    int keep = (int)(((int64_t)n * (100 - pct)) / 100);   /* floor, in integers: no 0.1 rounding */
    return keep < 1 ? 1 : keep;
}

const char *evict_order_name(EvictOrder e) {
    static const char *names[EVICT_N] = { "lownorm", "highnorm", "random", "oracle" };
    return e >= 0 && e < EVICT_N ? names[e] : "?";
}

/* ---- scratch ------------------------------------------------------------------ */

void rowscratch_init(RowScratch *s) { memset(s, 0, sizeof *s); }

void rowscratch_free(RowScratch *s) {
    free(s->by_attn_asc); free(s->attn_rank); free(s->random_order); free(s->random_rank);
    free(s->tmp_idx); free(s->tmp_key); free(s->tmp_key2); free(s->avg_rank);
    rowscratch_init(s);
}

static void rowscratch_reserve(RowScratch *s, int n) {
    if (n <= s->cap) return;
    int cap = s->cap ? s->cap : 64;
    while (cap < n) cap *= 2;
    rowscratch_free(s);
    s->cap = cap;
    s->by_attn_asc = xmalloc((size_t)cap * sizeof(int));
    s->attn_rank = xmalloc((size_t)cap * sizeof(int));
    s->random_order = xmalloc((size_t)cap * sizeof(int));
    s->random_rank = xmalloc((size_t)cap * sizeof(int));
    s->tmp_idx = xmalloc((size_t)cap * sizeof(int));
    s->tmp_key = xmalloc((size_t)cap * sizeof(uint32_t));
    s->tmp_key2 = xmalloc((size_t)cap * sizeof(uint32_t));
    s->avg_rank = xmalloc((size_t)cap * sizeof(double));
}

/* ---- sorting and ranks ----------------------------------------------------------- */

/* An unsigned integer that orders like the float: flip all bits of negatives,
 * only the sign bit of positives. */
static inline uint32_t float_order_key(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

/* LSD radix sort, 4 passes of 8 bits; a pass whose digit is the same for every
 * key is skipped (attention probabilities share their top byte). Stable, O(n). */
void argsort_f32(const float *v, int n, int *order, RowScratch *s) {
    if (n <= 1) { if (n == 1) order[0] = 0; return; }
    rowscratch_reserve(s, n);
    uint32_t *key = s->tmp_key, *key2 = s->tmp_key2;
    int *idx = order, *idx2 = s->tmp_idx;
    for (int i = 0; i < n; i++) { key[i] = float_order_key(v[i]); idx[i] = i; }
    for (int shift = 0; shift < 32; shift += 8) {
        int count[257] = {0};
        for (int i = 0; i < n; i++) count[((key[i] >> shift) & 255) + 1]++;
        if (count[((key[0] >> shift) & 255) + 1] == n) continue;
        for (int b = 0; b < 256; b++) count[b + 1] += count[b];
        for (int i = 0; i < n; i++) {
            int dst = count[(key[i] >> shift) & 255]++;
            key2[dst] = key[i];
            idx2[dst] = idx[i];
        }
        uint32_t *tk = key; key = key2; key2 = tk;
        int *ti = idx; idx = idx2; idx2 = ti;
    }
    if (idx != order) memcpy(order, idx, (size_t)n * sizeof(int));
}

void average_ranks(const float *v, const int *order, int n, double *rank) {
    for (int i = 0; i < n;) {
        int j = i + 1;
        while (j < n && v[order[j]] == v[order[i]]) j++;
        double avg = 0.5 * ((double)(i + 1) + (double)j);   /* mean of ranks i+1..j */
        for (int t = i; t < j; t++) rank[order[t]] = avg;
        i = j;
    }
}

static double pearson_from_sums(double sxy, double sxx, double syy) {
    if (!(sxx > 0) || !(syy > 0)) return NAN;
    double r = sxy / sqrt(sxx * syy);
    return r > 1 ? 1 : r < -1 ? -1 : r;
}

double pearson_f32(const float *x, const float *y, int n) {
    if (n < 2) return NAN;
    double mx = 0, my = 0, sxy = 0, sxx = 0, syy = 0;
    for (int i = 0; i < n; i++) { mx += x[i]; my += y[i]; }
    mx /= n; my /= n;
    for (int i = 0; i < n; i++) {
        double dx = x[i] - mx, dy = y[i] - my;
        sxy += dx * dy; sxx += dx * dx; syy += dy * dy;
    }
    return pearson_from_sums(sxy, sxx, syy);
}

double pearson_f64(const double *x, const double *y, int n) {
    if (n < 2) return NAN;
    double mx = 0, my = 0, sxy = 0, sxx = 0, syy = 0;
    for (int i = 0; i < n; i++) { mx += x[i]; my += y[i]; }
    mx /= n; my /= n;
    for (int i = 0; i < n; i++) {
        double dx = x[i] - mx, dy = y[i] - my;
        sxy += dx * dy; sxx += dx * dx; syy += dy * dy;
    }
    return pearson_from_sums(sxy, sxx, syy);
}

uint64_t metrics_mix(uint64_t a, uint64_t b) {
    uint64_t z = a + 0x9e3779b97f4a7c15ull * (b + 1);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

void random_permutation(int *perm, int n, uint64_t key) {
    uint64_t state = key;
    for (int i = 0; i < n; i++) perm[i] = i;
    for (int i = n - 1; i > 0; i--) {
        state = metrics_mix(state, (uint64_t)i);
        int j = (int)(state % (uint64_t)(i + 1));   /* bias < 2^-50 for any real n */
        int t = perm[i]; perm[i] = perm[j]; perm[j] = t;
    }
}

/* ---- the norm side ----------------------------------------------------------------- */

void normstats_init(NormStats *ns) { memset(ns, 0, sizeof *ns); }

void normstats_free(NormStats *ns) {
    free(ns->by_norm_desc); free(ns->norm_rank); free(ns->avg_rank);
    normstats_init(ns);
}

void normstats_set(NormStats *ns, const float *norm, int n, RowScratch *s) {
    if (n > ns->cap) {
        int cap = ns->cap ? ns->cap : 64;
        while (cap < n) cap *= 2;
        normstats_free(ns);
        ns->cap = cap;
        ns->by_norm_desc = xmalloc((size_t)cap * sizeof(int));
        ns->norm_rank = xmalloc((size_t)cap * sizeof(int));
        ns->avg_rank = xmalloc((size_t)cap * sizeof(double));
    }
    ns->n = n;
    ns->norm = norm;
    /* ascending argsort into norm_rank (as scratch), reversed into by_norm_desc */
    argsort_f32(norm, n, ns->norm_rank, s);
    average_ranks(norm, ns->norm_rank, n, ns->avg_rank);
    for (int i = 0; i < n; i++) ns->by_norm_desc[i] = ns->norm_rank[n - 1 - i];
    for (int i = 0; i < n; i++) ns->norm_rank[ns->by_norm_desc[i]] = i;
    double mean = 0, ss = 0, rank_ss = 0, mean_rank = 0.5 * (n + 1);
    for (int i = 0; i < n; i++) mean += norm[i];
    mean = n > 0 ? mean / n : 0;
    for (int i = 0; i < n; i++) {
        ss += (norm[i] - mean) * (norm[i] - mean);
        rank_ss += (ns->avg_rank[i] - mean_rank) * (ns->avg_rank[i] - mean_rank);
    }
    ns->norm_mean = mean;
    ns->norm_ss = ss;
    ns->rank_ss = rank_ss;
}

/* ---- one row ------------------------------------------------------------------------ */

/* Pearson r between ‖k‖ and a, reusing the norm side's mean and Σ(x − mean)². */
static double row_pearson(const NormStats *ns, const float *a) {
    int n = ns->n;
    if (n < 2) return NAN;
    double ma = 0, sxy = 0, syy = 0;
    for (int i = 0; i < n; i++) ma += a[i];
    ma /= n;
    for (int i = 0; i < n; i++) {
        double dx = ns->norm[i] - ns->norm_mean, dy = a[i] - ma;
        sxy += dx * dy; syy += dy * dy;
    }
    return pearson_from_sums(sxy, ns->norm_ss, syy);
}

/* Spearman ρ = the Pearson r of the (average) ranks. Both rank vectors have
 * mean (n+1)/2, because average ranks keep the sum 1 + ... + n. */
static double row_spearman(const NormStats *ns, const double *attn_rank) {
    int n = ns->n;
    if (n < 2) return NAN;
    double m = 0.5 * (n + 1), sxy = 0, syy = 0;
    for (int i = 0; i < n; i++) {
        double dy = attn_rank[i] - m;
        sxy += (ns->avg_rank[i] - m) * dy;
        syy += dy * dy;
    }
    return pearson_from_sums(sxy, ns->rank_ss, syy);
}

/* Paper Eqs. 5–7. Evicting the m highest-norm tokens loses
 *     Σ_{p ∈ D_m} a(p),        D_m = the m tokens with the highest ‖k_p‖   (Eq. 5)
 * the ideal eviction of m tokens loses
 *     Σ_{p ∈ D̂_m} a(p),       D̂_m = the m tokens with the lowest a(p)
 * and Y^m is the difference (Eq. 6); ALR = Σ_{m=1}^{n} Y^m (Eq. 7), ≥ 0, and 0
 * exactly when the norm order is the reverse of the attention order. */
static double row_alr(const NormStats *ns, const float *a, const int *by_attn_asc) {
    double mass_norm = 0, mass_ideal = 0, alr = 0;
    for (int m = 1; m <= ns->n; m++) {
        mass_norm += a[ns->by_norm_desc[m - 1]];
        mass_ideal += a[by_attn_asc[m - 1]];
        alr += mass_norm - mass_ideal;                  /* Y^m */
    }
    return alr;
}

/* Attention mass on the first evict[r] tokens of an eviction order, for each
 * ratio r (evict[] is non-decreasing). reverse = walk the order from its end. */
static void evicted_mass(const float *a, const int *order, int n, int reverse,
                         const int *evict, double *out) {
    double mass = 0;
    int taken = 0;
    for (int r = 0; r < METRICS_N_RATIOS; r++) {
        for (; taken < evict[r]; taken++) mass += a[order[reverse ? n - 1 - taken : taken]];
        out[r] = mass;
    }
}

/* |kept ∩ oracle kept| / keep for each ratio. A policy's token is kept when its
 * index in the policy's eviction order is >= evict (highnorm: evicts from the
 * end of by_norm_desc, so kept when the index is < keep). */
static void overlap_with_oracle(const int *policy_rank, int from_end, const int *oracle_rank, int n,
                                const int *evict, double *out) {
    for (int r = 0; r < METRICS_N_RATIOS; r++) {
        int keep = n - evict[r], both = 0;
        for (int p = 0; p < n; p++) {
            int kept = from_end ? policy_rank[p] < keep : policy_rank[p] >= evict[r];
            both += kept && oracle_rank[p] >= evict[r];
        }
        out[r] = (double)both / keep;
    }
}

void metrics_row(const NormStats *ns, const float *attn, uint64_t random_key,
                 RowScratch *s, RowMetrics *out) {
    int n = ns->n;
    rowscratch_reserve(s, n);
    /* the attention side: ascending order, rank of each slot, average ranks */
    argsort_f32(attn, n, s->by_attn_asc, s);
    average_ranks(attn, s->by_attn_asc, n, s->avg_rank);
    for (int i = 0; i < n; i++) s->attn_rank[s->by_attn_asc[i]] = i;
    random_permutation(s->random_order, n, random_key);
    for (int i = 0; i < n; i++) s->random_rank[s->random_order[i]] = i;

    out->spearman = row_spearman(ns, s->avg_rank);
    out->pearson = row_pearson(ns, attn);
    out->alr = row_alr(ns, attn, s->by_attn_asc);
    out->alr_per_n = n > 0 ? out->alr / n : NAN;

    int evict[METRICS_N_RATIOS];
    for (int r = 0; r < METRICS_N_RATIOS; r++) evict[r] = n - metrics_keep(n, metrics_ratio_pct(r));
    evicted_mass(attn, ns->by_norm_desc, n, 0, evict, out->loss[EVICT_LOWNORM]);
    evicted_mass(attn, ns->by_norm_desc, n, 1, evict, out->loss[EVICT_HIGHNORM]);
    evicted_mass(attn, s->random_order, n, 0, evict, out->loss[EVICT_RANDOM]);
    evicted_mass(attn, s->by_attn_asc, n, 0, evict, out->loss[EVICT_ORACLE]);
    overlap_with_oracle(ns->norm_rank, 0, s->attn_rank, n, evict, out->overlap[EVICT_LOWNORM]);
    overlap_with_oracle(ns->norm_rank, 1, s->attn_rank, n, evict, out->overlap[EVICT_HIGHNORM]);
    overlap_with_oracle(s->random_rank, 0, s->attn_rank, n, evict, out->overlap[EVICT_RANDOM]);
    for (int r = 0; r < METRICS_N_RATIOS; r++) out->overlap[EVICT_ORACLE][r] = 1.0;
}

/* ---- accumulators ------------------------------------------------------------------- */

void metrics_slot_describe(int slot, char *name, int name_size, double *ratio) {
    static const char *scalars[] = { "spearman", "pearson", "alr", "alr_per_n" };
    *ratio = -1;
    if (slot < SLOT_LOSS) { snprintf(name, (size_t)name_size, "%s", scalars[slot]); return; }
    int base = slot < SLOT_OVERLAP ? SLOT_LOSS : SLOT_OVERLAP;
    int order = (slot - base) / METRICS_N_RATIOS, r = (slot - base) % METRICS_N_RATIOS;
    snprintf(name, (size_t)name_size, "%s_%s", base == SLOT_LOSS ? "loss" : "overlap", evict_order_name(order));
    *ratio = metrics_ratio_pct(r) / 100.0;
}

double metrics_slot_value(const RowMetrics *m, int slot) {
    switch (slot) {
    case SLOT_SPEARMAN: return m->spearman;
    case SLOT_PEARSON: return m->pearson;
    case SLOT_ALR: return m->alr;
    case SLOT_ALR_N: return m->alr_per_n;
    default: break;
    }
    int base = slot < SLOT_OVERLAP ? SLOT_LOSS : SLOT_OVERLAP;
    int order = (slot - base) / METRICS_N_RATIOS, r = (slot - base) % METRICS_N_RATIOS;
    return base == SLOT_LOSS ? m->loss[order][r] : m->overlap[order][r];
}

void metrics_acc_clear(MetricsAcc *a) { memset(a, 0, sizeof *a); }

/* Welford: mean_k = mean_{k-1} + (x − mean_{k-1})/k ; M2 += (x − mean_{k-1})(x − mean_k). */
void metrics_acc_add_value(MetricsAcc *a, int slot, double x) {
    if (isnan(x)) return;
    a->n[slot]++;
    double d = x - a->mean[slot];
    a->mean[slot] += d / (double)a->n[slot];
    a->m2[slot] += d * (x - a->mean[slot]);
}

void metrics_acc_add(MetricsAcc *a, const RowMetrics *m) {
    for (int s = 0; s < SLOT_N; s++) metrics_acc_add_value(a, s, metrics_slot_value(m, s));
}

double metrics_acc_mean(const MetricsAcc *a, int slot) { return a->n[slot] > 0 ? a->mean[slot] : NAN; }

double metrics_acc_std(const MetricsAcc *a, int slot) {
    return a->n[slot] > 1 ? sqrt(a->m2[slot] / (double)(a->n[slot] - 1)) : NAN;
}

/* ---- the correlator ------------------------------------------------------------------ */

const char *query_mode_name(QueryMode q) {
    return q == QUERY_FIRST_GEN ? "first-gen" : q == QUERY_LAST_PREFILL ? "last-prefill" : "all-decode";
}

int query_mode_parse(const char *s, QueryMode *out) {
    if (!strcmp(s, "first-gen")) *out = QUERY_FIRST_GEN;
    else if (!strcmp(s, "last-prefill")) *out = QUERY_LAST_PREFILL;
    else if (!strcmp(s, "all-decode")) *out = QUERY_ALL_DECODE;
    else return -1;
    return 0;
}

struct Correlator {
    int L, H, KV, hd, group, vocab, max_keys;
    uint64_t seed;
    int target_pos;        /* the query position the observer copies (-1: none) */
    float *rows;           /* [L*H][max_keys] the copied attention rows */
    int *row_n;            /* [L*H] keys in the copied row (0 = not seen this step) */
    float *norms;          /* [L*KV][max_keys] ‖k‖ of each cache slot */
    int *norms_have;       /* [L*KV] slots whose norm is already computed */
    NormStats *ns;         /* [L*KV] */
    RowScratch *scratch;   /* [n_threads] */
    int n_threads;
    MetricsAcc *acc;       /* [L*H] */
    CorrelatorTiming time;
};

/* The observer: runs inside the forward pass, several threads at once, each on
 * its own (layer, head): the copies never overlap, so no lock is needed. */
static void correlator_observe(void *ctx, int layer, int head, int query_pos,
                               const float *probs, const int *key_pos, int n_keys) {
    (void)key_pos;
    Correlator *c = ctx;
    if (query_pos != c->target_pos || n_keys > c->max_keys) return;
    size_t row = (size_t)layer * c->H + head;
    memcpy(c->rows + row * c->max_keys, probs, (size_t)n_keys * sizeof(float));
    c->row_n[row] = n_keys;
}

Correlator *correlator_create(const Config *cfg, int max_keys, uint64_t seed) {
    Correlator *c = xcalloc(1, sizeof *c);
    c->L = cfg->n_layers; c->H = cfg->n_heads; c->KV = cfg->n_kv_heads; c->hd = cfg->head_dim;
    c->group = cfg->n_heads / cfg->n_kv_heads;
    c->vocab = cfg->vocab_size;
    c->max_keys = max_keys;
    c->seed = seed;
    c->target_pos = -1;
    size_t LH = (size_t)c->L * c->H, LKV = (size_t)c->L * c->KV;
    c->rows = xmalloc(LH * max_keys * sizeof(float));
    c->row_n = xcalloc(LH, sizeof(int));
    c->norms = xmalloc(LKV * max_keys * sizeof(float));
    c->norms_have = xcalloc(LKV, sizeof(int));
    c->ns = xmalloc(LKV * sizeof(NormStats));
    for (size_t i = 0; i < LKV; i++) normstats_init(&c->ns[i]);
    c->n_threads = omp_get_max_threads();
    c->scratch = xmalloc((size_t)c->n_threads * sizeof(RowScratch));
    for (int t = 0; t < c->n_threads; t++) rowscratch_init(&c->scratch[t]);
    c->acc = xmalloc(LH * sizeof(MetricsAcc));
    for (size_t i = 0; i < LH; i++) metrics_acc_clear(&c->acc[i]);
    return c;
}

void correlator_free(Correlator *c) {
    if (!c) return;
    for (int i = 0; i < c->L * c->KV; i++) normstats_free(&c->ns[i]);
    for (int t = 0; t < c->n_threads; t++) rowscratch_free(&c->scratch[t]);
    free(c->rows); free(c->row_n); free(c->norms); free(c->norms_have);
    free(c->ns); free(c->scratch); free(c->acc);
    free(c);
}

const MetricsAcc *correlator_acc(const Correlator *c, int layer, int head) {
    return &c->acc[(size_t)layer * c->H + head];
}
CorrelatorTiming correlator_timing(const Correlator *c) { return c->time; }

/* ‖k‖ = sqrt(Σ_c k_c²) of the slots appended since the last call. The cache of
 * a correlator run only grows (no eviction), so earlier slots keep their norm. */
static void update_norms(Correlator *c, const KVCache *cache, int lg) {
    const KVHead *kv = &cache->heads[lg];
    float *norm = c->norms + (size_t)lg * c->max_keys;
    for (int slot = c->norms_have[lg]; slot < kv->len; slot++) {
        const float *k = kv->keys + (size_t)slot * c->hd;
        double ss = 0;
        for (int i = 0; i < c->hd; i++) ss += (double)k[i] * k[i];
        norm[slot] = (float)sqrt(ss);
    }
    c->norms_have[lg] = kv->len;
}

/* After a forward() whose target query was copied: metrics of every (layer, head). */
static int correlator_collect(Correlator *c, const KVCache *cache, int seq_index, int query_pos, Err *err) {
    double t0 = now_seconds();
    int LKV = c->L * c->KV, LH = c->L * c->H;
    for (int lg = 0; lg < LKV; lg++)
        if (cache->heads[lg].len > c->max_keys)
            return err_set(err, "correlate: %d cached keys exceed the %d the correlator was sized for",
                           cache->heads[lg].len, c->max_keys);
    #pragma omp parallel for schedule(dynamic, 1)
    for (int lg = 0; lg < LKV; lg++) {
        update_norms(c, cache, lg);
        normstats_set(&c->ns[lg], c->norms + (size_t)lg * c->max_keys, cache->heads[lg].len,
                      &c->scratch[omp_get_thread_num()]);
    }
    int bad = -1;
    #pragma omp parallel for schedule(dynamic, 1) reduction(max: bad)
    for (int lh = 0; lh < LH; lh++) {
        int layer = lh / c->H, head = lh % c->H, lg = layer * c->KV + head / c->group;
        if (c->row_n[lh] != c->ns[lg].n) { bad = lh; continue; }
        uint64_t key = metrics_mix(metrics_mix(metrics_mix(c->seed, (uint64_t)seq_index), (uint64_t)lg),
                                   (uint64_t)query_pos);
        RowMetrics m;
        metrics_row(&c->ns[lg], c->rows + (size_t)lh * c->max_keys, key, &c->scratch[omp_get_thread_num()], &m);
        metrics_acc_add(&c->acc[lh], &m);
        c->row_n[lh] = 0;
    }
    if (bad >= 0)
        return err_set(err, "correlate: layer %d head %d: the attention row of query %d has %d keys, the cache %d",
                       bad / c->H, bad % c->H, query_pos, c->row_n[bad],
                       c->ns[(bad / c->H) * c->KV + (bad % c->H) / c->group].n);
    c->time.rows += LH;
    c->time.metric_seconds += now_seconds() - t0;
    return 0;
}

static int run_step(Correlator *c, Forward *f, KVCache *cache, const int *ids, int n,
                    int capture_pos, const StepHook *hook, Err *err) {
    c->target_pos = capture_pos;
    int rc = forward(f, cache, ids, n, NULL, err);
    c->target_pos = -1;
    if (rc == 0 && hook && hook->step) hook->step(hook->ctx, n);
    return rc;
}

int correlator_run(Correlator *c, Forward *f, KVCache *cache, const int *ids, int n,
                   QueryMode mode, int n_gen, int seq_index, const StepHook *hook, Err *err) {
    int steps = mode == QUERY_LAST_PREFILL ? 0 : mode == QUERY_FIRST_GEN ? 1 : n_gen;
    if (n + steps > c->max_keys)
        return err_set(err, "correlate: %d prompt + %d decode tokens exceed the %d keys the correlator holds",
                       n, steps, c->max_keys);
    AttentionObserver obs = { c, correlator_observe };
    forward_set_observer(f, &obs);
    kvcache_reset(cache);
    memset(c->norms_have, 0, (size_t)c->L * c->KV * sizeof(int));
    memset(c->row_n, 0, (size_t)c->L * c->H * sizeof(int));
    double t0 = now_seconds();
    int rc = run_step(c, f, cache, ids, n, mode == QUERY_LAST_PREFILL ? n - 1 : -1, hook, err);
    if (rc == 0 && mode == QUERY_LAST_PREFILL) rc = correlator_collect(c, cache, seq_index, n - 1, err);
    double t1 = now_seconds();
    c->time.prefill_seconds += t1 - t0;
    c->time.prefill_tokens += n;
    /* greedy decode: the token chosen from the previous logits is the next query */
    for (int s = 0; rc == 0 && s < steps; s++) {
        int token = argmax(forward_last_logits(f), c->vocab);
        rc = run_step(c, f, cache, &token, 1, n + s, hook, err);
        if (rc == 0) rc = correlator_collect(c, cache, seq_index, n + s, err);
    }
    c->time.decode_seconds += now_seconds() - t1;
    c->time.decode_steps += steps;
    forward_set_observer(f, NULL);
    return rc;
}

/* ---- output --------------------------------------------------------------------------- */

int correlator_write_csv(const Correlator *c, const char *path, Err *err) {
    AtomicFile af;
    if (atomic_open(&af, path, err) != 0) return -1;
    fprintf(af.f, "layer,head,kv_head,metric,ratio,mean,std,n\n");
    for (int l = 0; l < c->L; l++)
        for (int h = 0; h < c->H; h++) {
            const MetricsAcc *a = correlator_acc(c, l, h);
            for (int s = 0; s < SLOT_N; s++) {
                char name[64], ratio_s[16] = "";
                double ratio;
                metrics_slot_describe(s, name, sizeof name, &ratio);
                if (ratio >= 0) snprintf(ratio_s, sizeof ratio_s, "%.1f", ratio);
                fprintf(af.f, "%d,%d,%d,%s,%s,%.9g,%.9g,%lld\n", l, h, h / c->group, name, ratio_s,
                        metrics_acc_mean(a, s), metrics_acc_std(a, s), (long long)a->n[s]);
            }
        }
    return atomic_commit(&af, err);
}

/* One metric (a scalar slot, or 9 consecutive ratio slots) as three arrays. */
static int npz_add_metric(NpzWriter *w, const Correlator *c, int slot0, int n_slots, Err *err) {
    char name[64], member[96];
    double ratio;
    metrics_slot_describe(slot0, name, sizeof name, &ratio);
    size_t count = (size_t)c->L * c->H * n_slots;
    double *mean = xmalloc(count * sizeof(double)), *std = xmalloc(count * sizeof(double));
    int64_t *num = xmalloc(count * sizeof(int64_t));
    for (int lh = 0; lh < c->L * c->H; lh++)
        for (int r = 0; r < n_slots; r++) {
            size_t i = (size_t)lh * n_slots + r;
            mean[i] = metrics_acc_mean(&c->acc[lh], slot0 + r);
            std[i] = metrics_acc_std(&c->acc[lh], slot0 + r);
            num[i] = c->acc[lh].n[slot0 + r];
        }
    int64_t shape[3] = { c->L, c->H, n_slots };
    int ndim = n_slots > 1 ? 3 : 2, rc = 0;
    snprintf(member, sizeof member, "%s_mean", name);
    rc |= npz_add(w, member, NPY_F64, ndim, shape, mean, err);
    snprintf(member, sizeof member, "%s_std", name);
    if (rc == 0) rc |= npz_add(w, member, NPY_F64, ndim, shape, std, err);
    snprintf(member, sizeof member, "%s_n", name);
    if (rc == 0) rc |= npz_add(w, member, NPY_I64, ndim, shape, num, err);
    free(mean); free(std); free(num);
    return rc ? -1 : 0;
}

int correlator_write_npz(const Correlator *c, const char *path, Err *err) {
    NpzWriter *w = npz_open(path, err);
    if (!w) return -1;
    double ratios[METRICS_N_RATIOS];
    for (int r = 0; r < METRICS_N_RATIOS; r++) ratios[r] = metrics_ratio_pct(r) / 100.0;
    int64_t nr = METRICS_N_RATIOS;
    int rc = npz_add(w, "ratios", NPY_F64, 1, &nr, ratios, err);
    for (int s = 0; rc == 0 && s < SLOT_LOSS; s++) rc = npz_add_metric(w, c, s, 1, err);
    for (int s = SLOT_LOSS; rc == 0 && s < SLOT_N; s += METRICS_N_RATIOS)
        rc = npz_add_metric(w, c, s, METRICS_N_RATIOS, err);
    if (rc != 0) { npz_abort(w); return -1; }
    return npz_close(w, err);
}
