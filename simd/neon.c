/* neon.c — AArch64 Advanced SIMD (NEON) kernels: 4 fp32 lanes per q register,
 * 32 registers, FMA by vector element (compiled only for aarch64).
 *
 * Blocking scheme
 *  - Decode and few tokens (n_tok <= 12, "skinny"): memory-bandwidth bound; W is
 *    streamed unpacked, once per 4 tokens, four rows at a time (4 rows × up to 4
 *    tokens of accumulators, 8 for one token); each x vector is loaded once per 4
 *    rows; bf16 rows are widened exactly in registers (vshll #16: zero-extend
 *    and shift left 16 in one instruction).
 *  - Prefill (n_tok > 12): gemm_driver.h's BLIS loops around an 8 × 12 micro-kernel:
 *    8 weight rows (2 q) × 12 tokens = 24 accumulators; per k it loads 2 weight
 *    vectors and the 12 activations as 3 vectors, and each FMA takes its
 *    activation from a lane (fmla v.4s, v.4s, v.s[i]), so no broadcasts are
 *    needed: 5 loads feed 24 FMAs. Blocks: KC = 256 (the 12-token X micro-panel,
 *    12 KB, in L1), MC = 128 (the packed W block, 128 KB, in L2), NC = 1020.
 *  - Element-wise kernels: 4 lanes per step; the last partial vector is copied
 *    into a 4-element stack buffer, processed by the same vector code and copied
 *    back, so nothing past the end of a buffer is touched. Reductions add their
 *    last < 4 products in scalar code.
 *  - exp is SLEEF's Sleef_expf4_u10advsimd (max error 1.0 ULP). */
#include "kernels.h"
#include "gemm_driver.h"

#include <arm_neon.h>
#include <math.h>
#include <sleef.h>

#define VL 4

static inline float32x4_t load_bf16(const uint16_t *p) {
    return vreinterpretq_f32_u32(vshll_n_u16(vld1_u16(p), 16));
}

/* ---------------------------------------------------------------------------
 * Decode and small batches (gemm_driver.h's skinny path, n_tok <= 12): for a block
 * of R = 4 weight rows and T <= 4 tokens, all R·T dot products are accumulated
 * at once (vectors along k, one horizontal sum at the end), so each weight
 * vector loaded feeds T tokens and each x vector R rows; W is read straight from
 * memory, once per group of 4 tokens, without packing. With T = 1 each row gets
 * two accumulators (8 in flight) to hide the FMA latency. The last n % 4 (or 8)
 * columns are summed in scalar code. */
#define SKINNY_T 4                                     /* tokens per pass over W */

static inline __attribute__((always_inline))
void skinny_block(float *y, long ldy, const float *x, long ldx, const void *w_, long ldw, int n,
                  int bf16, int R, int T) {
    const float *wf = w_;
    const uint16_t *wh = w_;
    const int U = T == 1 ? 2 : 1;                      /* vectors per row per step */
    float32x4_t acc[4][SKINNY_T][2];
    for (int r = 0; r < R; r++)
        for (int t = 0; t < T; t++) acc[r][t][0] = acc[r][t][1] = vdupq_n_f32(0.0f);
    int c = 0;
    for (; c + U * VL <= n; c += U * VL) {
        float32x4_t xv[SKINNY_T][2];
        for (int t = 0; t < T; t++)
            for (int u = 0; u < U; u++) xv[t][u] = vld1q_f32(x + t * ldx + c + u * VL);
        for (int r = 0; r < R; r++)
            for (int u = 0; u < U; u++) {
                const long off = r * ldw + c + u * VL;
                float32x4_t wv = bf16 ? load_bf16(wh + off) : vld1q_f32(wf + off);
                for (int t = 0; t < T; t++) acc[r][t][u] = vfmaq_f32(acc[r][t][u], wv, xv[t][u]);
            }
    }
    float tail[4][SKINNY_T] = { { 0 } };
    for (; c < n; c++)
        for (int r = 0; r < R; r++) {
            const float wv = bf16 ? gemm_bf16_to_f32(wh[r * ldw + c]) : wf[r * ldw + c];
            for (int t = 0; t < T; t++) tail[r][t] += wv * x[t * ldx + c];
        }
    for (int r = 0; r < R; r++)
        for (int t = 0; t < T; t++)
            y[t * ldy + r] = vaddvq_f32(U == 2 ? vaddq_f32(acc[r][t][0], acc[r][t][1]) : acc[r][t][0]) + tail[r][t];
}

/* ---------------------------------------------------------------------------
 * Prefill micro-kernel: the 8 × 12 tile of Y, k = 0 .. kc-1.
 *   wp: packed weights, 8 floats per k;  xp: packed activations, 12 floats per k */
#define MR 8
#define NR 12

static void micro_8x12(int kc, const void *wp_, const void *xp_, float *y, long ldy, int accumulate) {
    const float *wp = wp_, *xp = xp_;
    float32x4_t c[NR][2];
#pragma GCC unroll 12
    for (int t = 0; t < NR; t++) c[t][0] = c[t][1] = vdupq_n_f32(0.0f);
    for (int k = 0; k < kc; k++) {
        float32x4_t w0 = vld1q_f32(wp), w1 = vld1q_f32(wp + 4);
        float32x4_t x0 = vld1q_f32(xp), x1 = vld1q_f32(xp + 4), x2 = vld1q_f32(xp + 8);
#define FMA_TOKEN(t, xv, lane) \
        c[t][0] = vfmaq_laneq_f32(c[t][0], w0, xv, lane); \
        c[t][1] = vfmaq_laneq_f32(c[t][1], w1, xv, lane);
        FMA_TOKEN(0, x0, 0) FMA_TOKEN(1, x0, 1) FMA_TOKEN(2, x0, 2) FMA_TOKEN(3, x0, 3)
        FMA_TOKEN(4, x1, 0) FMA_TOKEN(5, x1, 1) FMA_TOKEN(6, x1, 2) FMA_TOKEN(7, x1, 3)
        FMA_TOKEN(8, x2, 0) FMA_TOKEN(9, x2, 1) FMA_TOKEN(10, x2, 2) FMA_TOKEN(11, x2, 3)
#undef FMA_TOKEN
        wp += MR;
        xp += NR;
    }
#pragma GCC unroll 12
    for (int t = 0; t < NR; t++) {
        float *yt = y + (long)t * ldy;
        if (accumulate) {
            c[t][0] = vaddq_f32(c[t][0], vld1q_f32(yt));
            c[t][1] = vaddq_f32(c[t][1], vld1q_f32(yt + 4));
        }
        vst1q_f32(yt, c[t][0]);
        vst1q_f32(yt + 4, c[t][1]);
    }
}

static void pack_w_f32(void *dst, const void *w, long ldw, int rows, int kc) {
    gemm_pack_w_f32(dst, w, ldw, rows, kc, MR);
}
static void pack_w_bf16(void *dst, const void *w, long ldw, int rows, int kc) {
    gemm_pack_w_bf16(dst, w, ldw, rows, kc, MR);
}
static const GemmPlan gemm_plan = {
    .mr = MR, .nr = NR, .kc = 256, .mc = 128, .nc = 1020, .k_group = 1,
    .wp_bytes = 4, .xp_bytes = 4,
    .pack_w_f32 = pack_w_f32, .pack_w_bf16 = pack_w_bf16, .micro = micro_8x12,
};
static const SkinnyPlan skinny_plan = {
    .max_tok = 12, .group = SKINNY_T, .block = skinny_block,
};
#undef MR
#undef NR

static void matmul_f32(float *Y, int ldy, const float *X, int ldx,
                       const float *W, int n_tok, int n_rows, int n_cols) {
    gemm_matmul(&gemm_plan, &skinny_plan, Y, ldy, X, ldx, W, 0, n_tok, n_rows, n_cols);
}
static void matmul_bf16(float *Y, int ldy, const float *X, int ldx,
                        const uint16_t *W, int n_tok, int n_rows, int n_cols) {
    gemm_matmul(&gemm_plan, &skinny_plan, Y, ldy, X, ldx, W, 1, n_tok, n_rows, n_cols);
}

/* ---------------------------------------------------------------------------
 * Reductions and element-wise kernels. */
static float dot(const float *a, const float *b, int n) {
    float32x4_t s0 = vdupq_n_f32(0.0f), s1 = s0, s2 = s0, s3 = s0;
    int i = 0;
    for (; i + 4 * VL <= n; i += 4 * VL) {
        s0 = vfmaq_f32(s0, vld1q_f32(a + i), vld1q_f32(b + i));
        s1 = vfmaq_f32(s1, vld1q_f32(a + i + 4), vld1q_f32(b + i + 4));
        s2 = vfmaq_f32(s2, vld1q_f32(a + i + 8), vld1q_f32(b + i + 8));
        s3 = vfmaq_f32(s3, vld1q_f32(a + i + 12), vld1q_f32(b + i + 12));
    }
    for (; i + VL <= n; i += VL) s0 = vfmaq_f32(s0, vld1q_f32(a + i), vld1q_f32(b + i));
    float tail = 0.0f;
    for (; i < n; i++) tail += a[i] * b[i];
    return vaddvq_f32(vaddq_f32(vaddq_f32(s0, s1), vaddq_f32(s2, s3))) + tail;
}

static float sum_squares(const float *x, int n) { return dot(x, x, n); }

/* The last n % 4 elements of an element-wise kernel are copied into zeroed
 * 4-float buffers, run through the same vector body, and copied back. */

static inline void rmsnorm_step(float *out, const float *x, const float *weight, float32x4_t inv) {
    vst1q_f32(out, vmulq_f32(vld1q_f32(weight), vmulq_f32(vld1q_f32(x), inv)));
}

static void rmsnorm(float *out, const float *x, const float *weight, int n, float eps) {
    /* Same formula and operation order as the reference, only the sum differs. */
    float32x4_t inv = vdupq_n_f32(1.0f / sqrtf(sum_squares(x, n) / (float)n + eps));
    int i = 0;
    for (; i + VL <= n; i += VL) rmsnorm_step(out + i, x + i, weight + i, inv);
    if (i < n) {
        const size_t bytes = (size_t)(n - i) * sizeof(float);
        float bx[VL] = { 0 }, bw[VL] = { 0 };
        memcpy(bx, x + i, bytes);
        memcpy(bw, weight + i, bytes);
        rmsnorm_step(bx, bx, bw, inv);
        memcpy(out + i, bx, bytes);
    }
}

/* Rotation with separate multiplies and adds (no FMA), exactly the reference's
 * operations, so every ISA gives bit-identical results. */
static inline void rope_halves_step(float *a, float *b, const float *cs, const float *sn) {
    float32x4_t x0 = vld1q_f32(a), x1 = vld1q_f32(b), c = vld1q_f32(cs), s = vld1q_f32(sn);
    vst1q_f32(a, vsubq_f32(vmulq_f32(x0, c), vmulq_f32(x1, s)));
    vst1q_f32(b, vaddq_f32(vmulq_f32(x1, c), vmulq_f32(x0, s)));
}

/* Interleaved pairs: vld2 splits 4 pairs into evens and odds, vst2 re-interleaves. */
static inline void rope_pairs_step(float *v, const float *cs, const float *sn) {
    float32x4x2_t p = vld2q_f32(v);
    float32x4_t c = vld1q_f32(cs), s = vld1q_f32(sn);
    float32x4x2_t r;
    r.val[0] = vsubq_f32(vmulq_f32(p.val[0], c), vmulq_f32(p.val[1], s));
    r.val[1] = vaddq_f32(vmulq_f32(p.val[1], c), vmulq_f32(p.val[0], s));
    vst2q_f32(v, r);
}

static void rope(float *x, int n_heads, int head_dim, const float *cos_theta,
                 const float *sin_theta, int pairing_halves) {
    const int half = head_dim / 2;
    for (int h = 0; h < n_heads; h++) {
        float *v = x + (long)h * head_dim;
        int i = 0;
        if (pairing_halves) {
            for (; i + VL <= half; i += VL) rope_halves_step(v + i, v + half + i, cos_theta + i, sin_theta + i);
            if (i < half) {
                const size_t bytes = (size_t)(half - i) * sizeof(float);
                float ba[VL] = { 0 }, bb[VL] = { 0 }, bc[VL] = { 0 }, bs[VL] = { 0 };
                memcpy(ba, v + i, bytes);
                memcpy(bb, v + half + i, bytes);
                memcpy(bc, cos_theta + i, bytes);
                memcpy(bs, sin_theta + i, bytes);
                rope_halves_step(ba, bb, bc, bs);
                memcpy(v + i, ba, bytes);
                memcpy(v + half + i, bb, bytes);
            }
        } else {
            for (; i + VL <= half; i += VL) rope_pairs_step(v + 2 * i, cos_theta + i, sin_theta + i);
            if (i < half) {
                const size_t bytes = (size_t)(half - i) * sizeof(float);
                float bp[2 * VL] = { 0 }, bc[VL] = { 0 }, bs[VL] = { 0 };
                memcpy(bp, v + 2 * i, 2 * bytes);
                memcpy(bc, cos_theta + i, bytes);
                memcpy(bs, sin_theta + i, bytes);
                rope_pairs_step(bp, bc, bs);
                memcpy(v + 2 * i, bp, 2 * bytes);
            }
        }
    }
}

static void softmax(float *x, int n) {
    if (n <= 0) return;
    float32x4_t mx = vdupq_n_f32(-INFINITY);
    int i = 0;
    for (; i + VL <= n; i += VL) mx = vmaxq_f32(mx, vld1q_f32(x + i));
    float max = vmaxvq_f32(mx);
    for (; i < n; i++) if (x[i] > max) max = x[i];
    const float32x4_t vmax = vdupq_n_f32(max);
    float32x4_t sum = vdupq_n_f32(0.0f);
    for (i = 0; i + VL <= n; i += VL) {
        float32x4_t e = Sleef_expf4_u10advsimd(vsubq_f32(vld1q_f32(x + i), vmax));
        vst1q_f32(x + i, e);
        sum = vaddq_f32(sum, e);
    }
    float total = vaddvq_f32(sum);
    if (i < n) {
        float buf[VL];
        for (int k = 0; k < VL; k++) buf[k] = i + k < n ? x[i + k] : max;  /* pad: exp(0) */
        vst1q_f32(buf, Sleef_expf4_u10advsimd(vsubq_f32(vld1q_f32(buf), vmax)));
        for (int k = 0; i + k < n; k++) { x[i + k] = buf[k]; total += buf[k]; }
    }
    const float32x4_t inv = vdupq_n_f32(1.0f / total);
    for (i = 0; i + VL <= n; i += VL) vst1q_f32(x + i, vmulq_f32(vld1q_f32(x + i), inv));
    for (; i < n; i++) x[i] *= vgetq_lane_f32(inv, 0);
}

static inline void silu_mul_step(float *gate, const float *up) {
    float32x4_t g = vld1q_f32(gate);
    float32x4_t e = Sleef_expf4_u10advsimd(vnegq_f32(g));
    float32x4_t silu = vdivq_f32(g, vaddq_f32(vdupq_n_f32(1.0f), e));
    vst1q_f32(gate, vmulq_f32(silu, vld1q_f32(up)));
}

static void silu_mul(float *gate, const float *up, int n) {
    int i = 0;
    for (; i + VL <= n; i += VL) silu_mul_step(gate + i, up + i);
    if (i < n) {
        const size_t bytes = (size_t)(n - i) * sizeof(float);
        float bg[VL] = { 0 }, bu[VL] = { 0 };
        memcpy(bg, gate + i, bytes);
        memcpy(bu, up + i, bytes);
        silu_mul_step(bg, bu);
        memcpy(gate + i, bg, bytes);
    }
}

/* Element i of an fp32 (bf16 = 0) or bf16 row, as fp32: 4 lanes, or one. */
static inline float32x4_t row_load(const void *row, long i, int bf16) {
    return bf16 ? load_bf16((const uint16_t *)row + i) : vld1q_f32((const float *)row + i);
}
static inline float row_at(const void *row, long i, int bf16) {
    return bf16 ? gemm_bf16_to_f32(((const uint16_t *)row)[i]) : ((const float *)row)[i];
}

/* attn_scores over fp32 (bf16 = 0) or bf16 key rows: 4 keys at a time, then 1. */
static inline __attribute__((always_inline))
void attn_scores_rows(float *scores, const float *q, const void *keys, int n_keys, int head_dim, float scale, int bf16) {
    const long row = (long)head_dim * (bf16 ? 2 : 4);
    int j = 0;
    for (; j + 4 <= n_keys; j += 4) {
        const char *k0 = (const char *)keys + j * row, *k1 = k0 + row, *k2 = k1 + row, *k3 = k2 + row;
        float32x4_t a0 = vdupq_n_f32(0.0f), a1 = a0, a2 = a0, a3 = a0;
        int c = 0;
        for (; c + VL <= head_dim; c += VL) {
            float32x4_t qv = vld1q_f32(q + c);
            a0 = vfmaq_f32(a0, qv, row_load(k0, c, bf16));
            a1 = vfmaq_f32(a1, qv, row_load(k1, c, bf16));
            a2 = vfmaq_f32(a2, qv, row_load(k2, c, bf16));
            a3 = vfmaq_f32(a3, qv, row_load(k3, c, bf16));
        }
        float s0 = vaddvq_f32(a0), s1 = vaddvq_f32(a1), s2 = vaddvq_f32(a2), s3 = vaddvq_f32(a3);
        for (; c < head_dim; c++) {
            s0 += q[c] * row_at(k0, c, bf16); s1 += q[c] * row_at(k1, c, bf16);
            s2 += q[c] * row_at(k2, c, bf16); s3 += q[c] * row_at(k3, c, bf16);
        }
        scores[j] = scale * s0;
        scores[j + 1] = scale * s1;
        scores[j + 2] = scale * s2;
        scores[j + 3] = scale * s3;
    }
    for (; j < n_keys; j++) {
        const char *k = (const char *)keys + j * row;
        if (!bf16) { scores[j] = scale * dot(q, (const float *)k, head_dim); continue; }
        float32x4_t a = vdupq_n_f32(0.0f);
        int c = 0;
        for (; c + VL <= head_dim; c += VL) a = vfmaq_f32(a, vld1q_f32(q + c), row_load(k, c, 1));
        float sum = vaddvq_f32(a);
        for (; c < head_dim; c++) sum += q[c] * row_at(k, c, 1);
        scores[j] = scale * sum;
    }
}

static void attn_scores(float *scores, const float *q, const float *keys,
                        int n_keys, int head_dim, float scale) {
    attn_scores_rows(scores, q, keys, n_keys, head_dim, scale, 0);
}

/* The bf16 cache (kernels.h): the same loops, each row widened as it is loaded. */
static void attn_scores_bf16(float *scores, const float *q, const uint16_t *keys,
                             int n_keys, int head_dim, float scale) {
    attn_scores_rows(scores, q, keys, n_keys, head_dim, scale, 1);
}

/* out[c0 .. c0 + NV*4) accumulated in NV registers over all keys (NV constant
 * after inlining); the columns past the last whole vector are done in scalar. */
static inline __attribute__((always_inline))
void attn_values_chunk(float *out, const float *probs, const void *values, int n_keys,
                       long head_dim, int NV, int bf16) {
    const long row_bytes = head_dim * (bf16 ? 2 : 4);
    float32x4_t acc[8];
    for (int v = 0; v < NV; v++) acc[v] = vdupq_n_f32(0.0f);
    for (int j = 0; j < n_keys; j++) {
        const char *row = (const char *)values + j * row_bytes;
        float32x4_t p = vdupq_n_f32(probs[j]);
        for (int v = 0; v < NV; v++) acc[v] = vfmaq_f32(acc[v], p, row_load(row, v * VL, bf16));
    }
    for (int v = 0; v < NV; v++) vst1q_f32(out + v * VL, acc[v]);
}

/* attn_values over fp32 (bf16 = 0) or bf16 value rows. */
static inline __attribute__((always_inline))
void attn_values_rows(float *out, const float *probs, const void *values, int n_keys, int head_dim, int bf16) {
    const long elem = bf16 ? 2 : 4;
    const int whole = head_dim / VL * VL;
    for (int c = 0; c < whole; c += 8 * VL) {
        const int nv = gemm_min(8 * VL, whole - c) / VL;
        const void *vals = (const char *)values + c * elem;
        switch (nv) {
        case 1: attn_values_chunk(out + c, probs, vals, n_keys, head_dim, 1, bf16); break;
        case 2: attn_values_chunk(out + c, probs, vals, n_keys, head_dim, 2, bf16); break;
        case 3: attn_values_chunk(out + c, probs, vals, n_keys, head_dim, 3, bf16); break;
        case 4: attn_values_chunk(out + c, probs, vals, n_keys, head_dim, 4, bf16); break;
        case 5: attn_values_chunk(out + c, probs, vals, n_keys, head_dim, 5, bf16); break;
        case 6: attn_values_chunk(out + c, probs, vals, n_keys, head_dim, 6, bf16); break;
        case 7: attn_values_chunk(out + c, probs, vals, n_keys, head_dim, 7, bf16); break;
        default: attn_values_chunk(out + c, probs, vals, n_keys, head_dim, 8, bf16); break;
        }
    }
    for (int c = whole; c < head_dim; c++) {
        float s = 0.0f;
        for (int j = 0; j < n_keys; j++) s = fmaf(probs[j], row_at(values, (long)j * head_dim + c, bf16), s);
        out[c] = s;
    }
}

static void attn_values(float *out, const float *probs, const float *values,
                        int n_keys, int head_dim) {
    attn_values_rows(out, probs, values, n_keys, head_dim, 0);
}

static void attn_values_bf16(float *out, const float *probs, const uint16_t *values,
                             int n_keys, int head_dim) {
    attn_values_rows(out, probs, values, n_keys, head_dim, 1);
}

/* softmax's exp pass alone (the online softmax's step, kernels.h). */
static float exp_sum(float *x, int n, float max) {
    const float32x4_t vmax = vdupq_n_f32(max);
    float32x4_t sum = vdupq_n_f32(0.0f);
    int i = 0;
    for (; i + VL <= n; i += VL) {
        float32x4_t e = Sleef_expf4_u10advsimd(vsubq_f32(vld1q_f32(x + i), vmax));
        vst1q_f32(x + i, e);
        sum = vaddq_f32(sum, e);
    }
    float total = vaddvq_f32(sum);
    if (i < n) {
        float buf[VL];
        for (int k = 0; k < VL; k++) buf[k] = i + k < n ? x[i + k] : max;
        vst1q_f32(buf, Sleef_expf4_u10advsimd(vsubq_f32(vld1q_f32(buf), vmax)));
        for (int k = 0; i + k < n; k++) { x[i + k] = buf[k]; total += buf[k]; }
    }
    return total;
}

/* The neon table: dispatch.c starts from a copy of kernels_scalar and calls
 * this (on a CPU with Advanced SIMD) to replace what this file implements,
 * which here is every entry. */
void kernels_init_neon(Kernels *k) {
    k->name = "neon";
    k->matmul_f32 = matmul_f32;
    k->matmul_bf16 = matmul_bf16;
    k->dot = dot;
    k->sum_squares = sum_squares;
    k->rmsnorm = rmsnorm;
    k->rope = rope;
    k->softmax = softmax;
    k->silu_mul = silu_mul;
    k->attn_scores = attn_scores;
    k->attn_values = attn_values;
    k->attn_scores_bf16 = attn_scores_bf16;
    k->attn_values_bf16 = attn_values_bf16;
    k->exp_sum = exp_sum;
}
