/* policy_random.c — `random` (../shared/spec/methods.md §1 ablation): a uniform random score per
 * (layer, KV head, token), seeded. The score is a hash of (seed, layer, head,
 * original position), so a token keeps the same score at every decision and a
 * run is reproducible from its seed alone. Skips layers 0,1 like l2, so the
 * two are compared on the same layers. */
#include <stdint.h>

#include "policy/policy.h"
#include "base/splitmix64.h"

static const float *score_random(Policy *p, const KVCache *c, int layer, int g, float *score) {
    const KVHead *h = kvcache_head(c, layer, g);
    uint64_t seed = splitmix64((uint64_t)policy_param_or(p, "seed", 1));
    uint64_t head = splitmix64(seed ^ ((uint64_t)layer << 32 | (uint64_t)g));
    for (int j = 0; j < h->len; j++)   /* 24 random bits: uniform in [0, 1) */
        score[j] = (float)(splitmix64(head ^ (uint64_t)h->pos[j]) >> 40) * (1.0f / 16777216.0f);
    return score;
}

static int random_defaults(PolicyOpts *o, Err *err) {
    (void)err;
    if (!o->skip_given) {
        o->n_skip = 2;
        o->skip[0] = 0;
        o->skip[1] = 1;
    }
    return 0;
}

static const PolicyParam params[] = {
    { "seed", "1", "int", 0, 9007199254740992.0, "random seed (same seed, same evictions)" },
    {0},
};

const PolicyDef policy_random = {
    .name = "random",
    .rule = "ablation: uniform random score per (head, token), seeded; skips layers 0,1",
    .paper = "Devoto et al. 2024, arXiv 2406.11430",
    .params = params,
    .defaults = random_defaults,
    .score = score_random,
};
