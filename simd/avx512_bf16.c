/* avx512_bf16.c — the optional bf16 × bf16 matmul on CPUs with AVX512_BF16
 * (Kernels.matmul_bf16_dpbf16; dispatch.c adds it to the avx512 table only
 * when cpuid reports avx512_bf16).
 *
 * vdpbf16ps takes 32 bf16 from each operand and adds the products of each
 * adjacent pair to one fp32 lane: acc[i] += a[2i]*b[2i] + a[2i+1]*b[2i+1]. The
 * products of two bf16 are exact in fp32, so the only new error against
 * matmul_bf16 is rounding the activations X to bf16 (round to nearest even, at
 * most 2^-8 relative per element); in addition the instruction treats denormal
 * inputs as zero and flushes denormal results. One instruction does 32 MACs
 * instead of 16.
 *
 * Blocking scheme: the same as avx512.c, with k taken two at a time.
 *  - Decode (n_tok <= 4, one token at a time): x is rounded to bf16 into a stack
 *    buffer (32 KB: rows up to 16384 wide in one piece, wider ones in pieces of
 *    that size, y accumulating over them); each weight row is streamed against
 *    it front to back before the next, or 4 rows side by side when x is too
 *    wide to stay in L1 (whole rows: simd/NOTES.md, "avx512_bf16.c: decode in
 *    whole rows"; "avx512 decode: one stream per row, side by side when x is
 *    wide").
 *  - Prefill (n_tok > 4): gemm_driver.h loops around a 32 × 12 micro-kernel. Packed W keeps
 *    the k-pairs of each row together: panel[kp][r] is one 32-bit word holding
 *    (W[r][2kp], W[r][2kp+1]), so one zmm load gives 16 rows × one k-pair; packed
 *    X likewise holds (bf16 X[t][2kp], X[t][2kp+1]) in one word, broadcast to all
 *    lanes. Per k-pair: 2 loads, 12 broadcasts, 24 vdpbf16ps. KC = 768 (k) keeps
 *    the 12-token X micro-panel at 18 KB, as in the fp32 kernel. */
#include "kernels.h"
#include "gemm_driver.h"
#include "avx512_common.h"

#define MR 32
#define NR 12

static inline __mmask32 mask32(int n) {           /* lanes [0, n), n in [0, 32] */
    return n >= 32 ? (__mmask32)0xFFFFFFFFu : (__mmask32)((1u << n) - 1u);
}

/* Round up to 32 floats (fewer if n < 32; the rest become +0) to 32 bf16, RNE. */
static inline __m512i round_x32(const float *x, int n) {
    __m512 lo = _mm512_maskz_loadu_ps(tail_mask(gemm_min(16, n)), x);
    __m512 hi = _mm512_maskz_loadu_ps(tail_mask(gemm_min(16, n > 16 ? n - 16 : 0)), x + 16);
    return (__m512i)_mm512_cvtne2ps_pbh(hi, lo);
}

static inline __m512 dpbf16(__m512 acc, __m512i a, __m512i b) {
    return _mm512_dpbf16_ps(acc, (__m512bh)a, (__m512bh)b);
}

/* The same with b read from memory (64 bytes at p, any alignment) by the
 * instruction itself. GCC 12 never folds a load into vdpbf16ps, and decode
 * streams weights at a rate set by how many instructions each 64-byte line
 * costs: this one line of assembly makes it 1 instead of 2 (simd/NOTES.md,
 * "avx512_bf16.c dpbf16_load"). volatile keeps the loads in program order:
 * without it GCC read the second line of each pair before the first, a
 * backward step in every stream. */
static inline __attribute__((always_inline)) __m512 dpbf16_load(__m512 acc, __m512i a, const uint16_t *p) {
    __asm__ volatile("vdpbf16ps %2, %1, %0" : "+v"(acc) : "v"(a), "m"(*(const __m512i_u *)p));
    return acc;
}

/* ---------------------------------------------------------------------------
 * Decode. */
#define CHUNK 16384

/* Each row front to back before the next, one sequential stream per core,
 * while the bf16 x (2 bytes a column) fits in L1 beside that stream, each
 * 64-byte weight line also read by a scalar load (gemm_driver.h touch_line),
 * as in avx512.c; wider rows (row-major, as --mmap leaves them: the 7B down
 * projection's x is 22 KB) side by side, each x vector loaded once per R
 * rows. No software prefetch. The same accumulators in the same order either
 * way (avx512.c's decode loops; GEMV_X_L1_BYTES: avx512_common.h;
 * simd/NOTES.md, "avx512 decode: one stream per row, side by side when x is
 * wide", and "decode: a second read of each weight line"). */

static inline __attribute__((always_inline))
void gemv_rows(float *y, const uint16_t *xb, const uint16_t *w, long ldw, int n, int first, int R) {
    __m512 acc[4][2];
    for (int i = 0; i < R; i++) acc[i][0] = acc[i][1] = _mm512_setzero_ps();
    if ((long)n * (long)sizeof(uint16_t) <= GEMV_X_L1_BYTES) {
        for (int i = 0; i < R; i++) {                  /* one row after the other */
            /* In locals, not in acc[i]: the compiler cannot tell the memory
             * dpbf16_load's assembly reads from an array it indexes at run time,
             * so it would store acc[i] back to the stack before every
             * instruction, two stores per weight line (a 5 % slower stream). */
            __m512 a0 = acc[i][0], a1 = acc[i][1];
            for (int c = 0; c + 64 <= n; c += 64) {
                touch_line(w + i * ldw + c);           /* a second read of each line */
                touch_line(w + i * ldw + c + 32);
                a0 = dpbf16_load(a0, _mm512_load_si512(xb + c), w + i * ldw + c);
                a1 = dpbf16_load(a1, _mm512_load_si512(xb + c + 32), w + i * ldw + c + 32);
            }
            acc[i][0] = a0;
            acc[i][1] = a1;
        }
    } else {
        for (int c = 0; c + 64 <= n; c += 64) {         /* the rows side by side */
            const __m512i x0 = _mm512_load_si512(xb + c), x1 = _mm512_load_si512(xb + c + 32);
            for (int i = 0; i < R; i++) {
                acc[i][0] = dpbf16_load(acc[i][0], x0, w + i * ldw + c);
                acc[i][1] = dpbf16_load(acc[i][1], x1, w + i * ldw + c + 32);
            }
        }
    }
    for (int c = n / 64 * 64; c < n; c += 32) {
        __mmask32 m = mask32(n - c);
        __m512i x0 = _mm512_load_si512(xb + c);         /* zero-padded by the caller */
        for (int i = 0; i < R; i++)
            acc[i][0] = dpbf16(acc[i][0], _mm512_maskz_loadu_epi16(m, w + i * ldw + c), x0);
    }
    for (int i = 0; i < R; i++) {
        float s = _mm512_reduce_add_ps(_mm512_add_ps(acc[i][0], acc[i][1]));
        y[i] = first ? s : y[i] + s;
    }
}

static void gemv(float *y, const float *x, const uint16_t *W, int n_rows, int n_cols) {
    _Alignas(64) uint16_t xb[CHUNK];
    if (n_cols <= 0) {
        for (int r = 0; r < n_rows; r++) y[r] = 0.0f;
        return;
    }
    for (int c0 = 0; c0 < n_cols; c0 += CHUNK) {
        const int len = gemm_min(CHUNK, n_cols - c0);
        for (int c = 0; c < len; c += 32)
            _mm512_store_si512(xb + c, round_x32(x + c0 + c, len - c));
        const uint16_t *w = W + c0;
        int r = 0;
        for (; r + 4 <= n_rows; r += 4) gemv_rows(y + r, xb, w + (long)r * n_cols, n_cols, len, c0 == 0, 4);
        for (; r < n_rows; r++) gemv_rows(y + r, xb, w + (long)r * n_cols, n_cols, len, c0 == 0, 1);
    }
}

/* ---------------------------------------------------------------------------
 * Prefill. */
static void micro_32x12(int kc, const void *wp_, const void *xp_, float *y, long ldy, int accumulate) {
    const uint32_t *wp = wp_, *xp = xp_;
    __m512 c[NR][2];
#pragma GCC unroll 12
    for (int t = 0; t < NR; t++) c[t][0] = c[t][1] = _mm512_setzero_ps();
    for (int kp = 0; kp < kc / 2; kp++) {
        __m512i w0 = _mm512_load_si512(wp), w1 = _mm512_load_si512(wp + 16);
#pragma GCC unroll 12
        for (int t = 0; t < NR; t++) {
            __m512i xt = _mm512_set1_epi32((int)xp[t]);
            c[t][0] = dpbf16(c[t][0], w0, xt);
            c[t][1] = dpbf16(c[t][1], w1, xt);
        }
        wp += MR;
        xp += NR;
    }
#pragma GCC unroll 12
    for (int t = 0; t < NR; t++) {
        float *yt = y + (long)t * ldy;
        if (accumulate) {
            c[t][0] = _mm512_add_ps(c[t][0], _mm512_loadu_ps(yt));
            c[t][1] = _mm512_add_ps(c[t][1], _mm512_loadu_ps(yt + 16));
        }
        _mm512_storeu_ps(yt, c[t][0]);
        _mm512_storeu_ps(yt + 16, c[t][1]);
    }
}

/* dst[kp*MR + r] = (W[r][2kp], W[r][2kp+1]) as one word; odd kc pads with 0.
 * Full panels transpose 16 rows × 16 words (32 bf16) at a time in registers and
 * prefetch the rows of the next panel, as in avx512.c. */
static inline uint32_t pair_at(const uint16_t *src, int k, int kc) {
    return (uint32_t)src[k] | (k + 1 < kc ? (uint32_t)src[k + 1] << 16 : 0u);
}

static void pack_w(void *dst_, const void *w_, long ldw, int rows, int kc) {
    uint32_t *dst = dst_;
    const uint16_t *w = w_;
    const int np = (kc + 1) / 2;
    int kp = 0;
    if (rows == MR)
        for (; 2 * kp + 32 <= kc; kp += 16)
            for (int h = 0; h < MR / 16; h++) {
                __m512 v[16];
#pragma GCC unroll 16
                for (int i = 0; i < 16; i++) {
                    const long off = (long)(h * 16 + i) * ldw + 2 * kp;
                    v[i] = _mm512_castsi512_ps(_mm512_loadu_si512(w + off));
                    prefetch_bytes(w, (off + MR * ldw) * 2);
                }
                transpose16(v);
#pragma GCC unroll 16
                for (int j = 0; j < 16; j++) _mm512_store_ps((float *)(dst + (long)(kp + j) * MR + h * 16), v[j]);
            }
    for (int r = 0; r < rows; r++) {
        const uint16_t *src = w + (long)r * ldw;
        for (int p = kp; p < np; p++) dst[(long)p * MR + r] = pair_at(src, 2 * p, kc);
    }
    for (int r = rows; r < MR; r++)
        for (int p = kp; p < np; p++) dst[(long)p * MR + r] = 0;
}

/* dst[kp*NR + t] = (bf16 X[t][2kp], bf16 X[t][2kp+1]) as one word. */
static void pack_x(void *dst_, const float *x, long ldx, int toks, int kc) {
    uint32_t *dst = dst_;
    const int np = (kc + 1) / 2;
    for (int t = 0; t < toks; t++) {
        const float *src = x + (long)t * ldx;
        for (int k = 0; k < kc; k += 32) {
            _Alignas(64) uint32_t pairs[16];
            _mm512_store_si512(pairs, round_x32(src + k, kc - k));
            const int n = gemm_min(16, np - k / 2);
            for (int p = 0; p < n; p++) dst[(long)(k / 2 + p) * NR + t] = pairs[p];
        }
    }
    for (int t = toks; t < NR; t++)
        for (int kp = 0; kp < np; kp++) dst[(long)kp * NR + t] = 0;
}

static const GemmPlan plan_dpbf16 = {
    .mr = MR, .nr = NR, .kc = 768, .mc = 256, .nc = 1020, .k_group = 2,
    .wp_bytes = 2, .xp_bytes = 2,
    .pack_w_bf16 = pack_w, .pack_x = pack_x, .micro = micro_32x12,
};

/* Its own routing (not gemm_matmul): the decode path rounds x to bf16 once per
 * token and streams every row against it, which is not a skinny block. */
static void matmul_bf16_dpbf16(float *Y, int ldy, const float *X, int ldx,
                               const uint16_t *W, int n_tok, int n_rows, int n_cols) {
    /* up to 4 tokens: stream W once per token; more: the blocked GEMM */
    if (n_tok > 4 && gemm_blocked(&plan_dpbf16, Y, ldy, X, ldx, W, 1, n_tok, n_rows, n_cols) == 0) return;
    for (int t = 0; t < n_tok; t++)
        gemv(Y + (long)t * ldy, X + (long)t * ldx, W, n_rows, n_cols);
}

/* Called by dispatch.c after kernels_init_avx512, only on a CPU with
 * avx512_bf16 (this file is compiled with the AVX-512 flags). */
void kernels_init_avx512_bf16(Kernels *k) {
    k->matmul_bf16_dpbf16 = matmul_bf16_dpbf16;
}
