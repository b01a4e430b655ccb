/* kernels.h — the contract between the engine and the SIMD kernels.
 *
 * Every instruction set (scalar reference, AVX2+FMA, AVX-512, NEON) has one
 * table of these functions: the reference's, or a copy of it with the ISA's
 * own kernels put in (kernels_build below). The engine calls kernels only
 * through the table returned by kernels_get(); it never contains intrinsics. Threads are the
 * caller's business: a kernel is single-threaded and works on the slice it is
 * given (src/ops.c splits rows and heads over OpenMP threads).
 *
 * Shapes: W is row-major [n_rows, n_cols] (a weight matrix [out_features,
 * in_features], as in HF and llama2.c); X is [n_tok, n_cols] with row stride ldx;
 * Y is [n_tok, *] with row stride ldy. bf16 weights are raw uint16 bit patterns;
 * they are widened exactly to fp32 and every sum accumulates in fp32. */
#ifndef KVLAB_KERNELS_H
#define KVLAB_KERNELS_H

#include <stdint.h>

typedef struct Kernels {
    const char *name;   /* "scalar", "avx2", "avx512", "neon" */

    /* Y[t*ldy + r] = sum_c W[r*n_cols + c] * X[t*ldx + c]   for t < n_tok, r < n_rows.
     * n_tok == 1 is the decode matrix-vector product; n_tok > 1 the prefill
     * matrix-matrix product (blocked over tokens so each weight row is read once
     * per block of tokens). */
    void (*matmul_f32)(float *Y, int ldy, const float *X, int ldx,
                       const float *W, int n_tok, int n_rows, int n_cols);
    void (*matmul_bf16)(float *Y, int ldy, const float *X, int ldx,
                        const uint16_t *W, int n_tok, int n_rows, int n_cols);

    float (*dot)(const float *a, const float *b, int n);
    float (*sum_squares)(const float *x, int n);

    /* out[i] = weight[i] * x[i] / sqrt(mean(x^2) + eps)   (RMSNorm; out may alias x) */
    void (*rmsnorm)(float *out, const float *x, const float *weight, int n, float eps);

    /* Rotate n_heads consecutive heads of x (each head_dim floats) in place by
     * the angles whose cos/sin are given (head_dim/2 each). pairing_halves=1:
     * the HF "rotate_half" layout, dimension i pairs with i + head_dim/2;
     * pairing_halves=0: the Meta/llama2.c layout, 2i pairs with 2i+1. */
    void (*rope)(float *x, int n_heads, int head_dim, const float *cos_theta,
                 const float *sin_theta, int pairing_halves);

    /* x <- softmax(x), in place, max-subtracted; uses the vector exp. */
    void (*softmax)(float *x, int n);

    /* gate[i] <- silu(gate[i]) * up[i]  (SwiGLU; silu(g) = g / (1 + exp(-g))) */
    void (*silu_mul)(float *gate, const float *up, int n);

    /* scores[j] = scale * dot(q, keys[j*head_dim ..])  for j < n_keys */
    void (*attn_scores)(float *scores, const float *q, const float *keys,
                        int n_keys, int head_dim, float scale);

    /* out[c] = sum_j probs[j] * values[j*head_dim + c]  (out is overwritten) */
    void (*attn_values)(float *out, const float *probs, const float *values,
                        int n_keys, int head_dim);

    /* The same two over a bf16 KV cache (kvcache.h): keys / values are bf16
     * bit patterns, widened exactly to fp32; sums in fp32. */
    void (*attn_scores_bf16)(float *scores, const float *q, const uint16_t *keys,
                             int n_keys, int head_dim, float scale);
    void (*attn_values_bf16)(float *out, const float *probs, const uint16_t *values,
                             int n_keys, int head_dim);

    /* x[i] <- exp(x[i] - max) for i < n; returns their sum (fp32). The step of
     * an online softmax (attn_fused below); softmax is this, then a scaling. */
    float (*exp_sum)(float *x, int n, float max);

    /* ---- optional members (NULL when the table / CPU does not provide them) ---- */

    /* Like matmul_bf16, but X is first rounded to bf16 (round-to-nearest-even)
     * and the products are summed by the hardware bf16 dot-product instruction
     * (x86 AVX512_BF16 vdpbf16ps: bf16 pairs, fp32 accumulation, denormal inputs
     * and outputs flushed to zero). Never used by default (it changes numerics):
     * --bf16-dot turns it on for every bf16 matmul (src/ops.c).
     * Error against matmul_bf16 on the same data: rounding each activation costs
     * at most 2^-8 relative, so |dy| <= 2^-8 * sum_c |W[r,c] X[t,c]| (plus the
     * usual fp32 summation term). Measured on uniform [-1,1] data
     * (tests/test_kernels.c prints it): |dy| / sum|w x| 3e-4 on average, 2.3e-3
     * at most; ||dY|| / ||Y|| = 1.5e-3. Set only in the "avx512" table on CPUs
     * with avx512_bf16. */
    void (*matmul_bf16_dpbf16)(float *Y, int ldy, const float *X, int ldx,
                               const uint16_t *W, int n_tok, int n_rows, int n_cols);
} Kernels;

/* Attention of n_q consecutive queries of one head, in one pass over the keys
 * and values, never holding a probability row (FlashAttention's online
 * softmax, on the CPU): the keys are taken in blocks of ATTN_BLOCK; for each
 * block and query, scores (attn_scores), the running maximum m and sum l
 * updated, exp(score - m) (exp_sum), and the block's share of the output
 * (attn_values) added to the output rescaled by exp(m_old - m_new). Each block
 * of keys and values is read once for all n_q queries: in decode (n_q = 1) the
 * cache is streamed once; in prefill a tile of queries reuses each block from
 * the CPU's caches. A driver over the table's kernels (BLIS's macro-kernel over
 * micro-kernels), so every ISA has it and runs its own inner loops.
 *
 *   query i < n_q (its row q + i*ldq) sees keys [0, n_keys - n_q + 1 + i):
 *   out[i*ldo + c] = sum_j softmax_j(scale * q_i . k_j) v_j[c]
 *
 * keys / values: fp32 rows [n_keys, head_dim], or bf16 bit patterns when
 * keys_bf16 / values_bf16. scratch: attn_fused_scratch_floats(n_q, head_dim)
 * floats. Same results as attn_scores + softmax + attn_values within fp32
 * rounding: the sums are regrouped by block and each partial output is
 * rescaled, |out - exact| <= about (2 + blocks) * 2^-24 * max_j |v_j[c]|
 * (tests/test_kernels.c checks 1e-5 relative to max |v|). */
#define ATTN_BLOCK 128
void attn_fused(const struct Kernels *k, float *out, long ldo, const float *q, long ldq, int n_q,
                const void *keys, int keys_bf16, const void *values, int values_bf16,
                int n_keys, int head_dim, float scale, float *scratch);
long attn_fused_scratch_floats(int n_q, int head_dim);

/* The table in use (the best one for this CPU unless kernels_select changed it).
 * The first call of any function below detects the CPU (once, thread-safe) and
 * reads the environment variable KVLAB_ISA: if set, it is applied as by
 * kernels_select(KVLAB_ISA) (an unusable value prints one line on stderr and
 * "auto" is used). A later kernels_select() call overrides it. */
const Kernels *kernels_get(void);

/* Choose by name: "auto", "scalar", "avx2", "avx512", "neon". Returns 0, or -1 and
 * writes a one-line reason into err_msg (e.g. "--isa avx512: this CPU lacks avx512f"). */
int kernels_select(const char *isa, char *err_msg, int err_size);

/* The best ISA this CPU supports (what "auto" picks) and a list of all usable ones. */
const char *kernels_detected(void);
int kernels_available(const Kernels **tables, int max_tables);

/* The scalar reference table (always available; tests compare against it). */
extern const Kernels kernels_scalar;

/* How the ISA tables are made (BLIS's reference-then-override): every table
 * starts as a copy of kernels_scalar, and the ISA's init function replaces the
 * entries it implements (and sets name). So an ISA needs to implement only what
 * pays: a new one can start with matmul_f32 and matmul_bf16 and fall back to
 * the reference for the rest. kernels_build(k, init) is that: *k =
 * kernels_scalar, then init(k) unless init is NULL.
 *
 * The init functions are defined only where they are compiled (x86-64: avx2,
 * avx512, avx512_bf16 on top of avx512; aarch64: neon) and, being compiled with
 * their ISA's flags, may be called only on a CPU that has it: dispatch.c calls
 * them once it has checked. Use kernels_available() to get the tables. */
typedef void KernelsInit(Kernels *k);
void kernels_build(Kernels *k, KernelsInit *init);
KernelsInit kernels_init_avx2, kernels_init_avx512, kernels_init_avx512_bf16, kernels_init_neon;

#endif
