/* avx2.c — AVX2 + FMA kernels: 8 fp32 lanes per ymm register, 16 registers
 * (compiled with -mavx2 -mfma -mf16c).
 *
 * Blocking scheme
 *  - Decode and few tokens (n_tok <= 8, "skinny"): memory-bandwidth bound; W is
 *    streamed unpacked, once per pair of tokens, four rows at a time (4 rows ×
 *    2 tokens of accumulators, or 4 × 2 unrolled for one token); each x vector is
 *    loaded once per 4 rows; bf16 rows are widened exactly in registers
 *    (zero-extend 16→32 bits, shift left 16) and prefetched 2 KB ahead. One
 *    token (decode) has its own loops, gemv_f32_block and gemv_bf16_block:
 *    rows of up to 4096 fp32 or 1024 bf16 columns (the pieces of a matrix in
 *    column panels, model.h) one after the other, each line also read by a
 *    scalar load (touch_line); wider rows 4 side by side.
 *  - Prefill (n_tok > 8): gemm_driver.h's BLIS loops around a 16 × 6 micro-kernel:
 *    16 weight rows (2 ymm) × 6 tokens = 12 ymm accumulators + 2 weight vectors
 *    + 1 broadcast = 15 of the 16 registers; per k, 2 loads and 6 broadcasts
 *    feed 12 FMAs. Blocks: KC = 384 (the 6-token X micro-panel, 9 KB, in L1),
 *    MC = 192 (the packed W block, 288 KB, in L2), NC = 1020 tokens.
 *  - Element-wise kernels and reductions: 8 lanes per step; the last partial
 *    vector of fp32 data goes through vmaskmovps (masked lanes are neither read
 *    nor written, so nothing past the end of a buffer is touched); the bf16 tail
 *    of a weight row is copied into a zero-padded 8-element buffer.
 *  - exp is SLEEF's Sleef_expf8_u10avx2 (max error 1.0 ULP). */
#include "kernels.h"
#include "gemm_driver.h"

#include <immintrin.h>
#include <math.h>
#include <sleef.h>

#define VL 8

static inline __m256i tail_mask(int n) {            /* lanes [0, n) all-ones, n in [0, 8] */
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}
static inline __m256 maskload(const float *p, __m256i m) { return _mm256_maskload_ps(p, m); }

static inline float hsum(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}
static inline float hmax(__m256 v) {
    __m128 s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_max_ps(s, _mm_movehl_ps(s, s));
    s = _mm_max_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* 8 bf16 → 8 fp32, exact. */
static inline __m256 widen_bf16(__m128i h) {
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}
static inline __m256 load_bf16(const uint16_t *p) {
    return widen_bf16(_mm_loadu_si128((const __m128i *)p));
}
static inline __m256 load_bf16_tail(const uint16_t *p, int n) {   /* n < 8 elements */
    uint16_t buf[VL] = { 0 };
    memcpy(buf, p, (size_t)n * sizeof *p);
    return load_bf16(buf);
}

/* bf16 rows cost more instructions per byte than fp32 ones, which leaves fewer
 * loads in flight; a software prefetch 2 KB ahead in each row restores the
 * streaming rate (simd/NOTES.md, "bf16 rows: software prefetch 2 KB ahead").
 * The address may lie past the end of W: prefetches never fault, and going
 * through uintptr_t keeps the pointer arithmetic defined. */
#define PREFETCH_BYTES 2048
/* (always_inline: GCC 12 deems a small function holding only a prefetch "const"
 * and deletes its calls before inlining them) */
static inline __attribute__((always_inline)) void prefetch_ahead(const uint16_t *p) {
    _mm_prefetch((const char *)((uintptr_t)p + PREFETCH_BYTES), _MM_HINT_T0);
}

/* ---------------------------------------------------------------------------
 * Decode and small batches (gemm_driver.h's skinny path, n_tok <= 8): for a block
 * of R = 4 weight rows and T <= 2 tokens, all R·T dot products are accumulated
 * at once (vectors along k, one horizontal sum at the end), so each weight
 * vector loaded feeds T tokens and each x vector R rows; W is read straight from
 * memory, once per pair of tokens, without packing. With T = 1 each row gets
 * two accumulators (8 in flight) to hide the FMA latency. R·T·U accumulators +
 * T·U x vectors + 1 weight vector <= 16 registers. */
#define SKINNY_T 2                                     /* tokens per pass over W */

static inline __attribute__((always_inline))
void skinny_block(float *y, long ldy, const float *x, long ldx, const void *w_, long ldw, int n,
                  int bf16, int R, int T) {
    const float *wf = w_;
    const uint16_t *wh = w_;
    const int U = T == 1 ? 2 : 1;                      /* vectors per row per step */
    __m256 acc[4][SKINNY_T][2];
    for (int r = 0; r < R; r++)
        for (int t = 0; t < T; t++) acc[r][t][0] = acc[r][t][1] = _mm256_setzero_ps();
    int c = 0;
    for (; c + U * VL <= n; c += U * VL) {
        __m256 xv[SKINNY_T][2];
        for (int t = 0; t < T; t++)
            for (int u = 0; u < U; u++) xv[t][u] = _mm256_loadu_ps(x + t * ldx + c + u * VL);
        for (int r = 0; r < R; r++) {
            if (bf16 && c % 32 == 0) prefetch_ahead(wh + r * ldw + c);   /* one line per 32 bf16 */
            for (int u = 0; u < U; u++) {
                const long off = r * ldw + c + u * VL;
                __m256 wv = bf16 ? load_bf16(wh + off) : _mm256_loadu_ps(wf + off);
                for (int t = 0; t < T; t++) acc[r][t][u] = _mm256_fmadd_ps(wv, xv[t][u], acc[r][t][u]);
            }
        }
    }
    for (; c < n; c += VL) {                           /* tail: masked fp32, buffered bf16 */
        const int len = gemm_min(VL, n - c);
        const __m256i m = tail_mask(len);
        __m256 xv[SKINNY_T];
        for (int t = 0; t < T; t++) xv[t] = maskload(x + t * ldx + c, m);
        for (int r = 0; r < R; r++) {
            __m256 wv = !bf16 ? maskload(wf + r * ldw + c, m)
                              : len == VL ? load_bf16(wh + r * ldw + c) : load_bf16_tail(wh + r * ldw + c, len);
            for (int t = 0; t < T; t++) acc[r][t][0] = _mm256_fmadd_ps(wv, xv[t], acc[r][t][0]);
        }
    }
    for (int r = 0; r < R; r++)
        for (int t = 0; t < T; t++)
            y[t * ldy + r] = hsum(U == 2 ? _mm256_add_ps(acc[r][t][0], acc[r][t][1]) : acc[r][t][0]);
}

/* The even and the odd elements of x[0..16), in order: shuffle_ps picks them
 * within 128-bit lanes of two vectors, a permute4x64 puts the lanes in order. */
static inline __attribute__((always_inline)) void split_x16(const float *x, __m256 *even, __m256 *odd) {
    const __m256 a = _mm256_loadu_ps(x), b = _mm256_loadu_ps(x + VL);
    *even = _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(_mm256_shuffle_ps(a, b, 0x88)), 0xD8));
    *odd = _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(_mm256_shuffle_ps(a, b, 0xDD)), 0xD8));
}

/* Decode with bf16 weights, rows wider than a panel (gemv_bf16_block below):
 * one token, R = 4 (or 1) rows side by side. A 32-byte load holds 16 bf16 =
 * 8 pairs (W[2i], W[2i+1]); a shift left by 16 gives the even elements as
 * exact fp32, masking off the low half the odd ones; x is split to match
 * (split_x16). One cache line per row per step; the same line of the next
 * block of R rows is prefetched (non-temporal: read once per token).
 * Registers: 8 accumulators + 4 x vectors + the mask + 2 temporaries. */
static inline __attribute__((always_inline))
void gemv_bf16_side_by_side(float *y, const float *x, const void *w_, long ldw, int n, int R) {
    const uint16_t *w = w_;
    const __m256i odd_half = _mm256_set1_epi32((int)0xFFFF0000u);
    __m256 acc[4][2];
    for (int r = 0; r < R; r++) acc[r][0] = acc[r][1] = _mm256_setzero_ps();
    int c = 0;
    for (; c + 32 <= n; c += 32) {
        __m256 xe[2], xo[2];
        for (int h = 0; h < 2; h++) split_x16(x + c + 16 * h, &xe[h], &xo[h]);
        for (int r = 0; r < R; r++) {
            const uint16_t *p = w + r * ldw + c;
            _mm_prefetch((const char *)((uintptr_t)p + (uintptr_t)((long)R * ldw * 2)), _MM_HINT_NTA);
            for (int h = 0; h < 2; h++) {
                __m256i v = _mm256_loadu_si256((const __m256i *)(p + 16 * h));
                acc[r][0] = _mm256_fmadd_ps(_mm256_castsi256_ps(_mm256_slli_epi32(v, 16)), xe[h], acc[r][0]);
                acc[r][1] = _mm256_fmadd_ps(_mm256_castsi256_ps(_mm256_and_si256(v, odd_half)), xo[h], acc[r][1]);
            }
        }
    }
    for (; c < n; c += VL) {                           /* the last < 32 columns: widen */
        const int len = gemm_min(VL, n - c);
        __m256 xv = maskload(x + c, tail_mask(len));
        for (int r = 0; r < R; r++) {
            const uint16_t *p = w + r * ldw + c;
            acc[r][0] = _mm256_fmadd_ps(len == VL ? load_bf16(p) : load_bf16_tail(p, len), xv, acc[r][0]);
        }
    }
    for (int r = 0; r < R; r++) y[r] = hsum(_mm256_add_ps(acc[r][0], acc[r][1]));
}

/* Decode over short rows (the 1024-column pieces of a matrix in column panels,
 * model.h; fp32 rows up to 4096 columns): the rows one after the other, each
 * front to back, so a block is one sequential stream, and every 64-byte weight
 * line also read by a scalar load (touch_line). Each row keeps the two
 * accumulators of the side-by-side loops above, fed in the same order, so the
 * sums are the same bit for bit. Four rows of 1024 side by side are four
 * streams too short for the prefetchers: on a Zen 4 (--isa avx2) fp32 read at
 * 0.68 and bf16 at 0.39 of a plain read (simd/NOTES.md, "decode: a second read
 * of each weight line"). */
#define GEMV_ROW_BYTES_F32 16384                       /* x of up to 4096 fp32 */
#define GEMV_COLS_BF16 1024                            /* x, split even/odd, 4 KB */

static inline __attribute__((always_inline))
void gemv_f32_one_row(float *y, const float *x, const float *w, int n) {
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
    int c = 0;
    for (; c + 2 * VL <= n; c += 2 * VL) {
        touch_line(w + c);
        acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(w + c), _mm256_loadu_ps(x + c), acc0);
        acc1 = _mm256_fmadd_ps(_mm256_loadu_ps(w + c + VL), _mm256_loadu_ps(x + c + VL), acc1);
    }
    for (; c < n; c += VL) {
        const __m256i m = tail_mask(gemm_min(VL, n - c));
        acc0 = _mm256_fmadd_ps(maskload(w + c, m), maskload(x + c, m), acc0);
    }
    *y = hsum(_mm256_add_ps(acc0, acc1));
}

static void gemv_f32_block(float *y, const float *x, const void *w_, long ldw, int n, int R) {
    const float *w = w_;
    if ((long)n * (long)sizeof(float) <= GEMV_ROW_BYTES_F32) {
        for (int r = 0; r < R; r++) gemv_f32_one_row(y + r, x, w + r * ldw, n);
    } else if (R == 4) {
        skinny_block(y, 1, x, 0, w, ldw, n, 0, 4, 1);
    } else {
        skinny_block(y, 1, x, 0, w, ldw, n, 0, 1, 1);
    }
}

static void gemv_bf16_block(float *y, const float *x, const void *w_, long ldw, int n, int R) {
    if (n > GEMV_COLS_BF16) {
        if (R == 4) gemv_bf16_side_by_side(y, x, w_, ldw, n, 4);
        else gemv_bf16_side_by_side(y, x, w_, ldw, n, 1);
        return;
    }
    /* x split into its even and odd elements once, as the side-by-side loop
     * splits it per step: per 32 columns xe[0], xo[0], xe[1], xo[1] */
    _Alignas(32) float x_split[GEMV_COLS_BF16];
    const int n_full = n / 32 * 32;
    for (int c = 0; c < n_full; c += 16) {
        __m256 even, odd;
        split_x16(x + c, &even, &odd);
        _mm256_store_ps(x_split + c, even);
        _mm256_store_ps(x_split + c + VL, odd);
    }
    const __m256i odd_half = _mm256_set1_epi32((int)0xFFFF0000u);
    for (int r = 0; r < R; r++) {
        const uint16_t *row = (const uint16_t *)w_ + r * ldw;
        __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
        for (int c = 0; c < n_full; c += 32) {
            touch_line(row + c);
            for (int h = 0; h < 2; h++) {
                __m256i v = _mm256_loadu_si256((const __m256i *)(row + c + 16 * h));
                acc0 = _mm256_fmadd_ps(_mm256_castsi256_ps(_mm256_slli_epi32(v, 16)),
                                       _mm256_load_ps(x_split + c + 16 * h), acc0);
                acc1 = _mm256_fmadd_ps(_mm256_castsi256_ps(_mm256_and_si256(v, odd_half)),
                                       _mm256_load_ps(x_split + c + 16 * h + VL), acc1);
            }
        }
        for (int c = n_full; c < n; c += VL) {         /* the last < 32 columns: widen */
            const int len = gemm_min(VL, n - c);
            __m256 xv = maskload(x + c, tail_mask(len));
            acc0 = _mm256_fmadd_ps(len == VL ? load_bf16(row + c) : load_bf16_tail(row + c, len), xv, acc0);
        }
        y[r] = hsum(_mm256_add_ps(acc0, acc1));
    }
}

/* ---------------------------------------------------------------------------
 * Prefill micro-kernel: the 16 × 6 tile of Y, k = 0 .. kc-1.
 *   wp: packed weights, 16 floats per k (32-byte aligned)
 *   xp: packed activations, 6 floats per k */
#define MR 16
#define NR 6

static void micro_16x6(int kc, const void *wp_, const void *xp_, float *y, long ldy, int accumulate) {
    const float *wp = wp_, *xp = xp_;
    __m256 c[NR][2];
#pragma GCC unroll 6
    for (int t = 0; t < NR; t++) c[t][0] = c[t][1] = _mm256_setzero_ps();
    for (int k = 0; k < kc; k++) {
        __m256 w0 = _mm256_load_ps(wp), w1 = _mm256_load_ps(wp + VL);
#pragma GCC unroll 6
        for (int t = 0; t < NR; t++) {
            __m256 xt = _mm256_broadcast_ss(xp + t);
            c[t][0] = _mm256_fmadd_ps(w0, xt, c[t][0]);
            c[t][1] = _mm256_fmadd_ps(w1, xt, c[t][1]);
        }
        wp += MR;
        xp += NR;
    }
#pragma GCC unroll 6
    for (int t = 0; t < NR; t++) {
        float *yt = y + (long)t * ldy;
        if (accumulate) {
            c[t][0] = _mm256_add_ps(c[t][0], _mm256_loadu_ps(yt));
            c[t][1] = _mm256_add_ps(c[t][1], _mm256_loadu_ps(yt + VL));
        }
        _mm256_storeu_ps(yt, c[t][0]);
        _mm256_storeu_ps(yt + VL, c[t][1]);
    }
}

/* Packing W is a transpose (rows of W become the columns of a panel), done
 * 8 × 8 at a time in registers (3 rounds of 8 shuffles). */
static inline __attribute__((always_inline)) void transpose8(__m256 r[8]) {
    __m256 t[8], u[8];
#pragma GCC unroll 4
    for (int i = 0; i < 4; i++) {
        t[2 * i] = _mm256_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm256_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
#pragma GCC unroll 2
    for (int h = 0; h < 2; h++) {
        const int b = 4 * h;
        u[b] = _mm256_shuffle_ps(t[b], t[b + 2], 0x44);
        u[b + 1] = _mm256_shuffle_ps(t[b], t[b + 2], 0xEE);
        u[b + 2] = _mm256_shuffle_ps(t[b + 1], t[b + 3], 0x44);
        u[b + 3] = _mm256_shuffle_ps(t[b + 1], t[b + 3], 0xEE);
    }
#pragma GCC unroll 4
    for (int j = 0; j < 4; j++) {
        r[j] = _mm256_permute2f128_ps(u[j], u[4 + j], 0x20);
        r[4 + j] = _mm256_permute2f128_ps(u[j], u[4 + j], 0x31);
    }
}

/* Full panels (rows == MR) take the vector path for every whole 8 columns;
 * edge panels and the last kc % 8 columns the generic scalar one. The short
 * row runs a panel reads are not followed by the hardware prefetchers, so each
 * load also prefetches the rows MR further down (the panel packed next). */
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
            __m256 v[8];
#pragma GCC unroll 8
            for (int i = 0; i < 8; i++) {
                const long off = (long)(h * VL + i) * ldw + k;
                v[i] = bf16 ? load_bf16((const uint16_t *)w + off) : _mm256_loadu_ps((const float *)w + off);
                if (k % (bf16 ? 32 : 16) == 0)   /* one cache line of the next panel's row */
                    _mm_prefetch((const char *)((uintptr_t)w + (uintptr_t)((off + MR * ldw) * (bf16 ? 2 : 4))), _MM_HINT_T0);
            }
            transpose8(v);
#pragma GCC unroll 8
            for (int j = 0; j < 8; j++) _mm256_store_ps(dst + (long)(k + j) * MR + h * VL, v[j]);
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
    .mr = MR, .nr = NR, .kc = 384, .mc = 192, .nc = 1020, .k_group = 1,
    .wp_bytes = 4, .xp_bytes = 4,
    .pack_w_f32 = pack_w_f32, .pack_w_bf16 = pack_w_bf16, .micro = micro_16x6,
};
static const SkinnyPlan skinny_plan = {
    .max_tok = 8, .group = SKINNY_T, .block = skinny_block, .gemv_f32 = gemv_f32_block, .gemv_bf16 = gemv_bf16_block,
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
    __m256 s0 = _mm256_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
    int i = 0;
    for (; i + 4 * VL <= n; i += 4 * VL) {
        s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
        s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + VL), _mm256_loadu_ps(b + i + VL), s1);
        s2 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 2 * VL), _mm256_loadu_ps(b + i + 2 * VL), s2);
        s3 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 3 * VL), _mm256_loadu_ps(b + i + 3 * VL), s3);
    }
    for (; i < n; i += VL) {
        __m256i m = tail_mask(n - i);
        s0 = _mm256_fmadd_ps(maskload(a + i, m), maskload(b + i, m), s0);
    }
    return hsum(_mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3)));
}

static float sum_squares(const float *x, int n) { return dot(x, x, n); }

/* Element-wise loops run whole vectors with plain loads/stores and the last
 * partial vector with vmaskmovps (slow to store on some AMD cores, so only once):
 * each body is written once, with `tail` a constant after inlining. */
static inline __m256 ld(const float *p, __m256i m, int tail) {
    return tail ? _mm256_maskload_ps(p, m) : _mm256_loadu_ps(p);
}
static inline void st(float *p, __m256i m, __m256 v, int tail) {
    if (tail) _mm256_maskstore_ps(p, m, v);
    else _mm256_storeu_ps(p, v);
}

static inline __attribute__((always_inline))
void rmsnorm_step(float *out, const float *x, const float *weight, __m256 inv, __m256i m, int tail) {
    __m256 v = _mm256_mul_ps(ld(x, m, tail), inv);
    st(out, m, _mm256_mul_ps(ld(weight, m, tail), v), tail);
}

static void rmsnorm(float *out, const float *x, const float *weight, int n, float eps) {
    /* Same formula and operation order as the reference, only the sum differs. */
    __m256 inv = _mm256_set1_ps(1.0f / sqrtf(sum_squares(x, n) / (float)n + eps));
    const __m256i all = _mm256_set1_epi32(-1);
    int i = 0;
    for (; i + VL <= n; i += VL) rmsnorm_step(out + i, x + i, weight + i, inv, all, 0);
    if (i < n) rmsnorm_step(out + i, x + i, weight + i, inv, tail_mask(n - i), 1);
}

/* Rotation with separate multiplies and adds (no FMA), exactly the reference's
 * operations, so every ISA gives bit-identical results. */
static inline __attribute__((always_inline))
void rope_halves_step(float *a, float *b, const float *cs, const float *sn, __m256i m, int tail) {
    __m256 x0 = ld(a, m, tail), x1 = ld(b, m, tail), c = ld(cs, m, tail), s = ld(sn, m, tail);
    st(a, m, _mm256_sub_ps(_mm256_mul_ps(x0, c), _mm256_mul_ps(x1, s)), tail);
    st(b, m, _mm256_add_ps(_mm256_mul_ps(x1, c), _mm256_mul_ps(x0, s)), tail);
}

/* Interleaved pairs, 4 per vector: cos/sin duplicated per pair ([c0 c0 c1 c1 ..]),
 * x's pairs swapped ([x1 x0 ..]): even lane x0*c + -(x1*s), odd lane x1*c + x0*s. */
static inline __attribute__((always_inline))
void rope_pairs_step(float *v, const float *cs, const float *sn, int np, int tail) {
    const __m256i dup = _mm256_setr_epi32(0, 0, 1, 1, 2, 2, 3, 3);
    const __m256 neg_even = _mm256_castsi256_ps(_mm256_set1_epi64x(0x0000000080000000LL));
    __m256i m = tail_mask(2 * np);
    __m128i m4 = _mm256_castsi256_si128(tail_mask(np));
    __m256 xv = ld(v, m, tail);
    __m128 c4 = tail ? _mm_maskload_ps(cs, m4) : _mm_loadu_ps(cs);
    __m128 s4 = tail ? _mm_maskload_ps(sn, m4) : _mm_loadu_ps(sn);
    __m256 c = _mm256_permutevar8x32_ps(_mm256_castps128_ps256(c4), dup);
    __m256 s = _mm256_permutevar8x32_ps(_mm256_castps128_ps256(s4), dup);
    __m256 q = _mm256_xor_ps(_mm256_mul_ps(_mm256_permute_ps(xv, 0xB1), s), neg_even);
    st(v, m, _mm256_add_ps(_mm256_mul_ps(xv, c), q), tail);
}

static void rope(float *x, int n_heads, int head_dim, const float *cos_theta,
                 const float *sin_theta, int pairing_halves) {
    const int half = head_dim / 2;
    const __m256i all = _mm256_set1_epi32(-1);
    for (int h = 0; h < n_heads; h++) {
        float *v = x + (long)h * head_dim;
        int i = 0;
        if (pairing_halves) {
            for (; i + VL <= half; i += VL)
                rope_halves_step(v + i, v + half + i, cos_theta + i, sin_theta + i, all, 0);
            if (i < half)
                rope_halves_step(v + i, v + half + i, cos_theta + i, sin_theta + i, tail_mask(half - i), 1);
        } else {
            for (; i + VL / 2 <= half; i += VL / 2) rope_pairs_step(v + 2 * i, cos_theta + i, sin_theta + i, VL / 2, 0);
            if (i < half) rope_pairs_step(v + 2 * i, cos_theta + i, sin_theta + i, half - i, 1);
        }
    }
}

static inline __attribute__((always_inline))
__m256 softmax_exp_step(float *x, __m256 vmax, __m256 sum, __m256i m, int tail) {
    __m256 e = Sleef_expf8_u10avx2(_mm256_sub_ps(ld(x, m, tail), vmax));
    if (tail) e = _mm256_and_ps(e, _mm256_castsi256_ps(m));    /* masked lanes add 0 */
    st(x, m, e, tail);
    return _mm256_add_ps(sum, e);
}

static void softmax(float *x, int n) {
    if (n <= 0) return;
    const __m256 ninf = _mm256_set1_ps(-INFINITY);
    const __m256i all = _mm256_set1_epi32(-1);
    __m256 mx = ninf;
    int i = 0;
    for (; i + VL <= n; i += VL) mx = _mm256_max_ps(mx, _mm256_loadu_ps(x + i));
    if (i < n) {
        __m256i m = tail_mask(n - i);
        mx = _mm256_max_ps(mx, _mm256_blendv_ps(ninf, _mm256_maskload_ps(x + i, m), _mm256_castsi256_ps(m)));
    }
    const __m256 vmax = _mm256_set1_ps(hmax(mx));
    __m256 sum = _mm256_setzero_ps();
    for (i = 0; i + VL <= n; i += VL) sum = softmax_exp_step(x + i, vmax, sum, all, 0);
    if (i < n) sum = softmax_exp_step(x + i, vmax, sum, tail_mask(n - i), 1);
    const __m256 inv = _mm256_set1_ps(1.0f / hsum(sum));
    for (i = 0; i + VL <= n; i += VL) _mm256_storeu_ps(x + i, _mm256_mul_ps(_mm256_loadu_ps(x + i), inv));
    if (i < n) {
        __m256i m = tail_mask(n - i);
        _mm256_maskstore_ps(x + i, m, _mm256_mul_ps(_mm256_maskload_ps(x + i, m), inv));
    }
}

static inline __attribute__((always_inline))
void silu_mul_step(float *gate, const float *up, __m256i m, int tail) {
    __m256 g = ld(gate, m, tail);
    __m256 e = Sleef_expf8_u10avx2(_mm256_sub_ps(_mm256_setzero_ps(), g));
    __m256 silu = _mm256_div_ps(g, _mm256_add_ps(_mm256_set1_ps(1.0f), e));
    st(gate, m, _mm256_mul_ps(silu, ld(up, m, tail)), tail);
}

static void silu_mul(float *gate, const float *up, int n) {
    const __m256i all = _mm256_set1_epi32(-1);
    int i = 0;
    for (; i + VL <= n; i += VL) silu_mul_step(gate + i, up + i, all, 0);
    if (i < n) silu_mul_step(gate + i, up + i, tail_mask(n - i), 1);
}

/* Horizontal sums of 8 vectors at once: lane i of the result is the sum of
 * the 8 lanes of a[i] (6 hadds within 128-bit lanes, then the two halves
 * added across: 9 instructions for 8 sums, where one hsum costs 5). */
static inline __attribute__((always_inline)) __m256 sum8x8(const __m256 a[8]) {
    const __m256 t0 = _mm256_hadd_ps(a[0], a[1]), t1 = _mm256_hadd_ps(a[2], a[3]);
    const __m256 t2 = _mm256_hadd_ps(a[4], a[5]), t3 = _mm256_hadd_ps(a[6], a[7]);
    const __m256 u0 = _mm256_hadd_ps(t0, t1), u1 = _mm256_hadd_ps(t2, t3);   /* keys 0-3 | 4-7, per half */
    return _mm256_add_ps(_mm256_permute2f128_ps(u0, u1, 0x20), _mm256_permute2f128_ps(u0, u1, 0x31));
}

/* Scores against 8 contiguous keys, 8 accumulators, one q vector per step for
 * the 8 rows; sums by sum8x8; one line per KB of the next 8 keys prefetched.
 * As avx512.c attn_scores (16 keys there), plain loads when head_dim is a
 * multiple of 8: vmaskmovps does not fold into the FMA. About twice the
 * bytes/s of 4 masked keys at a time (simd/NOTES.md, "attn_scores"). */
static inline __attribute__((always_inline))
void scores_8(float *scores, const float *q, const void *k0, int head_dim, __m256 scale_v, int masked, int bf16) {
    const long block_bytes = 8L * head_dim * (bf16 ? 2L : 4L);
    for (long b = 0; b < block_bytes; b += 1024)
        _mm_prefetch((const char *)((uintptr_t)k0 + (uintptr_t)(block_bytes + b)), _MM_HINT_T0);
    __m256 acc[8];
    for (int i = 0; i < 8; i++) acc[i] = _mm256_setzero_ps();
    for (int c = 0; c < head_dim; c += VL) {
        const __m256i m = tail_mask(head_dim - c);
        const __m256 qv = masked ? maskload(q + c, m) : _mm256_loadu_ps(q + c);
        for (int i = 0; i < 8; i++) {
            __m256 kv;
            if (bf16) {
                const uint16_t *k = (const uint16_t *)k0 + (long)i * head_dim + c;
                kv = masked && head_dim - c < VL ? load_bf16_tail(k, head_dim - c) : load_bf16(k);
            } else {
                const float *k = (const float *)k0 + (long)i * head_dim + c;
                kv = masked ? maskload(k, m) : _mm256_loadu_ps(k);
            }
            acc[i] = _mm256_fmadd_ps(qv, kv, acc[i]);
        }
    }
    _mm256_storeu_ps(scores, _mm256_mul_ps(scale_v, sum8x8(acc)));
}

static float dot_bf16(const float *q, const uint16_t *k, int n) {
    __m256 acc = _mm256_setzero_ps();
    int c = 0;
    for (; c + VL <= n; c += VL) acc = _mm256_fmadd_ps(_mm256_loadu_ps(q + c), load_bf16(k + c), acc);
    if (c < n) acc = _mm256_fmadd_ps(maskload(q + c, tail_mask(n - c)), load_bf16_tail(k + c, n - c), acc);
    return hsum(acc);
}

/* attn_scores over fp32 (bf16 = 0) or bf16 key rows: 8 keys at a time, then
 * (fp32) 4, then 1. */
static inline __attribute__((always_inline))
void attn_scores_rows(float *scores, const float *q, const void *keys_, int n_keys, int head_dim, float scale, int bf16) {
    const __m256 scale_v = _mm256_set1_ps(scale);
    const long elem = bf16 ? 2 : 4;
    const char *keys = keys_;
    int j = 0;
    if (head_dim % VL == 0)
        for (; j + 8 <= n_keys; j += 8) scores_8(scores + j, q, keys + j * head_dim * elem, head_dim, scale_v, 0, bf16);
    else
        for (; j + 8 <= n_keys; j += 8) scores_8(scores + j, q, keys + j * head_dim * elem, head_dim, scale_v, 1, bf16);
    if (bf16) {
        for (; j < n_keys; j++) scores[j] = scale * dot_bf16(q, (const uint16_t *)keys_ + (long)j * head_dim, head_dim);
        return;
    }
    const float *fkeys = keys_;
    for (; j + 4 <= n_keys; j += 4) {
        const float *k0 = fkeys + (long)j * head_dim;
        __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
        for (int c = 0; c < head_dim; c += VL) {
            __m256i m = tail_mask(head_dim - c);
            __m256 qv = maskload(q + c, m);
            a0 = _mm256_fmadd_ps(qv, maskload(k0 + c, m), a0);
            a1 = _mm256_fmadd_ps(qv, maskload(k0 + head_dim + c, m), a1);
            a2 = _mm256_fmadd_ps(qv, maskload(k0 + 2L * head_dim + c, m), a2);
            a3 = _mm256_fmadd_ps(qv, maskload(k0 + 3L * head_dim + c, m), a3);
        }
        scores[j] = scale * hsum(a0);
        scores[j + 1] = scale * hsum(a1);
        scores[j + 2] = scale * hsum(a2);
        scores[j + 3] = scale * hsum(a3);
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

/* out[c0 .. c0 + NV*8) accumulated in NV registers over all keys; the last
 * vector is masked. NV is a constant after inlining. One prefetch per KB of
 * rows, 16 rows ahead (as avx512.c; simd/NOTES.md, "attn_values"). */
static inline __attribute__((always_inline))
void attn_values_chunk(float *out, const float *probs, const void *values, int n_keys,
                       long head_dim, int NV, __m256i last, int n_last, int bf16) {
    const long elem = bf16 ? 2 : 4;
    __m256 acc[8];
    for (int v = 0; v < NV; v++) acc[v] = _mm256_setzero_ps();
    for (int j = 0; j < n_keys; j++) {
        const char *row = (const char *)values + (long)j * head_dim * elem;
        if ((long)j * head_dim * elem % 1024 < head_dim * elem)     /* a KB boundary falls in row j */
            _mm_prefetch((const char *)((uintptr_t)row + (uintptr_t)(16L * head_dim * elem)), _MM_HINT_T0);
        __m256 p = _mm256_broadcast_ss(probs + j);
        for (int v = 0; v < NV; v++) {
            __m256 x;
            if (bf16) {
                const uint16_t *r = (const uint16_t *)row + v * VL;
                x = v == NV - 1 && n_last < VL ? load_bf16_tail(r, n_last) : load_bf16(r);
            } else {
                const float *r = (const float *)row + v * VL;
                x = v == NV - 1 ? maskload(r, last) : _mm256_loadu_ps(r);
            }
            acc[v] = _mm256_fmadd_ps(p, x, acc[v]);
        }
    }
    for (int v = 0; v < NV - 1; v++) _mm256_storeu_ps(out + v * VL, acc[v]);
    _mm256_maskstore_ps(out + (NV - 1) * VL, last, acc[NV - 1]);
}

/* attn_values over fp32 (bf16 = 0) or bf16 rows: 8 vectors of columns at a time. */
static inline __attribute__((always_inline))
void attn_values_rows(float *out, const float *probs, const void *values, int n_keys, int head_dim, int bf16) {
    const long elem = bf16 ? 2 : 4;
    for (int c = 0; c < head_dim; c += 8 * VL) {
        const int width = gemm_min(8 * VL, head_dim - c);
        const int nv = (width + VL - 1) / VL, n_last = width - (nv - 1) * VL;
        const __m256i last = tail_mask(n_last);
        const void *vals = (const char *)values + c * elem;
        switch (nv) {
        case 1: attn_values_chunk(out + c, probs, vals, n_keys, head_dim, 1, last, n_last, bf16); break;
        case 2: attn_values_chunk(out + c, probs, vals, n_keys, head_dim, 2, last, n_last, bf16); break;
        case 3: attn_values_chunk(out + c, probs, vals, n_keys, head_dim, 3, last, n_last, bf16); break;
        case 4: attn_values_chunk(out + c, probs, vals, n_keys, head_dim, 4, last, n_last, bf16); break;
        case 5: attn_values_chunk(out + c, probs, vals, n_keys, head_dim, 5, last, n_last, bf16); break;
        case 6: attn_values_chunk(out + c, probs, vals, n_keys, head_dim, 6, last, n_last, bf16); break;
        case 7: attn_values_chunk(out + c, probs, vals, n_keys, head_dim, 7, last, n_last, bf16); break;
        default: attn_values_chunk(out + c, probs, vals, n_keys, head_dim, 8, last, n_last, bf16); break;
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
    const __m256i all = _mm256_set1_epi32(-1);
    const __m256 vmax = _mm256_set1_ps(max);
    __m256 sum = _mm256_setzero_ps();
    int i = 0;
    for (; i + VL <= n; i += VL) sum = softmax_exp_step(x + i, vmax, sum, all, 0);
    if (i < n) sum = softmax_exp_step(x + i, vmax, sum, tail_mask(n - i), 1);
    return hsum(sum);
}

/* The avx2 table: dispatch.c starts from a copy of kernels_scalar and calls
 * this (only on a CPU with AVX2 + FMA: this file is compiled with their flags)
 * to replace what this file implements, which here is every entry. */
void kernels_init_avx2(Kernels *k) {
    k->name = "avx2";
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
