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

/* Set / get the number of OpenMP threads used by every op (0 = all cores). */
void ops_set_threads(int n_threads);
int  ops_threads(void);

#endif
