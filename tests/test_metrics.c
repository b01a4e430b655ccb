/* test_metrics.c — the correlation / eviction metrics (src/metrics.c) against
 * straightforward O(n²) formulas written here from ../shared/spec/methods.md §5, on hand-made
 * rows and on the golden attention maps and key norms of ../shared/golden; the
 * correlator and the tracer end to end on stories260K.
 *
 * The direct formulas never sort: a rank is "how many are smaller (+ half the
 * equal ones)", a top-m set is "those with fewer than m better". */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "engine/forward.h"
#include "lab/metrics.h"
#include "formats/npy.h"
#include "policy/policy.h"
#include "base/splitmix64.h"
#include "model/tokenizer.h"
#include "lab/runmeta.h"
#include "lab/trace.h"
#include "lab/sinks.h"

/* ---- independent reference implementations -------------------------------------- */

/* Average rank (1..n) of v[i]: 1 + #smaller + (#equal others)/2. */
static double direct_avg_rank(const float *v, int n, int i) {
    int less = 0, equal = 0;
    for (int j = 0; j < n; j++) { less += v[j] < v[i]; equal += v[j] == v[i] && j != i; }
    return 1.0 + less + equal / 2.0;
}

/* Pearson by the one-pass textbook formula (not the code's two-pass one). */
static double direct_pearson(const double *x, const double *y, int n) {
    double sx = 0, sy = 0, sxx = 0, syy = 0, sxy = 0;
    for (int i = 0; i < n; i++) { sx += x[i]; sy += y[i]; sxx += x[i] * x[i]; syy += y[i] * y[i]; sxy += x[i] * y[i]; }
    double cov = n * sxy - sx * sy, vx = n * sxx - sx * sx, vy = n * syy - sy * sy;
    return cov / sqrt(vx * vy);
}

static double direct_spearman(const float *x, const float *y, int n) {
    double *rx = malloc(n * sizeof(double)), *ry = malloc(n * sizeof(double));
    for (int i = 0; i < n; i++) { rx[i] = direct_avg_rank(x, n, i); ry[i] = direct_avg_rank(y, n, i); }
    double r = direct_pearson(rx, ry, n);
    free(rx); free(ry);
    return r;
}

static double direct_pearson_f(const float *x, const float *y, int n) {
    double *a = malloc(n * sizeof(double)), *b = malloc(n * sizeof(double));
    for (int i = 0; i < n; i++) { a[i] = x[i]; b[i] = y[i]; }
    double r = direct_pearson(a, b, n);
    free(a); free(b);
    return r;
}

/* Place of token i when evicting by highest norm first (ties: the later token first). */
static int direct_norm_place(const float *norm, int n, int i) {
    int place = 0;
    for (int j = 0; j < n; j++) place += norm[j] > norm[i] || (norm[j] == norm[i] && j > i);
    return place;
}
/* Place of token i when evicting by lowest attention first (ties: the earlier token first). */
static int direct_attn_place(const float *a, int n, int i) {
    int place = 0;
    for (int j = 0; j < n; j++) place += a[j] < a[i] || (a[j] == a[i] && j < i);
    return place;
}

/* Eqs. 5–7 literally: for each m, the attention mass of D_m (the m highest
 * norms) minus that of D̂_m (the m lowest attentions), summed over m. */
static double direct_alr(const float *norm, const float *a, int n) {
    int *pn = malloc(n * sizeof(int)), *pa = malloc(n * sizeof(int));
    for (int i = 0; i < n; i++) { pn[i] = direct_norm_place(norm, n, i); pa[i] = direct_attn_place(a, n, i); }
    double alr = 0;
    for (int m = 1; m <= n; m++) {
        double y = 0;
        for (int i = 0; i < n; i++) y += (pn[i] < m ? a[i] : 0) - (pa[i] < m ? a[i] : 0);
        alr += y;
    }
    free(pn); free(pa);
    return alr;
}

/* Attention loss (mass on evicted tokens) and oracle overlap of one order at e evicted. */
static void direct_loss(const float *norm, const float *a, int n, int e, EvictOrder order,
                        double *loss, double *overlap) {
    int keep = n - e, both = 0;
    *loss = 0;
    for (int i = 0; i < n; i++) {
        int pn = direct_norm_place(norm, n, i), pa = direct_attn_place(a, n, i), evicted;
        if (order == EVICT_LOWNORM) evicted = pn < e;
        else if (order == EVICT_HIGHNORM) evicted = pn >= n - e;
        else evicted = pa < e;
        if (evicted) *loss += a[i];
        both += !evicted && pa >= e;
    }
    *overlap = (double)both / keep;
}

/* Compare metrics_row with the direct formulas on one row; returns the worst |diff|. */
static double compare_row(const float *norm, const float *a, int n, RowScratch *s, NormStats *ns) {
    RowMetrics m;
    normstats_set(ns, norm, n, s);
    metrics_row(ns, a, 42, s, &m);
    double worst = 0;
#define TRACK(x, y) do { double d_ = fabs((double)(x) - (double)(y)); if (!(d_ <= worst)) worst = d_; } while (0)
    TRACK(m.spearman, direct_spearman(norm, a, n));
    TRACK(m.pearson, direct_pearson_f(norm, a, n));
    double alr = direct_alr(norm, a, n);
    TRACK(m.alr, alr);
    TRACK(m.alr_per_n, alr / n);
    for (int r = 0; r < METRICS_N_RATIOS; r++) {
        int e = n - metrics_keep(n, metrics_ratio_pct(r));
        EvictOrder orders[3] = { EVICT_LOWNORM, EVICT_HIGHNORM, EVICT_ORACLE };
        for (int k = 0; k < 3; k++) {
            double loss, overlap;
            direct_loss(norm, a, n, e, orders[k], &loss, &overlap);
            TRACK(m.loss[orders[k]][r], loss);
            TRACK(m.overlap[orders[k]][r], overlap);
        }
        /* random: between the oracle and everything, overlap a fraction */
        if (!(m.loss[EVICT_RANDOM][r] >= m.loss[EVICT_ORACLE][r] - 1e-12 && m.loss[EVICT_RANDOM][r] <= 1 + 1e-6)) worst = 1;
        if (!(m.overlap[EVICT_RANDOM][r] >= 0 && m.overlap[EVICT_RANDOM][r] <= 1)) worst = 1;
    }
#undef TRACK
    return worst;
}

/* ---- helpers ---------------------------------------------------------------------- */

static NpyArray load_member(const char *npz, const char *name) {
    NpyArray a;
    Err err;
    memset(&a, 0, sizeof a);
    if (npz_read(&a, npz, name, &err) != 0) { fprintf(stderr, "%s\n", err.msg); exit(1); }
    return a;
}

static RowMetrics row_metrics(const float *norm, const float *a, int n) {
    RowScratch s;
    NormStats ns;
    RowMetrics m;
    rowscratch_init(&s);
    normstats_init(&ns);
    normstats_set(&ns, norm, n, &s);
    metrics_row(&ns, a, 7, &s, &m);
    normstats_free(&ns);
    rowscratch_free(&s);
    return m;
}

static uint64_t rng_state = 12345;
static double rnd(void) {
    rng_state = splitmix64_at(rng_state, 1);
    return (double)(rng_state >> 11) / 9007199254740992.0;
}

/* ---- hand-checked cases ------------------------------------------------------------- */

static void test_hand_cases(void) {
    CASE("ALR = 0 when the norm order is the reverse of the attention order") {
        float norm[5] = { 1, 2, 3, 4, 5 }, a[5] = { 0.4f, 0.3f, 0.15f, 0.1f, 0.05f };
        RowMetrics m = row_metrics(norm, a, 5);
        CHECK_CLOSE(m.alr, 0.0, 1e-12, "ALR");
        CHECK_CLOSE(m.spearman, -1.0, 1e-12, "spearman");
        for (int r = 0; r < METRICS_N_RATIOS; r++) {
            CHECK_CLOSE(m.loss[EVICT_LOWNORM][r], m.loss[EVICT_ORACLE][r], 1e-12, "lownorm = oracle");
            CHECK_CLOSE(m.overlap[EVICT_LOWNORM][r], 1.0, 1e-12, "overlap 1");
        }
    }
    CASE("ALR by hand: norm order = attention order (the worst case), n = 4") {
        /* D_m = first m tokens (highest norms): masses .4 .7 .9 1; D̂_m = last m:
         * .1 .3 .6 1 -> Y = .3 .4 .3 0 -> ALR = 1.0, ALR/n = 0.25 */
        float norm[4] = { 4, 3, 2, 1 }, a[4] = { 0.4f, 0.3f, 0.2f, 0.1f };
        RowMetrics m = row_metrics(norm, a, 4);
        CHECK_CLOSE(m.alr, 1.0, 1e-6, "ALR");
        CHECK_CLOSE(m.alr_per_n, 0.25, 1e-6, "ALR/n");
        CHECK_CLOSE(m.spearman, 1.0, 1e-12, "spearman");
        /* 50 %: keep 2. lownorm evicts the 2 highest norms = .4+.3; highnorm evicts .2+.1 = oracle */
        CHECK_CLOSE(m.loss[EVICT_LOWNORM][4], 0.7, 1e-6, "loss lownorm @50");
        CHECK_CLOSE(m.loss[EVICT_HIGHNORM][4], 0.3, 1e-6, "loss highnorm @50");
        CHECK_CLOSE(m.loss[EVICT_ORACLE][4], 0.3, 1e-6, "loss oracle @50");
        CHECK_CLOSE(m.overlap[EVICT_LOWNORM][4], 0.0, 1e-12, "overlap lownorm @50");
        CHECK_CLOSE(m.overlap[EVICT_HIGHNORM][4], 1.0, 1e-12, "overlap highnorm @50");
    }
    CASE("Spearman with ties uses average ranks (scipy.stats.spearmanr: 0.9486832980505138)") {
        float x[4] = { 1, 2, 2, 3 }, y[4] = { 0.1f, 0.2f, 0.3f, 0.4f };
        RowMetrics m = row_metrics(x, y, 4);
        CHECK_CLOSE(m.spearman, 0.9486832980505138, 1e-12, "spearman with a tie");
        RowScratch s;
        rowscratch_init(&s);
        int order[4];
        double rank[4];
        argsort_f32(x, 4, order, &s);
        average_ranks(x, order, 4, rank);
        CHECK(rank[0] == 1 && rank[1] == 2.5 && rank[2] == 2.5 && rank[3] == 4, "ranks %g %g %g %g",
              rank[0], rank[1], rank[2], rank[3]);
        rowscratch_free(&s);
    }
    CASE("Pearson of a perfect line is +1 / -1; Spearman of a monotone curve is 1") {
        float x[50], up[50], down[50], curve[50];
        for (int i = 0; i < 50; i++) {
            x[i] = (float)i * 0.37f + 1;
            up[i] = 3 * x[i] + 2; down[i] = -0.5f * x[i] + 7; curve[i] = expf(x[i] / 4);
        }
        CHECK_CLOSE(pearson_f32(x, up, 50), 1.0, 1e-9, "r line up");
        CHECK_CLOSE(pearson_f32(x, down, 50), -1.0, 1e-9, "r line down");
        CHECK_CLOSE(row_metrics(x, curve, 50).spearman, 1.0, 1e-12, "rho monotone");
        CHECK(pearson_f32(x, curve, 50) < 0.999, "r of a curve is below 1");
        float flat[3] = { 2, 2, 2 };
        CHECK(isnan(row_metrics(flat, up, 3).spearman), "constant norms: rho undefined");
        CHECK(isnan(row_metrics(x, up, 1).pearson), "n = 1: r undefined");
    }
    CASE("keep = max(1, floor(n (1 - r))) without float rounding") {
        CHECK(metrics_keep(10, 90) == 1, "10 @90 -> %d", metrics_keep(10, 90));
        CHECK(metrics_keep(10, 10) == 9, "10 @10 -> %d", metrics_keep(10, 10));
        CHECK(metrics_keep(3, 90) == 1, "3 @90 -> %d", metrics_keep(3, 90));
        CHECK(metrics_keep(7, 30) == 4, "7 @30 -> %d", metrics_keep(7, 30));
        CHECK(metrics_keep(1000, 70) == 300, "1000 @70 -> %d", metrics_keep(1000, 70));
    }
    CASE("argsort_f32: stable ascending, negatives, zeros, ties, all sizes") {
        int sizes[] = { 0, 1, 2, 31, 32, 257, 1000 };
        RowScratch s;
        rowscratch_init(&s);
        for (int k = 0; k < 7; k++) {
            int n = sizes[k];
            float *v = malloc((n + 1) * sizeof(float));
            int *order = malloc((n + 1) * sizeof(int));
            for (int i = 0; i < n; i++) v[i] = (float)((int)(rnd() * 40) - 20) * (rnd() < 0.5 ? 0.001f : 1.0f);
            argsort_f32(v, n, order, &s);
            int bad = 0;
            for (int i = 1; i < n; i++)
                bad += v[order[i - 1]] > v[order[i]] || (v[order[i - 1]] == v[order[i]] && order[i - 1] > order[i]);
            CHECK(bad == 0, "n=%d: %d misordered pairs", n, bad);
            free(v); free(order);
        }
        rowscratch_free(&s);
    }
    CASE("random eviction order: a permutation, reproducible, key-dependent, unbiased") {
        int p1[100], p2[100], p3[100], seen[100] = {0};
        random_permutation(p1, 100, 5);
        random_permutation(p2, 100, 5);
        random_permutation(p3, 100, 6);
        int same = 1, differ = 0;
        for (int i = 0; i < 100; i++) { seen[p1[i]]++; same &= p1[i] == p2[i]; differ += p1[i] != p3[i]; }
        int perm = 1;
        for (int i = 0; i < 100; i++) perm &= seen[i] == 1;
        CHECK(perm, "not a permutation");
        CHECK(same, "same key, different order");
        CHECK(differ > 50, "keys 5 and 6 give nearly the same order");
        /* the expected random loss at 50 % of a uniform row is 0.5 */
        float norm[64], a[64];
        for (int i = 0; i < 64; i++) { norm[i] = (float)rnd(); a[i] = 1.0f / 64; }
        RowScratch s;
        NormStats ns;
        rowscratch_init(&s);
        normstats_init(&ns);
        normstats_set(&ns, norm, 64, &s);
        double sum = 0;
        for (int k = 0; k < 200; k++) {
            RowMetrics m;
            metrics_row(&ns, a, (uint64_t)k, &s, &m);
            sum += m.loss[EVICT_RANDOM][4];
        }
        CHECK_CLOSE(sum / 200, 0.5, 1e-6, "uniform row: random loss @50");
        normstats_free(&ns);
        rowscratch_free(&s);
    }
    CASE("streaming metrics = direct O(n^2) formulas on random rows with ties") {
        RowScratch s;
        NormStats ns;
        rowscratch_init(&s);
        normstats_init(&ns);
        double worst = 0;
        for (int trial = 0; trial < 40; trial++) {
            int n = 2 + (int)(rnd() * 150);
            float *norm = malloc(n * sizeof(float)), *a = malloc(n * sizeof(float));
            double total = 0;
            for (int i = 0; i < n; i++) {
                norm[i] = trial % 2 ? (float)(int)(rnd() * 8) : (float)rnd() * 10;   /* odd trials: many ties */
                a[i] = trial % 3 ? (float)rnd() : (float)(int)(rnd() * 4);
                total += a[i];
            }
            for (int i = 0; i < n; i++) a[i] = (float)(a[i] / (total > 0 ? total : 1));
            double w = compare_row(norm, a, n, &s, &ns);
            if (!(w <= worst)) worst = w;
            free(norm); free(a);
        }
        CHECK(worst <= 1e-9, "worst |diff| %.3g", worst);
        normstats_free(&ns);
        rowscratch_free(&s);
    }
    CASE("normstats_extend (decode: insert the new slots) = normstats_set (sort afresh), ties included") {
        RowScratch s;
        NormStats inc, full;
        rowscratch_init(&s);
        normstats_init(&inc);
        normstats_init(&full);
        float norm[600];
        int same = 1, n = 0;
        for (int i = 0; i < 600; i++) norm[i] = (float)(int)(rnd() * 50) / 7;   /* many ties */
        for (int step = 0; n < 600; step++) {
            n += step == 0 ? 100 : 1 + (step % 3 == 0 ? 2 : 0);
            if (n > 600) n = 600;
            normstats_extend(&inc, norm, n, &s);
            normstats_set(&full, norm, n, &s);
            for (int i = 0; i < n; i++)
                same &= inc.by_norm_desc[i] == full.by_norm_desc[i] && inc.norm_rank[i] == full.norm_rank[i] &&
                        inc.avg_rank[i] == full.avg_rank[i];
            same &= inc.n == full.n && inc.norm_ss == full.norm_ss && inc.rank_ss == full.rank_ss;
        }
        CHECK(same, "incremental and fresh norm orders differ");
        normstats_free(&inc);
        normstats_free(&full);
        rowscratch_free(&s);
    }
    CASE("Welford mean / sample std = two-pass formulas; NaN values skipped") {
        MetricsAcc acc;
        metrics_acc_clear(&acc);
        double x[200], sum = 0, ss = 0;
        for (int i = 0; i < 200; i++) { x[i] = 1000 + rnd(); sum += x[i]; metrics_acc_add_value(&acc, SLOT_ALR, x[i]); }
        metrics_acc_add_value(&acc, SLOT_ALR, NAN);
        double mean = sum / 200;
        for (int i = 0; i < 200; i++) ss += (x[i] - mean) * (x[i] - mean);
        CHECK(acc.slot[SLOT_ALR].n == 200, "n %lld", (long long)acc.slot[SLOT_ALR].n);
        CHECK_CLOSE(metrics_acc_mean(&acc, SLOT_ALR), mean, 1e-9, "mean");
        CHECK_CLOSE(metrics_acc_std(&acc, SLOT_ALR), sqrt(ss / 199), 1e-9, "std");
        CHECK(isnan(metrics_acc_mean(&acc, SLOT_PEARSON)) && isnan(metrics_acc_std(&acc, SLOT_PEARSON)), "empty -> NaN");
    }
    CASE("slot names and parse_bytes") {
        char name[64];
        double ratio;
        metrics_slot_describe(SLOT_LOSS + EVICT_ORACLE * METRICS_N_RATIOS + 8, name, sizeof name, &ratio);
        CHECK(!strcmp(name, "loss_oracle") && fabs(ratio - 0.9) < 1e-12, "%s %g", name, ratio);
        metrics_slot_describe(SLOT_OVERLAP + EVICT_RANDOM * METRICS_N_RATIOS, name, sizeof name, &ratio);
        CHECK(!strcmp(name, "overlap_random") && fabs(ratio - 0.1) < 1e-12, "%s %g", name, ratio);
        metrics_slot_describe(SLOT_ALR_N, name, sizeof name, &ratio);
        CHECK(!strcmp(name, "alr_per_n") && ratio < 0, "%s", name);
        CHECK(parse_bytes("1000") == 1000 && parse_bytes("64k") == 65536 && parse_bytes("1G") == (1LL << 30) &&
              parse_bytes("1.5MiB") == 1572864 && parse_bytes("x") == -1 && parse_bytes("5Q") == -1 &&
              parse_bytes("-3") == -1, "parse_bytes");
    }
}

/* ---- sink diagnostics ---------------------------------------------------------------- */

static void test_sink_hand_cases(void) {
    CASE("sink row metrics: attention on slot 0, its key norm over the median (odd and even n)") {
        /* norms sorted: .5 1 2 3 4 -> median 2, first .5 -> .25 */
        float norm5[5] = { 0.5f, 2, 4, 1, 3 }, a5[5] = { 0.45f, 0.05f, 0.2f, 0.1f, 0.2f };
        RowMetrics m = row_metrics(norm5, a5, 5);
        CHECK_CLOSE(m.first_token_attn, 0.45, 1e-7, "first-token attention");
        CHECK_CLOSE(m.first_key_norm_ratio, 0.25, 1e-12, "key norm / median, n = 5");
        /* sorted 1 2 4 6 -> median (2 + 4) / 2 = 3, first 1 -> 1/3 */
        float norm4[4] = { 1, 4, 2, 6 }, a4[4] = { 0.1f, 0.2f, 0.3f, 0.4f };
        m = row_metrics(norm4, a4, 4);
        CHECK_CLOSE(m.first_token_attn, 0.1, 1e-7, "first-token attention");
        CHECK_CLOSE(m.first_key_norm_ratio, 1.0 / 3.0, 1e-12, "key norm / median, n = 4");
        CHECK_CLOSE(metrics_slot_value(&m, SLOT_FIRST_KEY_RATIO), 1.0 / 3.0, 1e-12, "slot value");
        char name[64];
        double ratio;
        metrics_slot_describe(SLOT_FIRST_ATTN, name, sizeof name, &ratio);
        CHECK(!strcmp(name, "first_token_attn") && ratio < 0, "%s", name);
        metrics_slot_describe(SLOT_FIRST_KEY_RATIO, name, sizeof name, &ratio);
        CHECK(!strcmp(name, "first_key_norm_ratio") && ratio < 0, "%s", name);
    }
    CASE("sink_layer: mean over heads, share strictly above 0.3 (Gu et al.'s Sink_1^0.3), NaN heads left out") {
        double attn[6] = { 0.5, 0.31, 0.3, 0.1, NAN, 0.29 }, ratio[3] = { 0.5, 1.5, NAN };
        LayerSink ls = sink_layer(attn, 6, ratio, 3);
        CHECK_CLOSE(ls.first_token_attn, (0.5 + 0.31 + 0.3 + 0.1 + 0.29) / 5, 1e-12, "mean of the 5 measured heads");
        CHECK(ls.sink_heads == 2, "sink heads %d (0.3 itself is not above)", ls.sink_heads);
        CHECK_CLOSE(ls.sink_head_share, 2.0 / 5, 1e-12, "share");
        CHECK_CLOSE(ls.key_norm_ratio, 1.0, 1e-12, "mean over the 2 measured KV heads");
        double none[2] = { 0.01, 0.2 }, one[1] = { 2.0 };
        ls = sink_layer(none, 2, one, 1);
        CHECK(ls.sink_heads == 0 && ls.sink_head_share == 0, "no sink head: %d", ls.sink_heads);
        double nan2[2] = { NAN, NAN };
        ls = sink_layer(nan2, 2, nan2, 2);
        CHECK(isnan(ls.first_token_attn) && isnan(ls.sink_head_share) && isnan(ls.key_norm_ratio), "nothing measured -> NaN");
    }
}

/* ---- golden maps -------------------------------------------------------------------- */

typedef struct { int L, H, KV, T; float *attn, *knorm; int64_t *ids; } Golden;

static Golden golden_load(const char *rel) {
    char path[4096];
    shared_path(path, sizeof path, rel);
    Golden g;
    NpyArray a = load_member(path, "attn"), k = load_member(path, "key_norm"), ids = load_member(path, "ids");
    g.L = (int)a.shape[0]; g.H = (int)a.shape[1]; g.T = (int)a.shape[2]; g.KV = (int)k.shape[1];
    g.attn = npy_to_f32(&a); g.knorm = npy_to_f32(&k); g.ids = npy_to_i64(&ids);
    npy_free(&a); npy_free(&k); npy_free(&ids);
    return g;
}
static void golden_free(Golden *g) { free(g->attn); free(g->knorm); free(g->ids); }
static const float *golden_row(const Golden *g, int l, int h, int t) {
    return g->attn + (((size_t)l * g->H + h) * g->T + t) * g->T;
}
static const float *golden_norms(const Golden *g, int l, int kv) {
    return g->knorm + ((size_t)l * g->KV + kv) * g->T;
}

static void test_golden_maps(const char *rel) {
    char name[256];
    snprintf(name, sizeof name, "every row of %s: streaming metrics = direct formulas", rel);
    CASE(name) {
        Golden g = golden_load(rel);
        RowScratch s;
        NormStats ns;
        rowscratch_init(&s);
        normstats_init(&ns);
        double worst = 0;
        int rows = 0;
        for (int l = 0; l < g.L; l++)
            for (int h = 0; h < g.H; h++)
                for (int t = 1; t < g.T; t += (g.T > 100 ? 3 : 1)) {
                    double w = compare_row(golden_norms(&g, l, h / (g.H / g.KV)), golden_row(&g, l, h, t), t + 1, &s, &ns);
                    if (!(w <= worst)) worst = w;
                    rows++;
                }
        printf("      %d rows, worst |diff| %.2e\n", rows, worst);
        CHECK(worst <= 1e-9, "worst |diff| %.3g", worst);
        normstats_free(&ns);
        rowscratch_free(&s);
        golden_free(&g);
    }
}

/* ---- model runs: correlator and tracer ------------------------------------------------- */

static Model load_stories(void) {
    char path[4096];
    Model m;
    Err err;
    shared_path(path, sizeof path, "models/stories260k/stories260K.bin");
    if (model_load(&m, path, DTYPE_F32, &err) != 0) { fprintf(stderr, "%s\n", err.msg); exit(1); }
    return m;
}

static int *ids_int(const Golden *g) {
    int *ids = malloc(g->T * sizeof(int));
    for (int t = 0; t < g->T; t++) ids[t] = (int)g->ids[t];
    return ids;
}

/* Do two of the n norms lie within a relative 1e-5 of each other? Then fp32
 * rounding (kvlab takes the norm after RoPE, HF before) may order them either
 * way, and the order-based metrics (ALR, the norm-ordered losses) may differ. */
static int has_near_tie(const float *norm, int n) {
    for (int i = 0; i < n; i++)
        for (int j = i + 1; j < n; j++)
            if (fabsf(norm[i] - norm[j]) <= 1e-5f * fabsf(norm[i])) return 1;
    return 0;
}

static void test_correlator_last_prefill(void) {
    CASE("correlate --query last-prefill on the golden prompt = direct metrics of the golden last row") {
        Golden g = golden_load("golden/golden_stories260K_text.npz");
        Model m = load_stories();
        Err err;
        KVCache cache;
        forward_cache_init(&m, &cache, g.T, &err);
        Forward *f = forward_create(&m, 32);
        Correlator *c = correlator_create(&m.cfg, g.T, 1);
        int *ids = ids_int(&g);
        int rc = correlator_run(c, f, &cache, ids, g.T, QUERY_LAST_PREFILL, 0, 0, NULL, &err);
        CHECK(rc == 0, "%s", err.msg);
        double worst_r = 0, worst_rho = 0, worst_oracle = 0, worst_order = 0;
        int unexplained = 0, tied_rows = 0;
        for (int l = 0; l < g.L; l++)
            for (int h = 0; h < g.H; h++) {
                const MetricsAcc *a = correlator_acc(c, l, h);
                const float *row = golden_row(&g, l, h, g.T - 1), *norm = golden_norms(&g, l, h / (g.H / g.KV));
                CHECK(a->slot[SLOT_PEARSON].n == 1, "layer %d head %d: %lld rows", l, h, (long long)a->slot[SLOT_PEARSON].n);
                double d = fabs(metrics_acc_mean(a, SLOT_PEARSON) - direct_pearson_f(norm, row, g.T));
                if (!(d <= worst_r)) worst_r = d;
                d = fabs(metrics_acc_mean(a, SLOT_SPEARMAN) - direct_spearman(norm, row, g.T));
                if (!(d <= worst_rho)) worst_rho = d;
                /* order-based: ALR/n and the norm-ordered losses */
                double d_order = fabs(metrics_acc_mean(a, SLOT_ALR_N) - direct_alr(norm, row, g.T) / g.T);
                for (int r = 0; r < METRICS_N_RATIOS; r++) {
                    int e = g.T - metrics_keep(g.T, metrics_ratio_pct(r));
                    double loss, ov;
                    direct_loss(norm, row, g.T, e, EVICT_ORACLE, &loss, &ov);
                    d = fabs(metrics_acc_mean(a, SLOT_LOSS + EVICT_ORACLE * METRICS_N_RATIOS + r) - loss);
                    if (!(d <= worst_oracle)) worst_oracle = d;
                    direct_loss(norm, row, g.T, e, EVICT_LOWNORM, &loss, &ov);
                    d = fabs(metrics_acc_mean(a, SLOT_LOSS + EVICT_LOWNORM * METRICS_N_RATIOS + r) - loss);
                    if (d > d_order) d_order = d;
                }
                int tie = has_near_tie(norm, g.T);
                tied_rows += tie;
                if (d_order > 1e-4 && !tie) unexplained++;
                if (!tie && !(d_order <= worst_order)) worst_order = d_order;
            }
        printf("      worst |diff|: pearson %.2e spearman %.2e oracle loss %.2e; ALR/n + norm-ordered loss "
               "%.2e on the %d of %d rows without a near-tie of norms\n",
               worst_r, worst_rho, worst_oracle, worst_order, g.L * g.H - tied_rows, g.L * g.H);
        /* kvlab's attention equals HF's to ~1e-6: continuous metrics agree to ~1e-5;
         * a rank can flip between two near-equal probabilities (Δρ ~ 12/n³ per swap) */
        CHECK(worst_r <= 1e-4, "pearson %.3g", worst_r);
        CHECK(worst_rho <= 5e-3, "spearman %.3g", worst_rho);
        CHECK(worst_oracle <= 1e-4, "oracle loss %.3g", worst_oracle);
        CHECK(unexplained == 0, "%d rows differ in ALR / norm-ordered loss without a near-tie of norms", unexplained);
        free(ids);
        correlator_free(c);
        forward_free(f);
        kvcache_free(&cache);
        model_free(&m);
        golden_free(&g);
    }
}

static int cmp_float(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

/* The per-layer sink diagnostics of the correlator (last prompt row of the
 * sink-26m golden prompt) against the same numbers taken straight from the
 * float64 reference's attention maps and key norms. */
static void test_correlator_sink(void) {
    CASE("sink diagnostics of sink-26m (last prefill row) = the float64 reference's maps and norms") {
        Golden g = golden_load("golden/golden_sink26m_wikitext.npz");
        char path[4096];
        Model m;
        Err err;
        if (model_load(&m, shared_path(path, sizeof path, "models/sink-26m"), DTYPE_F32, &err) != 0) {
            fprintf(stderr, "%s\n", err.msg); exit(1);
        }
        KVCache cache;
        forward_cache_init(&m, &cache, g.T, &err);
        Forward *f = forward_create(&m, 64);
        Correlator *c = correlator_create(&m.cfg, g.T, 1);
        int *ids = ids_int(&g);
        CHECK(correlator_run(c, f, &cache, ids, g.T, QUERY_LAST_PREFILL, 0, 0, NULL, &err) == 0, "%s", err.msg);
        float *sorted = malloc(g.T * sizeof(float));
        double worst_attn = 0, worst_ratio = 0;
        int layers_with_sinks = 0;
        for (int l = 0; l < g.L; l++) {
            double attn = 0, ratio = 0;
            int sinks = 0;
            for (int h = 0; h < g.H; h++) {
                double a0 = golden_row(&g, l, h, g.T - 1)[0];
                attn += a0;
                sinks += a0 > SINK_THRESHOLD;
            }
            for (int kv = 0; kv < g.KV; kv++) {
                memcpy(sorted, golden_norms(&g, l, kv), g.T * sizeof(float));
                qsort(sorted, g.T, sizeof(float), cmp_float);
                double median = g.T % 2 ? sorted[g.T / 2] : 0.5 * (sorted[g.T / 2 - 1] + sorted[g.T / 2]);
                ratio += golden_norms(&g, l, kv)[0] / median;
            }
            LayerSink ls = correlator_layer_sink(c, l);
            worst_attn = fmax(worst_attn, fabs(ls.first_token_attn - attn / g.H));
            worst_ratio = fmax(worst_ratio, fabs(ls.key_norm_ratio - ratio / g.KV));
            CHECK(ls.sink_heads == sinks, "layer %d: %d sink heads, the reference %d", l, ls.sink_heads, sinks);
            CHECK_CLOSE(ls.sink_head_share, (double)sinks / g.H, 1e-12, "share");
            layers_with_sinks += sinks > 0;
            printf("      layer %d: first-token attention %.3f, %d/%d heads > 0.3, first key norm / median %.3f\n",
                   l, ls.first_token_attn, ls.sink_heads, g.H, ls.key_norm_ratio);
        }
        printf("      worst |diff|: attention %.2e, key norm ratio %.2e\n", worst_attn, worst_ratio);
        CHECK(worst_attn <= 1e-5, "first-token attention differs by %.3g", worst_attn);
        CHECK(worst_ratio <= 1e-5, "key norm ratio differs by %.3g", worst_ratio);
        CHECK(layers_with_sinks >= 4, "sink-26m has sink heads in only %d layers", layers_with_sinks);
        free(sorted);
        free(ids);
        correlator_free(c);
        forward_free(f);
        kvcache_free(&cache);
        model_free(&m);
        golden_free(&g);
    }
}

static char tmpdir[256];

static void make_tmpdir(void) {
    snprintf(tmpdir, sizeof tmpdir, "/tmp/kvlab_test_metrics.XXXXXX");
    if (!mkdtemp(tmpdir)) { perror("mkdtemp"); exit(1); }
}

static void remove_tmp(const char *name) {
    char p[512];
    snprintf(p, sizeof p, "%s/%s", tmpdir, name);
    unlink(p);
}

/* Trace all prefill rows of the golden prompt, write, read back: = golden attn / key_norm. */
/* The sink profile of run metadata (sinks.h): per head, the attention on the
 * first token averaged over every query of the prompt, and per KV head the
 * first key's norm over the median, against the float64 reference's maps. */
static void test_sink_profile(void) {
    CASE("sink profile of sink-26m (every prompt query) = the float64 reference's maps and norms") {
        Golden g = golden_load("golden/golden_sink26m_wikitext.npz");
        char path[4096];
        Model m;
        Err err;
        if (model_load(&m, shared_path(path, sizeof path, "models/sink-26m"), DTYPE_F32, &err) != 0) {
            fprintf(stderr, "%s\n", err.msg); exit(1);
        }
        int *ids = ids_int(&g);
        SinkProfile sp;
        CHECK(sink_profile_measure(&sp, &m, ids, g.T, &err) == 0, "%s", err.msg);
        CHECK(sp.n_tokens == g.T, "%d tokens", sp.n_tokens);
        float *sorted = malloc(g.T * sizeof(float));
        double worst_attn = 0, worst_ratio = 0;
        int layers_with_sinks = 0;
        for (int l = 0; l < g.L; l++) {
            int sinks = 0;
            for (int h = 0; h < g.H; h++) {
                double a0 = 0;
                for (int t = 0; t < g.T; t++) a0 += golden_row(&g, l, h, t)[0];
                a0 /= g.T;
                sinks += a0 > SINK_THRESHOLD;
                worst_attn = fmax(worst_attn, fabs(sp.head_first_attn[l * g.H + h] - a0));
            }
            for (int kv = 0; kv < g.KV; kv++) {
                memcpy(sorted, golden_norms(&g, l, kv), g.T * sizeof(float));
                qsort(sorted, g.T, sizeof(float), cmp_float);
                double median = g.T % 2 ? sorted[g.T / 2] : 0.5 * (sorted[g.T / 2 - 1] + sorted[g.T / 2]);
                worst_ratio = fmax(worst_ratio, fabs(sp.kv_key_norm_ratio[l * g.KV + kv] - golden_norms(&g, l, kv)[0] / median));
            }
            LayerSink ls = sink_profile_layer(&sp, l);
            CHECK(ls.sink_heads == sinks, "layer %d: %d sink heads, the reference %d", l, ls.sink_heads, sinks);
            layers_with_sinks += sinks > 0;
        }
        printf("      worst |diff|: head first-token attention %.2e, KV-head key norm ratio %.2e; %d layers with sinks\n",
               worst_attn, worst_ratio, layers_with_sinks);
        CHECK(worst_attn < 1e-4 && worst_ratio < 1e-4, "attn %.3g ratio %.3g", worst_attn, worst_ratio);
        CHECK(layers_with_sinks >= 5, "sink-26m has sinks in layers 1-6: %d layers", layers_with_sinks);
        sink_profile_free(&sp);
        CHECK(sink_profile_measure(&sp, &m, ids, 0, &err) != 0 && strstr(err.msg, "empty"), "%s", err.msg);
        free(sorted);
        free(ids);
        model_free(&m);
        golden_free(&g);
    }
}

static void test_trace_roundtrip(void) {
    CASE("trace of the golden prompt, read back with npz_read = the golden attention and key norms") {
        Golden g = golden_load("golden/golden_stories260K_text.npz");
        Model m = load_stories();
        Err err;
        int layers[5] = { 0, 1, 2, 3, 4 }, heads[8] = { 0, 1, 2, 3, 4, 5, 6, 7 };
        TracePlan plan = { 5, layers, 8, heads, TRACE_PREFILL, 1, g.T, 0, 1, 0 };
        Tracer *t = tracer_create(&m.cfg, &plan, (size_t)1 << 30, &err);
        CHECK(t != NULL, "%s", err.msg);
        KVCache cache;
        forward_cache_init(&m, &cache, g.T, &err);
        Forward *f = forward_create(&m, 40);
        int *ids = ids_int(&g);
        CHECK(tracer_run(t, f, &cache, ids, 0, NULL, &err) == 0, "%s", err.msg);
        char path[512];
        snprintf(path, sizeof path, "%s/trace.npz", tmpdir);
        CHECK(tracer_write_npz(t, path, &err) == 0, "%s", err.msg);
        NpyArray a = load_member(path, "attn"), k = load_member(path, "key_norm"), q = load_member(path, "query_pos");
        CHECK(a.ndim == 5 && a.shape[0] == 1 && a.shape[1] == 5 && a.shape[2] == 8 && a.shape[3] == g.T && a.shape[4] == g.T,
              "attn shape");
        float *ta = npy_to_f32(&a), *tk = npy_to_f32(&k);
        double worst = 0, worst_k = 0;
        int nan_bad = 0;
        for (int l = 0; l < 5; l++)
            for (int h = 0; h < 8; h++)
                for (int qt = 0; qt < g.T; qt++)
                    for (int p = 0; p < g.T; p++) {
                        float v = ta[(((size_t)l * 8 + h) * g.T + qt) * g.T + p];
                        if (p > qt) { nan_bad += !isnan(v); continue; }
                        double d = fabs(v - golden_row(&g, l, h, qt)[p]);
                        if (!(d <= worst)) worst = d;
                    }
        for (int l = 0; l < 5; l++)
            for (int kv = 0; kv < g.KV; kv++)
                for (int p = 0; p < g.T; p++) {
                    double want = golden_norms(&g, l, kv)[p];
                    double d = fabs(tk[((size_t)l * g.KV + kv) * g.T + p] - want) / (want > 1 ? want : 1);
                    if (!(d <= worst_k)) worst_k = d;
                }
        printf("      max|dattn| %.2e  key-norm rel %.2e\n", worst, worst_k);
        CHECK(worst <= 1e-5, "attention %.3g", worst);
        CHECK(worst_k <= 1e-5, "key norm %.3g", worst_k);
        CHECK(nan_bad == 0, "%d future positions not NaN", nan_bad);
        CHECK(q.count == g.T, "query_pos count %lld", (long long)q.count);
        free(ta); free(tk);
        npy_free(&a); npy_free(&k); npy_free(&q);
        remove_tmp("trace.npz");
        free(ids);
        tracer_free(t);
        forward_free(f);
        kvcache_free(&cache);
        model_free(&m);
        golden_free(&g);
    }
}

/* A subset with decode steps: the right queries, prefill rows = golden, and the
 * first decode row's metrics = what the correlator's first-gen measured. */
static void test_trace_subset_and_first_gen(void) {
    CASE("trace subset (layers 1,3 heads 2,5, --steps all --gen 3 --every 5) and first-gen = correlator") {
        Golden g = golden_load("golden/golden_stories260K_text.npz");
        Model m = load_stories();
        Err err;
        int layers[2] = { 1, 3 }, heads[2] = { 2, 5 }, T = g.T, gen = 3;
        TracePlan plan = { 2, layers, 2, heads, TRACE_ALL, 5, T, gen, 1, 0 };
        int Q = trace_plan_queries(&plan, NULL), qpos[256];
        trace_plan_queries(&plan, qpos);
        /* candidates 0..T+2, every 5th counted back from T+2 */
        int want_q = 0, ok = 1;
        for (int x = T + gen - 1; x >= 0; x -= 5) want_q++;
        for (int i = 0; i < Q; i++) ok &= (T + gen - 1 - qpos[i]) % 5 == 0 && (i == 0 || qpos[i] > qpos[i - 1]);
        CHECK(Q == want_q && ok && qpos[Q - 1] == T + gen - 1, "Q %d (want %d)", Q, want_q);
        Tracer *t = tracer_create(&m.cfg, &plan, (size_t)1 << 30, &err);
        KVCache cache;
        forward_cache_init(&m, &cache, T + gen, &err);
        Forward *f = forward_create(&m, 64);
        int *ids = ids_int(&g);
        CHECK(tracer_run(t, f, &cache, ids, 0, NULL, &err) == 0, "%s", err.msg);
        char path[512];
        snprintf(path, sizeof path, "%s/trace.npz", tmpdir);
        CHECK(tracer_write_npz(t, path, &err) == 0, "%s", err.msg);
        NpyArray a = load_member(path, "attn"), k = load_member(path, "key_norm"), tid = load_member(path, "ids");
        float *ta = npy_to_f32(&a), *tk = npy_to_f32(&k);
        int64_t *tids = npy_to_i64(&tid);
        int P = T + gen;
        CHECK(a.shape[3] == Q && a.shape[4] == P, "attn shape [.., %lld, %lld]", (long long)a.shape[3], (long long)a.shape[4]);
        double worst = 0;
        for (int li = 0; li < 2; li++)
            for (int hi = 0; hi < 2; hi++)
                for (int i = 0; i < Q && qpos[i] < T; i++)
                    for (int p = 0; p <= qpos[i]; p++) {
                        double d = fabs(ta[(((size_t)li * 2 + hi) * Q + i) * P + p] - golden_row(&g, layers[li], heads[hi], qpos[i])[p]);
                        if (!(d <= worst)) worst = d;
                    }
        CHECK(worst <= 1e-5, "prefill rows vs golden %.3g", worst);
        /* the golden greedy continuation starts the decode */
        char gp[4096];
        NpyArray gr = load_member(shared_path(gp, sizeof gp, "golden/golden_stories260K_text.npz"), "greedy");
        int64_t *greedy = npy_to_i64(&gr);
        CHECK(tids[T] == greedy[0] && tids[T + 1] == greedy[1] && tids[T + 2] == greedy[2], "greedy ids");
        free(greedy); npy_free(&gr);

        /* first-gen (query at position T) through the correlator vs the traced row:
         * same row, same norms -> the same metrics (random eviction aside) */
        TracePlan p1 = { 2, layers, 2, heads, TRACE_DECODE, 1, T, 1, 1, 0 };
        Tracer *t1 = tracer_create(&m.cfg, &p1, (size_t)1 << 30, &err);
        CHECK(tracer_run(t1, f, &cache, ids, 0, NULL, &err) == 0, "%s", err.msg);
        snprintf(path, sizeof path, "%s/first.npz", tmpdir);
        CHECK(tracer_write_npz(t1, path, &err) == 0, "%s", err.msg);
        NpyArray a1 = load_member(path, "attn"), k1 = load_member(path, "key_norm");
        float *fa = npy_to_f32(&a1), *fk = npy_to_f32(&k1);
        Correlator *c = correlator_create(&m.cfg, T + 1, 1);
        CHECK(correlator_run(c, f, &cache, ids, T, QUERY_FIRST_GEN, 0, 0, NULL, &err) == 0, "%s", err.msg);
        double worst_m = 0;
        for (int li = 0; li < 2; li++)
            for (int hi = 0; hi < 2; hi++) {
                const float *row = fa + ((size_t)li * 2 + hi) * (T + 1);
                const float *norm = fk + ((size_t)li * m.cfg.n_kv_heads + heads[hi] / 2) * (T + 1);
                RowMetrics rm = row_metrics(norm, row, T + 1);
                const MetricsAcc *acc = correlator_acc(c, layers[li], heads[hi]);
                for (int s = 0; s < SLOT_N; s++) {
                    if (s >= SLOT_LOSS + EVICT_RANDOM * METRICS_N_RATIOS && s < SLOT_LOSS + (EVICT_RANDOM + 1) * METRICS_N_RATIOS) continue;
                    if (s >= SLOT_OVERLAP + EVICT_RANDOM * METRICS_N_RATIOS) continue;
                    double d = fabs(metrics_acc_mean(acc, s) - metrics_slot_value(&rm, s));
                    if (!(d <= worst_m)) worst_m = d;
                }
            }
        CHECK(worst_m <= 1e-9, "first-gen metrics vs traced row %.3g", worst_m);
        remove_tmp("trace.npz");
        remove_tmp("first.npz");
        free(fa); free(fk); npy_free(&a1); npy_free(&k1);
        correlator_free(c);
        tracer_free(t1);
        free(ta); free(tk); free(tids); npy_free(&a); npy_free(&k); npy_free(&tid);
        free(ids);
        tracer_free(t);
        forward_free(f);
        kvcache_free(&cache);
        model_free(&m);
        golden_free(&g);
    }
}

static void test_guards_and_outputs(void) {
    CASE("--max-bytes guard refuses with the size needed; bad selections refused") {
        Model m = load_stories();
        Err err;
        int layers[2] = { 0, 4 }, heads[1] = { 3 }, bad_layers[2] = { 4, 0 };
        TracePlan plan = { 2, layers, 1, heads, TRACE_ALL, 1, 200, 10, 2, 0 };
        size_t need = trace_plan_bytes(&plan, &m.cfg);
        /* attn 2*2*1*210*210 + norms 2*2*2*4*210 + ids 2*210, all 4 bytes */
        CHECK(need == (size_t)(2 * 2 * 210 * 210 + 2 * 2 * 2 * 4 * 210 + 2 * 210) * 4, "need %zu", need);
        Tracer *t = tracer_create(&m.cfg, &plan, need - 1, &err);
        char want[64];
        snprintf(want, sizeof want, "needs %zu bytes", need);
        CHECK(t == NULL && strstr(err.msg, want) && strstr(err.msg, "--max-bytes"), "message: %s", err.msg);
        t = tracer_create(&m.cfg, &plan, need, &err);
        CHECK(t != NULL, "exactly the limit is allowed: %s", err.msg);
        tracer_free(t);
        plan.layers = bad_layers;
        CHECK(tracer_create(&m.cfg, &plan, need, &err) == NULL && strstr(err.msg, "--layers"), "unsorted: %s", err.msg);
        plan.layers = layers;
        plan.steps = TRACE_DECODE;
        plan.n_gen = 0;
        CHECK(tracer_create(&m.cfg, &plan, need, &err) == NULL && strstr(err.msg, "--steps"), "no query: %s", err.msg);
        model_free(&m);
    }
    CASE("metrics.csv / metrics.npz: one row per layer x head x metric + 3 sink rows per layer, numpy-shaped arrays") {
        Model m = load_stories();
        Err err;
        Correlator *c = correlator_create(&m.cfg, 8, 1);
        char csv[512], npz[512];
        snprintf(csv, sizeof csv, "%s/metrics.csv", tmpdir);
        snprintf(npz, sizeof npz, "%s/metrics.npz", tmpdir);
        CHECK(correlator_write_csv(c, csv, &err) == 0, "%s", err.msg);
        CHECK(correlator_write_npz(c, npz, &err) == 0, "%s", err.msg);
        FILE *fp = fopen(csv, "r");
        char line[512], first_sink[512] = "", last[512] = "";
        int lines = 0, per_head = m.cfg.n_layers * m.cfg.n_heads;
        CHECK(fp && fgets(line, sizeof line, fp) && !strcmp(line, "layer,head,kv_head,metric,ratio,mean,std,n\n"), "header");
        while (fp && fgets(line, sizeof line, fp)) {
            lines++;
            if (lines == per_head * SLOT_FIRST_ATTN + 1) snprintf(first_sink, sizeof first_sink, "%s", line);
            snprintf(last, sizeof last, "%s", line);
        }
        if (fp) fclose(fp);
        CHECK(lines == per_head * SLOT_N + 3 * m.cfg.n_layers, "%d rows", lines);
        /* the rows that were there before the sink diagnostics come first, unchanged */
        CHECK(!strncmp(first_sink, "0,0,0,first_token_attn,,", 24), "first sink row: %s", first_sink);
        CHECK(!strncmp(last, "4,,,sink_key_norm_ratio,,", 25), "last row: %s", last);
        NpyArray a = load_member(npz, "loss_oracle_mean"), b = load_member(npz, "spearman_n");
        NpyArray sh = load_member(npz, "sink_head_share"), fa = load_member(npz, "first_token_attn_mean");
        CHECK(a.ndim == 3 && a.shape[0] == 5 && a.shape[1] == 8 && a.shape[2] == 9, "loss_oracle_mean shape");
        CHECK(b.ndim == 2 && b.type == NPY_I64, "spearman_n");
        CHECK(sh.ndim == 1 && sh.shape[0] == 5 && sh.type == NPY_F64, "sink_head_share shape");
        CHECK(fa.ndim == 2 && fa.shape[0] == 5 && fa.shape[1] == 8, "first_token_attn_mean shape");
        npy_free(&a); npy_free(&b); npy_free(&sh); npy_free(&fa);
        remove_tmp("metrics.csv");
        remove_tmp("metrics.npz");
        correlator_free(c);
        model_free(&m);
    }
    CASE("text chunks: BOS + consecutive pieces of the tokenized file") {
        char tp[4096], fp_[4096];
        Err err;
        Tokenizer *tok = tokenizer_load(shared_path(tp, sizeof tp, "models/stories260k/tok512.bin"), &err);
        CHECK(tok != NULL, "%s", err.msg);
        shared_path(fp_, sizeof fp_, "data/tinystories-valid-head.txt");
        int got = 0;
        int *ch = text_chunks(tok, fp_, 64, 3, &got, &err);
        CHECK(ch && got == 3, "got %d: %s", got, err.msg);
        /* the same tokens as tokenizing the first ~2 KB directly */
        char *text;
        size_t size;
        read_file(fp_, &text, &size, &err);
        int *direct = malloc(4096 * sizeof(int));
        int n = tokenizer_encode_len(tok, text, 2048, 0, direct, 4096, &err);
        int same = n > 3 * 63;
        for (int c = 0; same && c < 3; c++) {
            same &= ch[c * 64] == tokenizer_bos_id(tok);
            for (int i = 1; i < 64; i++) same &= ch[c * 64 + i] == direct[c * 63 + i - 1];
        }
        CHECK(same, "chunks differ from the direct tokenization");
        CHECK(text_chunks(tok, fp_, 1 << 22, 1, &got, &err) == NULL && strstr(err.msg, "--chunk"), "too long: %s", err.msg);
        free(direct); free(text); free(ch);
        tokenizer_free(tok);
    }
}

/* The policy probe: `full` loses nothing; l2 with one eviction after the
 * prompt loses, at the first decode step, exactly the full-cache attention on
 * the prompt tokens with the highest key norms (computed here from a trace). */
static Policy *make_policy(const Model *m, const char *spec, double ratio, Schedule sched, int max_tokens) {
    PolicyOpts po;
    Err err;
    policy_defaults(&po);
    if (policy_parse_spec(&po, spec, &err) != 0) { fprintf(stderr, "%s\n", err.msg); exit(1); }
    if (ratio > 0) { po.budget_kind = BUDGET_COMPRESSION; po.budget = ratio; }
    po.schedule = sched;
    if (policy_resolve(&po, &err) != 0) { fprintf(stderr, "%s\n", err.msg); exit(1); }
    Policy *p = policy_create(&po, &m->cfg, max_tokens, &err);
    if (!p) { fprintf(stderr, "%s\n", err.msg); exit(1); }
    return p;
}

static void test_policy_probe(void) {
    CASE("policy probe: full loses nothing; l2 after the prompt loses the attention on the highest norms") {
        Golden g = golden_load("golden/golden_stories260K_text.npz");
        Model m = load_stories();
        Err err;
        int T = g.T, steps = 3, *ids = ids_int(&g);
        KVCache full, pc;
        forward_cache_init(&m, &full, T + steps, &err);
        forward_cache_init(&m, &pc, T + steps, &err);
        Forward *f = forward_create(&m, 64);

        Policy *pf = make_policy(&m, "full", 0, SCHED_DEFAULT, T + steps);
        PolicyProbe *pp = policy_probe_create(&m.cfg, T + steps, steps);
        CHECK(policy_probe_run(pp, f, &full, &pc, pf, ids, T, NULL, &err) == 0, "%s", err.msg);
        double worst = 0;
        for (int l = 0; l < g.L; l++)
            for (int h = 0; h < g.H; h++) {
                worst = fmax(worst, fabs(policy_probe_stat(pp, l, h, PROBE_LOSS)->mean));
                worst = fmax(worst, fabs(policy_probe_stat(pp, l, h, PROBE_KEPT)->mean - 1));
                worst = fmax(worst, fabs(policy_probe_stat(pp, l, h, PROBE_OVERLAP)->mean - 1));
            }
        CHECK(worst <= 1e-6 && policy_probe_step(pp, steps, PROBE_LOSS)->n == g.L * g.H, "full: %.3g", worst);
        policy_probe_free(pp);
        policy_free(pf);

        /* reference: the first decode row of the full cache and the key norms */
        int layers[5] = { 0, 1, 2, 3, 4 }, heads[8] = { 0, 1, 2, 3, 4, 5, 6, 7 };
        TracePlan plan = { 5, layers, 8, heads, TRACE_DECODE, 1, T, 1, 1, 0 };
        Tracer *t = tracer_create(&m.cfg, &plan, (size_t)1 << 30, &err);
        CHECK(tracer_run(t, f, &full, ids, 0, NULL, &err) == 0, "%s", err.msg);
        char path[512];
        snprintf(path, sizeof path, "%s/probe.npz", tmpdir);
        CHECK(tracer_write_npz(t, path, &err) == 0, "%s", err.msg);
        NpyArray a = load_member(path, "attn"), k = load_member(path, "key_norm");
        float *ta = npy_to_f32(&a), *tk = npy_to_f32(&k);

        /* l2, one eviction after the prompt, one decode step: the per-(layer, head)
         * mean is that step's value */
        Policy *pl = make_policy(&m, "l2", 0.5, SCHED_PREFILL, T + steps);
        pp = policy_probe_create(&m.cfg, T + 1, 1);
        CHECK(policy_probe_run(pp, f, &full, &pc, pl, ids, T, NULL, &err) == 0, "%s", err.msg);
        int keep = T / 2, checked = 0;   /* floor(T * (1 - 0.5)) */
        worst = 0;
        for (int l = 0; l < g.L; l++)
            for (int h = 0; h < g.H; h++) {
                const float *row = ta + ((size_t)l * 8 + h) * (T + 1);
                const float *norm = tk + ((size_t)l * g.KV + h / 2) * (T + 1);
                double want = 0, kept_want = l >= 2 ? (keep + 1.0) / (T + 1) : 1.0;
                if (l >= 2) {   /* l2 skips layers 0 and 1; evicted: the T - keep highest norms */
                    for (int p = 0; p < T; p++) if (direct_norm_place(norm, T, p) < T - keep) want += row[p];
                    checked++;
                }
                worst = fmax(worst, fabs(policy_probe_stat(pp, l, h, PROBE_LOSS)->mean - want));
                worst = fmax(worst, fabs(policy_probe_stat(pp, l, h, PROBE_KEPT)->mean - kept_want));
                CHECK(policy_probe_stat(pp, l, h, PROBE_ORACLE_LOSS)->mean <= policy_probe_stat(pp, l, h, PROBE_LOSS)->mean + 1e-6,
                      "layer %d head %d: oracle worse than l2", l, h);
            }
        printf("      %d compressed (layer, head) checked, worst |diff| %.2e\n", checked, worst);
        CHECK(worst <= 1e-5, "l2 probe vs direct %.3g", worst);
        remove_tmp("probe.npz");
        free(ta); free(tk); npy_free(&a); npy_free(&k);
        policy_probe_free(pp);
        policy_free(pl);
        tracer_free(t);
        free(ids);
        forward_free(f);
        kvcache_free(&full);
        kvcache_free(&pc);
        model_free(&m);
        golden_free(&g);
    }
}

int main(void) {
    make_tmpdir();
    test_hand_cases();
    test_sink_hand_cases();
    test_golden_maps("golden/golden_stories260K_text.npz");
    test_golden_maps("golden/golden_stories260K_random.npz");
    test_golden_maps("golden/golden_demo_wikitext.npz");
    test_correlator_last_prefill();
    test_correlator_sink();
    test_sink_profile();
    test_trace_roundtrip();
    test_trace_subset_and_first_gen();
    test_guards_and_outputs();
    test_policy_probe();
    rmdir(tmpdir);
    return check_summary();
}
