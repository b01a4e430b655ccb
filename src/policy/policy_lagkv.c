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
 * (or 1 − --compression-ratio, or --keep-ratio); --budget does not apply. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "policy/policy.h"

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

static int select_lagkv(Policy *p, const KVCache *c, int layer, int g, int budget, int *keep) {
    (void)budget;
    LagState *st = p->priv;
    PolicyScratch *sc = policy_scratch(p);
    const KVHead *h = kvcache_head(c, layer, g);
    int L = (int)policy_param(p, "lag"), S = (int)policy_param(p, "sink"), r = keep_per_partition(p), d = p->head_dim;
    int *base = &st->base[layer * p->n_kv_heads + g], n = 0;
    if (*base < S) *base = S;
    if (h->len < *base + 2 * L) {          /* not triggered: keep everything */
        for (int j = 0; j < h->len; j++) keep[j] = j;
        return h->len;
    }
    int m = (h->len - *base) / L;
    /* a bf16 cache widens the 2L rows of a partition and its reference into this */
    float *rows = c->kv_dtype == DTYPE_F32 ? NULL : xmalloc(2 * (size_t)L * d * sizeof(float));
    for (int j = 0; j < *base; j++) keep[n++] = j;      /* sinks + compressed region */
    for (int i = 0; i + 1 < m; i++) {
        int a = *base + i * L;
        float *score = sc->sum;
        for (int t = 0; t < L; t++) score[t] = 0;
        add_lag_score(sc, kvcache_key_rows(c, h, a, 2 * L, rows), L, d, score);
        add_lag_score(sc, kvcache_value_rows(c, h, a, 2 * L, rows), L, d, score);
        int k = policy_select_top(p, h->pos + a, L, score, r, 0, 0, sc->itmp);
        for (int j = 0; j < k; j++) keep[n++] = a + sc->itmp[j];
    }
    free(rows);
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
    if (keep_per_partition(p) < 1)
        return err_set(err, "--policy lagkv: ratio*lag = %g keeps no token of a partition",
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
    if (o->budget_kind == BUDGET_TOKENS)
        return err_set(err, "--policy lagkv: --budget does not apply (lagkv:ratio=R, or --compression-ratio / --keep-ratio)");
    if (o->sinks > 0 || o->recent > 0)
        return err_set(err, "--policy lagkv: --protect-sinks/--protect-recent do not apply (lagkv:sink=S; the last L..2L tokens are never compressed)");
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
    .select = select_lagkv,
};
