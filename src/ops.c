/* ops.c — see ops.h. */
#include "ops.h"

#include <omp.h>

static int n_threads_used;   /* 0 until set: then omp's default (all cores) */
static int bf16_dot;         /* use Kernels.matmul_bf16_dpbf16 for bf16 weights */

int ops_set_bf16_dot(int on) {
    if (on && !kernels_get()->matmul_bf16_dpbf16) { bf16_dot = 0; return -1; }
    bf16_dot = on;
    return 0;
}

int ops_bf16_dot(void) { return bf16_dot; }

void ops_set_threads(int n_threads) {
    if (n_threads > 0) omp_set_num_threads(n_threads);
    n_threads_used = n_threads > 0 ? n_threads : omp_get_max_threads();
}

int ops_threads(void) { return n_threads_used > 0 ? n_threads_used : omp_get_max_threads(); }

void op_matmul(float *Y, int ldy, const float *X, int ldx, const Mat *W, int n_tok) {
    const Kernels *k = kernels_get();
    int rows = W->rows, cols = W->cols;
    int n_threads = ops_threads();
    /* One contiguous block of rows per thread, a multiple of 16 rows so vector
     * kernels that do several rows at a time never split a group. */
    int block = (rows + n_threads - 1) / n_threads;
    block = (block + 15) / 16 * 16;
    int n_blocks = (rows + block - 1) / block;
    #pragma omp parallel for schedule(static) num_threads(n_threads) if (n_blocks > 1)
    for (int b = 0; b < n_blocks; b++) {
        int r0 = b * block;
        int nr = rows - r0 < block ? rows - r0 : block;
        if (W->dtype == DTYPE_F32)
            k->matmul_f32(Y + r0, ldy, X, ldx, (const float *)W->data + (size_t)r0 * cols, n_tok, nr, cols);
        else if (bf16_dot && k->matmul_bf16_dpbf16)
            k->matmul_bf16_dpbf16(Y + r0, ldy, X, ldx, (const uint16_t *)W->data + (size_t)r0 * cols, n_tok, nr, cols);
        else
            k->matmul_bf16(Y + r0, ldy, X, ldx, (const uint16_t *)W->data + (size_t)r0 * cols, n_tok, nr, cols);
    }
}
