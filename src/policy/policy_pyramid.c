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
 * SnapKV score (score=NAME borrows another policy's score). Runs after prefill.
 *
 * clamp=official adds the two rules of the official code (Zefan-Cai/
 * KVCache-Factory, pyramidkv/pyramidkv_utils.py, PyramidKVCluster.update_kv),
 * with n the prompt's length:
 *   - n < 2(C − w): no pyramid, every layer keeps C (its SnapKV branch);
 *   - max >= n − w: max = n − w, min = 2(C − w) − max (the top of the pyramid
 *     never asks for more than the prompt; the total stays N·C).
 * kvpress's PyramidKVPress has the same clamp. The default (clamp=none) is
 * kvlab's original rule, where policy_distribute moves what a layer cannot
 * hold to the layers below their target instead. Both keep real-valued steps
 * (the official code floors (C − w)/β and the step). */
#include <stdlib.h>
#include <string.h>

#include "policy/policy.h"

static void budgets_pyramid(Policy *p, const KVCache *c, int avg, int *budget) {
    double x[POLICY_MAX_LAYERS], C = avg, w = p->window, beta = policy_param(p, "beta");
    int hi[POLICY_MAX_LAYERS], n = 0, len = 0;
    for (int l = 0; l < p->n_layers; l++) {
        hi[l] = 0;
        for (int g = 0; g < c->n_kv_heads; g++)
            if (kvcache_head(c, l, g)->len > hi[l]) hi[l] = kvcache_head(c, l, g)->len;
        if (p->skip[l]) continue;
        n++;
        if (hi[l] > len) len = hi[l];
    }
    double mn = (C - w) / beta, mx = 2 * (C - w) - mn;
    int pyramid = C > w;
    if (!strcmp(policy_param_str(p, "clamp"), "official")) {
        /* pyramidkv_utils.py: a prompt shorter than 2(C − w) falls back to SnapKV
         * (every layer C); else the top layer's share is at most len − w, and the
         * bottom one takes what that frees */
        if (len < 2 * (C - w)) pyramid = 0;
        else if (mx >= len - w) { mx = len - w; mn = 2 * (C - w) - mx; }
    }
    double step = n > 1 ? (mx - mn) / (n - 1) : 0;
    for (int l = 0, i = 0; l < p->n_layers; l++) {
        if (p->skip[l]) continue;
        x[l] = pyramid ? mx - i * step + w : C;
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
    { "clamp", "none", "none|official", 0, 0,
      "official: PyramidKV's max <= len - w clamp and SnapKV fallback (pyramidkv_utils.py)" },
    { "score", "snapkv", "snapkv|l2|l2-high|random|h2o|tova|window|vnorm|keydiff", 0, 0, "token score inside a layer" },
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
