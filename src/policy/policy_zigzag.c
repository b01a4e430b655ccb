/* policy_zigzag.c — `zigzag`: per-layer budgets from layer uncertainty
 * (../shared/spec/methods.md §3, ZigZagKV, arXiv 2412.09036).
 *
 * A RECONSTRUCTION: only the paper's abstract was reachable; this is the rule
 * of a public re-implementation, as the spec states it.
 *
 *   ā_{l,h}(p) = mean attention of the last w = 64 queries on p
 *   MBA_{l,h}  = the smallest k such that the k largest ā_{l,h} sum to
 *                >= τ·Σ ā_{l,h}   (τ = 0.9): how many tokens a head needs
 *   LMBA_l     = mean of MBA_{l,h} over the query heads;  U_l = LMBA_l / Σ_j LMBA_j
 *   B_l        = B_bound + (B_avg − B_bound)·N·U_l,   B_bound = b·B_avg (b = 0.2)
 * clamped to [1, layer length] with the total kept at N·B_avg
 * (policy_distribute). Inside a layer the tokens are the top B_l by the SnapKV
 * score (score=NAME: any other policy's score, e.g. zigzag:score=l2 — the
 * allocator only needs the window attention). Runs after prefill.
 *
 * impl=pr238v1|pr238v2 reproduce instead the two versions of kvpress pull
 * request 238 (ZigZagKVPress, closed unmerged), the only public code:
 *   v1: LMBA from the mean attention of the last w queries (as above), b = 0.1,
 *       B_avg = n·(1 − r) unrounded, each B_l clamped to [1, n] and floored,
 *       no total kept;
 *   v2: LMBA from the inner press's score per KV head (negative mass as 0),
 *       b = 0.2, B_l = int(round(·)) clamped to [1, n], no total kept;
 * both keep the last w prompt tokens (kvpress's SnapKVPress scores its window
 * highest) and pool like SnapKVPress (avg, kernel 5). docs/policies.md has
 * the side-by-side table. */
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "policy/policy.h"

static int desc_float(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return (x < y) - (x > y);
}

/* MBA of one query head: a[0..n) is scratch (sorted in place). */
static int minimal_budget(float *a, int n, double tau) {
    double total = 0, run = 0;
    for (int j = 0; j < n; j++) total += a[j];
    if (n == 0 || total <= 0) return n;
    qsort(a, (size_t)n, sizeof *a, desc_float);
    for (int k = 0; k < n; k++) {
        run += a[k];
        if (run >= tau * total) return k + 1;
    }
    return n;
}

/* kvpress PR 238's MBA: (cumsum < τ·total).sum() + 1, at most n (1 when the
 * mass is 0); a[0..n) is scratch (sorted in place). */
static int minimal_budget_pr238(float *a, int n, double tau) {
    double total = 0, run = 0;
    for (int j = 0; j < n; j++) total += a[j];
    qsort(a, (size_t)n, sizeof *a, desc_float);
    int below = 0;
    for (int k = 0; k < n; k++) {
        run += a[k];
        if (run < tau * total) below++;
    }
    return below + 1 < n ? below + 1 : n;
}

/* The average budget B_avg as kvpress has it: n·(1 − r), not rounded. */
static double real_average(const Policy *p, int n, int avg) {
    if (p->o.budget_kind == BUDGET_COMPRESSION) return n * (1.0 - p->o.budget);
    if (p->o.budget_kind == BUDGET_KEEP) return n * p->o.budget;
    return avg;
}

/* impl=pr238v1 / pr238v2: the two versions of kvpress pull request 238. */
static void budgets_pr238(Policy *p, const KVCache *c, int avg, int *budget, int v2) {
    double lmba[POLICY_MAX_LAYERS], sum = 0, tau = policy_param(p, "tau");
    int n = 0, n_layers = 0;
    for (int l = 0; l < p->n_layers; l++) {
        for (int g = 0; g < c->n_kv_heads; g++)
            if (kvcache_head(c, l, g)->len > n) n = kvcache_head(c, l, g)->len;
        n_layers += !p->skip[l];
    }
    float *a = policy_scratch(p)->tmp;
    for (int l = 0; l < p->n_layers; l++) {
        if (p->skip[l]) continue;
        lmba[l] = 0;
        if (!v2) {   /* v1: the mean attention of the window's queries, per query head */
            for (int h = 0; h < p->n_heads; h++) {
                int len = kvcache_head(c, l, h / p->group)->len;
                memcpy(a, policy_column(p, c, "window_attention", l, h), (size_t)len * sizeof(float));
                lmba[l] += minimal_budget_pr238(a, len, tau) / (double)p->n_heads;
            }
        } else {     /* v2: the inner press's score per KV head, negative mass as 0,
                      * the kept window scored as the layer's highest other score
                      * (kvpress SnapKVPress: F.pad(..., value=scores.max())) */
            float top = -INFINITY;
            for (int g = 0; g < p->n_kv_heads; g++) {
                int len = kvcache_head(c, l, g)->len, w = p->window_protect < len ? p->window_protect : len;
                const float *s = p->scorer->score(p, c, l, g, policy_scratch(p)->score);
                for (int j = 0; j < len - w; j++) if (policy_rank(s[j]) > top) top = s[j];
            }
            for (int g = 0; g < p->n_kv_heads; g++) {
                int len = kvcache_head(c, l, g)->len, w = p->window_protect < len ? p->window_protect : len;
                const float *s = p->scorer->score(p, c, l, g, policy_scratch(p)->score);
                for (int j = 0; j < len; j++) {
                    float v = j >= len - w ? top : s[j];
                    a[j] = v > 0 ? v : 0;
                }
                lmba[l] += minimal_budget_pr238(a, len, tau) / (double)p->n_kv_heads;
            }
        }
        sum += lmba[l];
    }
    double b_avg = real_average(p, n, avg), b_bound = policy_param(p, "b") * b_avg;
    for (int l = 0; l < p->n_layers; l++) {
        if (p->skip[l]) { budget[l] = INT_MAX; continue; }
        double x = sum > 0 ? b_bound + (b_avg - b_bound) * n_layers * (lmba[l] / sum) : b_avg;
        if (!v2) {   /* via a ratio clamped to [0, 1 - 1/n], then int(n·(1 − ratio)) */
            x = x < 1 ? 1 : x > n ? n : x;
            budget[l] = (int)floor(x + 1e-9);
        } else {     /* int(round(x)) (half to even, as Python), clamped to [1, n] */
            long r = lrint(x);
            budget[l] = r < 1 ? 1 : r > n ? n : (int)r;
        }
    }
}

static void budgets_zigzag(Policy *p, const KVCache *c, int avg, int *budget) {
    const char *impl = policy_param_str(p, "impl");
    if (strcmp(impl, "kvlab")) { budgets_pr238(p, c, avg, budget, !strcmp(impl, "pr238v2")); return; }
    double lmba[POLICY_MAX_LAYERS], x[POLICY_MAX_LAYERS], sum = 0, tau = policy_param(p, "tau");
    int hi[POLICY_MAX_LAYERS], n_layers = 0;
    for (int l = 0; l < p->n_layers; l++) {
        hi[l] = 0;
        for (int g = 0; g < c->n_kv_heads; g++)
            if (kvcache_head(c, l, g)->len > hi[l]) hi[l] = kvcache_head(c, l, g)->len;
        if (p->skip[l]) continue;
        n_layers++;
        lmba[l] = 0;
        for (int h = 0; h < p->n_heads; h++) {
            int n = kvcache_head(c, l, h / p->group)->len;
            float *a = policy_scratch(p)->tmp;   /* the window sum: the mean has the same MBA */
            memcpy(a, policy_column(p, c, "window_attention", l, h), (size_t)n * sizeof(float));
            lmba[l] += minimal_budget(a, n, tau) / (double)p->n_heads;
        }
        sum += lmba[l];
    }
    double b_avg = avg, b_bound = policy_param(p, "b") * b_avg;
    for (int l = 0; l < p->n_layers; l++) {
        if (p->skip[l]) continue;
        double u = sum > 0 ? lmba[l] / sum : 1.0 / n_layers;
        x[l] = b_bound + (b_avg - b_bound) * n_layers * u;
    }
    policy_distribute(x, p->skip, p->n_layers, (long)avg * n_layers, 1, hi, budget);
}

static const PolicyColumn *const columns[] = { &policy_window_attention, NULL };

static int zigzag_defaults(PolicyOpts *o, Err *err) {
    (void)err;
    const char *impl = policy_opts_param(o, "impl");
    int pr238 = strcmp(impl, "kvlab") != 0;
    if (o->schedule == SCHED_DEFAULT) o->schedule = SCHED_PREFILL;
    /* kvpress's SnapKVPress inside PR 238 scores its window (the last w
     * prompt tokens) highest: they are always kept */
    if (pr238 && o->recent < 0) o->recent = atoi(policy_opts_param(o, "window"));
    if (!strcmp(policy_opts_param(o, "b"), "auto"))
        policy_opts_set_param(o, "b", !strcmp(impl, "pr238v1") ? "0.1" : "0.2");
    /* kvpress's SnapKVPress pools with avg_pool1d, kernel 5 */
    if (!strcmp(policy_opts_param(o, "kernel"), "auto")) policy_opts_set_param(o, "kernel", pr238 ? "5" : "7");
    if (!strcmp(policy_opts_param(o, "pool"), "auto")) policy_opts_set_param(o, "pool", pr238 ? "avg" : "max");
    return 0;
}

static int zigzag_init(Policy *p, Err *err) {
    p->window = (int)policy_param(p, "window");
    p->window_protect = strcmp(policy_param_str(p, "impl"), "kvlab") ? p->o.recent : 0;
    p->scorer = policy_find(policy_param_str(p, "score"));
    if (!p->scorer || !p->scorer->score) return err_set(err, "--policy zigzag: score=%s has no score", policy_param_str(p, "score"));
    return 0;
}

static const PolicyParam params[] = {
    { "window", "64", "int", 1, 1 << 20, "w: queries averaged for the layer uncertainty (and the SnapKV score)" },
    { "tau", "0.9", "float", 1e-6, 1, "attention mass the minimal budget must cover" },
    { "b", "auto", "float", 0, 1, "B_bound = b * B_avg, the floor every layer gets (auto: 0.2; pr238v1: 0.1)" },
    { "kernel", "auto", "int", 1, 1023, "SnapKV pooling kernel size (auto: 7; pr238v1/v2: 5, kvpress's)" },
    { "pool", "auto", "max|avg", 0, 0, "SnapKV pooling (auto: max; pr238v1/v2: avg, kvpress's)" },
    { "impl", "kvlab", "kvlab|pr238v1|pr238v2", 0, 0,
      "kvlab: the reconstruction; pr238v1/v2: the two versions of kvpress PR 238" },
    { "score", "snapkv", "snapkv|l2|l2-high|random|h2o|tova|window|vnorm|keydiff", 0, 0, "token score inside a layer" },
    {0},
};

const PolicyDef policy_zigzag = {
    .name = "zigzag",
    .rule = "RECONSTRUCTION of ZigZagKV: layer budgets from attention uncertainty, any score",
    .paper = "after Zhong et al. 2024, ZigZagKV, arXiv 2412.09036",
    .params = params,
    .columns = columns,
    .defaults = zigzag_defaults,
    .init = zigzag_init,
    .budgets = budgets_zigzag,
};
