/* ops.c — see ops.h. */
#include "engine/ops.h"

#include <omp.h>
#include <stdlib.h>

static int n_threads_used;   /* 0 until set: then omp's default (all cores) */
static int bf16_dot;          /* use Kernels.matmul_bf16_dpbf16 for bf16 weights */

/* Decode splits its rows into chunks of this many (a multiple of 16, see
 * matmul_prefill). A chunk reads its rows of every column panel (model.h Mat):
 * for bf16, runs of 512 KB, long enough for the prefetchers (runs of 256 KB,
 * 128 rows, read 10-20 % slower with two threads: simd/NOTES.md, "decode: a
 * second read of each weight line"), and a 4096-row matrix still gives 16
 * chunks to share. */
#define DECODE_CHUNK_ROWS 256
#define DECODE_MAX_TOKENS 4   /* up to this many tokens a matmul counts as decode */

int ops_set_bf16_dot(int on) {
    if (on && !kernels_get()->matmul_bf16_dpbf16) { bf16_dot = 0; return -1; }
    bf16_dot = on;
    return 0;
}

void ops_set_threads(int n_threads) {
    if (n_threads > 0) omp_set_num_threads(n_threads);
    n_threads_used = n_threads > 0 ? n_threads : omp_get_max_threads();
}

int ops_threads(void) { return n_threads_used > 0 ? n_threads_used : omp_get_max_threads(); }

/* One row-major block: Y[t, r0 + r] = W[r, :] . X[t, :] for r < nr, the block
 * starting at w with rows of n_cols elements. */
static void matmul_block(float *Y, int ldy, const float *X, int ldx, DType dtype, const void *w,
                         int n_tok, int nr, int n_cols) {
    const Kernels *k = kernels_get();
    if (dtype == DTYPE_F32)
        k->matmul_f32(Y, ldy, X, ldx, (const float *)w, n_tok, nr, n_cols);
    else if (bf16_dot && k->matmul_bf16_dpbf16)
        k->matmul_bf16_dpbf16(Y, ldy, X, ldx, (const uint16_t *)w, n_tok, nr, n_cols);
    else
        k->matmul_bf16(Y, ldy, X, ldx, (const uint16_t *)w, n_tok, nr, n_cols);
}

/* Tokens per call when W is in column panels, so the partial sums of the later
 * panels fit a buffer of PANEL_TOKENS x rows: as many as the prefill GEMM
 * takes in one block of tokens (GemmPlan.nc, simd/gemm_driver.h), so W is
 * packed no more often than in one call. */
#define PANEL_TOKENS 1020

/* Rows r0 .. r0+nr-1 of W. In column panels (model.h Mat), the product is
 * one block product per panel: the first writes Y, each later one is summed
 * into it (so a row's sum is its panels' sums, added in panel order). */
static void matmul_rows(float *Y, int ldy, const float *X, int ldx, const Mat *W, int n_tok, int r0, int nr) {
    const size_t elem = dtype_size(W->dtype);
    const int n_panels = mat_n_panels(W);
    int col0, width;
    if (n_panels == 1) {
        matmul_block(Y + r0, ldy, X, ldx, W->dtype, (const char *)W->data + (size_t)r0 * (size_t)W->cols * elem,
                     n_tok, nr, W->cols);
        return;
    }
    float part_on_stack[DECODE_MAX_TOKENS * DECODE_CHUNK_ROWS];
    for (int t0 = 0; t0 < n_tok; t0 += PANEL_TOKENS) {
        const int nt = n_tok - t0 < PANEL_TOKENS ? n_tok - t0 : PANEL_TOKENS;
        float *part = (size_t)nt * (size_t)nr <= sizeof part_on_stack / sizeof(float)
                          ? part_on_stack : xmalloc((size_t)nt * (size_t)nr * sizeof(float));
        float *Yt = Y + (size_t)t0 * (size_t)ldy + r0;
        const float *Xt = X + (size_t)t0 * (size_t)ldx;
        for (int p = 0; p < n_panels; p++) {
            const size_t at = mat_panel_offset(W, p, &col0, &width) + (size_t)r0 * (size_t)width;
            const void *w = (const char *)W->data + at * elem;
            if (p == 0) { matmul_block(Yt, ldy, Xt + col0, ldx, W->dtype, w, nt, nr, width); continue; }
            matmul_block(part, nr, Xt + col0, ldx, W->dtype, w, nt, nr, width);
            for (int t = 0; t < nt; t++)
                for (int r = 0; r < nr; r++) Yt[(size_t)t * (size_t)ldy + r] += part[(size_t)t * (size_t)nr + r];
        }
        if (part != part_on_stack) free(part);
    }
}

/* Decode (a few tokens): memory-bound, so the rows of all the matrices are cut
 * into chunks that threads take as they finish (dynamic schedule). A thread
 * slowed by a neighbour on the memory bus then takes fewer chunks instead of
 * keeping the others waiting at the end, and with several matrices sharing one
 * input (q/k/v, gate/up) there is one wait, not one per matrix. */
static int decode_chunks(const Mat *W) { return (W->rows + DECODE_CHUNK_ROWS - 1) / DECODE_CHUNK_ROWS; }

static void matmul_decode(const MatmulOut *outs, int n_outs, const float *X, int ldx, int n_tok, int n_threads) {
    int n_chunks = 0;
    for (int i = 0; i < n_outs; i++) n_chunks += decode_chunks(outs[i].W);
    #pragma omp parallel for schedule(dynamic, 1) num_threads(n_threads)
    for (int chunk = 0; chunk < n_chunks; chunk++) {
        int i = 0, c = chunk;                     /* which matrix, which chunk of it */
        while (c >= decode_chunks(outs[i].W)) c -= decode_chunks(outs[i++].W);
        const int r0 = c * DECODE_CHUNK_ROWS, rows = outs[i].W->rows;
        matmul_rows(outs[i].Y, outs[i].ldy, X, ldx, outs[i].W, n_tok, r0,
                    rows - r0 < DECODE_CHUNK_ROWS ? rows - r0 : DECODE_CHUNK_ROWS);
    }
}

/* Prefill: one contiguous block of rows per thread, a multiple of 16 rows so
 * vector kernels that do several rows at a time never split a group (each
 * thread packs and streams its own block once). */
static void matmul_prefill(float *Y, int ldy, const float *X, int ldx, const Mat *W, int n_tok, int n_threads) {
    const int rows = W->rows;
    int block = (rows + n_threads - 1) / n_threads;
    block = (block + 15) / 16 * 16;
    int n_blocks = (rows + block - 1) / block;
    #pragma omp parallel for schedule(static) num_threads(n_threads) if (n_blocks > 1)
    for (int b = 0; b < n_blocks; b++) {
        int r0 = b * block;
        matmul_rows(Y, ldy, X, ldx, W, n_tok, r0, rows - r0 < block ? rows - r0 : block);
    }
}

void op_matmul_many(const MatmulOut *outs, int n_outs, const float *X, int ldx, int n_tok) {
    const int n_threads = ops_threads();
    if (n_tok <= DECODE_MAX_TOKENS && n_threads > 1) {
        matmul_decode(outs, n_outs, X, ldx, n_tok, n_threads);
        return;
    }
    for (int i = 0; i < n_outs; i++) matmul_prefill(outs[i].Y, outs[i].ldy, X, ldx, outs[i].W, n_tok, n_threads);
}

void op_matmul(float *Y, int ldy, const float *X, int ldx, const Mat *W, int n_tok) {
    const MatmulOut out = {Y, ldy, W};
    op_matmul_many(&out, 1, X, ldx, n_tok);
}
