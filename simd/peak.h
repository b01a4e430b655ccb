/* peak.h — loops that measure the machine's limits for `kvlab bench --machine`:
 * the peak fused multiply-add rate of one core, per ISA. Each loop runs `iters`
 * rounds of independent FMAs on enough accumulators to hide the FMA latency,
 * and returns a value derived from them (so the compiler cannot drop the work). */
#ifndef KVLAB_PEAK_H
#define KVLAB_PEAK_H

/* Floating-point operations done by one call (an FMA counts as 2). */
double peak_fma_flops(const char *isa, long iters);
/* Run the loop of the given ISA ("scalar", "avx2", "avx512", "neon"); returns a checksum. */
float peak_fma_run(const char *isa, long iters);

/* per-ISA loops (only those compiled for this architecture exist) */
float peak_fma_scalar(long iters);
float peak_fma_avx2(long iters);
float peak_fma_avx512(long iters);
float peak_fma_neon(long iters);

/* Independent accumulators per loop: at least FMA latency x FMA pipes, and as
 * many as the registers allow (measured on Zen 5: 12 zmm reach only ~1.7 FMA per
 * cycle, 24 reach the 2-per-cycle peak). AVX2 has 16 ymm registers, hence 12. */
#define PEAK_ACC_SCALAR 12
#define PEAK_ACC_AVX2   12
#define PEAK_ACC_AVX512 24
#define PEAK_ACC_NEON   24

#endif
