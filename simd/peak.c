/* peak.c — the portable peak loop and the choice between ISAs. */
#include "peak.h"

#include <string.h>

float peak_fma_scalar(long iters) {
    float acc[PEAK_ACC_SCALAR];
    for (int k = 0; k < PEAK_ACC_SCALAR; k++) acc[k] = (float)k * 0.001f;
    const float a = 0.999999f, b = 1e-7f;
    for (long i = 0; i < iters; i++)
        /* unrolled so the accumulators live in registers (GCC otherwise keeps 24
         * of them on the stack and the store-to-load latency halves the rate) */
#pragma GCC unroll 32
        for (int k = 0; k < PEAK_ACC_SCALAR; k++) acc[k] = acc[k] * a + b;
    float sum = 0.0f;
    for (int k = 0; k < PEAK_ACC_SCALAR; k++) sum += acc[k];
    return sum;
}

/* FMAs per loop round: vector lanes x accumulators. */
static int fmas_per_round(const char *isa) {
    if (!strcmp(isa, "avx512")) return 16 * PEAK_ACC_AVX512;
    if (!strcmp(isa, "avx2")) return 8 * PEAK_ACC_AVX2;
    if (!strcmp(isa, "neon")) return 4 * PEAK_ACC_NEON;
    return PEAK_ACC_SCALAR;
}

double peak_fma_flops(const char *isa, long iters) {
    return 2.0 * fmas_per_round(isa) * (double)iters;
}

float peak_fma_run(const char *isa, long iters) {
#if defined(__x86_64__)
    if (!strcmp(isa, "avx512")) return peak_fma_avx512(iters);
    if (!strcmp(isa, "avx2")) return peak_fma_avx2(iters);
#elif defined(__aarch64__)
    if (!strcmp(isa, "neon")) return peak_fma_neon(iters);
#endif
    return peak_fma_scalar(iters);
}
