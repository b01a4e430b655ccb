/* avx512.c — AVX-512F kernels: 16 fp32 lanes per zmm register, 32 registers,
 * mask registers for the tails (compiled with -mavx512f/bw/vl/dq -mfma).
 *
 * Blocking scheme
 *  - Decode and few tokens (n_tok <= 16, "skinny"): memory-bandwidth bound, so
 *    the goal is to stream W once (per 4 tokens) at full speed, unpacked. Four
 *    weight rows are walked at once (4 load streams; 4 rows × up to 4 tokens of
 *    accumulators, 8 for one token, to hide the FMA latency); each x vector is
 *    loaded once per 4 rows, each weight vector once per 4 tokens. bf16 rows are
 *    widened exactly in registers (zero-extend 16→32 bits, shift left 16) and
 *    prefetched 2 KB ahead. For one token (decode) fp32 and bf16 rows have
 *    their own loop, gemv_rows, 8 rows per call: fp32 rows whose x fits in L1
 *    beside the weight stream (fp32 rows up to 4096 columns, bf16 rows up to
 *    1024: the pieces of a matrix in column panels, model.h) are read one
 *    after the other, front to back, one sequential stream per core, each
 *    line also read by a scalar load (touch_line); wider
 *    rows are walked 8 side by side, so x is loaded once per 8 rows
 *    (simd/NOTES.md, "avx512 decode: one stream per row, side by side when x
 *    is wide").
 *  - Prefill (n_tok > 16): gemm_driver.h's BLIS loops around a 32 × 12 micro-kernel:
 *    32 weight rows (2 zmm) × 12 tokens = 24 zmm accumulators; per k it loads 2
 *    packed weight vectors and broadcasts 12 activations for 24 FMAs, so loads
 *    never limit the 2 FMA pipes. Blocks: KC = 384 (the 12-token X micro-panel,
 *    18 KB, stays in a 32 KB L1), MC = 256 (the 256 × 384 packed W block,
 *    384 KB, stays in L2), NC = 1020 tokens (packed X block ≤ 1.5 MB).
 *  - Element-wise kernels and reductions: 16 lanes per step (reductions with 4
 *    independent accumulators), the last partial vector through a mask, so no
 *    scalar tail and no access past the end of any buffer.
 *  - exp is SLEEF's Sleef_expf16_u10avx512f (max error 1.0 ULP). */
#include "kernels.h"
#include "gemm_driver.h"

#include "avx512_common.h"

#include <math.h>
#include <sleef.h>

/* ---------------------------------------------------------------------------
 * Decode and small batches (gemm_driver.h's skinny path, n_tok <= 16): for a block
 * of R weight rows and T tokens, y[t][r] = dot(W[r, :], X[t, :]), all R·T dot
 * products accumulated at once (vectors along k, one horizontal sum at the end),
 * so each weight vector loaded feeds T tokens and each x vector R rows. W is
 * read straight from memory, once per group of T = 4 tokens: no packing, which
 * for a few tokens would cost more than the arithmetic. With T = 1 each row
 * gets two accumulators (8 in flight) to hide the FMA latency. R and T are
 * constants after inlining; R·T <= 16 accumulators + T x vectors fit in the 32
 * registers. */
#define SKINNY_T 4                                     /* tokens per pass over W */

static inline __attribute__((always_inline))
void skinny_block(float *y, long ldy, const float *x, long ldx, const void *w_, long ldw, int n,
                  int bf16, int R, int T) {
    const float *wf = w_;
    const uint16_t *wh = w_;
    const int U = T == 1 ? 2 : 1;                      /* vectors per row per step */
    __m512 acc[4][SKINNY_T][2];
    for (int r = 0; r < R; r++)
        for (int t = 0; t < T; t++) acc[r][t][0] = acc[r][t][1] = _mm512_setzero_ps();
    int c = 0;
    for (; c + U * VL <= n; c += U * VL) {
        __m512 xv[SKINNY_T][2];
        for (int t = 0; t < T; t++)
            for (int u = 0; u < U; u++) xv[t][u] = _mm512_loadu_ps(x + t * ldx + c + u * VL);
        for (int r = 0; r < R; r++) {
            if (bf16) prefetch_ahead(wh + r * ldw + c);
            for (int u = 0; u < U; u++) {
                const long off = r * ldw + c + u * VL;
                __m512 wv = bf16 ? load_bf16(wh + off) : _mm512_loadu_ps(wf + off);
                for (int t = 0; t < T; t++) acc[r][t][u] = _mm512_fmadd_ps(wv, xv[t][u], acc[r][t][u]);
            }
        }
    }
    for (; c < n; c += VL) {                           /* masked tail */
        const __mmask16 m = tail_mask(gemm_min(VL, n - c));
        __m512 xv[SKINNY_T];
        for (int t = 0; t < T; t++) xv[t] = _mm512_maskz_loadu_ps(m, x + t * ldx + c);
        for (int r = 0; r < R; r++) {
            __m512 wv = bf16 ? maskz_load_bf16(m, wh + r * ldw + c) : _mm512_maskz_loadu_ps(m, wf + r * ldw + c);
            for (int t = 0; t < T; t++) acc[r][t][0] = _mm512_fmadd_ps(wv, xv[t], acc[r][t][0]);
        }
    }
    for (int r = 0; r < R; r++)
        for (int t = 0; t < T; t++)
            y[t * ldy + r] = _mm512_reduce_add_ps(U == 2 ? _mm512_add_ps(acc[r][t][0], acc[r][t][1]) : acc[r][t][0]);
}

/* Decode: one token, a block of R = 8, 4 or 1 weight rows. Two ways to walk them:
 *  - one row after the other, each front to back: rows are contiguous, so the
 *    block is one sequential stream, which the hardware prefetcher follows
 *    best, and x is read again from L1 for every row;
 *  - the R rows side by side: R streams, each x vector loaded once per R rows.
 * fp32 rows with x of up to GEMV_X_L1_BYTES (the 4096-wide rows of the 7B
 * attention and up/gate matrices) go one after the other; walking them side
 * by side was up to 10-30 % slower there. Wider x (the 11008-wide rows of
 * the 7B down projection: 43 KB, more than a 32 KB L1) falls out of L1, so
 * every row would read it again from L2, and those misses compete with the
 * weight stream's: side by side, 1.3x for that matrix. bf16 rows load 2 x
 * lines per 64-byte weight line one after the other; 8 side by side load
 * them once per 8 rows: 1.3x for 4096-wide bf16 rows at one thread, but
 * 0.55x for the 1024-wide rows of a panel, 8 streams of 2 KB being too short
 * for the prefetchers (simd/NOTES.md, "avx512 decode: one stream per row,
 * side by side when x is wide", and "decode: weights in column panels").
 * Either way each row has the same two accumulators fed in the same order
 * (even and odd 16-column vectors), so the sums are identical bit for bit.
 * No software prefetch; four or eight accumulators per row were slower.
 * One row after the other, each weight line is also read once by a scalar
 * load (touch_line), which lets the stream run at the rate of a plain read
 * (simd/NOTES.md, "decode: a second read of each weight line").
 * GEMV_X_L1_BYTES: avx512_common.h; touch_line: gemm_driver.h. */

/* fp32 rows: an FMA with the weight load folded in, per 64-byte line. bf16 rows
 * (bf16 = 1, a constant after inlining): 16 weights at a time zero-extended to
 * 32 bits and shifted left 16, which is the exact fp32 value (vpmovzxwd with the
 * load folded in, vpslld), then one FMA with x in its natural order. */
static inline __attribute__((always_inline))
__m512 load_row(const void *w, long off, int bf16) {
    return bf16 ? load_bf16((const uint16_t *)w + off) : _mm512_loadu_ps((const float *)w + off);
}
static inline __attribute__((always_inline))
__m512 maskz_load_row(__mmask16 m, const void *w, long off, int bf16) {
    return bf16 ? maskz_load_bf16(m, (const uint16_t *)w + off) : _mm512_maskz_loadu_ps(m, (const float *)w + off);
}

static inline __attribute__((always_inline))
void gemv_rows(float *y, const float *x, const void *w, long ldw, int n, int R, int bf16) {
    __m512 acc[8][2];
    for (int r = 0; r < R; r++) acc[r][0] = acc[r][1] = _mm512_setzero_ps();
    /* bf16 rows load two x lines per weight line: one after the other only while
     * x is a quarter of the fp32 limit (the 1024-column pieces of a matrix in
     * column panels, model.h); 8 rows of 2 KB side by side are 8 streams too
     * short for the prefetchers to follow (0.55x). */
    if ((long)n * (long)sizeof(float) <= (bf16 ? GEMV_X_L1_BYTES / 4 : GEMV_X_L1_BYTES)) {
        const long elem = bf16 ? 2 : 4;
        for (int r = 0; r < R; r++)                    /* one row after the other */
            for (int c = 0; c + 2 * VL <= n; c += 2 * VL) {
                const char *line = (const char *)w + (r * ldw + c) * elem;
                touch_line(line);                      /* a second read of each line */
                touch_line(line + (bf16 ? 32 : 64));   /* (bf16: both 32-byte halves, measured best) */
                acc[r][0] = _mm512_fmadd_ps(load_row(w, r * ldw + c, bf16), _mm512_loadu_ps(x + c), acc[r][0]);
                acc[r][1] = _mm512_fmadd_ps(load_row(w, r * ldw + c + VL, bf16), _mm512_loadu_ps(x + c + VL), acc[r][1]);
            }
    } else {
        for (int c = 0; c + 2 * VL <= n; c += 2 * VL) { /* the rows side by side */
            const __m512 x0 = _mm512_loadu_ps(x + c), x1 = _mm512_loadu_ps(x + c + VL);
            for (int r = 0; r < R; r++) {
                acc[r][0] = _mm512_fmadd_ps(load_row(w, r * ldw + c, bf16), x0, acc[r][0]);
                acc[r][1] = _mm512_fmadd_ps(load_row(w, r * ldw + c + VL, bf16), x1, acc[r][1]);
            }
        }
    }
    for (int c = n / (2 * VL) * (2 * VL); c < n; c += VL) {   /* the last < 32 columns, masked */
        const __mmask16 m = tail_mask(gemm_min(VL, n - c));
        const __m512 xv = _mm512_maskz_loadu_ps(m, x + c);
        for (int r = 0; r < R; r++) acc[r][0] = _mm512_fmadd_ps(maskz_load_row(m, w, r * ldw + c, bf16), xv, acc[r][0]);
    }
    for (int r = 0; r < R; r++) y[r] = _mm512_reduce_add_ps(_mm512_add_ps(acc[r][0], acc[r][1]));
}

static void gemv_bf16_block(float *y, const float *x, const void *w, long ldw, int n, int R) {
    gemv_rows(y, x, w, ldw, n, R, 1);
}
static void gemv_f32_block(float *y, const float *x, const void *w, long ldw, int n, int R) {
    gemv_rows(y, x, w, ldw, n, R, 0);
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

/* Packing W is a transpose (rows of W become the columns of a panel), done
 * 16 × 16 at a time in registers (transpose16), about twice as fast as the
 * scalar loop. Full panels (rows == MR) take this path
 * for every whole 16 columns; edge panels and the last kc % 16 columns the
 * generic scalar one. A panel reads kc columns of each of MR rows: short runs
 * far apart, which the hardware prefetchers follow poorly, so each load also
 * prefetches the same columns MR rows further down — the rows of the panel
 * packed next (simd/NOTES.md, "avx512 pack_w_panel"). */
static inline __attribute__((always_inline))
void pack_w_panel(float *dst, const void *w, long ldw, int rows, int kc, int bf16) {
    if (rows < MR) {
        if (bf16) gemm_pack_w_bf16(dst, w, ldw, rows, kc, MR);
        else gemm_pack_w_f32(dst, w, ldw, rows, kc, MR);
        return;
    }
    int k = 0;
    for (; k + VL <= kc; k += VL)
        for (int h = 0; h < MR / VL; h++) {
            __m512 v[16];
#pragma GCC unroll 16
            for (int i = 0; i < 16; i++) {
                const long off = (long)(h * VL + i) * ldw + k;
                v[i] = bf16 ? load_bf16((const uint16_t *)w + off) : _mm512_loadu_ps((const float *)w + off);
                if (!bf16 || k % 32 == 0)        /* one cache line of the next panel's row */
                    prefetch_bytes(w, (off + MR * ldw) * (bf16 ? 2 : 4));
            }
            transpose16(v);
#pragma GCC unroll 16
            for (int j = 0; j < 16; j++) _mm512_store_ps(dst + (long)(k + j) * MR + h * VL, v[j]);
        }
    for (; k < kc; k++)
        for (int r = 0; r < MR; r++)
            dst[(long)k * MR + r] = bf16 ? gemm_bf16_to_f32(((const uint16_t *)w)[(long)r * ldw + k])
                                         : ((const float *)w)[(long)r * ldw + k];
}
static void pack_w_f32(void *dst, const void *w, long ldw, int rows, int kc) {
    pack_w_panel(dst, w, ldw, rows, kc, 0);
}
static void pack_w_bf16(void *dst, const void *w, long ldw, int rows, int kc) {
    pack_w_panel(dst, w, ldw, rows, kc, 1);
}
static const GemmPlan gemm_plan = {
    .mr = MR, .nr = NR, .kc = 384, .mc = 256, .nc = 1020, .k_group = 1,
    .wp_bytes = 4, .xp_bytes = 4,
    .pack_w_f32 = pack_w_f32, .pack_w_bf16 = pack_w_bf16, .micro = micro_32x12,
};
static const SkinnyPlan skinny_plan = {
    .max_tok = 16, .group = SKINNY_T, .block = skinny_block,
    .gemv_f32 = gemv_f32_block, .gemv_bf16 = gemv_bf16_block, .gemv_rows = 8,
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

/* Horizontal sums of 16 vectors at once: lane i of the result is the sum of
 * the 16 lanes of a[i]. Pairs are folded together in 4 levels (unpack within
 * 128-bit lanes, twice, then 128-bit shuffles, twice): 30 instructions for 16
 * sums, where one _mm512_reduce_add_ps costs 8. */
static inline __attribute__((always_inline)) __m512 sum16x16(const __m512 a[16]) {
    __m512 b[8], c[4], d[2];
    for (int i = 0; i < 8; i++)    /* b[i]: keys 2i, 2i+1, interleaved, 8 partial sums each */
        b[i] = _mm512_add_ps(_mm512_unpacklo_ps(a[2 * i], a[2 * i + 1]), _mm512_unpackhi_ps(a[2 * i], a[2 * i + 1]));
    for (int i = 0; i < 4; i++) {  /* c[i]: keys 4i..4i+3 in each 128-bit lane */
        const __m512d lo = _mm512_unpacklo_pd(_mm512_castps_pd(b[2 * i]), _mm512_castps_pd(b[2 * i + 1]));
        const __m512d hi = _mm512_unpackhi_pd(_mm512_castps_pd(b[2 * i]), _mm512_castps_pd(b[2 * i + 1]));
        c[i] = _mm512_add_ps(_mm512_castpd_ps(lo), _mm512_castpd_ps(hi));
    }
    for (int i = 0; i < 2; i++)    /* d[i]: keys 8i..8i+7, two halves of the sums */
        d[i] = _mm512_add_ps(_mm512_shuffle_f32x4(c[2 * i], c[2 * i + 1], 0x88), _mm512_shuffle_f32x4(c[2 * i], c[2 * i + 1], 0xdd));
    return _mm512_add_ps(_mm512_shuffle_f32x4(d[0], d[1], 0x88), _mm512_shuffle_f32x4(d[0], d[1], 0xdd));
}

/* Prefetch one line per KB of the block that starts `ahead_bytes` after p. */
static inline __attribute__((always_inline)) void prefetch_block(const void *p, long ahead_bytes, long block_bytes) {
    for (long b = 0; b < block_bytes; b += 1024) prefetch_bytes(p, ahead_bytes + b);
}

/* Scores of one query against the cached keys [n_keys, head_dim], 16 keys at
 * a time: 16 accumulators, each q vector loaded once for the 16 rows, the 16
 * dot products summed together (sum16x16) and stored as one vector. The 16
 * rows are contiguous, so the block is one stream; one line per KB of the next
 * block is prefetched. Faster than 4 keys at a time with a horizontal sum
 * each (simd/NOTES.md, "attn_scores"). Fewer than 16 keys left: 4, then 1 at
 * a time. */
static inline __attribute__((always_inline))
void scores_16(float *scores, const float *q, const void *k0_, int head_dim, __m512 scale_v, int masked, int bf16) {
    const long block_bytes = 16L * head_dim * (bf16 ? 2L : 4L);
    prefetch_block(k0_, block_bytes, block_bytes);
    __m512 acc[16];
    for (int i = 0; i < 16; i++) acc[i] = _mm512_setzero_ps();
    for (int c = 0; c < head_dim; c += VL) {
        /* unmasked loads fold into the FMAs; masked ones do not (~20 % slower) */
        const __mmask16 m = masked ? tail_mask(gemm_min(VL, head_dim - c)) : (__mmask16)0xFFFF;
        const __m512 qv = masked ? _mm512_maskz_loadu_ps(m, q + c) : _mm512_loadu_ps(q + c);
        for (int i = 0; i < 16; i++) {
            __m512 kv;
            if (bf16) {
                const uint16_t *k = (const uint16_t *)k0_ + (long)i * head_dim + c;
                kv = masked ? maskz_load_bf16(m, k) : load_bf16(k);
            } else {
                const float *k = (const float *)k0_ + (long)i * head_dim + c;
                kv = masked ? _mm512_maskz_loadu_ps(m, k) : _mm512_loadu_ps(k);
            }
            acc[i] = _mm512_fmadd_ps(qv, kv, acc[i]);
        }
    }
    _mm512_storeu_ps(scores, _mm512_mul_ps(scale_v, sum16x16(acc)));
}

static float dot_bf16(const float *q, const uint16_t *k, int n) {
    __m512 acc = _mm512_setzero_ps();
    for (int c = 0; c < n; c += VL) {
        const __mmask16 m = tail_mask(gemm_min(VL, n - c));
        acc = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, q + c), maskz_load_bf16(m, k + c), acc);
    }
    return _mm512_reduce_add_ps(acc);
}

/* attn_scores over fp32 (bf16 = 0) or bf16 key rows: 16 keys at a time, then
 * (fp32) 4, then 1. */
static inline __attribute__((always_inline))
void attn_scores_rows(float *scores, const float *q, const void *keys_, int n_keys, int head_dim, float scale, int bf16) {
    const __m512 scale_v = _mm512_set1_ps(scale);
    const long elem = bf16 ? 2 : 4;
    const char *keys = keys_;
    int j = 0;
    if (head_dim % VL == 0)
        for (; j + 16 <= n_keys; j += 16) scores_16(scores + j, q, keys + j * head_dim * elem, head_dim, scale_v, 0, bf16);
    else
        for (; j + 16 <= n_keys; j += 16) scores_16(scores + j, q, keys + j * head_dim * elem, head_dim, scale_v, 1, bf16);
    if (bf16) {
        for (; j < n_keys; j++) scores[j] = scale * dot_bf16(q, (const uint16_t *)keys_ + (long)j * head_dim, head_dim);
        return;
    }
    const float *fkeys = keys_;
    for (; j + 4 <= n_keys; j += 4) {
        const float *k0 = fkeys + (long)j * head_dim;
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
    for (; j < n_keys; j++) scores[j] = scale * dot(q, fkeys + (long)j * head_dim, head_dim);
}

static void attn_scores(float *scores, const float *q, const float *keys,
                        int n_keys, int head_dim, float scale) {
    attn_scores_rows(scores, q, keys, n_keys, head_dim, scale, 0);
}

/* The bf16 cache: the same loops, each key row widened as it is loaded (kernels.h). */
static void attn_scores_bf16(float *scores, const float *q, const uint16_t *keys,
                             int n_keys, int head_dim, float scale) {
    attn_scores_rows(scores, q, keys, n_keys, head_dim, scale, 1);
}

/* out[c0 .. c0 + NV*16) accumulated in NV registers over all keys; the last
 * vector is masked by `last`. NV is a constant after inlining. One prefetch
 * per KB of rows, 16 rows ahead (simd/NOTES.md, "attn_values"). */
static inline __attribute__((always_inline))
void attn_values_chunk(float *out, const float *probs, const void *values, int n_keys,
                       long head_dim, int NV, __mmask16 last, int bf16) {
    const long elem = bf16 ? 2 : 4;
    __m512 acc[8];
    for (int v = 0; v < NV; v++) acc[v] = _mm512_setzero_ps();
    for (int j = 0; j < n_keys; j++) {
        const char *row = (const char *)values + (long)j * head_dim * elem;
        if ((long)j * head_dim * elem % 1024 < head_dim * elem)     /* a KB boundary falls in row j */
            prefetch_bytes(row, 16L * head_dim * elem);
        __m512 p = _mm512_set1_ps(probs[j]);
        for (int v = 0; v < NV; v++) {
            const __mmask16 m = v == NV - 1 ? last : (__mmask16)0xFFFF;
            __m512 x;
            if (bf16) x = v == NV - 1 ? maskz_load_bf16(m, (const uint16_t *)row + v * VL) : load_bf16((const uint16_t *)row + v * VL);
            else x = v == NV - 1 ? _mm512_maskz_loadu_ps(m, (const float *)row + v * VL) : _mm512_loadu_ps((const float *)row + v * VL);
            acc[v] = _mm512_fmadd_ps(p, x, acc[v]);
        }
    }
    for (int v = 0; v < NV - 1; v++) _mm512_storeu_ps(out + v * VL, acc[v]);
    _mm512_mask_storeu_ps(out + (NV - 1) * VL, last, acc[NV - 1]);
}

/* attn_values over fp32 (bf16 = 0) or bf16 rows: 8 vectors of columns at a time. */
static inline __attribute__((always_inline))
void attn_values_rows(float *out, const float *probs, const void *values, int n_keys, int head_dim, int bf16) {
    const long elem = bf16 ? 2 : 4;
    for (int c = 0; c < head_dim; c += 8 * VL) {
        const int width = gemm_min(8 * VL, head_dim - c);
        const int nv = (width + VL - 1) / VL;
        const __mmask16 last = tail_mask(width - (nv - 1) * VL);
        const void *vals = (const char *)values + c * elem;
        switch (nv) {
        case 1: attn_values_chunk(out + c, probs, vals, n_keys, head_dim, 1, last, bf16); break;
        case 2: attn_values_chunk(out + c, probs, vals, n_keys, head_dim, 2, last, bf16); break;
        case 3: attn_values_chunk(out + c, probs, vals, n_keys, head_dim, 3, last, bf16); break;
        case 4: attn_values_chunk(out + c, probs, vals, n_keys, head_dim, 4, last, bf16); break;
        case 5: attn_values_chunk(out + c, probs, vals, n_keys, head_dim, 5, last, bf16); break;
        case 6: attn_values_chunk(out + c, probs, vals, n_keys, head_dim, 6, last, bf16); break;
        case 7: attn_values_chunk(out + c, probs, vals, n_keys, head_dim, 7, last, bf16); break;
        default: attn_values_chunk(out + c, probs, vals, n_keys, head_dim, 8, last, bf16); break;
        }
    }
}

static void attn_values(float *out, const float *probs, const float *values,
                        int n_keys, int head_dim) {
    attn_values_rows(out, probs, values, n_keys, head_dim, 0);
}

/* The bf16 cache: the same loops, each row widened as it is loaded (kernels.h). */
static void attn_values_bf16(float *out, const float *probs, const uint16_t *values,
                             int n_keys, int head_dim) {
    attn_values_rows(out, probs, values, n_keys, head_dim, 1);
}

static float exp_sum(float *x, int n, float max) {
    const __m512 vmax = _mm512_set1_ps(max);
    __m512 sum = _mm512_setzero_ps();
    for (int i = 0; i < n; i += VL) {
        __mmask16 m = tail_mask(gemm_min(VL, n - i));
        __m512 e = Sleef_expf16_u10avx512f(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, x + i), vmax));
        _mm512_mask_storeu_ps(x + i, m, e);
        sum = _mm512_mask_add_ps(sum, m, sum, e);
    }
    return _mm512_reduce_add_ps(sum);
}

/* The avx512 table: dispatch.c starts from a copy of kernels_scalar and calls
 * this (only on a CPU with AVX-512F/BW/VL/DQ: this file is compiled with their
 * flags) to replace what this file implements, which here is every entry;
 * then kernels_init_avx512_bf16 where the CPU has avx512_bf16. */
void kernels_init_avx512(Kernels *k) {
    k->name = "avx512";
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
