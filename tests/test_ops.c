/* test_ops.c — src/ops.c: the threaded matmul layer.
 *
 * How rows are shared among threads (contiguous blocks for prefill, chunks
 * taken dynamically for decode, several matrices in one loop) must not change
 * a single bit of the result: every row is one call of the same kernel code,
 * whoever computes it. So the outputs are compared for equality with one
 * single-threaded op_matmul per matrix, and also (within fp32 summation
 * tolerance) with a plain double-precision sum, so a row that was skipped or
 * written to the wrong place cannot pass. */
#include "check.h"
#include "engine/ops.h"
#include "base/util.h"

#include <stdint.h>

static uint32_t rng_state = 12345;
static float urand(void) {            /* uniform in [-1, 1) */
    rng_state = rng_state * 1664525u + 1013904223u;
    return (float)(rng_state >> 8) / 8388608.0f - 1.0f;
}

typedef struct {
    Mat mat;
    float *w_f32;       /* the weights as fp32 (exact for bf16) */
} TestMat;

static TestMat make_mat(int rows, int cols, DType dt) {
    TestMat t = {.mat = {.dtype = dt, .rows = rows, .cols = cols}};
    size_t n = (size_t)rows * cols;
    t.w_f32 = malloc(n * sizeof(float));
    if (dt == DTYPE_BF16) {
        uint16_t *h = malloc(n * sizeof(uint16_t));
        for (size_t i = 0; i < n; i++) { h[i] = f32_to_bf16(urand()); t.w_f32[i] = bf16_to_f32(h[i]); }
        t.mat.data = h;
    } else {
        for (size_t i = 0; i < n; i++) t.w_f32[i] = urand();
        float *copy = malloc(n * sizeof(float));
        memcpy(copy, t.w_f32, n * sizeof(float));
        t.mat.data = copy;
    }
    return t;
}

static void free_mat(TestMat *t) { free((void *)t->mat.data); free(t->w_f32); }

/* |Y - exact| <= n * 2^-23 * sum|w x| (fp32 summation, any order) */
static int close_to_exact(const float *Y, int ldy, const float *X, const TestMat *t, int n_tok, double *worst) {
    int bad = 0;
    for (int tok = 0; tok < n_tok; tok++)
        for (int r = 0; r < t->mat.rows; r++) {
            double exact = 0, mag = 0;
            for (int c = 0; c < t->mat.cols; c++) {
                double p = (double)t->w_f32[(size_t)r * t->mat.cols + c] * X[(size_t)tok * t->mat.cols + c];
                exact += p;
                mag += fabs(p);
            }
            double err = fabs(Y[(size_t)tok * ldy + r] - exact), bound = t->mat.cols * 0x1p-23 * mag + 1e-30;
            if (err / bound > *worst) *worst = err / bound;
            bad += err > bound;
        }
    return bad;
}

/* The same matrix in column panels (model.h Mat): the copy model_bind_mat makes
 * of a matrix wider than MAT_PANEL_COLS. */
static Mat in_panels(const Mat *a) {
    Mat p = *a;
    p.panel_cols = MAT_PANEL_COLS;
    const size_t elem = dtype_size(a->dtype);
    char *data = malloc((size_t)a->rows * a->cols * elem);
    for (int r = 0; r < a->rows; r++)
        for (int c = 0; c < a->cols; c++)
            memcpy(data + mat_offset(&p, r, c) * elem, (const char *)a->data + ((size_t)r * a->cols + c) * elem, elem);
    p.data = data;
    return p;
}

/* A matrix in column panels gives, on every ISA, the row-major result within
 * fp32 summation error (a row's sum is its panels' sums), for decode and
 * prefill batches, and the same bits whatever the number of threads. */
static void test_panels(void) {
    const Kernels *tables[8];
    const int n_tables = kernels_available(tables, 8);
    /* 2 and 3 panels, the last narrower; 261 rows: two decode chunks of 256 rows */
    const int shapes[][2] = {{130, 1100}, {261, 2100}};
    const DType dtypes[2] = {DTYPE_F32, DTYPE_BF16};
    const int toks[] = {1, 3, 5, 40};
    char err[128], name[200];
    for (int k = 0; k < n_tables; k++) {
        kernels_select(tables[k]->name, err, sizeof err);
        for (int d = 0; d < 2; d++)
            for (int s = 0; s < 2; s++) {
                const int rows = shapes[s][0], cols = shapes[s][1], max_tok = 40;
                TestMat t = make_mat(rows, cols, dtypes[d]);
                Mat panels = in_panels(&t.mat);
                float *X = malloc((size_t)max_tok * cols * sizeof(float));
                for (int i = 0; i < max_tok * cols; i++) X[i] = urand();
                float *one = malloc((size_t)max_tok * rows * sizeof(float)), *two = malloc((size_t)max_tok * rows * sizeof(float));
                for (int ti = 0; ti < 4; ti++) {
                    const int n_tok = toks[ti];
                    ops_set_threads(1);
                    op_matmul(one, rows, X, cols, &panels, n_tok);
                    ops_set_threads(2);
                    for (int j = 0; j < n_tok * rows; j++) two[j] = NAN;
                    op_matmul(two, rows, X, cols, &panels, n_tok);
                    double worst = 0;
                    int bad = close_to_exact(one, rows, X, &t, n_tok, &worst);
                    snprintf(name, sizeof name, "%s: op_matmul %s %dx%d in %d column panels, %d tokens: exact within fp32 error, 1 and 2 threads alike",
                             tables[k]->name, dtype_name(dtypes[d]), rows, cols, mat_n_panels(&panels), n_tok);
                    CASE(name) {
                        CHECK(bad == 0, "%d outputs off; worst error / bound %.3g", bad, worst);
                        CHECK(memcmp(one, two, (size_t)n_tok * rows * sizeof(float)) == 0, "2 threads differ from 1");
                    }
                }
                free(one); free(two); free(X); free((void *)panels.data); free_mat(&t);
            }
    }
    kernels_select("auto", err, sizeof err);
}

int main(void) {
    /* rows: below, at and above one decode chunk (256, ops.c DECODE_CHUNK_ROWS), not multiples of 4 or 16 */
    const int shapes[][2] = {{1, 7}, {17, 33}, {256, 64}, {300, 100}, {517, 96}};
    const int n_shapes = sizeof shapes / sizeof shapes[0];
    const DType dtypes[2] = {DTYPE_F32, DTYPE_BF16};

    for (int d = 0; d < 2; d++)
        for (int s = 0; s < n_shapes; s++) {
            const int rows = shapes[s][0], cols = shapes[s][1];
            /* three matrices sharing the input, like q/k/v (different row counts) */
            TestMat m[3] = {make_mat(rows, cols, dtypes[d]), make_mat(rows + 5, cols, dtypes[d]),
                            make_mat(rows / 2 + 1, cols, dtypes[d])};
            const int max_tok = 20;   /* decode (<= 4) and prefill-sized batches */
            float *X = malloc((size_t)max_tok * cols * sizeof(float));
            for (int i = 0; i < max_tok * cols; i++) X[i] = urand();
            float *ref[3], *got[3];
            for (int i = 0; i < 3; i++) {
                ref[i] = malloc((size_t)max_tok * m[i].mat.rows * sizeof(float));
                got[i] = malloc((size_t)max_tok * m[i].mat.rows * sizeof(float));
            }
            const int toks[] = {1, 2, 4, 5, 20};
            for (int ti = 0; ti < 5; ti++) {
                const int n_tok = toks[ti];
                ops_set_threads(1);
                for (int i = 0; i < 3; i++) op_matmul(ref[i], m[i].mat.rows, X, cols, &m[i].mat, n_tok);
                double worst = 0;
                int bad = 0;
                for (int i = 0; i < 3; i++) bad += close_to_exact(ref[i], m[i].mat.rows, X, &m[i], n_tok, &worst);
                char name[160];
                snprintf(name, sizeof name, "op_matmul %s %dx%d, %d tokens, 1 thread: within fp32 summation error of the exact sum",
                         dtype_name(dtypes[d]), rows, cols, n_tok);
                CASE(name) CHECK(bad == 0, "%d outputs off; worst error / bound %.3g", bad, worst);

                for (int threads = 2; threads <= 3; threads++) {
                    ops_set_threads(threads);
                    MatmulOut outs[3];
                    for (int i = 0; i < 3; i++) {
                        for (int j = 0; j < n_tok * m[i].mat.rows; j++) got[i][j] = NAN;
                        outs[i] = (MatmulOut){got[i], m[i].mat.rows, &m[i].mat};
                    }
                    op_matmul_many(outs, 3, X, cols, n_tok);
                    int differ = 0;
                    for (int i = 0; i < 3; i++)
                        differ += memcmp(ref[i], got[i], (size_t)n_tok * m[i].mat.rows * sizeof(float)) != 0;
                    snprintf(name, sizeof name, "op_matmul_many %s %dx%d (+2 more), %d tokens, %d threads: bit-identical to one op_matmul per matrix",
                             dtype_name(dtypes[d]), rows, cols, n_tok, threads);
                    CASE(name) CHECK(differ == 0, "%d of 3 outputs differ", differ);
                }
            }
            for (int i = 0; i < 3; i++) { free(ref[i]); free(got[i]); free_mat(&m[i]); }
            free(X);
        }
    test_panels();
    ops_set_threads(0);
    return check_summary();
}
