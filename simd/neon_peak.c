/* neon_peak.c — peak FMA loop with 128-bit NEON vectors (4 floats). */
#include "peak.h"

#if defined(__aarch64__)
#include <arm_neon.h>

float peak_fma_neon(long iters) {
    float32x4_t acc[PEAK_ACC_NEON];
    for (int k = 0; k < PEAK_ACC_NEON; k++) acc[k] = vdupq_n_f32((float)k * 0.001f);
    const float32x4_t a = vdupq_n_f32(0.999999f), b = vdupq_n_f32(1e-7f);
    for (long i = 0; i < iters; i++)
        /* unrolled so the accumulators live in registers (GCC otherwise keeps 24
         * of them on the stack and the store-to-load latency halves the rate) */
#pragma GCC unroll 32
        for (int k = 0; k < PEAK_ACC_NEON; k++) acc[k] = vfmaq_f32(b, acc[k], a);
    float32x4_t sum = acc[0];
    for (int k = 1; k < PEAK_ACC_NEON; k++) sum = vaddq_f32(sum, acc[k]);
    return vaddvq_f32(sum);
}
#endif
