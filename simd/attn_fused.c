/* attn_fused.c — one-pass attention over blocks of keys (kernels.h, attn_fused):
 * a driver over the table's attn_scores / exp_sum / attn_values kernels, so it
 * runs every ISA's own inner loops.
 *
 * Online softmax (Milakov & Gimelshein 2018; FlashAttention): for the scores
 * s_j seen so far, with m = max_j s_j and l = sum_j exp(s_j - m),
 *   o = sum_j exp(s_j - m) v_j,   and the answer is o / l.
 * A new block with maximum m_b gives m' = max(m, m_b); the old o and l are
 * multiplied by exp(m - m') and the block's terms, taken against m', added. */
#include "kernels.h"

#include <math.h>

long attn_fused_scratch_floats(int n_q, int head_dim) {
    return (long)n_q * (ATTN_BLOCK + 2) + head_dim;
}

void attn_fused(const Kernels *k, float *out, long ldo, const float *q, long ldq, int n_q,
                const void *keys, int keys_bf16, const void *values, int values_bf16,
                int n_keys, int head_dim, float scale, float *scratch) {
    float *scores = scratch;                             /* [n_q][ATTN_BLOCK] */
    float *run_max = scores + (long)n_q * ATTN_BLOCK;    /* [n_q] m */
    float *run_sum = run_max + n_q;                      /* [n_q] l */
    float *block_out = run_sum + n_q;                    /* [head_dim] */
    const long key_bytes = (long)head_dim * (keys_bf16 ? 2 : 4), value_bytes = (long)head_dim * (values_bf16 ? 2 : 4);
    for (int i = 0; i < n_q; i++) {
        run_max[i] = -INFINITY;
        run_sum[i] = 0.0f;
        for (int c = 0; c < head_dim; c++) out[i * ldo + c] = 0.0f;
    }
    for (int j0 = 0; j0 < n_keys; j0 += ATTN_BLOCK) {
        const char *kb = (const char *)keys + j0 * key_bytes, *vb = (const char *)values + j0 * value_bytes;
        for (int i = 0; i < n_q; i++) {
            int visible = n_keys - n_q + 1 + i - j0;       /* causal: query i's keys in this block */
            if (visible <= 0) continue;
            int nb = visible < ATTN_BLOCK ? visible : ATTN_BLOCK;
            float *s = scores + (long)i * ATTN_BLOCK, *o = out + i * ldo;
            if (keys_bf16) k->attn_scores_bf16(s, q + i * ldq, (const uint16_t *)kb, nb, head_dim, scale);
            else k->attn_scores(s, q + i * ldq, (const float *)kb, nb, head_dim, scale);
            float block_max = s[0];
            for (int j = 1; j < nb; j++) if (s[j] > block_max) block_max = s[j];
            float new_max = block_max > run_max[i] ? block_max : run_max[i];
            float rescale = expf(run_max[i] - new_max);    /* 0 on the first block (m = -inf) */
            float block_sum = k->exp_sum(s, nb, new_max);
            if (values_bf16) k->attn_values_bf16(block_out, s, (const uint16_t *)vb, nb, head_dim);
            else k->attn_values(block_out, s, (const float *)vb, nb, head_dim);
            for (int c = 0; c < head_dim; c++) o[c] = o[c] * rescale + block_out[c];
            run_sum[i] = run_sum[i] * rescale + block_sum;
            run_max[i] = new_max;
        }
    }
    for (int i = 0; i < n_q; i++) {
        float inv = run_sum[i] > 0.0f ? 1.0f / run_sum[i] : 0.0f;
        for (int c = 0; c < head_dim; c++) out[i * ldo + c] *= inv;
    }
}
