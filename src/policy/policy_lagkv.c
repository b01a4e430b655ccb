/* policy_lagkv.c — `lagkv` (../shared/spec/methods.md §2; arXiv 2504.04704 and the official code
 * AI-Lab-China-Merchants-Bank/LagKV, lag_kv.py), per layer and KV head:
 *
 *   cache = [ S sinks | compressed region | uncompressed region ]
 *            0..S-1     S..base-1           base..len-1
 *
 * Whenever len >= base + 2L: cut [base, end) into m partitions of L tokens,
 * end = base + ⌊(len − base)/L⌋·L. Each P_i, i <= m−2, is scored against the
 * next one, P_{i+1}; P_{m−1} and the remainder [end, len) stay as they are
 * (the sliding window). For Z in {K, V}, per channel c, with mn_c / mx_c the
 * min / max of Z[·, c] over P_{i+1}:
 *
 *   Ẑ[t,c] = (Z[t,c] − mn_c) / (mx_c − mn_c + ε),    t in P_i
 *   σ_t    = standard deviation of Ẑ[t,·] over the d channels (N−1)
 *   s_Z(t) = softmax over the L tokens of P_i of σ_t
 *   score  = s_K + s_V
 *
 * The int(r·L) best of each scored partition (ties: lower position) are
 * appended, in their original order, to the compressed region: base +=
 * (m−1)·int(rL). Compressed tokens are never scored again. The step that
 * triggers attends over the uncompressed cache: compression runs after the
 * forward pass (the official use_then_compress).
 *
 * Deviations from the official code, all documented in docs/policies.md:
 *  - ε = 1e-6 in the denominator. The official code has none and gives NaN on
 *    a channel that is constant over P_{i+1} (mx = mn), which then spreads
 *    through the softmax of the whole partition.
 *  - kept tokens stay in position order (the official gather keeps topk order;
 *    its comment says "you may need to sort the index").
 *  - ties are broken by position (torch.topk leaves them unspecified).
 * Keys are scored as cached: post-RoPE with `true` positions (as the official
 * code sees HF's cache), pre-RoPE with `shifted`. The budget comes from ratio
 * (or 1 − --compression-ratio, or --keep-ratio); --budget does not apply.
 *
 * `lagkv:select=global` is kvpress's LagKVPress (kvpress/presses/lagkv_press.py)
 * instead: not recursive — each decision scores the whole head — and the
 * partitions only rank: with the same s_K + s_V, each token of a scored
 * partition gets its rank inside it over L (0 = worst, (L−1)/L = best), the S
 * sinks and the last partition + remainder get 1, and ONE top-k over the whole
 * head keeps k = ⌊n·(1 − r)⌋ (the common budget: --compression-ratio r;
 * with --budget-alloc adaptive, Ada-KV's share of each head). A head
 * shorter than S + 2L scores its sinks 1 and the rest (j − S)/(n − S): it
 * keeps the sinks and the newest tokens. Equal ranks (every partition has a
 * best token): the lower position. Runs after the prompt (kvpress presses
 * compress the prefill), like snapkv. These ranks are lagkv's score
 * (score_lagkv) wherever a tool asks a policy for one, whatever select is.
 *
 * `lagkv-l2` is LagKV's own L2 variant, L2KV of the official repository
 * (AI-Lab-China-Merchants-Bank/LagKV, l2_kv.py): the same recursive
 * partitions, each P_i (i <= m−2) scored on its own, without the reference
 * partition:
 *
 *   score(t) = −‖k_t‖ − v·‖v_t‖      (keep=low, the default: use_low_norm)
 *   score(t) = +‖k_t‖ + v·‖v_t‖      (keep=high)
 *
 * v = score_v_ratio (default 0), keep the int(r·L) best of each partition;
 * layers 0 and 1 are never compressed (skip_layer_idx = [0, 1]). The paper
 * reports this "L2 score inside the same recursive framework" as its ablation. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "policy/policy.h"
#include "simd/kernels.h"

typedef struct {
    int *base;          /* [L*KV] end of the compressed region, per (layer, KV head) */
} LagState;

#define LAG_EPS 1e-6f

/* s_Z for the L tokens of Z[0..L) against the reference Z[L..2L): adds the
 * softmax of σ into score[0..L).   Z: [2L, d] rows of keys or values;
 * sc->tmp holds mn [d] and mx [d], sc->dtmp σ [L]. */
static void add_lag_score(PolicyScratch *sc, const float *Z, int L, int d, float *score) {
    const float *ref = Z + (size_t)L * d;
    float *mn = sc->tmp, *mx = sc->tmp + d;
    double *sigma = sc->dtmp, max_sigma = -INFINITY, sum = 0;
    for (int c = 0; c < d; c++) mn[c] = mx[c] = ref[c];
    for (int t = 1; t < L; t++)
        for (int c = 0; c < d; c++) {
            float v = ref[(size_t)t * d + c];
            if (v < mn[c]) mn[c] = v;
            if (v > mx[c]) mx[c] = v;
        }
    /* in double: with a constant reference channel (mx = mn) the quotient is
     * x/ε, which overflows fp32 (Inf, then Inf - Inf = NaN) once |x| > 3e32 */
    for (int t = 0; t < L; t++) {
        double mean = 0, ss = 0;
        for (int c = 0; c < d; c++) mean += ((double)Z[(size_t)t * d + c] - mn[c]) / ((double)mx[c] - mn[c] + LAG_EPS);
        mean /= d;
        for (int c = 0; c < d; c++) {
            double z = ((double)Z[(size_t)t * d + c] - mn[c]) / ((double)mx[c] - mn[c] + LAG_EPS) - mean;
            ss += z * z;
        }
        sigma[t] = sqrt(ss / (d - 1));
        if (sigma[t] > max_sigma) max_sigma = sigma[t];
    }
    for (int t = 0; t < L; t++) sum += exp(sigma[t] - max_sigma);
    for (int t = 0; t < L; t++) score[t] += (float)(exp(sigma[t] - max_sigma) / sum);
}

static int keep_per_partition(const Policy *p) {
    return (int)(policy_param(p, "ratio") * policy_param(p, "lag"));   /* int(r·L), as the official code */
}

extern const PolicyDef policy_lagkv_l2;

/* The score of the L tokens of the partition at slots [a, a + L) of h, into
 * score[0..L): LagKV's s_K + s_V against the next partition [a + L, a + 2L),
 * or lagkv-l2's signed norms. */
static void partition_score(Policy *p, const KVCache *c, const KVHead *h, int a, int L, float *score) {
    PolicyScratch *sc = policy_scratch(p);
    int d = p->head_dim;
    float *rows = policy_rows(p, 2 * L);
    if (p->def == &policy_lagkv_l2) {
        const Kernels *k = kernels_get();
        double sign = strcmp(policy_param_str(p, "keep"), "high") ? -1.0 : 1.0, v_ratio = policy_param(p, "v_ratio");
        const float *keys = kvcache_key_rows(c, h, a, L, rows);
        for (int t = 0; t < L; t++) score[t] = (float)(sign * sqrtf(k->sum_squares(keys + (size_t)t * d, d)));
        if (v_ratio != 0) {
            const float *values = kvcache_value_rows(c, h, a, L, rows);
            for (int t = 0; t < L; t++)
                score[t] += (float)(sign * v_ratio * sqrtf(k->sum_squares(values + (size_t)t * d, d)));
        }
        return;
    }
    for (int t = 0; t < L; t++) score[t] = 0;
    add_lag_score(sc, kvcache_key_rows(c, h, a, 2 * L, rows), L, d, score);
    add_lag_score(sc, kvcache_value_rows(c, h, a, 2 * L, rows), L, d, score);
}

typedef struct { float score; int t; } Ranked;

/* ascending score; equal scores: the later token first (ranks lower) */
static int cmp_ranked(const void *x, const void *y) {
    const Ranked *a = x, *b = y;
    float u = policy_rank(a->score), v = policy_rank(b->score);
    if (u != v) return u < v ? -1 : 1;
    return b->t - a->t;
}

/* kvpress LagKVPress's score of every slot of (layer, g), into score[0..len):
 * its rank inside its partition over L, 1 for the sinks and the last
 * partition + remainder. The score of select=global, and lagkv's score for the
 * tools that take one (`kvlab correlate --score lagkv`, zigzag/pyramid
 * score=lagkv, Ada-KV head shares with select=global). */
static const float *score_lagkv(Policy *p, const KVCache *c, int layer, int g, float *score) {
    const KVHead *h = kvcache_head(c, layer, g);
    int n = h->len, L = (int)policy_param(p, "lag"), S = (int)policy_param(p, "sink");
    if (n < S + 2 * L) {        /* no partition to score: sinks, then the newest */
        for (int j = 0; j < n; j++) score[j] = j < S ? 1.0f : (float)(j - S) / (float)(n - S);
    } else {
        int end = S + (n - S) / L * L;
        Ranked *r = xmalloc((size_t)L * sizeof *r);
        float *part = policy_scratch(p)->sum;
        for (int a = S; a + L < end; a += L) {
            partition_score(p, c, h, a, L, part);
            for (int t = 0; t < L; t++) r[t] = (Ranked){ part[t], t };
            qsort(r, (size_t)L, sizeof *r, cmp_ranked);
            for (int k = 0; k < L; k++) score[a + r[k].t] = (float)k / (float)L;
        }
        free(r);
        for (int j = 0; j < S; j++) score[j] = 1.0f;
        for (int j = end - L; j < n; j++) score[j] = 1.0f;
    }
    return score;
}

/* select=global (kvpress LagKVPress): ranks per partition, one top-k. */
static int select_global(Policy *p, const KVCache *c, int layer, int g, int budget, int *keep) {
    const KVHead *h = kvcache_head(c, layer, g);
    if (h->len <= budget) {
        for (int j = 0; j < h->len; j++) keep[j] = j;
        return h->len;
    }
    const float *score = score_lagkv(p, c, layer, g, policy_scratch(p)->score);
    return policy_select_top(p, h->pos, h->len, score, budget, 0, 0, keep);
}

static int select_lagkv(Policy *p, const KVCache *c, int layer, int g, int budget, int *keep) {
    if (!strcmp(policy_param_str_or(p, "select", "partition"), "global")) return select_global(p, c, layer, g, budget, keep);
    LagState *st = p->priv;
    PolicyScratch *sc = policy_scratch(p);
    const KVHead *h = kvcache_head(c, layer, g);
    int L = (int)policy_param(p, "lag"), S = (int)policy_param(p, "sink"), r = keep_per_partition(p);
    int *base = &st->base[layer * p->n_kv_heads + g], n = 0;
    if (*base < S) *base = S;
    if (h->len < *base + 2 * L) {          /* not triggered: keep everything */
        for (int j = 0; j < h->len; j++) keep[j] = j;
        return h->len;
    }
    int m = (h->len - *base) / L;
    for (int j = 0; j < *base; j++) keep[n++] = j;      /* sinks + compressed region */
    for (int i = 0; i + 1 < m; i++) {
        int a = *base + i * L;
        float *score = sc->sum;
        partition_score(p, c, h, a, L, score);
        int k = policy_select_top(p, h->pos + a, L, score, r, 0, 0, sc->itmp);
        for (int j = 0; j < k; j++) keep[n++] = a + sc->itmp[j];
    }
    for (int j = *base + (m - 1) * L; j < h->len; j++) keep[n++] = j;   /* P_{m-1} + remainder */
    *base += (m - 1) * r;
    return n;
}

static void reset_lagkv(Policy *p) {
    LagState *st = p->priv;
    int S = (int)policy_param(p, "sink");
    for (int i = 0; i < p->n_layers * p->n_kv_heads; i++) st->base[i] = S;
}

static int init_lagkv(Policy *p, Err *err) {
    int global = !strcmp(policy_param_str_or(p, "select", "partition"), "global");
    if (!global && keep_per_partition(p) < 1)
        return err_set(err, "--policy %s: ratio*lag = %g keeps no token of a partition", p->def->name,
                       policy_param(p, "ratio") * policy_param(p, "lag"));
    LagState *st = xcalloc(1, sizeof *st);
    st->base = xcalloc((size_t)p->n_layers * p->n_kv_heads, sizeof(int));
    p->priv = st;
    reset_lagkv(p);
    return 0;
}

static void free_lagkv(Policy *p) {
    LagState *st = p->priv;
    if (!st) return;
    free(st->base);
    free(st);
    p->priv = NULL;
}

/* ratio from the common budget knobs when not given; --budget and the
 * protections have no meaning here (sink= is LagKV's own). */
static int lagkv_defaults(PolicyOpts *o, Err *err) {
    const char *sel = policy_opts_param(o, "select");
    if (sel && !strcmp(sel, "global")) {
        /* kvpress's LagKVPress: the common budget, once after the prompt */
        if (o->budget_kind == BUDGET_NONE)
            return err_set(err, "--policy lagkv:select=global needs a budget (--compression-ratio R, as kvpress, or --budget N / --keep-ratio K)");
        if (o->schedule == SCHED_DEFAULT) o->schedule = SCHED_PREFILL;
    } else if (o->head_alloc == ALLOC_ADAPTIVE) {
        return err_set(err, "--budget-alloc adaptive: %s keeps int(r*L) of each partition, not a budget to share "
                       "(lagkv:select=global takes one)", o->name);
    } else if (o->budget_kind == BUDGET_TOKENS) {
        return err_set(err, "--policy %s: --budget does not apply (%s:ratio=R, or --compression-ratio / --keep-ratio)", o->name, o->name);
    }
    if (o->sinks > 0 || o->recent > 0)
        return err_set(err, "--policy %s: --protect-sinks/--protect-recent do not apply (%s:sink=S; the last L..2L tokens are never compressed)", o->name, o->name);
    const char *r = policy_opts_param(o, "ratio");
    if (r && !strcmp(r, "auto")) {
        char v[64];
        double ratio = o->budget_kind == BUDGET_COMPRESSION ? 1.0 - o->budget : o->budget_kind == BUDGET_KEEP ? o->budget : 0.5;
        snprintf(v, sizeof v, "%.17g", ratio);
        policy_opts_set_param(o, "ratio", v);
    }
    return 0;
}

static const PolicyParam params[] = {
    { "sink", "16", "int", 0, 1 << 22, "S: first tokens never touched" },
    { "lag", "1024", "int", 2, 1 << 22, "L: partition size; the next partition scores the previous" },
    { "ratio", "auto", "float", 1e-9, 1, "r: fraction of each partition kept (auto: 1 - compression ratio, keep ratio, else 0.5)" },
    { "select", "partition", "partition|global", 0, 0,
      "partition: the official int(rL) per partition; global: kvpress LagKVPress, ranks + one top-k" },
    {0},
};

/* lagkv-l2 skips layers 0 and 1 (the official skip_layer_idx) */
static int lagkv_l2_defaults(PolicyOpts *o, Err *err) {
    if (!o->skip_given) {
        o->n_skip = 2;
        o->skip[0] = 0;
        o->skip[1] = 1;
    }
    return lagkv_defaults(o, err);
}

static const PolicyParam l2_params[] = {
    { "sink", "16", "int", 0, 1 << 22, "S: first tokens never touched" },
    { "lag", "1024", "int", 2, 1 << 22, "L: partition size (each partition of L tokens is scored on its own)" },
    { "ratio", "auto", "float", 1e-9, 1, "r: fraction of each partition kept (auto: 1 - compression ratio, keep ratio, else 0.5)" },
    { "keep", "low", "low|high", 0, 0, "low: keep the lowest norms (use_low_norm); high: the highest" },
    { "v_ratio", "0", "float", -1e9, 1e9, "weight of the value norm in the score (score_v_ratio)" },
    {0},
};

const PolicyDef policy_lagkv = {
    .name = "lagkv",
    .rule = "recursive lag-relative partitions: each L-block scored by min-max/std against the next",
    .paper = "Liang et al. 2025, LagKV, arXiv 2504.04704",
    .params = params,
    .flags = POLICY_OWN_BUDGET,
    .defaults = lagkv_defaults,
    .init = init_lagkv,
    .free = free_lagkv,
    .reset = reset_lagkv,
    .score = score_lagkv,
    .select = select_lagkv,
};

const PolicyDef policy_lagkv_l2 = {
    .name = "lagkv-l2",
    .rule = "LagKV's L2KV: recursive L-partitions, keep each one's lowest key norms; skips layers 0,1",
    .paper = "Liang et al. 2025, LagKV (l2_kv.py of the official code), arXiv 2504.04704",
    .params = l2_params,
    .flags = POLICY_OWN_BUDGET,
    .defaults = lagkv_l2_defaults,
    .init = init_lagkv,
    .free = free_lagkv,
    .reset = reset_lagkv,
    .select = select_lagkv,
};
