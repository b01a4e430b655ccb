/* policy_l2.c — `l2` and `l2-high` (../shared/spec/methods.md §1;
 * arXiv 2406.11430).
 *
 *   l2:      score(p) = −‖k_{l,g,p}‖₂ over the head_dim channels of the cached
 *            key: keep the LOWEST norms (the paper's method: low-norm keys
 *            draw the most attention);
 *   l2-high: score(p) = +‖k‖: keep the highest (the ablation).
 * Ties: the lower position is kept (policy_select_top). The norm is taken
 * before RoPE (the forward pass caches k, then rotates it), so it is the same
 * for `true` and `shifted` positions, and the keys of a repeated token (equal
 * before RoPE) tie exactly instead of by rounding.
 *
 * A key's norm never changes, so its score is computed once, when the cache
 * appends it, into a side column that the cache compacts with its
 * slots; the score function hands that column out as it is. A decode step
 * then costs one norm (the new key) per head plus the selection's one pass:
 * this is what keeps l2's decide time small. */
#include <math.h>

#include "simd/kernels.h"
#include "policy/policy.h"

static float key_norm(const float *key, const float *value, int head_dim) {
    (void)value;
    return sqrtf(kernels_get()->sum_squares(key, head_dim));
}

static float minus_key_norm(const float *key, const float *value, int head_dim) {
    return -key_norm(key, value, head_dim);
}

static const PolicyColumn low = { .name = "minus_key_norm", .fill = minus_key_norm };
static const PolicyColumn high = { .name = "key_norm", .fill = key_norm };
static const PolicyColumn *const columns_low[] = { &low, NULL };
static const PolicyColumn *const columns_high[] = { &high, NULL };

static const float *score_low(Policy *p, const KVCache *c, int layer, int g, float *out) {
    (void)out;
    return policy_column(p, c, "minus_key_norm", layer, g);
}

static const float *score_high(Policy *p, const KVCache *c, int layer, int g, float *out) {
    (void)out;
    return policy_column(p, c, "key_norm", layer, g);
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
    .paper = "Devoto et al. 2024, arXiv 2406.11430",
    .params = params,
    .columns = columns_low,
    .defaults = l2_defaults,
    .score = score_low,
};

const PolicyDef policy_l2_high = {
    .name = "l2-high",
    .rule = "ablation: keep the HIGHEST key norms; skips layers 0,1",
    .paper = "Devoto et al. 2024, arXiv 2406.11430",
    .params = params,
    .columns = columns_high,
    .defaults = l2_defaults,
    .score = score_high,
};
