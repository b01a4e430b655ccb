/* policy_keydiff.c — `keydiff` (Park et al., "KeyDiff: Key Similarity-Based
 * KV Cache Eviction for Long-Context LLM Inference in Resource-Constrained
 * Environments", arXiv 2504.15364; as kvpress's KeyDiffPress computes it):
 * keep the keys most unlike the head's average key direction,
 *
 *   anchor   = mean over the head's cached slots j of k_j / ‖k_j‖
 *   score(p) = −cos(k_p, anchor) = −(k_p · anchor) / (‖k_p‖·‖anchor‖)
 *
 * (a zero norm counts as 1e-12 in the normalisation and the product of norms
 * as at least 1e-8, as torch's F.normalize and F.cosine_similarity). The
 * anchor is taken over what the head holds at the decision: after a prompt,
 * every prompt key (as kvpress); on later decisions, the kept keys and the new
 * ones. Keys are scored as cached: post-RoPE with `true` positions (kvpress
 * sees the same), pre-RoPE with `shifted`. Ties: the lower position. */
#include <math.h>

#include "simd/kernels.h"
#include "policy/policy.h"

static const float *score_keydiff(Policy *p, const KVCache *c, int layer, int g, float *score) {
    const KVHead *h = kvcache_head(c, layer, g);
    const Kernels *k = kernels_get();
    int n = h->len, d = p->head_dim;
    if (n == 0) return score;
    const float *keys = kvcache_key_rows(c, h, 0, n, policy_rows(p, n));
    double *inv_norm = policy_scratch(p)->dtmp;   /* [max_tokens] */
    float *anchor = policy_scratch(p)->tmp;       /* [>= head_dim] */
    for (int j = 0; j < n; j++) {
        double norm = sqrt((double)k->sum_squares(keys + (size_t)j * d, d));
        inv_norm[j] = 1.0 / (norm > 1e-12 ? norm : 1e-12);
    }
    for (int i = 0; i < d; i++) {                  /* the mean unit key, summed in double */
        double acc = 0;
        for (int j = 0; j < n; j++) acc += keys[(size_t)j * d + i] * inv_norm[j];
        anchor[i] = (float)(acc / n);
    }
    double anchor_norm = sqrt((double)k->sum_squares(anchor, d));
    for (int j = 0; j < n; j++) {
        const float *key = keys + (size_t)j * d;
        double norms = sqrt((double)k->sum_squares(key, d)) * anchor_norm;
        score[j] = (float)(-(double)k->dot(key, anchor, d) / (norms > 1e-8 ? norms : 1e-8));
    }
    return score;
}

static const PolicyParam params[] = { {0} };

const PolicyDef policy_keydiff = {
    .name = "keydiff",
    .rule = "keep the keys least like the head's mean unit key: -cos(k, mean k/|k|)",
    .paper = "Park et al. 2025, KeyDiff, arXiv 2504.15364",
    .params = params,
    .score = score_keydiff,
};
