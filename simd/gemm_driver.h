/* gemm_driver.h — the cache-blocking loops of the prefill matmul, shared by
 * every ISA (included by avx2.c, avx512.c, avx512_bf16.c, neon.c; no intrinsics
 * here: each ISA brings its own packing routines and micro-kernel).
 *
 * Problem: Y[t, r] = sum_k W[r, k] * X[t, k]: n_tok tokens × n_rows weight rows,
 * reduced over k < n_cols. Both operands are row-major along k. Used for
 * prefill with more than 8-16 tokens (fewer go to each ISA's skinny kernel).
 *
 * This is the BLIS layering (Van Zee & van de Geijn, "BLIS: A Framework for
 * Rapidly Instantiating BLAS Functionality"), with W in the role of BLIS's A
 * (its rows are the vector dimension, so a micro-tile of Y is MR contiguous
 * floats of NR token rows) and X in the role of B:
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
 * target flags. */
#ifndef KVLAB_GEMM_DRIVER_H
#define KVLAB_GEMM_DRIVER_H

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define GEMM_MAX_TILE (64 * 16)   /* largest MR × NR of any micro-kernel */

typedef struct GemmPlan {
    int mr, nr;            /* micro-tile: MR weight rows × NR tokens */
    int kc, mc, nc;        /* cache blocks; KC a multiple of k_group, MC of MR, NC of NR */
    int k_group;           /* packed k is padded to a multiple of this (2 for bf16 pairs) */
    size_t w_src_bytes;    /* bytes of one element of W as stored (4 fp32, 2 bf16) */
    size_t wp_bytes;       /* bytes of one packed weight element */
    size_t xp_bytes;       /* bytes of one packed activation element */
    /* Pack `rows` (<= MR) rows × kc columns of W starting at w (row stride ldw
     * elements) into one MR-row panel, zero-padding rows >= rows and k >= kc up to
     * the padded kc. */
    void (*pack_w)(void *dst, const void *w, long ldw, int rows, int kc);
    /* Pack `toks` (<= NR) tokens × kc columns of X into one NR-token panel. */
    void (*pack_x)(void *dst, const float *x, long ldx, int toks, int kc);
    /* y[t*ldy + r] (+)= sum_k wp[k][r] * xp[k][t] for the full MR × NR tile;
     * kc is already padded to k_group; accumulate=0 overwrites y. */
    void (*micro)(int kc, const void *wp, const void *xp, float *y, long ldy, int accumulate);
} GemmPlan;

static inline int gemm_min(int a, int b) { return a < b ? a : b; }
static inline int gemm_round_up(int a, int m) { return (a + m - 1) / m * m; }

static inline void *gemm_alloc(size_t bytes) {
    size_t rounded = (bytes + 63) / 64 * 64;
    return aligned_alloc(64, rounded ? rounded : 64);
}

/* Returns 0, or -1 if the packing buffers could not be allocated (nothing was
 * written to Y then; the caller falls back to a path that needs no memory). */
static int gemm_blocked(const GemmPlan *p, float *Y, long ldy, const float *X, long ldx,
                        const void *W, int n_tok, int n_rows, int n_cols) {
    if (n_tok <= 0 || n_rows <= 0) return 0;
    if (n_cols <= 0) {                      /* empty sum */
        for (int t = 0; t < n_tok; t++)
            for (int r = 0; r < n_rows; r++) Y[(long)t * ldy + r] = 0.0f;
        return 0;
    }
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

            for (int jr = 0; jr < nc; jr += p->nr)
                p->pack_x(xbuf + (size_t)(jr / p->nr) * x_panel, X + (long)(jc + jr) * ldx + pc,
                          ldx, gemm_min(p->nr, nc - jr), kc);

            for (int ic = 0; ic < n_rows; ic += p->mc) {
                const int mc = gemm_min(p->mc, n_rows - ic);
                for (int ir = 0; ir < mc; ir += p->mr)
                    p->pack_w(wbuf + (size_t)(ir / p->mr) * w_panel,
                              (const char *)W + ((long)(ic + ir) * ldw + pc) * (long)p->w_src_bytes,
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

/* Generic packers for fp32 / bf16 weights and fp32 activations, in plain C.
 * Packing X is cheap (each activation once per GEMM). Packing W is a transpose
 * of every weight once per NC tokens, ~1.5 cycles per element in this form:
 * small next to the arithmetic for hundreds of tokens, not for a dozen, so the
 * x86 files transpose full panels in registers and use these only for edge
 * panels, and matmul with few tokens avoids packing altogether (the "skinny"
 * kernels in each ISA file). MR / NR are constants after inlining. */
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

static inline __attribute__((always_inline))
void gemm_pack_x_f32(float *dst, const float *x, long ldx, int toks, int kc, int NR) {
    for (int t = 0; t < toks; t++) {
        const float *src = x + (long)t * ldx;
        for (int k = 0; k < kc; k++) dst[(long)k * NR + t] = src[k];
    }
    for (int t = toks; t < NR; t++)
        for (int k = 0; k < kc; k++) dst[(long)k * NR + t] = 0.0f;
}

#endif
