/* policy_vnorm.c — `vnorm`: keep the tokens whose cached VALUE has the
 * highest L2 norm,
 *
 *   score(p) = +‖v_{l,g,p}‖₂ over the head_dim channels.
 *
 * The value-norm half of VATP (Guo et al., "Attention Score is not All You
 * Need for Token Importance Indicator in KV Cache Reduction: Value Also
 * Matters", arXiv 2406.12335, which multiplies it with the accumulated
 * attention): a token whose value is near zero adds little to any attention
 * output, whatever its weight. Ties: the lower position. Values carry no RoPE,
 * so the score is the same for `true` and `shifted` positions.
 *
 * Like l2's key norm, a value's norm never changes: it is computed once when
 * the cache appends the token, into a side column compacted with the slots. */
#include <math.h>

#include "simd/kernels.h"
#include "policy/policy.h"

static float value_norm(const float *key, const float *value, int head_dim) {
    (void)key;
    return sqrtf(kernels_get()->sum_squares(value, head_dim));
}

static const PolicyColumn value_norm_column = { .name = "value_norm", .fill = value_norm };
static const PolicyColumn *const columns[] = { &value_norm_column, NULL };

static const float *score_vnorm(Policy *p, const KVCache *c, int layer, int g, float *out) {
    (void)out;
    return policy_column(p, c, "value_norm", layer, g);
}

static const PolicyParam params[] = { {0} };

const PolicyDef policy_vnorm = {
    .name = "vnorm",
    .rule = "keep the highest value L2 norms (VATP's value term)",
    .paper = "Guo et al. 2024, VATP, arXiv 2406.12335",
    .params = params,
    .columns = columns,
    .score = score_vnorm,
};
