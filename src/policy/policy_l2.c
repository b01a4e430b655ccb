/* policy_l2.c — `l2` and `l2-high` (../shared/spec/methods.md §1;
 * arXiv 2406.11430).
 *
 *   l2:      score(p) = −‖k_{l,g,p}‖₂ over the head_dim channels of the cached
 *            key: keep the LOWEST norms (the paper's method: low-norm keys
 *            draw the most attention);
 *   l2-high: score(p) = +‖k‖: keep the highest (the ablation).
 * Ties: the lower position is kept (policy_select_top). RoPE is a rotation,
 * so the norm is the same for `true` and `shifted` positions.
 *
 * A key never changes once cached, so its score is computed once, the first
 * time a decision needs it, and kept in p->aux, which the framework compacts
 * with the cache; the score function hands that array out as it is. A decode
 * step then costs one norm (the new key) per head plus the selection's one
 * pass: this is what keeps l2's decide time small. */
#include <math.h>

#include "simd/kernels.h"
#include "policy/policy.h"

/* aux[j] = sign·‖key j‖ for every slot of (layer, g), computing only the new ones. */
static const float *norm_scores(Policy *p, const KVCache *c, int layer, int g, float sign) {
    const KVHead *h = kvcache_head(c, layer, g);
    const Kernels *k = kernels_get();
    int *valid = &p->aux_len[layer * p->n_kv_heads + g];
    float *score = policy_aux(p, layer, g);
    for (int j = *valid; j < h->len; j++)
        score[j] = sign * sqrtf(k->sum_squares(h->keys + (size_t)j * p->head_dim, p->head_dim));
    *valid = h->len;
    return score;
}

static const float *score_low(Policy *p, const KVCache *c, int layer, int g, float *out) {
    (void)out;
    return norm_scores(p, c, layer, g, -1.0f);
}

static const float *score_high(Policy *p, const KVCache *c, int layer, int g, float *out) {
    (void)out;
    return norm_scores(p, c, layer, g, 1.0f);
}

/* The paper's defaults (../shared/spec/methods.md §1): layers 0 and 1 are never compressed. */
static int l2_defaults(PolicyOpts *o, Err *err) {
    (void)err;
    if (!o->skip_given) {
        o->n_skip = 2;
        o->skip[0] = 0;
        o->skip[1] = 1;
    }
    return 0;
}

static const PolicyParam params[] = { {0} };

const PolicyDef policy_l2 = {
    .name = "l2",
    .rule = "keep the lowest key L2 norms (ties: lower position); skips layers 0,1",
    .spec = "§1",
    .params = params,
    .flags = POLICY_NEEDS_AUX,
    .defaults = l2_defaults,
    .score = score_low,
};

const PolicyDef policy_l2_high = {
    .name = "l2-high",
    .rule = "ablation: keep the HIGHEST key norms; skips layers 0,1",
    .spec = "§1",
    .params = params,
    .flags = POLICY_NEEDS_AUX,
    .defaults = l2_defaults,
    .score = score_high,
};
