/* ops.h — the engine's arithmetic: kernel calls spread over OpenMP threads.
 * The kernels (simd/) are single-threaded; this layer decides who does what. */
#ifndef KVLAB_OPS_H
#define KVLAB_OPS_H

#include "kernels.h"
#include "model.h"

/* Y[t, r] = W[r, :] . X[t, :]  for t < n_tok and every row r of W.
 * X is [n_tok, W->cols] (row stride ldx), Y is [n_tok, W->rows] (row stride ldy).
 * Rows are split across threads in contiguous blocks: each thread streams its
 * own part of W once per call. */
void op_matmul(float *Y, int ldy, const float *X, int ldx, const Mat *W, int n_tok);

/* bf16 weights x activations rounded to bf16, summed by the CPU's bf16 dot
 * instruction (Kernels.matmul_bf16_dpbf16, x86 AVX512_BF16): fewer
 * instructions per weight byte, so decode streams faster, at the price of
 * rounding the activations (|dy| <= 2^-8 sum|w x|; see kernels.h). Off by
 * default. Returns -1 (and stays off) when the kernel table has no such kernel. */
int  ops_set_bf16_dot(int on);
int  ops_bf16_dot(void);

/* Set / get the number of OpenMP threads used by every op (0 = all cores). */
void ops_set_threads(int n_threads);
int  ops_threads(void);

#endif
