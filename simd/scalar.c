/* scalar.c — the portable reference kernels. Plain C, one loop per formula:
 * every other ISA is tested against these. */
#include "kernels.h"

#include <math.h>

static void matmul_f32(float *Y, int ldy, const float *X, int ldx,
                       const float *W, int n_tok, int n_rows, int n_cols) {
    for (int t = 0; t < n_tok; t++)
        for (int r = 0; r < n_rows; r++) {
            const float *w = W + (long)r * n_cols, *x = X + (long)t * ldx;
            float sum = 0.0f;
            for (int c = 0; c < n_cols; c++) sum += w[c] * x[c];
            Y[(long)t * ldy + r] = sum;
        }
}

static inline float widen_bf16(uint16_t h) {
    union { uint32_t u; float f; } v = { (uint32_t)h << 16 };
    return v.f;
}

static void matmul_bf16(float *Y, int ldy, const float *X, int ldx,
                        const uint16_t *W, int n_tok, int n_rows, int n_cols) {
    for (int t = 0; t < n_tok; t++)
        for (int r = 0; r < n_rows; r++) {
            const uint16_t *w = W + (long)r * n_cols;
            const float *x = X + (long)t * ldx;
            float sum = 0.0f;
            for (int c = 0; c < n_cols; c++) sum += widen_bf16(w[c]) * x[c];
            Y[(long)t * ldy + r] = sum;
        }
}

static float dot(const float *a, const float *b, int n) {
    float sum = 0.0f;
    for (int i = 0; i < n; i++) sum += a[i] * b[i];
    return sum;
}

static float sum_squares(const float *x, int n) { return dot(x, x, n); }

static void rmsnorm(float *out, const float *x, const float *weight, int n, float eps) {
    float inv_rms = 1.0f / sqrtf(sum_squares(x, n) / (float)n + eps);
    for (int i = 0; i < n; i++) out[i] = weight[i] * (x[i] * inv_rms);
}

static void rope(float *x, int n_heads, int head_dim, const float *cos_theta,
                 const float *sin_theta, int pairing_halves) {
    int half = head_dim / 2;
    for (int h = 0; h < n_heads; h++) {
        float *v = x + (long)h * head_dim;
        for (int i = 0; i < half; i++) {
            int a = pairing_halves ? i : 2 * i;
            int b = pairing_halves ? i + half : 2 * i + 1;
            float x0 = v[a], x1 = v[b];
            v[a] = x0 * cos_theta[i] - x1 * sin_theta[i];
            v[b] = x1 * cos_theta[i] + x0 * sin_theta[i];
        }
    }
}

static void softmax(float *x, int n) {
    if (n <= 0) return;
    float max = x[0];
    for (int i = 1; i < n; i++) if (x[i] > max) max = x[i];
    float sum = 0.0f;
    for (int i = 0; i < n; i++) { x[i] = expf(x[i] - max); sum += x[i]; }
    float inv = 1.0f / sum;
    for (int i = 0; i < n; i++) x[i] *= inv;
}

static void silu_mul(float *gate, const float *up, int n) {
    for (int i = 0; i < n; i++) gate[i] = gate[i] / (1.0f + expf(-gate[i])) * up[i];
}

static void attn_scores(float *scores, const float *q, const float *keys,
                        int n_keys, int head_dim, float scale) {
    for (int j = 0; j < n_keys; j++) scores[j] = scale * dot(q, keys + (long)j * head_dim, head_dim);
}

static void attn_values(float *out, const float *probs, const float *values,
                        int n_keys, int head_dim) {
    for (int c = 0; c < head_dim; c++) out[c] = 0.0f;
    for (int j = 0; j < n_keys; j++) {
        const float *v = values + (long)j * head_dim;
        float p = probs[j];
        for (int c = 0; c < head_dim; c++) out[c] += p * v[c];
    }
}

static void attn_scores_bf16(float *scores, const float *q, const uint16_t *keys,
                             int n_keys, int head_dim, float scale) {
    for (int j = 0; j < n_keys; j++) {
        const uint16_t *k = keys + (long)j * head_dim;
        float sum = 0.0f;
        for (int c = 0; c < head_dim; c++) sum += q[c] * widen_bf16(k[c]);
        scores[j] = scale * sum;
    }
}

static void attn_values_bf16(float *out, const float *probs, const uint16_t *values,
                             int n_keys, int head_dim) {
    for (int c = 0; c < head_dim; c++) out[c] = 0.0f;
    for (int j = 0; j < n_keys; j++) {
        const uint16_t *v = values + (long)j * head_dim;
        float p = probs[j];
        for (int c = 0; c < head_dim; c++) out[c] += p * widen_bf16(v[c]);
    }
}

static float exp_sum(float *x, int n, float max) {
    float sum = 0.0f;
    for (int i = 0; i < n; i++) { x[i] = expf(x[i] - max); sum += x[i]; }
    return sum;
}

const Kernels kernels_scalar = {
    .name = "scalar",
    .matmul_f32 = matmul_f32,
    .matmul_bf16 = matmul_bf16,
    .dot = dot,
    .sum_squares = sum_squares,
    .rmsnorm = rmsnorm,
    .rope = rope,
    .softmax = softmax,
    .silu_mul = silu_mul,
    .attn_scores = attn_scores,
    .attn_values = attn_values,
    .attn_scores_bf16 = attn_scores_bf16,
    .attn_values_bf16 = attn_values_bf16,
    .exp_sum = exp_sum,
};
