/* policy_pyramid.c — `pyramid` (PyramidKV budgets with the SnapKV score,
 * ../shared/spec/methods.md §4.5): lower layers keep more. With average capacity C, window w, β = 20 and
 * N compressed layers (index i = 0 for the lowest):
 *
 *   min = (C − w)/β,  max = 2(C − w) − min,  step = (max − min)/(N − 1)
 *   budget_i = max − i·step + w          (Σ_i budget_i = N·C)
 *
 * The official code floors each division, so its budgets do not add up to
 * N·C; kvlab rounds the real-valued targets with policy_distribute so the
 * total is exactly N·C (each layer within [1, its length]). When C <= w the
 * formula has no room and every layer gets C. Tokens inside a layer: the
 * SnapKV score (score=NAME borrows another policy's score). Runs after prefill. */
#include <stdlib.h>

#include "policy/policy.h"

static void budgets_pyramid(Policy *p, const KVCache *c, int avg, int *budget) {
    double x[POLICY_MAX_LAYERS], C = avg, w = p->window, beta = policy_param(p, "beta");
    int hi[POLICY_MAX_LAYERS], n = 0;
    for (int l = 0; l < p->n_layers; l++) n += !p->skip[l];
    double mn = (C - w) / beta, mx = 2 * (C - w) - mn, step = n > 1 ? (mx - mn) / (n - 1) : 0;
    for (int l = 0, i = 0; l < p->n_layers; l++) {
        hi[l] = 0;
        for (int g = 0; g < c->n_kv_heads; g++)
            if (kvcache_head(c, l, g)->len > hi[l]) hi[l] = kvcache_head(c, l, g)->len;
        if (p->skip[l]) continue;
        x[l] = C > w ? mx - i * step + w : C;
        i++;
    }
    policy_distribute(x, p->skip, p->n_layers, (long)avg * n, 1, hi, budget);
}

static const PolicyColumn *const columns[] = { &policy_window_attention, NULL };

static int pyramid_defaults(PolicyOpts *o, Err *err) {
    (void)err;
    if (o->schedule == SCHED_DEFAULT) o->schedule = SCHED_PREFILL;
    if (o->recent < 0) o->recent = atoi(policy_opts_param(o, "window"));
    return 0;
}

static int pyramid_init(Policy *p, Err *err) {
    p->window = (int)policy_param(p, "window");
    p->window_protect = p->o.recent;
    p->scorer = policy_find(policy_param_str(p, "score"));
    if (!p->scorer || !p->scorer->score) return err_set(err, "--policy pyramid: score=%s has no score", policy_param_str(p, "score"));
    return 0;
}

static const PolicyParam params[] = {
    { "window", "32", "int", 1, 1 << 20, "observation window w (last w queries; kept)" },
    { "beta", "20", "float", 1e-6, 1e9, "budget slope: min = (C - w)/beta" },
    { "kernel", "7", "int", 1, 1023, "SnapKV pooling kernel size" },
    { "pool", "max", "max|avg", 0, 0, "SnapKV pooling" },
    { "score", "snapkv", "snapkv|l2|l2-high|random|h2o|tova|window", 0, 0, "token score inside a layer" },
    {0},
};

const PolicyDef policy_pyramid = {
    .name = "pyramid",
    .rule = "PyramidKV: per-layer budgets decreasing with depth, SnapKV score",
    .paper = "Cai et al. 2024, PyramidKV, arXiv 2406.02069",
    .params = params,
    .columns = columns,
    .defaults = pyramid_defaults,
    .init = pyramid_init,
    .budgets = budgets_pyramid,
};
