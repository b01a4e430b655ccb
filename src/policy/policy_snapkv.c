/* policy_snapkv.c — `snapkv` (../shared/spec/methods.md §4.3), and the SnapKV score that pyramid
 * and zigzag borrow.
 *
 *   s(p) = Σ over the last w queries (the observation window, default 32) of
 *          their attention on p, averaged over the query heads of the group;
 *          smoothed by 1-D pooling (max or avg, kernel 7, stride 1, padding
 *          k/2, like F.max_pool1d / F.avg_pool1d with count_include_pad) over
 *          the slots before the window.
 * Keep the top (budget − w) by s plus the w window tokens (the window is
 * --protect-recent, which snapkv sets to w). Runs once after prefill.
 *
 * The window is the last w queries of the forward pass that precedes the
 * decision. With the prefill schedule these are the prompt's last w tokens,
 * as in SnapKV; with a decode schedule (one token per forward) it is the one
 * decode query (kvlab keeps no past query rows; see docs/policies.md). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "policy/policy.h"

/* out[i] = pool of in[i - k/2 .. i - k/2 + k - 1] clipped to [0, n) (max), or
 * their sum / k (avg: the padding counts as zeros). */
static void pool1d(const float *in, int n, int k, int use_max, float *out) {
    for (int i = 0; i < n; i++) {
        int a = i - k / 2, b = a + k - 1;
        if (a < 0) a = 0;
        if (b > n - 1) b = n - 1;
        float acc = use_max ? -INFINITY : 0.0f;
        for (int j = a; j <= b; j++) acc = use_max ? (in[j] > acc ? in[j] : acc) : acc + in[j];
        out[i] = use_max ? acc : acc / (float)k;
    }
}

/* window_attention: per query head, Σ over the window's queries (the last
 * `window` of the forward in progress) of their attention on the slot; it
 * starts from 0 at every forward. Shared with tova, pyramid and zigzag. */
static void window_begin(Policy *p, const KVCache *c, int n) {
    p->win_from = c->next_pos + n - (p->window > 0 ? p->window : 1);
    for (int l = 0; l < p->n_layers; l++) {
        if (p->skip[l]) continue;
        for (int h = 0; h < p->n_heads; h++) {
            int len = kvcache_head(c, l, h / p->group)->len;
            if (len > 0)   /* an empty head may have no column memory yet (NULL) */
                memset(policy_column(p, c, "window_attention", l, h), 0, (size_t)len * sizeof(float));
        }
    }
}

static void window_add(Policy *p, float *row, int layer, int head, int query_pos, const float *probs, int n_keys) {
    (void)layer; (void)head;
    if (query_pos < p->win_from) return;
    for (int j = 0; j < n_keys; j++) row[j] += probs[j];
}

const PolicyColumn policy_window_attention = {
    .name = "window_attention", .per_query_head = 1, .begin = window_begin, .observe = window_add,
};
static const PolicyColumn *const columns[] = { &policy_window_attention, NULL };

/* Shared with pyramid and zigzag through the registry (score=snapkv). */
static const float *score_snapkv(Policy *p, const KVCache *c, int layer, int g, float *score) {
    int n = kvcache_head(c, layer, g)->len;
    int k = (int)policy_param_or(p, "kernel", 7);
    int use_max = strcmp(policy_param_str_or(p, "pool", "max"), "avg") != 0;
    int n_pool = n - p->window_protect > 0 ? n - p->window_protect : 0;
    float *raw = policy_scratch(p)->tmp;
    policy_group_mean(p, c, "window_attention", layer, g, n, raw);
    pool1d(raw, n_pool, k, use_max, score);
    for (int j = n_pool; j < n; j++) score[j] = raw[j];   /* the window: protected anyway */
    return score;
}

/* Window tokens are protected: --protect-recent defaults to w. */
static int snapkv_defaults(PolicyOpts *o, Err *err) {
    (void)err;
    if (o->schedule == SCHED_DEFAULT) o->schedule = SCHED_PREFILL;
    if (o->recent < 0) o->recent = atoi(policy_opts_param(o, "window"));
    return 0;
}

static int snapkv_init(Policy *p, Err *err) {
    (void)err;
    p->window = (int)policy_param(p, "window");
    p->window_protect = p->o.recent;
    return 0;
}

static const PolicyParam params[] = {
    { "window", "32", "int", 1, 1 << 20, "observation window: the last w queries (also kept)" },
    { "kernel", "7", "int", 1, 1023, "pooling kernel size" },
    { "pool", "max", "max|avg", 0, 0, "pooling" },
    {0},
};

const PolicyDef policy_snapkv = {
    .name = "snapkv",
    .rule = "after prefill keep the window + top pooled attention of the last w queries",
    .paper = "Li et al. 2024, SnapKV, arXiv 2404.14469",
    .params = params,
    .columns = columns,
    .defaults = snapkv_defaults,
    .init = snapkv_init,
    .score = score_snapkv,
};
