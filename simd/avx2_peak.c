/* avx2_peak.c — peak FMA loop with 256-bit vectors (8 floats). */
#include "peak.h"

#if defined(__x86_64__)
#include <immintrin.h>

float peak_fma_avx2(long iters) {
    __m256 acc[PEAK_ACC_AVX2];
    for (int k = 0; k < PEAK_ACC_AVX2; k++) acc[k] = _mm256_set1_ps((float)k * 0.001f);
    const __m256 a = _mm256_set1_ps(0.999999f), b = _mm256_set1_ps(1e-7f);
    for (long i = 0; i < iters; i++)
        /* unrolled so the accumulators live in registers (GCC otherwise keeps 24
         * of them on the stack and the store-to-load latency halves the rate) */
#pragma GCC unroll 32
        for (int k = 0; k < PEAK_ACC_AVX2; k++) acc[k] = _mm256_fmadd_ps(acc[k], a, b);
    __m256 sum = acc[0];
    for (int k = 1; k < PEAK_ACC_AVX2; k++) sum = _mm256_add_ps(sum, acc[k]);
    float out[8];
    _mm256_storeu_ps(out, sum);
    return out[0] + out[1] + out[2] + out[3] + out[4] + out[5] + out[6] + out[7];
}
#endif
