/* policy_tova.c — `tova` (Token Omission Via Attention, ../shared/spec/methods.md §4.4): keep the
 * tokens with the highest attention from the LAST query, averaged over all the
 * heads of the layer, one token set for the whole layer (granularity layer:
 * the framework averages this per-KV-head score over the layer's KV heads;
 * with equal groups that is the mean over every query head). Runs after every
 * step once over budget. */
#include "policy/policy.h"

static const PolicyColumn *const columns[] = { &policy_window_attention, NULL };

static const float *score_tova(Policy *p, const KVCache *c, int layer, int g, float *score) {
    policy_group_mean(p, c, "window_attention", layer, g, kvcache_head(c, layer, g)->len, score);
    return score;
}

static int tova_defaults(PolicyOpts *o, Err *err) {
    (void)err;
    if (o->granularity == GRAN_DEFAULT) o->granularity = GRAN_LAYER;
    return 0;
}

/* The window is one query: the last one of each forward. */
static int tova_init(Policy *p, Err *err) {
    (void)err;
    p->window = 1;
    return 0;
}

static const PolicyParam params[] = { {0} };

const PolicyDef policy_tova = {
    .name = "tova",
    .rule = "keep the highest attention of the last query, averaged over the layer's heads",
    .paper = "Oren et al. 2024, TOVA, arXiv 2401.06104",
    .params = params,
    .columns = columns,
    .defaults = tova_defaults,
    .init = tova_init,
    .score = score_tova,
};
