/* policy_window.c — `window` (StreamingLLM, ../shared/spec/methods.md §4.1): keep the first S
 * tokens (the attention sinks, --protect-sinks, default 4) and the most recent
 * budget − S; evict everything between.
 *
 * Written as a score: a token's score is its original position, so the
 * default selection (sinks protected, then the best scores) keeps exactly the
 * newest ones. The original runs it after every step (the default schedule)
 * with `--positions shifted`; kvlab keeps `true` as the common default (../shared/spec/methods.md §0). */
#include "policy/policy.h"

static const float *score_position(Policy *p, const KVCache *c, int layer, int g, float *score) {
    (void)p;
    const KVHead *h = kvcache_head(c, layer, g);
    for (int j = 0; j < h->len; j++) score[j] = (float)h->pos[j];
    return score;
}

static int window_defaults(PolicyOpts *o, Err *err) {
    (void)err;
    if (o->sinks < 0) o->sinks = 4;
    return 0;
}

static const PolicyParam params[] = { {0} };

const PolicyDef policy_window = {
    .name = "window",
    .rule = "StreamingLLM: keep the first S (--protect-sinks, 4) and the most recent tokens",
    .paper = "Xiao et al. 2023, StreamingLLM, arXiv 2309.17453",
    .params = params,
    .defaults = window_defaults,
    .score = score_position,
};
