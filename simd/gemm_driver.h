/* gemm_driver.h — the portable part of every ISA's matmul (included by avx2.c,
 * avx512.c, avx512_bf16.c, neon.c; no intrinsics here). An ISA file brings only
 * its kernels, through two plans: a GemmPlan (micro-kernel, panel packers and
 * blocking constants for the prefill GEMM) and a SkinnyPlan (skinny/gemv blocks
 * for decode). The rest lives here once:
 *   gemm_matmul   the routing: n_tok <= skinny.max_tok (or no memory for the
 *                 packing buffers) → gemm_skinny, else → gemm_blocked
 *   gemm_skinny   decode and few tokens: W streamed unpacked, tokens a group at
 *                 a time, rows four at a time
 *   gemm_blocked  prefill: the five BLIS loops around the micro-kernel
 *
 * Problem: Y[t, r] = sum_k W[r, k] * X[t, k]: n_tok tokens × n_rows weight rows,
 * reduced over k < n_cols. Both operands are row-major along k.
 *
 * The blocked GEMM is the BLIS layering (Van Zee & van de Geijn, "BLIS: A
 * Framework for Rapidly Instantiating BLAS Functionality"), with W in the role
 * of BLIS's A (its rows are the vector dimension, so a micro-tile of Y is MR
 * contiguous floats of NR token rows) and X in the role of B:
 *
 *   for jc over tokens in blocks of NC            X block  (KC × NC)  ~ L3
 *     for pc over k in blocks of KC
 *       pack X[jc.., pc..] into NR-token panels   xp[k][NR]
 *       for ic over weight rows in blocks of MC    W block (MC × KC)  ~ L2
 *         pack W[ic.., pc..] into MR-row panels   wp[k][MR]
 *         for jr over token panels                X micro-panel (KC × NR) ~ L1
 *           for ir over weight-row panels
 *             micro-kernel: the MR × NR tile of Y += wp-panel · xp-panel
 *
 * The micro-kernel keeps the whole MR × NR tile of Y in registers and walks k:
 * per step it loads MR weights (a few vectors) and broadcasts NR activations,
 * doing MR/VL × NR FMAs — each weight load feeds NR tokens, each broadcast MR
 * rows. Packing makes both of its input streams contiguous, aligned and
 * zero-padded to whole panels, so the micro-kernel has no edge cases; partial
 * tiles at the right/bottom edge go through a small buffer on the stack.
 *
 * Y is written (not accumulated) by the first k block and accumulated by the
 * others, so Y's previous contents are never read. Each element of W is packed
 * (and, for bf16, widened) exactly once per NC tokens.
 *
 * Everything here is static: each ISA file compiles its own copy with its own
 * target flags, and the skinny driver is always_inline so that each ISA's
 * blocks are inlined with R and T as constants. */
#ifndef KVLAB_GEMM_DRIVER_H
#define KVLAB_GEMM_DRIVER_H

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define GEMM_MAX_TILE (64 * 16)   /* largest MR × NR of any micro-kernel */

/* ---------------------------------------------------------------------------
 * What an ISA brings. */

/* The prefill GEMM of one ISA: its micro-kernel, panel packers and blocks (as
 * BLIS's context holds an ISA's micro-kernel and blocksizes). */
typedef struct GemmPlan {
    int mr, nr;            /* micro-tile: MR weight rows × NR tokens */
    int kc, mc, nc;        /* cache blocks; KC a multiple of k_group, MC of MR, NC of NR */
    int k_group;           /* packed k is padded to a multiple of this (2 for bf16 pairs) */
    size_t wp_bytes;       /* bytes of one packed weight element */
    size_t xp_bytes;       /* bytes of one packed activation element */
    /* Pack `rows` (<= MR) rows × kc columns of W starting at w (row stride ldw
     * elements) into one MR-row panel, zero-padding rows >= rows and k >= kc up to
     * the padded kc; one packer per stored weight type (NULL: not supported). */
    void (*pack_w_f32)(void *dst, const void *w, long ldw, int rows, int kc);
    void (*pack_w_bf16)(void *dst, const void *w, long ldw, int rows, int kc);
    /* Pack `toks` (<= NR) tokens × kc columns of X into one NR-token panel
     * (NULL: gemm_pack_x_f32, fp32 panels). */
    void (*pack_x)(void *dst, const float *x, long ldx, int toks, int kc);
    /* y[t*ldy + r] (+)= sum_k wp[k][r] * xp[k][t] for the full MR × NR tile;
     * kc is already padded to k_group; accumulate=0 overwrites y. */
    void (*micro)(int kc, const void *wp, const void *xp, float *y, long ldy, int accumulate);
} GemmPlan;

/* The decode kernels of one ISA ("skinny": few tokens, W read straight from
 * memory without packing, which for a few tokens would cost more than the
 * arithmetic). Both are always_inline functions: R and T are constants in
 * each copy the driver makes.
 *
 * block: y[t*ldy + r] = sum_{k<n} W[r*ldw + k] * x[t*ldx + k] for r < R, t < T,
 *   R = 4 or 1, T <= group; W is fp32, or bf16 when bf16 != 0. */
typedef void SkinnyBlock(float *y, long ldy, const float *x, long ldx, const void *w, long ldw,
                         int n, int bf16, int R, int T);
/* gemv: the same for one token (T = 1), when the ISA has a loop of its own for
 * it; R is 8 (when gemv_rows is 8), 4 or 1. */
typedef void GemvBlock(float *y, const float *x, const void *w, long ldw, int n, int R);

typedef struct SkinnyPlan {
    int max_tok;            /* matmuls of up to this many tokens take the skinny path */
    int group;              /* tokens per pass over W, 2 or 4 (as many as the registers hold) */
    SkinnyBlock *block;
    GemvBlock *gemv_f32;    /* NULL: block with T = 1 */
    GemvBlock *gemv_bf16;   /* NULL: block with T = 1 */
    int gemv_rows;          /* rows per gemv call (8 or 4; 0: 4), then 4, then 1 */
} SkinnyPlan;

static inline int gemm_min(int a, int b) { return a < b ? a : b; }
static inline int gemm_round_up(int a, int m) { return (a + m - 1) / m * m; }

/* A scalar read of one byte of the cache line at p, its value unused. The
 * fp32 and exact-bf16 decode loops of avx512.c and avx2.c read each weight
 * line this way beside its vector loads: on the Zen 4 this was measured on, a
 * stream whose every 64-byte line is read twice runs 10-25 % faster than one
 * read once (kvlab's fp32 `dot` of a buffer with itself, bench's plain-read
 * figure, reads each line twice), and the avx512 mat-vec loops went from
 * 0.80-0.90 of that read to 0.92-1.0 (simd/NOTES.md, "decode: a second read
 * of each weight line"). A char read: it may alias anything. */
static inline __attribute__((always_inline)) void touch_line(const void *p) {
    (void)*(const volatile char *)p;
}

static inline void *gemm_alloc(size_t bytes) {
    size_t rounded = (bytes + 63) / 64 * 64;
    return aligned_alloc(64, rounded ? rounded : 64);
}

/* ---------------------------------------------------------------------------
 * Generic packers for fp32 / bf16 weights and fp32 activations, in plain C.
 * Packing X is cheap (each activation once per GEMM). Packing W is a transpose
 * of every weight once per NC tokens, ~1.5 cycles per element in this form:
 * small next to the arithmetic for hundreds of tokens, not for a dozen, so the
 * x86 files transpose full panels in registers and use these only for edge
 * panels, and matmul with few tokens avoids packing altogether (the skinny
 * path). MR is a constant after inlining. */
static inline __attribute__((always_inline))
void gemm_pack_w_f32(float *dst, const float *w, long ldw, int rows, int kc, int MR) {
    for (int r = 0; r < rows; r++) {
        const float *src = w + (long)r * ldw;
        for (int k = 0; k < kc; k++) dst[(long)k * MR + r] = src[k];
    }
    for (int r = rows; r < MR; r++)
        for (int k = 0; k < kc; k++) dst[(long)k * MR + r] = 0.0f;
}

static inline float gemm_bf16_to_f32(uint16_t h) {
    union { uint32_t u; float f; } v = { (uint32_t)h << 16 };
    return v.f;
}

static inline __attribute__((always_inline))
void gemm_pack_w_bf16(float *dst, const uint16_t *w, long ldw, int rows, int kc, int MR) {
    for (int r = 0; r < rows; r++) {
        const uint16_t *src = w + (long)r * ldw;
        for (int k = 0; k < kc; k++) dst[(long)k * MR + r] = gemm_bf16_to_f32(src[k]);
    }
    for (int r = rows; r < MR; r++)
        for (int k = 0; k < kc; k++) dst[(long)k * MR + r] = 0.0f;
}

static inline void gemm_pack_x_f32(float *dst, const float *x, long ldx, int toks, int kc, int NR) {
    for (int t = 0; t < toks; t++) {
        const float *src = x + (long)t * ldx;
        for (int k = 0; k < kc; k++) dst[(long)k * NR + t] = src[k];
    }
    for (int t = toks; t < NR; t++)
        for (int k = 0; k < kc; k++) dst[(long)k * NR + t] = 0.0f;
}

/* ---------------------------------------------------------------------------
 * Prefill: the blocked GEMM. W is bf16 when w_bf16 != 0, else fp32.
 * Returns 0, or -1 if the packing buffers could not be allocated (nothing was
 * written to Y then; the caller falls back to a path that needs no memory). */
static int gemm_blocked(const GemmPlan *p, float *Y, long ldy, const float *X, long ldx,
                        const void *W, int w_bf16, int n_tok, int n_rows, int n_cols) {
    if (n_tok <= 0 || n_rows <= 0) return 0;
    if (n_cols <= 0) {                      /* empty sum */
        for (int t = 0; t < n_tok; t++)
            for (int r = 0; r < n_rows; r++) Y[(long)t * ldy + r] = 0.0f;
        return 0;
    }
    void (*const pack_w)(void *, const void *, long, int, int) = w_bf16 ? p->pack_w_bf16 : p->pack_w_f32;
    const size_t w_src_bytes = w_bf16 ? sizeof(uint16_t) : sizeof(float);
    const long ldw = n_cols;
    const int kc_max = gemm_min(p->kc, gemm_round_up(n_cols, p->k_group));
    const int nc_max = gemm_min(p->nc, gemm_round_up(n_tok, p->nr));
    const int mc_max = gemm_min(p->mc, gemm_round_up(n_rows, p->mr));
    char *xbuf = gemm_alloc((size_t)nc_max * (size_t)kc_max * p->xp_bytes);
    char *wbuf = gemm_alloc((size_t)mc_max * (size_t)kc_max * p->wp_bytes);
    if (!xbuf || !wbuf) { free(xbuf); free(wbuf); return -1; }

    for (int jc = 0; jc < n_tok; jc += p->nc) {
        const int nc = gemm_min(p->nc, n_tok - jc);
        for (int pc = 0; pc < n_cols; pc += p->kc) {
            const int kc = gemm_min(p->kc, n_cols - pc);
            const int kcp = gemm_round_up(kc, p->k_group);
            const size_t x_panel = (size_t)p->nr * (size_t)kcp * p->xp_bytes;
            const size_t w_panel = (size_t)p->mr * (size_t)kcp * p->wp_bytes;
            const int accumulate = pc > 0;

            for (int jr = 0; jr < nc; jr += p->nr) {
                void *xp = xbuf + (size_t)(jr / p->nr) * x_panel;
                const float *x = X + (long)(jc + jr) * ldx + pc;
                const int toks = gemm_min(p->nr, nc - jr);
                if (p->pack_x) p->pack_x(xp, x, ldx, toks, kc);
                else gemm_pack_x_f32(xp, x, ldx, toks, kc, p->nr);
            }

            for (int ic = 0; ic < n_rows; ic += p->mc) {
                const int mc = gemm_min(p->mc, n_rows - ic);
                for (int ir = 0; ir < mc; ir += p->mr)
                    pack_w(wbuf + (size_t)(ir / p->mr) * w_panel,
                           (const char *)W + ((long)(ic + ir) * ldw + pc) * (long)w_src_bytes,
                           ldw, gemm_min(p->mr, mc - ir), kc);

                for (int jr = 0; jr < nc; jr += p->nr) {
                    const void *xp = xbuf + (size_t)(jr / p->nr) * x_panel;
                    const int nt = gemm_min(p->nr, nc - jr);
                    for (int ir = 0; ir < mc; ir += p->mr) {
                        const void *wp = wbuf + (size_t)(ir / p->mr) * w_panel;
                        const int nw = gemm_min(p->mr, mc - ir);
                        float *y = Y + (long)(jc + jr) * ldy + ic + ir;
                        if (nt == p->nr && nw == p->mr) {
                            p->micro(kcp, wp, xp, y, ldy, accumulate);
                        } else {            /* edge tile: compute all of it, keep the valid part */
                            float tile[GEMM_MAX_TILE];
                            p->micro(kcp, wp, xp, tile, p->mr, 0);
                            for (int t = 0; t < nt; t++)
                                for (int r = 0; r < nw; r++) {
                                    float v = tile[t * p->mr + r];
                                    float *dst = &y[(long)t * ldy + r];
                                    *dst = accumulate ? *dst + v : v;
                                }
                        }
                    }
                }
            }
        }
    }
    free(xbuf);
    free(wbuf);
    return 0;
}

/* ---------------------------------------------------------------------------
 * Decode and small batches: the skinny driver. For each group of T tokens it
 * streams W once, four rows at a time (the ISA's block accumulates all 4·T dot
 * products at once, so each weight vector loaded feeds T tokens and each x
 * vector 4 rows), the last n_rows % 4 rows one at a time. One token goes to
 * the ISA's gemv block where it has one, gemv_rows rows at a time (8 lets it
 * walk 8 rows side by side), then 4, then 1. */
static inline __attribute__((always_inline))
void gemm_skinny_rows(const SkinnyPlan *p, float *y, long ldy, const float *x, long ldx, const void *w,
                      int n_rows, int n_cols, int bf16, int T) {
    const size_t row_bytes = (size_t)n_cols * (bf16 ? sizeof(uint16_t) : sizeof(float));
    GemvBlock *const gemv = T > 1 ? NULL : bf16 ? p->gemv_bf16 : p->gemv_f32;
    int r = 0;
    if (gemv) {
        if (p->gemv_rows == 8)
            for (; r + 8 <= n_rows; r += 8) gemv(y + r, x, (const char *)w + (size_t)r * row_bytes, n_cols, n_cols, 8);
        for (; r + 4 <= n_rows; r += 4) gemv(y + r, x, (const char *)w + (size_t)r * row_bytes, n_cols, n_cols, 4);
        for (; r < n_rows; r++) gemv(y + r, x, (const char *)w + (size_t)r * row_bytes, n_cols, n_cols, 1);
        return;
    }
    for (; r + 4 <= n_rows; r += 4)
        p->block(y + r, ldy, x, ldx, (const char *)w + (size_t)r * row_bytes, n_cols, n_cols, bf16, 4, T);
    for (; r < n_rows; r++)
        p->block(y + r, ldy, x, ldx, (const char *)w + (size_t)r * row_bytes, n_cols, n_cols, bf16, 1, T);
}

static inline __attribute__((always_inline))
void gemm_skinny(const SkinnyPlan *p, float *Y, long ldy, const float *X, long ldx, const void *W,
                 int bf16, int n_tok, int n_rows, int n_cols) {
    for (int t0 = 0; t0 < n_tok; t0 += p->group) {
        float *y = Y + t0 * ldy;
        const float *x = X + t0 * ldx;
        /* T as a constant in each call (with group 2 only the first two are reached) */
        switch (gemm_min(p->group, n_tok - t0)) {
        case 1: gemm_skinny_rows(p, y, ldy, x, ldx, W, n_rows, n_cols, bf16, 1); break;
        case 2: gemm_skinny_rows(p, y, ldy, x, ldx, W, n_rows, n_cols, bf16, 2); break;
        case 3: if (p->group > 2) gemm_skinny_rows(p, y, ldy, x, ldx, W, n_rows, n_cols, bf16, 3); break;
        default: if (p->group > 2) gemm_skinny_rows(p, y, ldy, x, ldx, W, n_rows, n_cols, bf16, 4); break;
        }
    }
}

/* ---------------------------------------------------------------------------
 * The routing: an ISA's Kernels.matmul_f32 / matmul_bf16 are
 *   gemm_matmul(&gemm_plan, &skinny_plan, Y, ldy, X, ldx, W, 0 or 1, ...)
 * with its two plans as `static const` (constants, so the skinny blocks are
 * inlined and the SkinnyPlan itself is compiled away). Few tokens: the skinny
 * path (also the fallback when the packing buffers cannot be allocated); more:
 * the blocked GEMM. So a new ISA writes a micro-kernel, a skinny block and the
 * two plans, and its init function (kernels.h) sets matmul_f32 / matmul_bf16. */
static inline __attribute__((always_inline))
void gemm_matmul(const GemmPlan *gemm, const SkinnyPlan *skinny, float *Y, int ldy, const float *X, int ldx,
                 const void *W, int bf16, int n_tok, int n_rows, int n_cols) {
    if (n_tok > skinny->max_tok && gemm_blocked(gemm, Y, ldy, X, ldx, W, bf16, n_tok, n_rows, n_cols) == 0)
        return;
    gemm_skinny(skinny, Y, ldy, X, ldx, W, bf16, n_tok, n_rows, n_cols);
}

#endif
