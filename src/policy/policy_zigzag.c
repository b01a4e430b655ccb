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
 * allocator only needs the window attention). Runs after prefill. */
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

static void budgets_zigzag(Policy *p, const KVCache *c, int avg, int *budget) {
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
    if (o->schedule == SCHED_DEFAULT) o->schedule = SCHED_PREFILL;
    return 0;
}

static int zigzag_init(Policy *p, Err *err) {
    p->window = (int)policy_param(p, "window");
    p->window_protect = 0;
    p->scorer = policy_find(policy_param_str(p, "score"));
    if (!p->scorer || !p->scorer->score) return err_set(err, "--policy zigzag: score=%s has no score", policy_param_str(p, "score"));
    return 0;
}

static const PolicyParam params[] = {
    { "window", "64", "int", 1, 1 << 20, "w: queries averaged for the layer uncertainty (and the SnapKV score)" },
    { "tau", "0.9", "float", 1e-6, 1, "attention mass the minimal budget must cover" },
    { "b", "0.2", "float", 0, 1, "B_bound = b * B_avg, the floor every layer gets" },
    { "kernel", "7", "int", 1, 1023, "SnapKV pooling kernel size" },
    { "pool", "max", "max|avg", 0, 0, "SnapKV pooling" },
    { "score", "snapkv", "snapkv|l2|l2-high|random|h2o|tova|window", 0, 0, "token score inside a layer" },
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
