/* test_kernels.c — every kernel of every table this CPU can run, against the
 * scalar reference (simd/scalar.c) and a double-precision evaluation.
 *
 * Tolerances (u = 2^-24, the fp32 unit roundoff; γ(m) = m·u / (1 - m·u)):
 *  - Sums of n products (matmul, dot, attn_*): any evaluation order, with or
 *    without FMA, is within γ(n+1)·Σ|a_i b_i| of the exact sum (Higham,
 *    "Accuracy and Stability of Numerical Algorithms", §3.1), plus up to
 *    2^-150 per operation when results fall in the denormal range. So each
 *    kernel must be within that bound T of the double-precision sum, and
 *    within 2T of the scalar reference.
 *  - That bound is loose for large n (a missing term could hide in it), so every
 *    reduction is also run on "exact" data: small integers (times a power of
 *    two), where every product and partial sum is representable, so any order
 *    gives the exact result and the kernel must equal the reference bit for bit.
 *  - exp: SLEEF's u10 functions are within 1.0 ULP, glibc's expf within ~0.5
 *    ULP; element-wise kernels built on exp get a few ULP (stated per test).
 *  - rope and rmsnorm's scaling use the reference's own operations (no FMA),
 *    so they must match exactly.
 * Inputs cover sizes 0,1,3,7,15,16,17,31,33,63,64,65,127,1000,4097, random data
 * from a fixed seed, tiny / huge / denormal / ±0 values, and misaligned
 * pointers. Buffers end exactly at an inaccessible page, so reading one element
 * past the end crashes the test; with -fsanitize=address the misaligned heap
 * buffers are also checked by ASan. */
#include "check.h"
#include "simd/kernels.h"
#include "base/splitmix64.h"

#include <float.h>
#include <stdarg.h>
#include <stdint.h>
#include <sys/mman.h>
#include <unistd.h>

static const int SIZES[] = { 0, 1, 3, 7, 15, 16, 17, 31, 33, 63, 64, 65, 127, 1000, 4097 };
#define N_SIZES ((int)(sizeof SIZES / sizeof SIZES[0]))
#define U 0x1p-24                      /* fp32 unit roundoff */
#define DENORM_STEP 0x1p-150           /* max rounding error of one op in the denormal range */

/* ---- random numbers (splitmix64, fixed seeds) ------------------------------ */
static uint64_t rng_state;
static void rng_seed(uint64_t s) { rng_state = s * 0x9E3779B97F4A7C15ull + 12345; }
static uint64_t rng_next(void) { return splitmix64_next(&rng_state); }
static double rng_unit(void) { return splitmix64_unit(&rng_state); }     /* [0, 1) */
static float rng_range(float lo, float hi) { return lo + (hi - lo) * (float)rng_unit(); }
static int rng_int(int lo, int hi) { return lo + (int)(rng_next() % (uint64_t)(hi - lo + 1)); }

/* ---- buffers ---------------------------------------------------------------
 * misalign < 0: the buffer ends exactly where an inaccessible page begins (so any
 *   over-read faults); its alignment follows from its size.
 * misalign >= 0: a heap block whose data starts `misalign` bytes past a 64-byte
 *   boundary and ends exactly at the end of the block (ASan checks it); float
 *   buffers use misalign rounded down to a multiple of 4, bf16 weights (which the
 *   engine may mmap at any 2-byte offset) the exact value. */
#define MAX_BUFS 64
static struct { void *base; size_t len; int mapped; } bufs[MAX_BUFS];
static int n_bufs;
static int buf_misalign = -1;          /* mode for the next allocations */

static void *buf_alloc(size_t bytes) {
    if (n_bufs == MAX_BUFS) { fprintf(stderr, "test_kernels: too many buffers\n"); exit(2); }
    if (buf_misalign < 0) {
        size_t page = (size_t)sysconf(_SC_PAGESIZE);
        size_t data = (bytes + page - 1) / page * page;
        char *m = mmap(NULL, data + page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (m == MAP_FAILED || mprotect(m + data, page, PROT_NONE) != 0) { perror("mmap"); exit(2); }
        bufs[n_bufs].base = m; bufs[n_bufs].len = data + page; bufs[n_bufs++].mapped = 1;
        return m + data - bytes;
    }
    void *p = NULL;   /* ASan tracks the requested size, so the block ends where the data does */
    if (posix_memalign(&p, 64, (size_t)buf_misalign + (bytes ? bytes : 1)) != 0) { perror("malloc"); exit(2); }
    bufs[n_bufs].base = p; bufs[n_bufs].len = 0; bufs[n_bufs++].mapped = 0;
    return (char *)p + buf_misalign;
}
static float *fbuf(long n) {              /* floats stay 4-byte aligned (the C type requires it) */
    const int saved = buf_misalign;
    if (buf_misalign > 0) buf_misalign &= ~3;
    float *p = buf_alloc((size_t)n * sizeof(float));
    buf_misalign = saved;
    return p;
}
static uint16_t *hbuf(long n) { return buf_alloc((size_t)n * sizeof(uint16_t)); }
static void bufs_free(void) {
    for (int i = 0; i < n_bufs; i++) {
        if (bufs[i].mapped) munmap(bufs[i].base, bufs[i].len);
        else free(bufs[i].base);
    }
    n_bufs = 0;
}

/* ---- data ----------------------------------------------------------------- */
enum Fill { F_UNIFORM, F_INTS, F_TINY, F_HUGE, F_DENORMAL, F_ZEROS, F_WIDE, N_FILLS };
static const char *FILL_NAME[] = { "uniform", "integers", "tiny", "huge", "denormal", "+-0", "wide-range" };

static float fill_one(enum Fill kind) {
    switch (kind) {
    case F_UNIFORM: return rng_range(-1.0f, 1.0f);
    case F_INTS: return (float)rng_int(-8, 8);
    case F_TINY: return rng_range(-1.0f, 1.0f) * 1e-20f;            /* products ~1e-40: denormal */
    case F_HUGE: return rng_range(-1.0f, 1.0f) * 1e17f;             /* products ~1e34, sums < FLT_MAX */
    case F_DENORMAL: return (float)rng_int(-1000, 1000) * 0x1p-149f;
    case F_ZEROS: return (rng_next() & 1) ? -0.0f : 0.0f;
    case F_WIDE: return (rng_next() & 1 ? -1.0f : 1.0f) * ldexpf(1.0f + (float)rng_unit(), rng_int(-40, 40));
    default: return 0.0f;
    }
}
static void fill(float *p, long n, enum Fill kind) { for (long i = 0; i < n; i++) p[i] = fill_one(kind); }

static uint16_t bf16_truncate(float f) { uint32_t u; memcpy(&u, &f, 4); return (uint16_t)(u >> 16); }
static float bf16_widen(uint16_t h) { uint32_t u = (uint32_t)h << 16; float f; memcpy(&f, &u, 4); return f; }
/* fp32 → bf16 as vcvtneps2bf16 does it: round to nearest even, denormals to zero. */
static uint16_t bf16_round(float f) {
    uint32_t u; memcpy(&u, &f, 4);
    if ((u & 0x7F800000u) == 0) u &= 0x80000000u;
    if ((u & 0x7FFFFFFFu) > 0x7F800000u) return (uint16_t)((u >> 16) | 0x40);
    u += 0x7FFFu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

static uint32_t fbits(float f) { uint32_t u; memcpy(&u, &f, sizeof u); return u; }
static double gamma_n(long n) { return (double)n * U / (1.0 - (double)n * U); }

/* ---- comparisons: report the first few failures of a case, then just count -- */
static int fail_reports;
#define MAX_REPORTS 6
static void begin_checks(void) { fail_reports = 0; }

static int same_special(double a, double b) {       /* both NaN, or equal infinities */
    if (isnan(a) || isnan(b)) return isnan(a) && isnan(b);
    return a == b;
}
static void expect_close(const char *what, long idx, double got, double want, double tol) {
    int ok = (isinf(got) || isinf(want) || isnan(got) || isnan(want)) ? same_special(got, want)
                                                                         : fabs(got - want) <= tol;
    if (!ok) {
        if (fail_reports++ < MAX_REPORTS)
            CHECK(0, "%s [%ld]: %.9g vs %.9g (|diff| %.3g > tol %.3g)", what, idx, got, want, fabs(got - want), tol);
        else check_case_failed = 1;
    }
}
static void expect_bits(const char *what, long idx, float got, float want) {
    if (fbits(got) != fbits(want) && !(isnan(got) && isnan(want))) {
        if (fail_reports++ < MAX_REPORTS)
            CHECK(0, "%s [%ld]: %.9g (0x%08x) vs %.9g (0x%08x), must be identical", what, idx,
                  got, (unsigned)fbits(got), want, (unsigned)fbits(want));
        else check_case_failed = 1;
    }
}
static void expect_true(int ok, const char *what, long idx) {
    if (!ok) {
        if (fail_reports++ < MAX_REPORTS) CHECK(0, "%s [%ld]", what, idx);
        else check_case_failed = 1;
    }
}
/* A sum of n products: within T of the exact value, within 2T of the reference. */
static void expect_sum(const char *what, long idx, float got, float ref, double exact, double abs_sum,
                       long n, int exact_data) {
    if (exact_data) { expect_bits(what, idx, got, ref); expect_close(what, idx, got, exact, 0.0); return; }
    double T = gamma_n(n + 1) * abs_sum + (double)(n + 1) * DENORM_STEP;
    expect_close(what, idx, got, exact, T);
    expect_close(what, idx, got, ref, 2 * T);
}

/* CASE keeps a pointer to its name until the next CASE starts: rotate buffers. */
static const char *case_name(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static const char *case_name(const char *fmt, ...) {
    static char pool[4][160];
    static int next;
    char *buf = pool[next++ % 4];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof pool[0], fmt, ap);
    va_end(ap);
    return buf;
}

static const char *table_names(char *buf, size_t size, const Kernels **t, int n) {
    buf[0] = '\0';
    for (int i = 0; i < n; i++) snprintf(buf + strlen(buf), size - strlen(buf), "%s%s", i ? " " : "", t[i]->name);
    return buf;
}

/* ---- dot, sum_squares, attn_scores ------------------------------------------ */
static void test_dot(const Kernels *K, enum Fill kind) {
    begin_checks();
    for (int s = 0; s < N_SIZES; s++) {
        const int n = SIZES[s];
        for (int mis = -1; mis < 3; mis++) {               /* tight end, then 3 misalignments */
            buf_misalign = mis < 0 ? -1 : 4 * mis + (mis == 2 ? 44 : 0);
            float *a = fbuf(n), *b = fbuf(n);
            fill(a, n, kind);
            fill(b, n, kind == F_INTS ? F_INTS : (kind == F_DENORMAL ? F_UNIFORM : kind));
            double ex = 0, abs_sum = 0, ex2 = 0;
            for (int i = 0; i < n; i++) {
                ex += (double)a[i] * b[i]; abs_sum += fabs((double)a[i] * b[i]); ex2 += (double)a[i] * a[i];
            }
            char what[64];
            snprintf(what, sizeof what, "dot n=%d", n);
            expect_sum(what, 0, K->dot(a, b, n), kernels_scalar.dot(a, b, n), ex, abs_sum, n, kind == F_INTS);
            snprintf(what, sizeof what, "sum_squares n=%d", n);
            expect_sum(what, 0, K->sum_squares(a, n), kernels_scalar.sum_squares(a, n), ex2, ex2, n, kind == F_INTS);
            if (kind == F_ZEROS) {
                expect_bits("dot of zeros is +0", n, K->dot(a, b, n), 0.0f);
            }
            bufs_free();
        }
    }
    buf_misalign = -1;
}

static const int HEAD_DIMS[] = { 1, 3, 7, 15, 16, 17, 31, 33, 64, 65, 128, 130 };
static const int N_KEYS[] = { 0, 1, 3, 4, 5, 17, 100 };
#define NELEM(a) ((int)(sizeof(a) / sizeof((a)[0])))

static void test_attn(const Kernels *K, enum Fill kind) {
    begin_checks();
    const int exact_data = kind == F_INTS;
    for (int d = 0; d < NELEM(HEAD_DIMS); d++)
        for (int kk = 0; kk < NELEM(N_KEYS); kk++) {
            const int hd = HEAD_DIMS[d], nk = N_KEYS[kk];
            buf_misalign = (d + kk) % 3 == 0 ? -1 : 4 * ((d + kk) % 5);
            float *q = fbuf(hd), *keys = fbuf((long)nk * hd), *vals = fbuf((long)nk * hd), *probs = fbuf(nk);
            float *s_got = fbuf(nk), *s_ref = fbuf(nk), *o_got = fbuf(hd), *o_ref = fbuf(hd);
            fill(q, hd, kind);
            fill(keys, (long)nk * hd, kind);
            fill(vals, (long)nk * hd, kind);
            fill(probs, nk, kind == F_INTS ? F_INTS : F_UNIFORM);
            const float scale = exact_data ? 0.125f : 1.0f / sqrtf((float)hd);
            for (int i = 0; i < hd; i++) o_got[i] = o_ref[i] = NAN;     /* must be overwritten */
            K->attn_scores(s_got, q, keys, nk, hd, scale);
            kernels_scalar.attn_scores(s_ref, q, keys, nk, hd, scale);
            K->attn_values(o_got, probs, vals, nk, hd);
            kernels_scalar.attn_values(o_ref, probs, vals, nk, hd);
            char what[80];
            snprintf(what, sizeof what, "attn_scores head_dim=%d n_keys=%d", hd, nk);
            for (int j = 0; j < nk; j++) {
                double ex = 0, abs_sum = 0;
                for (int c = 0; c < hd; c++) {
                    double p = (double)q[c] * keys[(long)j * hd + c];
                    ex += p; abs_sum += fabs(p);
                }
                /* scale * dot: one more rounding of the result on each side */
                double T_extra = exact_data ? 0 : 2 * U * fabs(scale * ex);
                if (exact_data) expect_bits(what, j, s_got[j], s_ref[j]);
                else {
                    double T = fabs(scale) * (gamma_n(hd + 1) * abs_sum + (hd + 1) * DENORM_STEP) + T_extra + DENORM_STEP;
                    expect_close(what, j, s_got[j], scale * ex, T);
                    expect_close(what, j, s_got[j], s_ref[j], 2 * T);
                }
            }
            snprintf(what, sizeof what, "attn_values head_dim=%d n_keys=%d", hd, nk);
            for (int c = 0; c < hd; c++) {
                double ex = 0, abs_sum = 0;
                for (int j = 0; j < nk; j++) {
                    double p = (double)probs[j] * vals[(long)j * hd + c];
                    ex += p; abs_sum += fabs(p);
                }
                expect_sum(what, c, o_got[c], o_ref[c], ex, abs_sum, nk, exact_data);
            }
            bufs_free();
        }
    buf_misalign = -1;
}

/* The bf16 KV cache's kernels: on rows rounded to bf16, the same numbers as
 * the fp32 kernels on the widened rows (widening is exact), within the same
 * summation bound; bit for bit on integers. */
static void test_attn_bf16(const Kernels *K, enum Fill kind) {
    begin_checks();
    const int exact_data = kind == F_INTS;
    for (int d = 0; d < NELEM(HEAD_DIMS); d++)
        for (int kk = 0; kk < NELEM(N_KEYS); kk++) {
            const int hd = HEAD_DIMS[d], nk = N_KEYS[kk] + (d % 2) * 16;   /* also a whole block of 16 keys */
            buf_misalign = (d + kk) % 3 == 0 ? -1 : 4 * ((d + kk) % 5);
            float *q = fbuf(hd), *wide_k = fbuf((long)nk * hd), *wide_v = fbuf((long)nk * hd), *probs = fbuf(nk);
            uint16_t *keys = hbuf((long)nk * hd), *vals = hbuf((long)nk * hd);
            float *s_got = fbuf(nk), *s_ref = fbuf(nk), *o_got = fbuf(hd), *o_ref = fbuf(hd);
            fill(q, hd, kind);
            fill(probs, nk, kind == F_INTS ? F_INTS : F_UNIFORM);
            for (long i = 0; i < (long)nk * hd; i++) {
                keys[i] = bf16_round(fill_one(kind));
                vals[i] = bf16_round(fill_one(kind));
                wide_k[i] = bf16_widen(keys[i]);
                wide_v[i] = bf16_widen(vals[i]);
            }
            const float scale = exact_data ? 0.125f : 1.0f / sqrtf((float)hd);
            for (int i = 0; i < hd; i++) o_got[i] = NAN;     /* must be overwritten */
            K->attn_scores_bf16(s_got, q, keys, nk, hd, scale);
            kernels_scalar.attn_scores(s_ref, q, wide_k, nk, hd, scale);
            K->attn_values_bf16(o_got, probs, vals, nk, hd);
            kernels_scalar.attn_values(o_ref, probs, wide_v, nk, hd);
            char what[80];
            snprintf(what, sizeof what, "attn_scores_bf16 head_dim=%d n_keys=%d", hd, nk);
            for (int j = 0; j < nk; j++) {
                double ex = 0, abs_sum = 0;
                for (int c = 0; c < hd; c++) {
                    double p = (double)q[c] * wide_k[(long)j * hd + c];
                    ex += p; abs_sum += fabs(p);
                }
                if (exact_data) { expect_bits(what, j, s_got[j], s_ref[j]); continue; }
                double T = fabs(scale) * (gamma_n(hd + 1) * abs_sum + (hd + 1) * DENORM_STEP) + 2 * U * fabs(scale * ex) + DENORM_STEP;
                expect_close(what, j, s_got[j], scale * ex, T);
                expect_close(what, j, s_got[j], s_ref[j], 2 * T);
            }
            snprintf(what, sizeof what, "attn_values_bf16 head_dim=%d n_keys=%d", hd, nk);
            for (int c = 0; c < hd; c++) {
                double ex = 0, abs_sum = 0;
                for (int j = 0; j < nk; j++) {
                    double p = (double)probs[j] * wide_v[(long)j * hd + c];
                    ex += p; abs_sum += fabs(p);
                }
                expect_sum(what, c, o_got[c], o_ref[c], ex, abs_sum, nk, exact_data);
            }
            bufs_free();
        }
    buf_misalign = -1;
}

/* exp_sum: exp(x - max) in place and their sum, as the reference within exp's
 * error (1 ULP + rounding) and the sum's. */
static void test_exp_sum(const Kernels *K) {
    begin_checks();
    for (int s = 0; s < N_SIZES; s++) {
        const int n = SIZES[s];
        float *x = fbuf(n), *ref = fbuf(n);
        float max = -INFINITY;
        for (int i = 0; i < n; i++) { x[i] = ref[i] = rng_range(-30.0f, 10.0f); if (x[i] > max) max = x[i]; }
        if (n > 2) max += 1.5f;                 /* online softmax: max may exceed the block's own */
        float got = K->exp_sum(x, n, max), want = kernels_scalar.exp_sum(ref, n, max);
        char what[64];
        snprintf(what, sizeof what, "exp_sum n=%d", n);
        for (int i = 0; i < n; i++) expect_close(what, i, x[i], ref[i], 4 * U * fabs((double)ref[i]) + DENORM_STEP);
        expect_close(what, -1, got, want, (2 * gamma_n(n + 1) + 4 * U) * fabs((double)want) + DENORM_STEP);
        if (n == 0) expect_bits("exp_sum of nothing", 0, got, 0.0f);
        bufs_free();
    }
}

/* attn_fused (kernels.h) over this table's kernels against the attention
 * computed in double (scores, softmax, values), and against the exact path
 * (attn_scores, softmax, attn_values) of the reference: within
 * 2e-5 * max |v| (the sums regrouped by block and each partial rescaled; the
 * bound kernels.h states). Causal tiles of n_q queries, block edges crossed,
 * keys and values in fp32, in bf16, and mixed (positions `shifted`: rotated
 * fp32 keys, bf16 values). `sharp` scales the scores up so that the maximum
 * moves between blocks and the rescaling matters. */
static void test_attn_fused(const Kernels *K) {
    static const int dims[] = { 1, 7, 16, 64, 65, 128 };
    static const int keys_n[] = { 1, 5, 127, 128, 129, 300, 513 };
    static const int queries_n[] = { 1, 3, 16 };
    begin_checks();
    for (int d = 0; d < NELEM(dims); d++)
        for (int kk = 0; kk < NELEM(keys_n); kk++)
            for (int qq = 0; qq < NELEM(queries_n); qq++)
                for (int kind = 0; kind < 4; kind++) {     /* 0 fp32, 1 bf16, 2 fp32 keys + bf16 values, 3 sharp fp32 */
                    const int hd = dims[d], nk = keys_n[kk], nq = queries_n[qq] < nk ? queries_n[qq] : nk;
                    const int kb = kind == 1, vb = kind == 1 || kind == 2;
                    const float scale = (kind == 3 ? 8.0f : 1.0f) / sqrtf((float)hd);
                    float *q = fbuf((long)nq * hd), *wk = fbuf((long)nk * hd), *wv = fbuf((long)nk * hd);
                    uint16_t *hk = hbuf((long)nk * hd), *hv = hbuf((long)nk * hd);
                    float *out = fbuf((long)nq * hd), *exact = fbuf(hd), *row = fbuf(nk);
                    float *scratch = fbuf(attn_fused_scratch_floats(nq, hd));
                    fill(q, (long)nq * hd, F_UNIFORM);
                    for (long i = 0; i < (long)nk * hd; i++) {
                        wk[i] = fill_one(F_UNIFORM) * (1.0f + (float)(i / hd % 7));   /* uneven scores */
                        wv[i] = fill_one(F_UNIFORM);
                        hk[i] = bf16_round(wk[i]);
                        hv[i] = bf16_round(wv[i]);
                        if (kb) wk[i] = bf16_widen(hk[i]);
                        if (vb) wv[i] = bf16_widen(hv[i]);
                    }
                    attn_fused(K, out, hd, q, hd, nq, kb ? (const void *)hk : wk, kb, vb ? (const void *)hv : wv, vb,
                               nk, hd, scale, scratch);
                    char what[96];
                    snprintf(what, sizeof what, "attn_fused head_dim=%d n_keys=%d n_q=%d kind=%d", hd, nk, nq, kind);
                    for (int i = 0; i < nq; i++) {
                        const int visible = nk - nq + 1 + i;
                        const float *qi = q + (long)i * hd;
                        double max_v = 0, m = -INFINITY, l = 0;
                        for (long x = 0; x < (long)visible * hd; x++) if (fabs(wv[x]) > max_v) max_v = fabs(wv[x]);
                        kernels_scalar.attn_scores(row, qi, wk, visible, hd, scale);
                        kernels_scalar.softmax(row, visible);
                        kernels_scalar.attn_values(exact, row, wv, visible, hd);
                        double *p = malloc((size_t)visible * sizeof(double));
                        for (int j = 0; j < visible; j++) {
                            double dot = 0;
                            for (int c = 0; c < hd; c++) dot += (double)qi[c] * wk[(long)j * hd + c];
                            p[j] = scale * dot;
                            if (p[j] > m) m = p[j];
                        }
                        for (int j = 0; j < visible; j++) { p[j] = exp(p[j] - m); l += p[j]; }
                        const double tol = 2e-5 * max_v + DENORM_STEP;
                        for (int c = 0; c < hd; c++) {
                            double want = 0;
                            for (int j = 0; j < visible; j++) want += p[j] / l * wv[(long)j * hd + c];
                            expect_close(what, (long)i * hd + c, out[(long)i * hd + c], want, tol);
                            expect_close(what, (long)i * hd + c, out[(long)i * hd + c], exact[c], tol);
                        }
                        free(p);
                    }
                    bufs_free();
                }
}

/* ---- matmul ------------------------------------------------------------------ */
typedef struct { int n_tok, n_rows, n_cols; } Shape;

static void run_matmul_shape(const Kernels *K, int bf16, Shape sh, enum Fill kind, int ld_pad) {
    const int T = sh.n_tok, R = sh.n_rows, C = sh.n_cols;
    const int ldx = C + ld_pad, ldy = R + 2 * ld_pad;
    const long nx = T ? (long)(T - 1) * ldx + C : 0, ny = T ? (long)(T - 1) * ldy + R : 0;
    float *X = fbuf(nx), *Yg = fbuf(ny), *Yr = fbuf(ny), *Wf = NULL;
    uint16_t *Wh = NULL;
    fill(X, nx, kind);
    if (bf16) {
        Wh = hbuf((long)R * C);
        for (long i = 0; i < (long)R * C; i++) Wh[i] = bf16_truncate(fill_one(kind));
    } else {
        Wf = fbuf((long)R * C);
        fill(Wf, (long)R * C, kind);
    }
    for (long i = 0; i < ny; i++) Yg[i] = Yr[i] = NAN;   /* old contents must never be read */
    if (bf16) {
        K->matmul_bf16(Yg, ldy, X, ldx, Wh, T, R, C);
        kernels_scalar.matmul_bf16(Yr, ldy, X, ldx, Wh, T, R, C);
    } else {
        K->matmul_f32(Yg, ldy, X, ldx, Wf, T, R, C);
        kernels_scalar.matmul_f32(Yr, ldy, X, ldx, Wf, T, R, C);
    }
    char what[96];
    snprintf(what, sizeof what, "matmul_%s %dx%dx%d ld+%d", bf16 ? "bf16" : "f32", T, R, C, ld_pad);
    for (int t = 0; t < T; t++) {
        const float *x = X + (long)t * ldx;
        for (int r = 0; r < R; r++) {
            double ex = 0, abs_sum = 0;
            for (int c = 0; c < C; c++) {
                double w = bf16 ? bf16_widen(Wh[(long)r * C + c]) : Wf[(long)r * C + c];
                ex += w * x[c]; abs_sum += fabs(w * x[c]);
            }
            long i = (long)t * ldy + r;
            expect_sum(what, i, Yg[i], Yr[i], ex, abs_sum, C, kind == F_INTS);
        }
        for (int r = R; t + 1 < T && r < ldy; r++)        /* the gap between rows of Y */
            expect_true(isnan(Yg[(long)t * ldy + r]), "wrote into the gap between rows of Y", (long)t * ldy + r);
    }
}

static const Shape MATMUL_PAIRS[] = {   /* (n_tok, n_rows), each combined with every n_cols in SIZES */
    { 1, 1, 0 }, { 1, 7, 0 }, { 1, 33, 0 }, { 2, 5, 0 }, { 3, 17, 0 }, { 7, 31, 0 }, { 13, 65, 0 }, { 25, 33, 0 },
    { 12, 6, 0 }, { 9, 4, 0 }, { 16, 6, 0 }, { 17, 3, 0 },   /* around the few-token ("skinny") /
                                       GEMM switch: 8 (avx2), 12 (neon), 16 (avx512) */
};
static const Shape MATMUL_BLOCKS[] = {  /* shapes that cross the cache-block boundaries of every ISA */
    { 1030, 33, 17 },     /* n_tok > NC (1020) */
    { 13, 300, 1000 },    /* n_rows > MC, n_cols > KC (384; 768 for bf16 pairs) */
    { 40, 70, 800 },
    { 0, 5, 5 }, { 5, 0, 5 },
};

static void test_matmul(const Kernels *K, int bf16, enum Fill kind) {
    begin_checks();
    int i = 0;
    /* magnitude edge cases need no big tiles: the first 5 (n_tok, n_rows) pairs */
    const int n_pairs = (kind == F_UNIFORM || kind == F_INTS) ? NELEM(MATMUL_PAIRS) : 5;
    for (int p = 0; p < n_pairs; p++)
        for (int s = 0; s < N_SIZES; s++, i++) {
            Shape sh = MATMUL_PAIRS[p];
            sh.n_cols = SIZES[s];
            buf_misalign = i % 3 == 0 ? -1 : 4 * (i % 7) + (bf16 ? 2 * (i % 2) : 0);
            run_matmul_shape(K, bf16, sh, kind, i % 4 == 1 ? 3 : 0);
            bufs_free();
        }
    if (kind == F_UNIFORM || kind == F_INTS)
        for (int b = 0; b < NELEM(MATMUL_BLOCKS); b++) {
            buf_misalign = b % 2 ? 6 : -1;
            run_matmul_shape(K, bf16, MATMUL_BLOCKS[b], kind, b);
            bufs_free();
        }
    buf_misalign = -1;
}

/* matmul_bf16_dpbf16: reference = scalar matmul_bf16 on X rounded to bf16. */
static void test_dpbf16(const Kernels *K, enum Fill kind) {
    begin_checks();
    const Shape shapes[] = { { 1, 1, 1 }, { 1, 7, 33 }, { 1, 33, 4097 }, { 2, 5, 63 }, { 3, 17, 1000 },
                             { 13, 65, 127 }, { 25, 33, 4097 }, { 40, 70, 800 }, { 1030, 33, 17 },
                             { 13, 300, 1000 }, { 4, 4, 0 }, { 7, 31, 2 },
                             { 2, 5, 16400 } };   /* decode rounds x in pieces of 16384 */
    double worst_rel = 0, sum_rel = 0, err2 = 0, norm2 = 0;
    long n_rel = 0;
    for (int si = 0; si < NELEM(shapes); si++) {
        const int T = shapes[si].n_tok, R = shapes[si].n_rows, C = shapes[si].n_cols, ldx = C + si % 3, ldy = R + si % 2;
        buf_misalign = si % 2 ? -1 : 2 * si;
        const long nx = (long)(T - 1) * ldx + C, ny = (long)(T - 1) * ldy + R;
        float *X = fbuf(nx), *Xr = fbuf(nx), *Yg = fbuf(ny), *Yr = fbuf(ny), *Yf = fbuf(ny);
        uint16_t *W = hbuf((long)R * C);
        fill(X, nx, kind);
        for (long i = 0; i < (long)R * C; i++) W[i] = bf16_truncate(fill_one(kind));
        for (long i = 0; i < nx; i++) Xr[i] = bf16_widen(bf16_round(X[i]));
        for (long i = 0; i < ny; i++) Yg[i] = NAN;
        K->matmul_bf16_dpbf16(Yg, ldy, X, ldx, W, T, R, C);
        kernels_scalar.matmul_bf16(Yr, ldy, Xr, ldx, W, T, R, C);
        kernels_scalar.matmul_bf16(Yf, ldy, X, ldx, W, T, R, C);
        char what[80];
        snprintf(what, sizeof what, "matmul_bf16_dpbf16 %dx%dx%d", T, R, C);
        for (int t = 0; t < T; t++)
            for (int r = 0; r < R; r++) {
                double ex = 0, abs_sum = 0, abs_sum_f = 0;
                for (int c = 0; c < C; c++) {
                    double w = bf16_widen(W[(long)r * C + c]);
                    ex += w * Xr[(long)t * ldx + c]; abs_sum += fabs(w * Xr[(long)t * ldx + c]);
                    abs_sum_f += fabs(w * X[(long)t * ldx + c]);
                }
                long i = (long)t * ldy + r;
                expect_sum(what, i, Yg[i], Yr[i], ex, abs_sum, C, kind == F_INTS);
                /* against the fp32-activation result: the documented 2^-8 Σ|w x| bound */
                double bound = 0x1p-8 * abs_sum_f + 2 * gamma_n(C + 1) * abs_sum_f;
                expect_close("dpbf16 vs matmul_bf16 (2^-8 bound)", i, Yg[i], Yf[i], bound);
                if (abs_sum_f > 0) {
                    double d = (double)Yg[i] - Yf[i], rel = fabs(d) / abs_sum_f;
                    if (rel > worst_rel) worst_rel = rel;
                    sum_rel += rel; n_rel++;
                    err2 += d * d; norm2 += (double)Yf[i] * Yf[i];
                }
            }
        bufs_free();
    }
    buf_misalign = -1;
    if (kind == F_UNIFORM && n_rel)
        printf("      info: dpbf16 vs matmul_bf16, uniform data: |dy|/sum|w*x| mean %.2e max %.2e"
               " (bound 2^-8 = %.2e); ||dY||/||Y|| = %.2e\n",
               sum_rel / (double)n_rel, worst_rel, 0x1p-8, sqrt(err2 / norm2));
}

/* ---- rmsnorm, rope, softmax, silu_mul ------------------------------------------ */
static void test_rmsnorm(const Kernels *K, enum Fill kind) {
    begin_checks();
    for (int s = 0; s < N_SIZES; s++) {
        const int n = SIZES[s];
        buf_misalign = s % 2 ? -1 : 4 * (s % 5) + 8;
        float *x = fbuf(n), *w = fbuf(n), *got = fbuf(n), *ref = fbuf(n), *alias = fbuf(n);
        fill(x, n, kind);
        fill(w, n, kind == F_INTS ? F_INTS : F_UNIFORM);
        const float eps = 1e-5f;
        K->rmsnorm(got, x, w, n, eps);
        kernels_scalar.rmsnorm(ref, x, w, n, eps);
        memcpy(alias, x, (size_t)n * sizeof(float));
        K->rmsnorm(alias, alias, w, n, eps);
        /* Exactly the reference formula applied to this table's own sum of squares. */
        const float inv = 1.0f / sqrtf(K->sum_squares(x, n) / (float)n + eps);
        double ss = 0;
        for (int i = 0; i < n; i++) ss += (double)x[i] * x[i];
        char what[64];
        snprintf(what, sizeof what, "rmsnorm n=%d", n);
        for (int i = 0; i < n; i++) {
            expect_bits(what, i, got[i], w[i] * (x[i] * inv));
            expect_bits("rmsnorm in place", i, alias[i], got[i]);
            if (kind == F_INTS) expect_bits(what, i, got[i], ref[i]);
            else {  /* sum of squares within γ(n+1) relative → 1/sqrt within half that, plus 4 roundings */
                double tol = (gamma_n(n + 1) + 8 * U) * fabs((double)ref[i]) + 4 * DENORM_STEP;
                expect_close(what, i, got[i], ref[i], tol);
            }
        }
        (void)ss;
        bufs_free();
    }
    buf_misalign = -1;
}

static const int ROPE_DIMS[] = { 2, 4, 6, 8, 14, 16, 18, 30, 32, 34, 64, 66, 128, 130, 7 };

static void test_rope(const Kernels *K, enum Fill kind) {
    begin_checks();
    for (int d = 0; d < NELEM(ROPE_DIMS); d++)
        for (int heads = 1; heads <= 3; heads += 2)
            for (int halves = 0; halves <= 1; halves++) {
                const int hd = ROPE_DIMS[d], half = hd / 2, n = heads * hd;
                buf_misalign = (d + halves) % 2 ? -1 : 4 * (d % 4) + 4;
                float *x = fbuf(n), *ref = fbuf(n), *cs = fbuf(half), *sn = fbuf(half);
                fill(x, n, kind);
                for (int i = 0; i < half; i++) {
                    float th = rng_range(0.0f, 6.2831853f);
                    cs[i] = kind == F_INTS ? (float)rng_int(-4, 4) * 0.25f : cosf(th);
                    sn[i] = kind == F_INTS ? (float)rng_int(-4, 4) * 0.25f : sinf(th);
                }
                memcpy(ref, x, (size_t)n * sizeof(float));
                K->rope(x, heads, hd, cs, sn, halves);
                kernels_scalar.rope(ref, heads, hd, cs, sn, halves);
                char what[80];
                snprintf(what, sizeof what, "rope head_dim=%d heads=%d %s", hd, heads, halves ? "halves" : "pairs");
                for (int i = 0; i < n; i++) expect_bits(what, i, x[i], ref[i]);
                bufs_free();
            }
    buf_misalign = -1;
}

static void test_softmax(const Kernels *K) {
    begin_checks();
    for (int s = 0; s < N_SIZES; s++)
        for (int variant = 0; variant < 4; variant++) {
            const int n = SIZES[s];
            buf_misalign = variant % 2 ? -1 : 4 * variant + 12;
            float *x = fbuf(n), *ref = fbuf(n), *orig = fbuf(n);
            for (int i = 0; i < n; i++) {
                switch (variant) {
                case 0: x[i] = rng_range(-10.0f, 10.0f); break;                 /* ordinary scores */
                case 1: x[i] = rng_range(-200.0f, 20.0f); break;                /* results down to denormal and 0 */
                case 2: x[i] = (rng_next() % 4) ? -INFINITY : 3.5f; break;      /* masked row: exact 1/count */
                default: x[i] = rng_range(-1.0f, 1.0f) * 1e30f; break;          /* huge spread */
                }
            }
            if (variant == 2 && n > 0) x[rng_int(0, n - 1)] = 3.5f;           /* at least one finite */
            memcpy(ref, x, (size_t)n * sizeof(float));
            memcpy(orig, x, (size_t)n * sizeof(float));
            K->softmax(x, n);
            kernels_scalar.softmax(ref, n);
            char what[64];
            snprintf(what, sizeof what, "softmax n=%d variant %d", n, variant);
            double total = 0;
            for (int i = 0; i < n; i++) {
                total += x[i];
                if (variant == 2) { expect_bits(what, i, x[i], ref[i]); continue; }
                /* exp: 1.0 + 0.5 ULP; sum of positive terms: γ(n) relative in each; one
                 * division and one multiply on each side: 2·γ(n+1) + 8u relative. */
                double tol = (2 * gamma_n(n + 1) + 8 * U) * fabs((double)ref[i]) + 4 * DENORM_STEP;
                expect_close(what, i, x[i], ref[i], tol);
            }
            if (n > 0) expect_close("softmax sums to 1", n, total, 1.0, gamma_n(n + 4) * 2 + 1e-6);
            if (n == 1) expect_bits("softmax of one element", 0, x[0], 1.0f);
            bufs_free();
        }
    buf_misalign = -1;
}

static void test_silu(const Kernels *K, enum Fill kind) {
    begin_checks();
    for (int s = 0; s < N_SIZES; s++) {
        const int n = SIZES[s];
        buf_misalign = s % 2 ? -1 : 4 * (s % 3) + 4;
        float *g = fbuf(n), *up = fbuf(n), *ref = fbuf(n);
        for (int i = 0; i < n; i++) {
            g[i] = kind == F_UNIFORM ? rng_range(-20.0f, 20.0f) : fill_one(kind);
            up[i] = kind == F_ZEROS ? fill_one(F_ZEROS) : rng_range(-2.0f, 2.0f);
        }
        if (kind == F_WIDE && n > 3) { g[0] = 88.5f; g[1] = -88.5f; g[2] = -100.0f; g[3] = 100.0f; }
        memcpy(ref, g, (size_t)n * sizeof(float));
        K->silu_mul(g, up, n);
        kernels_scalar.silu_mul(ref, up, n);
        char what[64];
        snprintf(what, sizeof what, "silu_mul n=%d %s", n, FILL_NAME[kind]);
        for (int i = 0; i < n; i++) {
            /* exp 1.5 ULP apart, 1 + e, division, product: 4 roundings a side */
            double tol = 10 * U * fabs((double)ref[i]) + 4 * DENORM_STEP;
            expect_close(what, i, g[i], ref[i], tol);
            if (ref[i] == 0.0f) expect_bits("silu_mul sign of zero", i, g[i], ref[i]);
        }
        bufs_free();
    }
    buf_misalign = -1;
}

/* ---- dispatch ------------------------------------------------------------------ */
static void test_dispatch(const Kernels **tables, int n_tables, int env_forced_scalar) {
    char err[256];
    CASE("dispatch: KVLAB_ISA=scalar is honoured by the first kernels_get()") {
        CHECK(env_forced_scalar, "kernels_get() did not return the scalar table with KVLAB_ISA=scalar");
    }
    CASE("dispatch: auto picks the detected table, scalar is first") {
        CHECK(kernels_select("auto", err, sizeof err) == 0, "auto rejected: %s", err);
        CHECK(!strcmp(kernels_get()->name, kernels_detected()), "auto gave %s, detected %s",
              kernels_get()->name, kernels_detected());
        CHECK(n_tables >= 1 && tables[0] == &kernels_scalar, "first available table is not scalar");
        CHECK(!strcmp(tables[n_tables - 1]->name, kernels_detected()), "detected is not the last available");
        CHECK(kernels_select(NULL, err, sizeof err) == 0, "NULL (auto) rejected");
        for (int i = 0; i < n_tables; i++) {
            CHECK(kernels_select(tables[i]->name, err, sizeof err) == 0, "%s rejected: %s", tables[i]->name, err);
            CHECK(kernels_get() == tables[i] || !strcmp(kernels_get()->name, tables[i]->name),
                  "select %s gave %s", tables[i]->name, kernels_get()->name);
        }
    }
    CASE("dispatch: unknown ISA rejected with a one-line reason") {
        err[0] = '\0';
        CHECK(kernels_select("sse9", err, sizeof err) == -1, "sse9 accepted");
        CHECK(strstr(err, "--isa sse9") && strstr(err, "unknown") && !strchr(err, '\n'), "message: '%s'", err);
        printf("      message: %s\n", err);
    }
    CASE("dispatch: an ISA of the other architecture is rejected with the reason") {
#if defined(__x86_64__)
        const char *other = "neon";
#else
        const char *other = "avx512";
#endif
        err[0] = '\0';
        CHECK(kernels_select(other, err, sizeof err) == -1, "%s accepted", other);
        CHECK(strstr(err, "--isa ") && strstr(err, other) && strstr(err, "available: scalar") && !strchr(err, '\n'),
              "message: '%s'", err);
        printf("      message: %s\n", err);
        char small[8];
        CHECK(kernels_select(other, small, sizeof small) == -1 && strlen(small) < sizeof small, "truncation");
    }
    kernels_select("auto", err, sizeof err);
}

/* ---- tables: the scalar reference with the ISA's overrides ------------------ */

typedef struct { const char *name; void (*fn)(void); } Entry;

/* The required entries of a table (all but name and the optional members). */
static int required_entries(const Kernels *k, Entry e[]) {
    int n = 0;
    e[n++] = (Entry){ "matmul_f32", (void (*)(void))k->matmul_f32 };
    e[n++] = (Entry){ "matmul_bf16", (void (*)(void))k->matmul_bf16 };
    e[n++] = (Entry){ "dot", (void (*)(void))k->dot };
    e[n++] = (Entry){ "sum_squares", (void (*)(void))k->sum_squares };
    e[n++] = (Entry){ "rmsnorm", (void (*)(void))k->rmsnorm };
    e[n++] = (Entry){ "rope", (void (*)(void))k->rope };
    e[n++] = (Entry){ "softmax", (void (*)(void))k->softmax };
    e[n++] = (Entry){ "silu_mul", (void (*)(void))k->silu_mul };
    e[n++] = (Entry){ "attn_scores", (void (*)(void))k->attn_scores };
    e[n++] = (Entry){ "attn_values", (void (*)(void))k->attn_values };
    e[n++] = (Entry){ "attn_scores_bf16", (void (*)(void))k->attn_scores_bf16 };
    e[n++] = (Entry){ "attn_values_bf16", (void (*)(void))k->attn_values_bf16 };
    e[n++] = (Entry){ "exp_sum", (void (*)(void))k->exp_sum };
    return n;
}
#define N_OPTIONAL 1     /* matmul_bf16_dpbf16 */
_Static_assert(sizeof(Kernels) == sizeof(const char *) + (13 + N_OPTIONAL) * sizeof(void (*)(void)),
               "Kernels gained a member: add it to required_entries (or N_OPTIONAL)");

/* A new ISA with a single kernel of its own: dot summed in double. Everything
 * else must come from the reference, and the whole battery must pass on it. */
static long dot_f64_calls;
static float dot_f64(const float *a, const float *b, int n) {
    dot_f64_calls++;
    double sum = 0.0;
    for (int i = 0; i < n; i++) sum += (double)a[i] * (double)b[i];
    return (float)sum;
}
static void init_dot_only(Kernels *k) {
    k->name = "scalar+dot_f64";
    k->dot = dot_f64;
}

static void test_tables(const Kernels **tables, int n_tables, const Kernels *dot_only) {
    Entry e[16], ref[16];
    const int n = required_entries(&kernels_scalar, ref);
    CASE("tables: every available table fills every required entry") {
        for (int i = 0; i < n_tables; i++) {
            CHECK(tables[i]->name && *tables[i]->name, "table %d has no name", i);
            required_entries(tables[i], e);
            for (int j = 0; j < n; j++) CHECK(e[j].fn, "%s: %s is NULL", tables[i]->name, e[j].name);
        }
        CHECK(!kernels_scalar.matmul_bf16_dpbf16, "the reference has no bf16 dot kernel");
    }
    CASE("tables: an ISA that overrides nothing is the scalar table") {
        Kernels k;
        memset(&k, 0xA5, sizeof k);
        kernels_build(&k, NULL);
        required_entries(&k, e);
        CHECK(k.name == kernels_scalar.name, "name %s", k.name);
        for (int j = 0; j < n; j++) CHECK(e[j].fn == ref[j].fn, "%s is not the reference's", e[j].name);
        CHECK(k.matmul_bf16_dpbf16 == NULL, "matmul_bf16_dpbf16 set");
    }
    CASE("tables: one override replaces that entry only") {
        required_entries(dot_only, e);
        CHECK(!strcmp(dot_only->name, "scalar+dot_f64"), "name %s", dot_only->name);
        for (int j = 0; j < n; j++) {
            const int is_dot = !strcmp(e[j].name, "dot");
            CHECK(e[j].fn, "%s is NULL", e[j].name);
            CHECK(is_dot ? e[j].fn == (void (*)(void))dot_f64 : e[j].fn == ref[j].fn,
                  "%s: expected %s", e[j].name, is_dot ? "the override" : "the reference");
        }
        CHECK(dot_only->matmul_bf16_dpbf16 == NULL, "matmul_bf16_dpbf16 set");
    }
    if (n_tables > 1) {    /* an ISA table overrides, so it differs from the reference somewhere */
        CASE("tables: the ISA tables are built on the reference, with their own kernels") {
            for (int i = 1; i < n_tables; i++) {
                required_entries(tables[i], e);
                CHECK(e[0].fn != ref[0].fn && e[1].fn != ref[1].fn, "%s: matmul is the reference's", tables[i]->name);
            }
        }
    }
}

int main(void) {
    /* KVLAB_ISA is read on the first call into dispatch: force scalar, check, undo. */
    setenv("KVLAB_ISA", "scalar", 1);
    const int env_forced_scalar = kernels_get() == &kernels_scalar;
    unsetenv("KVLAB_ISA");

    const Kernels *tables[9];
    const int n_tables = kernels_available(tables, 8);
    char names[128];
    printf("detected: %s; testing: %s\n", kernels_detected(), table_names(names, sizeof names, tables, n_tables));
    test_dispatch(tables, n_tables, env_forced_scalar);

    Kernels dot_only;
    kernels_build(&dot_only, init_dot_only);
    test_tables(tables, n_tables, &dot_only);
    tables[n_tables] = &dot_only;     /* and the battery below runs on it too */

    for (int ti = 0; ti <= n_tables; ti++) {
        const Kernels *K = tables[ti];
        for (int f = 0; f < N_FILLS; f++) {
            rng_seed(1000 * ti + f);
            CASE(case_name("%s: dot, sum_squares (%s)", K->name, FILL_NAME[f])) test_dot(K, f);
        }
        const enum Fill attn_fills[] = { F_UNIFORM, F_INTS, F_TINY, F_WIDE, F_ZEROS };
        for (int f = 0; f < NELEM(attn_fills); f++) {
            rng_seed(2000 * ti + f);
            CASE(case_name("%s: attn_scores, attn_values (%s)", K->name, FILL_NAME[attn_fills[f]])) test_attn(K, attn_fills[f]);
            CASE(case_name("%s: attn_scores_bf16, attn_values_bf16 (%s)", K->name, FILL_NAME[attn_fills[f]]))
                test_attn_bf16(K, attn_fills[f]);
        }
        rng_seed(2500 * ti);
        CASE(case_name("%s: exp_sum", K->name)) test_exp_sum(K);
        CASE(case_name("%s: attn_fused against double and the exact path (fp32, bf16, mixed, sharp)", K->name))
            test_attn_fused(K);
        const enum Fill mm_fills[] = { F_UNIFORM, F_INTS, F_TINY, F_HUGE, F_DENORMAL, F_ZEROS, F_WIDE };
        for (int bf = 0; bf <= 1; bf++)
            for (int f = 0; f < NELEM(mm_fills); f++) {
                rng_seed(3000 * ti + 10 * bf + f);
                CASE(case_name("%s: matmul_%s (%s)", K->name, bf ? "bf16" : "f32", FILL_NAME[mm_fills[f]])) test_matmul(K, bf, mm_fills[f]);
            }
        if (K->matmul_bf16_dpbf16) {
            rng_seed(4000 * ti);
            CASE(case_name("%s: matmul_bf16_dpbf16 (uniform)", K->name)) test_dpbf16(K, F_UNIFORM);
            CASE(case_name("%s: matmul_bf16_dpbf16 (integers: exact)", K->name)) test_dpbf16(K, F_INTS);
        }
        const enum Fill ew_fills[] = { F_UNIFORM, F_INTS, F_TINY, F_HUGE, F_DENORMAL, F_ZEROS, F_WIDE };
        for (int f = 0; f < NELEM(ew_fills); f++) {
            rng_seed(5000 * ti + f);
            CASE(case_name("%s: rmsnorm (%s)", K->name, FILL_NAME[ew_fills[f]])) test_rmsnorm(K, ew_fills[f]);
            CASE(case_name("%s: rope (%s)", K->name, FILL_NAME[ew_fills[f]])) test_rope(K, ew_fills[f]);
        }
        rng_seed(6000 * ti);
        CASE(case_name("%s: softmax (scores, underflow, -inf masks, huge)", K->name)) test_softmax(K);
        const enum Fill silu_fills[] = { F_UNIFORM, F_TINY, F_HUGE, F_DENORMAL, F_ZEROS, F_WIDE };
        for (int f = 0; f < NELEM(silu_fills); f++) {
            rng_seed(7000 * ti + f);
            CASE(case_name("%s: silu_mul (%s)", K->name, FILL_NAME[silu_fills[f]])) test_silu(K, silu_fills[f]);
        }
    }
    CASE("tables: the battery called the override") CHECK(dot_f64_calls > 0, "dot_f64 never called");
    return check_summary();
}
