/* ops.h — the engine's arithmetic: kernel calls spread over OpenMP threads.
 * The kernels (simd/) are single-threaded; this layer decides who does what. */
#ifndef KVLAB_OPS_H
#define KVLAB_OPS_H

#include "simd/kernels.h"
#include "model/model.h"

/* Y[t, r] = W[r, :] . X[t, :]  for t < n_tok and every row r of W.
 * X is [n_tok, W->cols] (row stride ldx), Y is [n_tok, W->rows] (row stride ldy).
 * Prefill: rows are split across threads in contiguous blocks, each thread
 * streams its own part of W once per call. Decode: see op_matmul_many. */
void op_matmul(float *Y, int ldy, const float *X, int ldx, const Mat *W, int n_tok);

/* Several products of the same input at once: outs[i].Y = X . outs[i].W^T,
 * e.g. q, k, v = x Wq, x Wk, x Wv. Same results as one op_matmul per output;
 * in decode (n_tok <= 4) the rows of all of them are shared out among the
 * threads in one parallel loop, so threads wait for each other once. */
typedef struct MatmulOut { float *Y; int ldy; const Mat *W; } MatmulOut;
void op_matmul_many(const MatmulOut *outs, int n_outs, const float *X, int ldx, int n_tok);

/* bf16 weights x activations rounded to bf16, summed by the CPU's bf16 dot
 * instruction (Kernels.matmul_bf16_dpbf16, x86 AVX512_BF16): fewer
 * instructions per weight byte, so decode streams faster, at the price of
 * rounding the activations (|dy| <= 2^-8 sum|w x|; see kernels.h). Off by
 * default. Returns -1 (and stays off) when the kernel table has no such kernel. */
int  ops_set_bf16_dot(int on);

/* Set / get the number of OpenMP threads used by every op (0 = all cores). */
void ops_set_threads(int n_threads);
int  ops_threads(void);

#endif
