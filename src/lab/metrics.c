/* metrics.c — see metrics.h. The row metrics in the order the paper gives them,
 * then the accumulators, then the correlator that feeds them from a model run. */
#include "lab/metrics.h"

#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "simd/kernels.h"
#include "formats/npy.h"
#include "policy/policy.h"
#include "engine/sampler.h"
#include "base/splitmix64.h"
#include "lab/score_metrics.h"

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
    free(s->tmp_idx); free(s->tmp_key); free(s->tmp_key2); free(s->avg_rank); free(s->hist);
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
    s->hist = xmalloc(3 * (size_t)cap * sizeof(int));
}

/* ---- sorting and ranks ----------------------------------------------------------- */

/* An unsigned integer that orders like the float: flip all bits of negatives,
 * only the sign bit of positives. */
static inline uint32_t float_order_key(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

/* LSD radix sort, 4 passes of 8 bits, the 4 histograms counted in one read;
 * a pass whose digit is the same for every key is skipped (attention
 * probabilities share their top byte). Stable, O(n). */
void argsort_f32(const float *v, int n, int *order, RowScratch *s) {
    if (n <= 1) { if (n == 1) order[0] = 0; return; }
    rowscratch_reserve(s, n);
    uint32_t *key = s->tmp_key, *key2 = s->tmp_key2;
    int *idx = order, *idx2 = s->tmp_idx;
    int count[4][257];
    memset(count, 0, sizeof count);
    for (int i = 0; i < n; i++) {
        uint32_t k = float_order_key(v[i]);
        key[i] = k;
        idx[i] = i;
        for (int d = 0; d < 4; d++) count[d][((k >> (8 * d)) & 255) + 1]++;
    }
    for (int d = 0; d < 4; d++) {
        int shift = 8 * d, *c = count[d];
        if (c[((key[0] >> shift) & 255) + 1] == n) continue;
        for (int b = 0; b < 256; b++) c[b + 1] += c[b];
        for (int i = 0; i < n; i++) {
            int dst = c[(key[i] >> shift) & 255]++;
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

/* Fisher–Yates: for i = n-1..1 swap perm[i] with perm[j], j uniform in [0, i].
 * j = the high 32 bits of (32 random bits) x (i+1) (Lemire's multiply-shift:
 * no division; bias <= (i+1)/2^32). */
void random_permutation(int *perm, int n, uint64_t key) {
    uint64_t state = splitmix64(key);
    for (int i = 0; i < n; i++) perm[i] = i;
    for (int i = n - 1; i > 0; i--) {
        state = state * 6364136223846793005ull + 1442695040888963407ull;   /* 64-bit LCG (Knuth) */
        uint32_t bits = (uint32_t)(state >> 32);                            /* its good high half */
        int j = (int)(((uint64_t)bits * (uint64_t)(i + 1)) >> 32);
        int t = perm[i]; perm[i] = perm[j]; perm[j] = t;
    }
}

/* ---- the norm side ----------------------------------------------------------------- */

void normstats_init(NormStats *ns) { memset(ns, 0, sizeof *ns); }

void normstats_free(NormStats *ns) {
    free(ns->by_norm_asc); free(ns->by_norm_desc); free(ns->norm_rank); free(ns->avg_rank);
    normstats_init(ns);
}

static void normstats_reserve(NormStats *ns, int n) {
    if (n <= ns->cap) return;
    int cap = ns->cap ? ns->cap : 64;
    while (cap < n) cap *= 2;
    ns->by_norm_asc = xrealloc(ns->by_norm_asc, (size_t)cap * sizeof(int));   /* keeps the order */
    free(ns->by_norm_desc); free(ns->norm_rank); free(ns->avg_rank);
    ns->by_norm_desc = xmalloc((size_t)cap * sizeof(int));
    ns->norm_rank = xmalloc((size_t)cap * sizeof(int));
    ns->avg_rank = xmalloc((size_t)cap * sizeof(double));
    ns->cap = cap;
}

/* Everything else from the ascending order by_norm_asc[0..n). */
static void normstats_derive(NormStats *ns) {
    int n = ns->n;
    const float *norm = ns->norm;
    average_ranks(norm, ns->by_norm_asc, n, ns->avg_rank);
    for (int i = 0; i < n; i++) ns->by_norm_desc[i] = ns->by_norm_asc[n - 1 - i];
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

void normstats_set(NormStats *ns, const float *norm, int n, RowScratch *s) {
    normstats_reserve(ns, n);
    ns->n = n;
    ns->norm = norm;
    argsort_f32(norm, n, ns->by_norm_asc, s);
    normstats_derive(ns);
}

double normstats_median(const NormStats *ns) {
    int n = ns->n;
    if (n < 1) return NAN;
    const int *asc = ns->by_norm_asc;
    return n % 2 ? ns->norm[asc[n / 2]] : 0.5 * ((double)ns->norm[asc[n / 2 - 1]] + ns->norm[asc[n / 2]]);
}

/* Decode appends one key per step: insert the new slots into the sorted order
 * (binary search + shift, O(n)) instead of sorting again. A new slot goes after
 * every equal norm, as the stable sort would put it (it has the highest slot). */
void normstats_extend(NormStats *ns, const float *norm, int n, RowScratch *s) {
    int old = ns->n;
    if (old == 0 || ns->norm != norm || n < old || n - old > 16) { normstats_set(ns, norm, n, s); return; }
    normstats_reserve(ns, n);
    for (int slot = old; slot < n; slot++) {
        int lo = 0, hi = slot;                      /* first place whose norm is > norm[slot] */
        while (lo < hi) {
            int mid = (lo + hi) / 2;
            if (norm[ns->by_norm_asc[mid]] <= norm[slot]) lo = mid + 1; else hi = mid;
        }
        memmove(ns->by_norm_asc + lo + 1, ns->by_norm_asc + lo, (size_t)(slot - lo) * sizeof(int));
        ns->by_norm_asc[lo] = slot;
    }
    ns->n = n;
    normstats_derive(ns);
}

/* ---- one row ------------------------------------------------------------------------ */

/* Pearson r and Spearman ρ between ‖k‖ and a, in one pass over the slots
 * (independent sums, so the CPU overlaps them):
 *   r = Σ(x − x̄)(a − ā) / sqrt(Σ(x − x̄)² · Σ(a − ā)²)      x = ‖k‖ (x̄, Σ(x − x̄)²: NormStats)
 *   ρ = the same formula on the average ranks of x and a; both rank vectors
 *       have mean (n+1)/2, because average ranks keep the sum 1 + ... + n.
 * With dx = x − x̄:  Σ dx (a − ā) = Σ dx·a − ā Σ dx  and  Σ(a − ā)² = Σa² − n ā². */
static void row_correlations(const NormStats *ns, const float *a, const double *attn_avg_rank,
                             RowMetrics *out) {
    int n = ns->n;
    if (n < 2) { out->pearson = out->spearman = NAN; return; }
    double sa = 0, saa = 0, sdxa = 0, sdx = 0, srr = 0, sr2 = 0, mid = 0.5 * (n + 1);
    for (int i = 0; i < n; i++) {
        double dx = ns->norm[i] - ns->norm_mean, ai = a[i], dr = attn_avg_rank[i] - mid;
        sa += ai; saa += ai * ai; sdxa += dx * ai; sdx += dx;
        srr += (ns->avg_rank[i] - mid) * dr; sr2 += dr * dr;
    }
    double ma = sa / n, syy = saa - n * ma * ma;
    out->pearson = pearson_from_sums(sdxa - ma * sdx, ns->norm_ss, syy > 0 ? syy : 0);
    out->spearman = pearson_from_sums(srr, ns->rank_ss, sr2);
}

/* One walk over the eviction places m = 1..n of the four orders at once:
 *
 * ALR, paper Eqs. 5–7. Evicting the m highest-norm tokens loses
 *     Σ_{p ∈ D_m} a(p),        D_m = the m tokens with the highest ‖k_p‖   (Eq. 5)
 * the ideal eviction of m tokens loses
 *     Σ_{p ∈ D̂_m} a(p),       D̂_m = the m tokens with the lowest a(p)
 * and Y^m is the difference (Eq. 6); ALR = Σ_{m=1}^{n} Y^m (Eq. 7), ≥ 0, and 0
 * exactly when the norm order is the reverse of the attention order.
 *
 * Attention loss at ratio r = the mass of the first evict[r] tokens of an
 * order (evict[] is non-decreasing): lownorm evicts from the top of
 * by_norm_desc, highnorm from its bottom, random along random_order, the
 * oracle along by_attn_asc. */
static void row_alr_and_losses(const NormStats *ns, const float *a, const int *by_attn_asc,
                               const int *random_order, const int *evict, RowMetrics *out) {
    int n = ns->n, r = 0;
    const int *desc = ns->by_norm_desc;
    double low = 0, high = 0, rnd = 0, oracle = 0, alr = 0;
    for (int m = 0; m <= n; m++) {
        if (m > 0) {
            low += a[desc[m - 1]];                  /* Σ over D_m */
            high += a[desc[n - m]];
            rnd += a[random_order[m - 1]];
            oracle += a[by_attn_asc[m - 1]];        /* Σ over D̂_m */
            alr += low - oracle;                    /* Y^m */
        }
        for (; r < METRICS_N_RATIOS && evict[r] == m; r++) {
            out->loss[EVICT_LOWNORM][r] = low;
            out->loss[EVICT_HIGHNORM][r] = high;
            out->loss[EVICT_RANDOM][r] = rnd;
            out->loss[EVICT_ORACLE][r] = oracle;
        }
    }
    out->alr = alr;
    out->alr_per_n = n > 0 ? alr / n : NAN;
}

/* |kept ∩ oracle kept| / keep for each ratio, in O(n). A token is kept by an
 * eviction order at ratio r when its place in that order is >= evict[r] (the
 * first evict[r] places go); so it is kept by both the policy and the oracle
 * when min(policy place, oracle place) >= evict[r]. Count those minima in a
 * histogram per policy, then read the counts off at the thresholds from the top. */
/* min(a, b) without a branch (the comparisons are random: a branch would
 * mispredict half the time). */
static inline int min_branchless(int a, int b) {
    int mask = -(a < b);
    return (a & mask) | (b & ~mask);
}

static void row_overlaps(const NormStats *ns, const int *attn_rank, const int *random_rank,
                         const int *evict, int *hist, RowMetrics *out) {
    int n = ns->n;
    int *h_low = hist, *h_high = hist + n, *h_rnd = hist + 2 * n;
    memset(hist, 0, 3 * (size_t)n * sizeof(int));
    for (int p = 0; p < n; p++) {
        int oracle = attn_rank[p];
        int low = ns->norm_rank[p], high = n - 1 - ns->norm_rank[p], rnd = random_rank[p];
        h_low[min_branchless(low, oracle)]++;
        h_high[min_branchless(high, oracle)]++;         /* highnorm evicts from the end */
        h_rnd[min_branchless(rnd, oracle)]++;
    }
    int both_low = 0, both_high = 0, both_rnd = 0, v = n;   /* tokens whose min place is >= v */
    for (int r = METRICS_N_RATIOS - 1; r >= 0; r--) {
        for (; v > evict[r]; v--) { both_low += h_low[v - 1]; both_high += h_high[v - 1]; both_rnd += h_rnd[v - 1]; }
        double keep = n - evict[r];
        out->overlap[EVICT_LOWNORM][r] = both_low / keep;
        out->overlap[EVICT_HIGHNORM][r] = both_high / keep;
        out->overlap[EVICT_RANDOM][r] = both_rnd / keep;
        out->overlap[EVICT_ORACLE][r] = 1.0;
    }
}

void metrics_row(const NormStats *ns, const float *attn, uint64_t random_key,
                 RowScratch *s, RowMetrics *out) {
    int n = ns->n;
    rowscratch_reserve(s, n);
    /* the attention side: ascending order, place of each slot in it, average ranks */
    argsort_f32(attn, n, s->by_attn_asc, s);
    average_ranks(attn, s->by_attn_asc, n, s->avg_rank);
    for (int i = 0; i < n; i++) s->attn_rank[s->by_attn_asc[i]] = i;
    /* the random eviction order */
    random_permutation(s->random_order, n, random_key);
    for (int i = 0; i < n; i++) s->random_rank[s->random_order[i]] = i;

    int evict[METRICS_N_RATIOS];
    for (int r = 0; r < METRICS_N_RATIOS; r++) evict[r] = n - metrics_keep(n, metrics_ratio_pct(r));
    row_correlations(ns, attn, s->avg_rank, out);
    row_alr_and_losses(ns, attn, s->by_attn_asc, s->random_order, evict, out);
    row_overlaps(ns, s->attn_rank, s->random_rank, evict, s->hist, out);
    /* the sink: slot 0 holds the first token (no cache a row is taken from evicts) */
    double median = normstats_median(ns);
    out->first_token_attn = n > 0 ? attn[0] : NAN;
    out->first_key_norm_ratio = n > 0 && median > 0 ? ns->norm[0] / median : NAN;
}

/* ---- sink diagnostics ---------------------------------------------------------------- */

LayerSink sink_layer(const double *head_first_attn, int n_heads,
                     const double *kv_key_norm_ratio, int n_kv_heads) {
    LayerSink ls = { 0, 0, 0, 0 };
    int heads = 0, kv = 0;
    for (int h = 0; h < n_heads; h++) {
        if (isnan(head_first_attn[h])) continue;
        heads++;
        ls.first_token_attn += head_first_attn[h];
        ls.sink_heads += head_first_attn[h] > SINK_THRESHOLD;
    }
    for (int g = 0; g < n_kv_heads; g++)
        if (!isnan(kv_key_norm_ratio[g])) { kv++; ls.key_norm_ratio += kv_key_norm_ratio[g]; }
    ls.first_token_attn = heads ? ls.first_token_attn / heads : NAN;
    ls.sink_head_share = heads ? (double)ls.sink_heads / heads : NAN;
    ls.key_norm_ratio = kv ? ls.key_norm_ratio / kv : NAN;
    return ls;
}

/* ---- accumulators ------------------------------------------------------------------- */

void metrics_slot_describe(int slot, char *name, int name_size, double *ratio) {
    static const char *scalars[] = { "spearman", "pearson", "alr", "alr_per_n" };
    *ratio = -1;
    if (slot < SLOT_LOSS) { snprintf(name, (size_t)name_size, "%s", scalars[slot]); return; }
    if (slot >= SLOT_FIRST_ATTN) {
        snprintf(name, (size_t)name_size, "%s", slot == SLOT_FIRST_ATTN ? "first_token_attn" : "first_key_norm_ratio");
        return;
    }
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
    case SLOT_FIRST_ATTN: return m->first_token_attn;
    case SLOT_FIRST_KEY_RATIO: return m->first_key_norm_ratio;
    default: break;
    }
    int base = slot < SLOT_OVERLAP ? SLOT_LOSS : SLOT_OVERLAP;
    int order = (slot - base) / METRICS_N_RATIOS, r = (slot - base) % METRICS_N_RATIOS;
    return base == SLOT_LOSS ? m->loss[order][r] : m->overlap[order][r];
}

void metrics_acc_clear(MetricsAcc *a) { memset(a, 0, sizeof *a); }

void metrics_acc_add_value(MetricsAcc *a, int slot, double x) { runstat_add(&a->slot[slot], x); }

void metrics_acc_add(MetricsAcc *a, const RowMetrics *m) {
    for (int s = 0; s < SLOT_N; s++) metrics_acc_add_value(a, s, metrics_slot_value(m, s));
}

double metrics_acc_mean(const MetricsAcc *a, int slot) { return runstat_mean(&a->slot[slot]); }

double metrics_acc_std(const MetricsAcc *a, int slot) { return runstat_std(&a->slot[slot]); }

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
    ScoreSet *scores;      /* other scores measured on the same queries (NULL: none; not owned) */
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

void correlator_set_scores(Correlator *c, ScoreSet *scores) { c->scores = scores; }

const MetricsAcc *correlator_acc(const Correlator *c, int layer, int head) {
    return &c->acc[(size_t)layer * c->H + head];
}
CorrelatorTiming correlator_timing(const Correlator *c) { return c->time; }

/* What sink_layer takes: each head's mean first-token attention attn[H] and
 * each KV head's mean key-norm ratio ratio[KV]. */
static void layer_sink_inputs(const Correlator *c, int layer, double *attn, double *ratio) {
    for (int h = 0; h < c->H; h++) attn[h] = metrics_acc_mean(correlator_acc(c, layer, h), SLOT_FIRST_ATTN);
    /* the query heads of a group see the same keys: the group's first head stands for it */
    for (int g = 0; g < c->KV; g++)
        ratio[g] = metrics_acc_mean(correlator_acc(c, layer, g * c->group), SLOT_FIRST_KEY_RATIO);
}

LayerSink correlator_layer_sink(const Correlator *c, int layer) {
    double *attn = xmalloc((size_t)c->H * sizeof(double)), *ratio = xmalloc((size_t)c->KV * sizeof(double));
    layer_sink_inputs(c, layer, attn, ratio);
    LayerSink ls = sink_layer(attn, c->H, ratio, c->KV);
    free(attn); free(ratio);
    return ls;
}

/* ‖k‖ = sqrt(Σ_c k_c²) of the slots appended since the last call, with the
 * l2 policy's formula (policy_l2.c), so "keep-lowest-norm" here ranks the
 * tokens as that policy would. The policy takes the norm before RoPE, this
 * the cached key (after RoPE with `true` positions): equal up to rounding. The cache of a correlator run only
 * grows (no eviction), so earlier slots keep their norm. */
static void update_norms(Correlator *c, const KVCache *cache, int lg) {
    const KVHead *kv = &cache->heads[lg];
    const Kernels *k = kernels_get();
    float *norm = c->norms + (size_t)lg * c->max_keys;
    float *row = xmalloc((size_t)c->hd * sizeof(float));    /* a bf16 cache's key, widened */
    for (int slot = c->norms_have[lg]; slot < kv->len; slot++)
        norm[slot] = sqrtf(k->sum_squares(kvcache_key_rows(cache, kv, slot, 1, row), c->hd));
    free(row);
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
        normstats_extend(&c->ns[lg], c->norms + (size_t)lg * c->max_keys, cache->heads[lg].len,
                         &c->scratch[omp_get_thread_num()]);
    }
    if (c->scores &&
        scoreset_measure(c->scores, c->rows, c->row_n, c->max_keys,
                         splitmix64_at(splitmix64_at(c->seed, (uint64_t)seq_index), (uint64_t)query_pos), err) != 0)
        return -1;
    int bad = -1;
    #pragma omp parallel for schedule(dynamic, 1) reduction(max: bad)
    for (int lh = 0; lh < LH; lh++) {
        int layer = lh / c->H, head = lh % c->H, lg = layer * c->KV + head / c->group;
        if (c->row_n[lh] != c->ns[lg].n) { bad = lh; continue; }
        uint64_t key = splitmix64_at(splitmix64_at(splitmix64_at(c->seed, (uint64_t)seq_index), (uint64_t)lg),
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

/* Other scores: taken before the measured query's forward (score_metrics.h),
 * then the policies' hooks for the forward about to run. */
static int scores_before_forward(Correlator *c, int n, int measured, Err *err) {
    double t0 = now_seconds();
    if (measured) scoreset_snapshot(c->scores);
    int rc = scoreset_before_forward(c->scores, n, err);
    c->time.metric_seconds += now_seconds() - t0;
    return rc;
}

/* One forward(); the observer is installed only when a row is wanted, so the
 * other forwards keep the engine's faster observer-free attention path
 * (unless a score observes attention: then it sees every forward). */
static int run_step(Correlator *c, Forward *f, KVCache *cache, const int *ids, int n,
                    int capture_pos, const StepHook *hook, Err *err) {
    AttentionObserver obs = { c, correlator_observe }, score_obs = { c->scores, scoreset_observe };
    int scores_observe = c->scores && scoreset_needs_attention(c->scores);
    if (c->scores && scores_before_forward(c, n, capture_pos >= 0, err) != 0) return -1;
    c->target_pos = capture_pos;
    if (capture_pos >= 0) forward_add_observer(f, &obs);
    if (scores_observe) forward_add_observer(f, &score_obs);
    int rc = forward(f, cache, ids, n, NULL, err);
    forward_remove_observer(f, &obs);
    if (scores_observe) forward_remove_observer(f, &score_obs);
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
    if (c->scores && mode == QUERY_LAST_PREFILL)
        return err_set(err, "correlate: scores are taken before a decode query (first-gen or all-decode), "
                       "not for the last prompt row");
    kvcache_reset(cache);
    if (c->scores && scoreset_start(c->scores, cache, err) != 0) return -1;
    memset(c->norms_have, 0, (size_t)c->L * c->KV * sizeof(int));
    for (int lg = 0; lg < c->L * c->KV; lg++) c->ns[lg].n = 0;    /* new norms: sort afresh */
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
    return rc;
}

/* ---- output --------------------------------------------------------------------------- */

/* The rows of slots [from, to) of every (layer, head). */
static void csv_head_rows(const Correlator *c, FILE *f, int from, int to) {
    for (int l = 0; l < c->L; l++)
        for (int h = 0; h < c->H; h++) {
            const MetricsAcc *a = correlator_acc(c, l, h);
            for (int s = from; s < to; s++) {
                char name[64], ratio_s[16] = "";
                double ratio;
                metrics_slot_describe(s, name, sizeof name, &ratio);
                if (ratio >= 0) snprintf(ratio_s, sizeof ratio_s, "%.1f", ratio);
                fprintf(f, "%d,%d,%d,%s,%s,%.9g,%.9g,%lld\n", l, h, h / c->group, name, ratio_s,
                        metrics_acc_mean(a, s), metrics_acc_std(a, s), (long long)a->slot[s].n);
            }
        }
}

/* Sample std of the values of v[0..n) that are not NaN (NaN when fewer than 2). */
static double spread(const double *v, int n) {
    double mean = 0, ss = 0;
    int k = 0;
    for (int i = 0; i < n; i++) if (!isnan(v[i])) { mean += v[i]; k++; }
    if (k < 2) return NAN;
    mean /= k;
    for (int i = 0; i < n; i++) if (!isnan(v[i])) ss += (v[i] - mean) * (v[i] - mean);
    return sqrt(ss / (k - 1));
}

/* The per-layer sink rows; the std is the spread of the head (KV-head) means
 * the layer value averages. */
static void csv_layer_sink_rows(const Correlator *c, FILE *f) {
    double *attn = xmalloc((size_t)c->H * sizeof(double)), *ratio = xmalloc((size_t)c->KV * sizeof(double));
    for (int l = 0; l < c->L; l++) {
        layer_sink_inputs(c, l, attn, ratio);
        LayerSink ls = sink_layer(attn, c->H, ratio, c->KV);
        fprintf(f, "%d,,,sink_first_token_attn,,%.9g,%.9g,%d\n", l, ls.first_token_attn, spread(attn, c->H), c->H);
        fprintf(f, "%d,,,sink_head_share,,%.9g,nan,%d\n", l, ls.sink_head_share, c->H);
        fprintf(f, "%d,,,sink_key_norm_ratio,,%.9g,%.9g,%d\n", l, ls.key_norm_ratio, spread(ratio, c->KV), c->KV);
    }
    free(attn); free(ratio);
}

int correlator_write_csv(const Correlator *c, const char *path, Err *err) {
    AtomicFile af;
    if (atomic_open(&af, path, err) != 0) return -1;
    fprintf(af.f, "layer,head,kv_head,metric,ratio,mean,std,n\n");
    /* the sink rows come after the others, which stay as they were */
    csv_head_rows(c, af.f, 0, SLOT_FIRST_ATTN);
    csv_head_rows(c, af.f, SLOT_FIRST_ATTN, SLOT_N);
    csv_layer_sink_rows(c, af.f);
    if (c->scores) scoreset_write_csv_rows(c->scores, af.f);
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
            num[i] = c->acc[lh].slot[slot0 + r].n;
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
    for (int s = SLOT_LOSS; rc == 0 && s < SLOT_FIRST_ATTN; s += METRICS_N_RATIOS)
        rc = npz_add_metric(w, c, s, METRICS_N_RATIOS, err);
    for (int s = SLOT_FIRST_ATTN; rc == 0 && s < SLOT_N; s++) rc = npz_add_metric(w, c, s, 1, err);
    /* per layer: the sink diagnostics */
    double *attn = xmalloc((size_t)c->L * sizeof(double)), *share = xmalloc((size_t)c->L * sizeof(double));
    double *ratio = xmalloc((size_t)c->L * sizeof(double));
    for (int l = 0; l < c->L; l++) {
        LayerSink ls = correlator_layer_sink(c, l);
        attn[l] = ls.first_token_attn; share[l] = ls.sink_head_share; ratio[l] = ls.key_norm_ratio;
    }
    int64_t nl = c->L;
    if (rc == 0) rc = npz_add(w, "sink_first_token_attn", NPY_F64, 1, &nl, attn, err);
    if (rc == 0) rc = npz_add(w, "sink_head_share", NPY_F64, 1, &nl, share, err);
    if (rc == 0) rc = npz_add(w, "sink_key_norm_ratio", NPY_F64, 1, &nl, ratio, err);
    if (rc == 0 && c->scores) rc = scoreset_add_npz(c->scores, w, err);
    free(attn); free(share); free(ratio);
    if (rc != 0) { npz_abort(w); return -1; }
    return npz_close(w, err);
}

/* ---- a policy against the full cache ------------------------------------------------------ */

const char *probe_metric_name(int m) {
    static const char *names[PROBE_N] = { "attention_loss", "oracle_loss", "overlap_oracle", "kept_fraction" };
    return m >= 0 && m < PROBE_N ? names[m] : "?";
}

struct PolicyProbe {
    int L, H, KV, group, vocab, max_keys, n_steps;
    int target_pos;
    int phase;             /* PHASE_POLICY: record the visible positions; PHASE_FULL: record a_full */
    float *rows;           /* [L*H][max_keys] full-cache attention, by position */
    int *row_n;            /* [L*H] */
    int *kept;             /* [L*H][max_keys] positions the policy's query sees */
    int *kept_n;           /* [L*H] */
    double *step_values;   /* [L*H][PROBE_N] this step's values (then added serially) */
    RowScratch *scratch;
    int n_threads;
    RunStat *stat;         /* [L*H][PROBE_N] */
    RunStat *by_step;      /* [n_steps][PROBE_N] */
};

enum { PHASE_POLICY = 0, PHASE_FULL = 1 };

static void probe_observe(void *ctx, int layer, int head, int query_pos,
                          const float *probs, const int *key_pos, int n_keys) {
    PolicyProbe *pp = ctx;
    if (query_pos != pp->target_pos || n_keys > pp->max_keys) return;
    size_t lh = (size_t)layer * pp->H + head;
    if (pp->phase == PHASE_POLICY) {
        memcpy(pp->kept + lh * pp->max_keys, key_pos, (size_t)n_keys * sizeof(int));
        pp->kept_n[lh] = n_keys;
    } else {   /* the full cache never evicts: slot j holds position key_pos[j] = j */
        float *row = pp->rows + lh * pp->max_keys;
        for (int j = 0; j < n_keys; j++) row[key_pos[j]] = probs[j];
        pp->row_n[lh] = n_keys;
    }
}

PolicyProbe *policy_probe_create(const Config *cfg, int max_keys, int n_steps) {
    PolicyProbe *pp = xcalloc(1, sizeof *pp);
    pp->L = cfg->n_layers; pp->H = cfg->n_heads; pp->KV = cfg->n_kv_heads;
    pp->group = cfg->n_heads / cfg->n_kv_heads; pp->vocab = cfg->vocab_size;
    pp->max_keys = max_keys; pp->n_steps = n_steps; pp->target_pos = -1;
    size_t LH = (size_t)pp->L * pp->H;
    pp->rows = xmalloc(LH * max_keys * sizeof(float));
    pp->row_n = xcalloc(LH, sizeof(int));
    pp->kept = xmalloc(LH * max_keys * sizeof(int));
    pp->kept_n = xcalloc(LH, sizeof(int));
    pp->step_values = xmalloc(LH * PROBE_N * sizeof(double));
    pp->n_threads = omp_get_max_threads();
    pp->scratch = xmalloc((size_t)pp->n_threads * sizeof(RowScratch));
    for (int t = 0; t < pp->n_threads; t++) rowscratch_init(&pp->scratch[t]);
    pp->stat = xcalloc(LH * PROBE_N, sizeof(RunStat));
    pp->by_step = xcalloc((size_t)(n_steps > 0 ? n_steps : 1) * PROBE_N, sizeof(RunStat));
    return pp;
}

void policy_probe_free(PolicyProbe *pp) {
    if (!pp) return;
    for (int t = 0; t < pp->n_threads; t++) rowscratch_free(&pp->scratch[t]);
    free(pp->rows); free(pp->row_n); free(pp->kept); free(pp->kept_n); free(pp->step_values);
    free(pp->scratch); free(pp->stat); free(pp->by_step);
    free(pp);
}

const RunStat *policy_probe_stat(const PolicyProbe *pp, int layer, int head, int metric) {
    return &pp->stat[((size_t)layer * pp->H + head) * PROBE_N + metric];
}

const RunStat *policy_probe_step(const PolicyProbe *pp, int step, int metric) {
    return &pp->by_step[(size_t)(step - 1) * PROBE_N + metric];
}

/* One (layer, head) at one step: out[PROBE_*]. The oracle keeps the k highest
 * a_full: its evicted tokens are the n − k first of the ascending order. */
static void probe_row(const float *a, int n, const int *kept, int k, RowScratch *s, double *out) {
    rowscratch_reserve(s, n);
    double total = 0, kept_mass = 0, oracle_loss = 0;
    for (int p = 0; p < n; p++) total += a[p];
    for (int i = 0; i < k; i++) kept_mass += a[kept[i]];
    argsort_f32(a, n, s->by_attn_asc, s);
    int evict = n - k, both = 0;
    for (int i = 0; i < n; i++) s->attn_rank[s->by_attn_asc[i]] = i;
    for (int i = 0; i < evict; i++) oracle_loss += a[s->by_attn_asc[i]];
    for (int i = 0; i < k; i++) both += s->attn_rank[kept[i]] >= evict;
    double loss = total - kept_mass;
    out[PROBE_LOSS] = loss > 0 ? loss : 0;
    out[PROBE_ORACLE_LOSS] = oracle_loss;
    out[PROBE_OVERLAP] = k > 0 ? (double)both / k : NAN;
    out[PROBE_KEPT] = (double)k / n;
}

static int probe_collect(PolicyProbe *pp, int step, Err *err) {
    int LH = pp->L * pp->H, bad = -1;
    #pragma omp parallel for schedule(dynamic, 1) reduction(max: bad)
    for (int lh = 0; lh < LH; lh++) {
        int n = pp->row_n[lh], k = pp->kept_n[lh];
        const int *kept = pp->kept + (size_t)lh * pp->max_keys;
        int ok = n > 0 && k > 0;
        for (int i = 0; ok && i < k; i++) ok = kept[i] >= 0 && kept[i] < n;
        if (!ok) { bad = lh; continue; }
        probe_row(pp->rows + (size_t)lh * pp->max_keys, n, kept, k, &pp->scratch[omp_get_thread_num()],
                  pp->step_values + (size_t)lh * PROBE_N);
    }
    if (bad >= 0)
        return err_set(err, "policy probe: layer %d head %d: no attention row or a kept position outside it "
                       "(%d kept of %d)", bad / pp->H, bad % pp->H, pp->kept_n[bad], pp->row_n[bad]);
    for (int lh = 0; lh < LH; lh++)
        for (int m = 0; m < PROBE_N; m++) {
            double v = pp->step_values[(size_t)lh * PROBE_N + m];
            runstat_add(&pp->stat[(size_t)lh * PROBE_N + m], v);
            runstat_add(&pp->by_step[(size_t)(step - 1) * PROBE_N + m], v);
        }
    memset(pp->row_n, 0, (size_t)LH * sizeof(int));
    memset(pp->kept_n, 0, (size_t)LH * sizeof(int));
    return 0;
}

/* Both caches take the same tokens; our observer watches the policy's forward
 * (policy_forward adds its own after it) and the full one. */
static int probe_forward(PolicyProbe *pp, Forward *f, KVCache *full, KVCache *pcache, struct Policy *policy,
                         const int *ids, int n, int capture_pos, Err *err) {
    AttentionObserver obs = { pp, probe_observe };
    pp->target_pos = capture_pos;
    pp->phase = PHASE_POLICY;
    if (capture_pos >= 0) forward_add_observer(f, &obs);
    int rc = policy_forward(policy, f, pcache, ids, n, NULL, err);
    pp->phase = PHASE_FULL;
    if (rc == 0) rc = forward(f, full, ids, n, NULL, err);   /* last: its logits choose the next token */
    forward_remove_observer(f, &obs);
    pp->target_pos = -1;
    return rc;
}

int policy_probe_run(PolicyProbe *pp, Forward *f, KVCache *full, KVCache *pcache, struct Policy *policy,
                     const int *ids, int n, const StepHook *hook, Err *err) {
    if (n + pp->n_steps > pp->max_keys)
        return err_set(err, "policy probe: %d prompt + %d decode tokens exceed the %d keys it holds",
                       n, pp->n_steps, pp->max_keys);
    kvcache_reset(full);
    kvcache_reset(pcache);
    int rc = probe_forward(pp, f, full, pcache, policy, ids, n, -1, err);
    if (rc == 0 && hook && hook->step) hook->step(hook->ctx, n);
    for (int s = 1; rc == 0 && s <= pp->n_steps; s++) {
        int token = argmax(forward_last_logits(f), pp->vocab);
        rc = probe_forward(pp, f, full, pcache, policy, &token, 1, n + s - 1, err);
        if (rc == 0) rc = probe_collect(pp, s, err);
        if (rc == 0 && hook && hook->step) hook->step(hook->ctx, 1);
    }
    return rc;
}

static int probe_write_csv(const PolicyProbe *pp, const char *path, Err *err) {
    AtomicFile af;
    if (atomic_open(&af, path, err) != 0) return -1;
    fprintf(af.f, "layer,head,kv_head,metric,mean,std,n\n");
    for (int l = 0; l < pp->L; l++)
        for (int h = 0; h < pp->H; h++)
            for (int m = 0; m < PROBE_N; m++) {
                const RunStat *s = policy_probe_stat(pp, l, h, m);
                fprintf(af.f, "%d,%d,%d,%s,%.9g,%.9g,%lld\n", l, h, h / pp->group, probe_metric_name(m),
                        runstat_mean(s), runstat_std(s), (long long)s->n);
            }
    return atomic_commit(&af, err);
}

static int probe_write_steps(const PolicyProbe *pp, const char *path, Err *err) {
    AtomicFile af;
    if (atomic_open(&af, path, err) != 0) return -1;
    fprintf(af.f, "step");
    for (int m = 0; m < PROBE_N; m++) fprintf(af.f, ",%s_mean,%s_std", probe_metric_name(m), probe_metric_name(m));
    fprintf(af.f, ",n\n");
    for (int step = 1; step <= pp->n_steps; step++) {
        fprintf(af.f, "%d", step);
        for (int m = 0; m < PROBE_N; m++) {
            const RunStat *s = policy_probe_step(pp, step, m);
            fprintf(af.f, ",%.9g,%.9g", runstat_mean(s), runstat_std(s));
        }
        fprintf(af.f, ",%lld\n", (long long)policy_probe_step(pp, step, 0)->n);
    }
    return atomic_commit(&af, err);
}

static int probe_write_npz(const PolicyProbe *pp, const char *path, Err *err) {
    NpzWriter *w = npz_open(path, err);
    if (!w) return -1;
    size_t LH = (size_t)pp->L * pp->H, S = (size_t)pp->n_steps;
    double *mean = xmalloc((LH > S ? LH : S) * sizeof(double)), *std = xmalloc((LH > S ? LH : S) * sizeof(double));
    int64_t *num = xmalloc((LH > S ? LH : S) * sizeof(int64_t));
    int64_t shape[2] = { pp->L, pp->H }, steps = pp->n_steps;
    int rc = 0;
    char name[96];
    for (int m = 0; rc == 0 && m < PROBE_N; m++) {
        for (size_t i = 0; i < LH; i++) {
            const RunStat *s = &pp->stat[i * PROBE_N + m];
            mean[i] = runstat_mean(s); std[i] = runstat_std(s); num[i] = s->n;
        }
        snprintf(name, sizeof name, "%s_mean", probe_metric_name(m));
        rc = npz_add(w, name, NPY_F64, 2, shape, mean, err);
        snprintf(name, sizeof name, "%s_std", probe_metric_name(m));
        if (rc == 0) rc = npz_add(w, name, NPY_F64, 2, shape, std, err);
        snprintf(name, sizeof name, "%s_n", probe_metric_name(m));
        if (rc == 0) rc = npz_add(w, name, NPY_I64, 2, shape, num, err);
        for (size_t i = 0; i < S; i++) {
            const RunStat *s = &pp->by_step[i * PROBE_N + m];
            mean[i] = runstat_mean(s); std[i] = runstat_std(s); num[i] = s->n;
        }
        snprintf(name, sizeof name, "steps_%s_mean", probe_metric_name(m));
        if (rc == 0) rc = npz_add(w, name, NPY_F64, 1, &steps, mean, err);
        snprintf(name, sizeof name, "steps_%s_std", probe_metric_name(m));
        if (rc == 0) rc = npz_add(w, name, NPY_F64, 1, &steps, std, err);
    }
    if (rc == 0) rc = npz_add(w, "steps_n", NPY_I64, 1, &steps, num, err);
    free(mean); free(std); free(num);
    if (rc != 0) { npz_abort(w); return -1; }
    return npz_close(w, err);
}

int policy_probe_write(const PolicyProbe *pp, const char *run_dir, Err *err) {
    char path[4200];
    path_join(path, sizeof path, run_dir, "policy_loss.csv");
    if (probe_write_csv(pp, path, err) != 0) return -1;
    path_join(path, sizeof path, run_dir, "policy_steps.csv");
    if (probe_write_steps(pp, path, err) != 0) return -1;
    path_join(path, sizeof path, run_dir, "policy.npz");
    return probe_write_npz(pp, path, err);
}
