/* avx512_peak.c — peak FMA loop with 512-bit vectors (16 floats). */
#include "peak.h"

#if defined(__x86_64__)
#include <immintrin.h>

float peak_fma_avx512(long iters) {
    __m512 acc[PEAK_ACC_AVX512];
    for (int k = 0; k < PEAK_ACC_AVX512; k++) acc[k] = _mm512_set1_ps((float)k * 0.001f);
    const __m512 a = _mm512_set1_ps(0.999999f), b = _mm512_set1_ps(1e-7f);
    for (long i = 0; i < iters; i++)
        /* unrolled so the accumulators live in registers (GCC otherwise keeps 24
         * of them on the stack and the store-to-load latency halves the rate) */
#pragma GCC unroll 32
        for (int k = 0; k < PEAK_ACC_AVX512; k++) acc[k] = _mm512_fmadd_ps(acc[k], a, b);
    __m512 sum = acc[0];
    for (int k = 1; k < PEAK_ACC_AVX512; k++) sum = _mm512_add_ps(sum, acc[k]);
    return _mm512_reduce_add_ps(sum);
}
#endif
