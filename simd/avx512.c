/* avx512.c — AVX-512F kernels: 16 fp32 lanes per zmm register, 32 registers,
 * mask registers for the tails (compiled with -mavx512f/bw/vl/dq -mfma).
 *
 * Blocking scheme
 *  - Decode mat-vec (matmul with n_tok == 1): memory-bandwidth bound, so the only
 *    goal is to stream W once at full speed. Four weight rows are walked at once
 *    (4 independent load streams for the prefetchers, 8 accumulators to hide the
 *    FMA latency), each x vector loaded once per 4 rows. bf16 rows are widened
 *    exactly in registers (zero-extend 16→32 bits, shift left 16).
 *  - Prefill (n_tok > 1): gemm_driver.h's BLIS loops around a 32 × 12 micro-kernel:
 *    32 weight rows (2 zmm) × 12 tokens = 24 zmm accumulators; per k it loads 2
 *    packed weight vectors and broadcasts 12 activations for 24 FMAs, so loads
 *    never limit the 2 FMA pipes. Blocks: KC = 384 (the 12-token X micro-panel,
 *    18 KB, stays in the 48 KB L1), MC = 256 (the 256 × 384 packed W block,
 *    384 KB, stays in L2), NC = 1020 tokens (packed X block ≤ 1.5 MB).
 *  - Element-wise kernels and reductions: 16 lanes per step (reductions with 4
 *    independent accumulators), the last partial vector through a mask, so no
 *    scalar tail and no access past the end of any buffer.
 *  - exp is SLEEF's Sleef_expf16_u10avx512f (max error 1.0 ULP). */
#include "kernels.h"
#include "gemm_driver.h"

#include <immintrin.h>
#include <math.h>
#include <sleef.h>

#define VL 16

static inline __mmask16 tail_mask(int n) {          /* lanes [0, n), n in [0, 16] */
    return (__mmask16)((1u << n) - 1u);
}

/* 16 bf16 → 16 fp32, exact: the bf16 bits become the high half of each float. */
static inline __m512 widen_bf16(__m256i h) {
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}
static inline __m512 load_bf16(const uint16_t *p) {
    return widen_bf16(_mm256_loadu_si256((const __m256i *)p));
}
static inline __m512 maskz_load_bf16(__mmask16 m, const uint16_t *p) {
    return widen_bf16(_mm256_maskz_loadu_epi16(m, p));
}

/* ---------------------------------------------------------------------------
 * Decode: y[r] = dot(W[r, :], x), R rows at a time (R is a constant after inlining). */
static inline __attribute__((always_inline))
void gemv_rows_f32(float *y, const float *x, const float *w, long ldw, int n, int R) {
    __m512 acc[4][2];
    for (int i = 0; i < R; i++) acc[i][0] = acc[i][1] = _mm512_setzero_ps();
    int c = 0;
    for (; c + 2 * VL <= n; c += 2 * VL) {
        __m512 x0 = _mm512_loadu_ps(x + c), x1 = _mm512_loadu_ps(x + c + VL);
        for (int i = 0; i < R; i++) {
            acc[i][0] = _mm512_fmadd_ps(_mm512_loadu_ps(w + i * ldw + c), x0, acc[i][0]);
            acc[i][1] = _mm512_fmadd_ps(_mm512_loadu_ps(w + i * ldw + c + VL), x1, acc[i][1]);
        }
    }
    for (; c < n; c += VL) {
        __mmask16 m = tail_mask(gemm_min(VL, n - c));
        __m512 x0 = _mm512_maskz_loadu_ps(m, x + c);
        for (int i = 0; i < R; i++)
            acc[i][0] = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, w + i * ldw + c), x0, acc[i][0]);
    }
    for (int i = 0; i < R; i++) y[i] = _mm512_reduce_add_ps(_mm512_add_ps(acc[i][0], acc[i][1]));
}

static inline __attribute__((always_inline))
void gemv_rows_bf16(float *y, const float *x, const uint16_t *w, long ldw, int n, int R) {
    __m512 acc[4][2];
    for (int i = 0; i < R; i++) acc[i][0] = acc[i][1] = _mm512_setzero_ps();
    int c = 0;
    for (; c + 2 * VL <= n; c += 2 * VL) {
        __m512 x0 = _mm512_loadu_ps(x + c), x1 = _mm512_loadu_ps(x + c + VL);
        for (int i = 0; i < R; i++) {
            acc[i][0] = _mm512_fmadd_ps(load_bf16(w + i * ldw + c), x0, acc[i][0]);
            acc[i][1] = _mm512_fmadd_ps(load_bf16(w + i * ldw + c + VL), x1, acc[i][1]);
        }
    }
    for (; c < n; c += VL) {
        __mmask16 m = tail_mask(gemm_min(VL, n - c));
        __m512 x0 = _mm512_maskz_loadu_ps(m, x + c);
        for (int i = 0; i < R; i++)
            acc[i][0] = _mm512_fmadd_ps(maskz_load_bf16(m, w + i * ldw + c), x0, acc[i][0]);
    }
    for (int i = 0; i < R; i++) y[i] = _mm512_reduce_add_ps(_mm512_add_ps(acc[i][0], acc[i][1]));
}

static void gemv_f32(float *y, const float *x, const float *W, int n_rows, int n_cols) {
    int r = 0;
    for (; r + 4 <= n_rows; r += 4) gemv_rows_f32(y + r, x, W + (long)r * n_cols, n_cols, n_cols, 4);
    for (; r < n_rows; r++) gemv_rows_f32(y + r, x, W + (long)r * n_cols, n_cols, n_cols, 1);
}

static void gemv_bf16(float *y, const float *x, const uint16_t *W, int n_rows, int n_cols) {
    int r = 0;
    for (; r + 4 <= n_rows; r += 4) gemv_rows_bf16(y + r, x, W + (long)r * n_cols, n_cols, n_cols, 4);
    for (; r < n_rows; r++) gemv_rows_bf16(y + r, x, W + (long)r * n_cols, n_cols, n_cols, 1);
}

/* ---------------------------------------------------------------------------
 * Prefill micro-kernel: the 32 × 12 tile of Y, k = 0 .. kc-1.
 *   wp: packed weights, 32 floats per k (64-byte aligned)
 *   xp: packed activations, 12 floats per k */
#define MR 32
#define NR 12

static void micro_32x12(int kc, const void *wp_, const void *xp_, float *y, long ldy, int accumulate) {
    const float *wp = wp_, *xp = xp_;
    __m512 c[NR][2];
#pragma GCC unroll 12
    for (int t = 0; t < NR; t++) c[t][0] = c[t][1] = _mm512_setzero_ps();
    for (int k = 0; k < kc; k++) {
        __m512 w0 = _mm512_load_ps(wp), w1 = _mm512_load_ps(wp + VL);
#pragma GCC unroll 12
        for (int t = 0; t < NR; t++) {
            __m512 xt = _mm512_set1_ps(xp[t]);
            c[t][0] = _mm512_fmadd_ps(w0, xt, c[t][0]);
            c[t][1] = _mm512_fmadd_ps(w1, xt, c[t][1]);
        }
        wp += MR;
        xp += NR;
    }
#pragma GCC unroll 12
    for (int t = 0; t < NR; t++) {
        float *yt = y + (long)t * ldy;
        if (accumulate) {
            c[t][0] = _mm512_add_ps(c[t][0], _mm512_loadu_ps(yt));
            c[t][1] = _mm512_add_ps(c[t][1], _mm512_loadu_ps(yt + VL));
        }
        _mm512_storeu_ps(yt, c[t][0]);
        _mm512_storeu_ps(yt + VL, c[t][1]);
    }
}

static void pack_w_f32(void *dst, const void *w, long ldw, int rows, int kc) {
    gemm_pack_w_f32(dst, w, ldw, rows, kc, MR);
}
static void pack_w_bf16(void *dst, const void *w, long ldw, int rows, int kc) {
    gemm_pack_w_bf16(dst, w, ldw, rows, kc, MR);
}
static void pack_x(void *dst, const float *x, long ldx, int toks, int kc) {
    gemm_pack_x_f32(dst, x, ldx, toks, kc, NR);
}

static const GemmPlan plan_f32 = {
    .mr = MR, .nr = NR, .kc = 384, .mc = 256, .nc = 1020, .k_group = 1,
    .w_src_bytes = 4, .wp_bytes = 4, .xp_bytes = 4,
    .pack_w = pack_w_f32, .pack_x = pack_x, .micro = micro_32x12,
};
static const GemmPlan plan_bf16 = {
    .mr = MR, .nr = NR, .kc = 384, .mc = 256, .nc = 1020, .k_group = 1,
    .w_src_bytes = 2, .wp_bytes = 4, .xp_bytes = 4,
    .pack_w = pack_w_bf16, .pack_x = pack_x, .micro = micro_32x12,
};
#undef MR
#undef NR

static void matmul_f32(float *Y, int ldy, const float *X, int ldx,
                       const float *W, int n_tok, int n_rows, int n_cols) {
    if (n_tok > 1 && gemm_blocked(&plan_f32, Y, ldy, X, ldx, W, n_tok, n_rows, n_cols) == 0) return;
    for (int t = 0; t < n_tok; t++)      /* decode, or no memory for the packing buffers */
        gemv_f32(Y + (long)t * ldy, X + (long)t * ldx, W, n_rows, n_cols);
}

static void matmul_bf16(float *Y, int ldy, const float *X, int ldx,
                        const uint16_t *W, int n_tok, int n_rows, int n_cols) {
    if (n_tok > 1 && gemm_blocked(&plan_bf16, Y, ldy, X, ldx, W, n_tok, n_rows, n_cols) == 0) return;
    for (int t = 0; t < n_tok; t++)
        gemv_bf16(Y + (long)t * ldy, X + (long)t * ldx, W, n_rows, n_cols);
}

/* ---------------------------------------------------------------------------
 * Reductions and element-wise kernels. */
static float dot(const float *a, const float *b, int n) {
    __m512 s0 = _mm512_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
    int i = 0;
    for (; i + 4 * VL <= n; i += 4 * VL) {
        s0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), s0);
        s1 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + VL), _mm512_loadu_ps(b + i + VL), s1);
        s2 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 2 * VL), _mm512_loadu_ps(b + i + 2 * VL), s2);
        s3 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 3 * VL), _mm512_loadu_ps(b + i + 3 * VL), s3);
    }
    for (; i < n; i += VL) {
        __mmask16 m = tail_mask(gemm_min(VL, n - i));
        s0 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, a + i), _mm512_maskz_loadu_ps(m, b + i), s0);
    }
    return _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(s0, s1), _mm512_add_ps(s2, s3)));
}

static float sum_squares(const float *x, int n) { return dot(x, x, n); }

static void rmsnorm(float *out, const float *x, const float *weight, int n, float eps) {
    /* Same formula and operation order as the reference, only the sum differs. */
    __m512 inv = _mm512_set1_ps(1.0f / sqrtf(sum_squares(x, n) / (float)n + eps));
    for (int i = 0; i < n; i += VL) {
        __mmask16 m = tail_mask(gemm_min(VL, n - i));
        __m512 v = _mm512_mul_ps(_mm512_maskz_loadu_ps(m, x + i), inv);
        _mm512_mask_storeu_ps(out + i, m, _mm512_mul_ps(_mm512_maskz_loadu_ps(m, weight + i), v));
    }
}

/* The rotation uses separate multiplies and adds (no FMA), exactly the
 * reference's operations, so every ISA gives bit-identical results. */
static void rope(float *x, int n_heads, int head_dim, const float *cos_theta,
                 const float *sin_theta, int pairing_halves) {
    const int half = head_dim / 2;
    if (pairing_halves) {
        for (int h = 0; h < n_heads; h++) {
            float *a = x + (long)h * head_dim, *b = a + half;
            for (int i = 0; i < half; i += VL) {
                __mmask16 m = tail_mask(gemm_min(VL, half - i));
                __m512 x0 = _mm512_maskz_loadu_ps(m, a + i), x1 = _mm512_maskz_loadu_ps(m, b + i);
                __m512 c = _mm512_maskz_loadu_ps(m, cos_theta + i), s = _mm512_maskz_loadu_ps(m, sin_theta + i);
                _mm512_mask_storeu_ps(a + i, m, _mm512_sub_ps(_mm512_mul_ps(x0, c), _mm512_mul_ps(x1, s)));
                _mm512_mask_storeu_ps(b + i, m, _mm512_add_ps(_mm512_mul_ps(x1, c), _mm512_mul_ps(x0, s)));
            }
        }
        return;
    }
    /* Interleaved pairs (2i, 2i+1): one vector holds 8 pairs. With cos/sin
     * duplicated per pair ([c0 c0 c1 c1 ..]) and x's pairs swapped ([x1 x0 ..]):
     *   even lane: x0*c + -(x1*s),  odd lane: x1*c + x0*s. */
    const __m512i dup = _mm512_setr_epi32(0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7);
    const __m512 neg_even = _mm512_castsi512_ps(_mm512_set1_epi64(0x0000000080000000LL));
    for (int h = 0; h < n_heads; h++) {
        float *v = x + (long)h * head_dim;
        for (int i = 0; i < half; i += VL / 2) {
            const int np = gemm_min(VL / 2, half - i);             /* pairs in this step */
            __mmask16 m = tail_mask(2 * np);
            __m512 xv = _mm512_maskz_loadu_ps(m, v + 2 * i);
            __m512 c = _mm512_permutexvar_ps(dup, _mm512_castps256_ps512(
                           _mm256_maskz_loadu_ps((__mmask8)tail_mask(np), cos_theta + i)));
            __m512 s = _mm512_permutexvar_ps(dup, _mm512_castps256_ps512(
                           _mm256_maskz_loadu_ps((__mmask8)tail_mask(np), sin_theta + i)));
            __m512 sw = _mm512_permute_ps(xv, 0xB1);                 /* swap within pairs */
            __m512 q = _mm512_xor_ps(_mm512_mul_ps(sw, s), neg_even);
            _mm512_mask_storeu_ps(v + 2 * i, m, _mm512_add_ps(_mm512_mul_ps(xv, c), q));
        }
    }
}

static void softmax(float *x, int n) {
    if (n <= 0) return;
    const __m512 ninf = _mm512_set1_ps(-INFINITY);
    __m512 mx = ninf;
    for (int i = 0; i < n; i += VL) {
        __mmask16 m = tail_mask(gemm_min(VL, n - i));
        mx = _mm512_max_ps(mx, _mm512_mask_loadu_ps(ninf, m, x + i));
    }
    const __m512 vmax = _mm512_set1_ps(_mm512_reduce_max_ps(mx));
    __m512 sum = _mm512_setzero_ps();
    for (int i = 0; i < n; i += VL) {
        __mmask16 m = tail_mask(gemm_min(VL, n - i));
        __m512 e = Sleef_expf16_u10avx512f(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, x + i), vmax));
        _mm512_mask_storeu_ps(x + i, m, e);
        sum = _mm512_mask_add_ps(sum, m, sum, e);
    }
    const __m512 inv = _mm512_set1_ps(1.0f / _mm512_reduce_add_ps(sum));
    for (int i = 0; i < n; i += VL) {
        __mmask16 m = tail_mask(gemm_min(VL, n - i));
        _mm512_mask_storeu_ps(x + i, m, _mm512_mul_ps(_mm512_maskz_loadu_ps(m, x + i), inv));
    }
}

static void silu_mul(float *gate, const float *up, int n) {
    const __m512 one = _mm512_set1_ps(1.0f);
    for (int i = 0; i < n; i += VL) {
        __mmask16 m = tail_mask(gemm_min(VL, n - i));
        __m512 g = _mm512_maskz_loadu_ps(m, gate + i);
        __m512 e = Sleef_expf16_u10avx512f(_mm512_sub_ps(_mm512_setzero_ps(), g));
        __m512 silu = _mm512_div_ps(g, _mm512_add_ps(one, e));
        _mm512_mask_storeu_ps(gate + i, m, _mm512_mul_ps(silu, _mm512_maskz_loadu_ps(m, up + i)));
    }
}

/* Four keys at a time share each load of q. */
static void attn_scores(float *scores, const float *q, const float *keys,
                        int n_keys, int head_dim, float scale) {
    int j = 0;
    for (; j + 4 <= n_keys; j += 4) {
        const float *k0 = keys + (long)j * head_dim;
        __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
        for (int c = 0; c < head_dim; c += VL) {
            __mmask16 m = tail_mask(gemm_min(VL, head_dim - c));
            __m512 qv = _mm512_maskz_loadu_ps(m, q + c);
            a0 = _mm512_fmadd_ps(qv, _mm512_maskz_loadu_ps(m, k0 + c), a0);
            a1 = _mm512_fmadd_ps(qv, _mm512_maskz_loadu_ps(m, k0 + head_dim + c), a1);
            a2 = _mm512_fmadd_ps(qv, _mm512_maskz_loadu_ps(m, k0 + 2L * head_dim + c), a2);
            a3 = _mm512_fmadd_ps(qv, _mm512_maskz_loadu_ps(m, k0 + 3L * head_dim + c), a3);
        }
        scores[j] = scale * _mm512_reduce_add_ps(a0);
        scores[j + 1] = scale * _mm512_reduce_add_ps(a1);
        scores[j + 2] = scale * _mm512_reduce_add_ps(a2);
        scores[j + 3] = scale * _mm512_reduce_add_ps(a3);
    }
    for (; j < n_keys; j++) scores[j] = scale * dot(q, keys + (long)j * head_dim, head_dim);
}

/* out[c0 .. c0 + NV*16) accumulated in NV registers over all keys; the last
 * vector is masked by `last`. NV is a constant after inlining. */
static inline __attribute__((always_inline))
void attn_values_chunk(float *out, const float *probs, const float *values, int n_keys,
                       long head_dim, int NV, __mmask16 last) {
    __m512 acc[8];
    for (int v = 0; v < NV; v++) acc[v] = _mm512_setzero_ps();
    for (int j = 0; j < n_keys; j++) {
        const float *row = values + (long)j * head_dim;
        __m512 p = _mm512_set1_ps(probs[j]);
        for (int v = 0; v < NV - 1; v++)
            acc[v] = _mm512_fmadd_ps(p, _mm512_loadu_ps(row + v * VL), acc[v]);
        acc[NV - 1] = _mm512_fmadd_ps(p, _mm512_maskz_loadu_ps(last, row + (NV - 1) * VL), acc[NV - 1]);
    }
    for (int v = 0; v < NV - 1; v++) _mm512_storeu_ps(out + v * VL, acc[v]);
    _mm512_mask_storeu_ps(out + (NV - 1) * VL, last, acc[NV - 1]);
}

static void attn_values(float *out, const float *probs, const float *values,
                        int n_keys, int head_dim) {
    for (int c = 0; c < head_dim; c += 8 * VL) {
        const int width = gemm_min(8 * VL, head_dim - c);
        const int nv = (width + VL - 1) / VL;
        const __mmask16 last = tail_mask(width - (nv - 1) * VL);
        const float *vals = values + c;
        switch (nv) {
        case 1: attn_values_chunk(out + c, probs, vals, n_keys, head_dim, 1, last); break;
        case 2: attn_values_chunk(out + c, probs, vals, n_keys, head_dim, 2, last); break;
        case 3: attn_values_chunk(out + c, probs, vals, n_keys, head_dim, 3, last); break;
        case 4: attn_values_chunk(out + c, probs, vals, n_keys, head_dim, 4, last); break;
        case 5: attn_values_chunk(out + c, probs, vals, n_keys, head_dim, 5, last); break;
        case 6: attn_values_chunk(out + c, probs, vals, n_keys, head_dim, 6, last); break;
        case 7: attn_values_chunk(out + c, probs, vals, n_keys, head_dim, 7, last); break;
        default: attn_values_chunk(out + c, probs, vals, n_keys, head_dim, 8, last); break;
        }
    }
}

const Kernels kernels_avx512 = {
    .name = "avx512",
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
    .matmul_bf16_dpbf16 = NULL,   /* set by dispatch.c when the CPU has avx512_bf16 */
};
