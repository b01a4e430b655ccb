/* avx512_common.h — small AVX-512 helpers shared by avx512.c and avx512_bf16.c
 * (include only from files compiled with the AVX-512 flags). */
#ifndef KVLAB_AVX512_COMMON_H
#define KVLAB_AVX512_COMMON_H

#include <immintrin.h>
#include <stdint.h>

#define VL 16

/* Decode (one token): the largest x, in bytes, for which the mat-vec loops of
 * avx512.c and avx512_bf16.c read their rows one after the other; beyond it x
 * cannot stay in a 32 KB L1 beside the weight stream, and the rows are walked
 * side by side (simd/NOTES.md, "avx512 decode: one stream per row, side by
 * side when x is wide"). */
#define GEMV_X_L1_BYTES 16384

static inline __mmask16 tail_mask(int n) {          /* lanes [0, n), n in [0, 16] */
    return (__mmask16)((1u << n) - 1u);
}

/* 16 bf16 → 16 fp32, exact: the bf16 bits become the high half of each float. */
static inline __m512 widen_bf16(__m256i h) {
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}
static inline __m512 load_bf16(const uint16_t *p) {
    return widen_bf16(_mm256_loadu_si256((const __m256i *)p));
}
static inline __m512 maskz_load_bf16(__mmask16 m, const uint16_t *p) {
    return widen_bf16(_mm256_maskz_loadu_epi16(m, p));
}

/* bf16 rows cost more instructions per byte than fp32 ones, which leaves fewer
 * loads in flight; a software prefetch 2 KB ahead in each row restores the
 * streaming rate (simd/NOTES.md, "bf16 rows: software prefetch 2 KB ahead").
 * The address may lie past the end of W: prefetches never fault, and going
 * through uintptr_t keeps the pointer arithmetic defined. */
#define PREFETCH_BYTES 2048
/* (always_inline: GCC 12 deems a small function holding only a prefetch "const"
 * and deletes its calls before inlining them) */
static inline __attribute__((always_inline)) void prefetch_ahead(const uint16_t *p) {
    _mm_prefetch((const char *)((uintptr_t)p + PREFETCH_BYTES), _MM_HINT_T0);
}

static inline __attribute__((always_inline)) void prefetch_bytes(const void *base, long bytes) {
    _mm_prefetch((const char *)((uintptr_t)base + (uintptr_t)bytes), _MM_HINT_T0);
}

/* Transpose a 16 × 16 block of 32-bit elements held in 16 registers, in 4
 * rounds of 16 shuffles: interleave 32-bit elements of row pairs, then 64-bit
 * pairs, then 128-bit lanes twice. Only moves bits, so it serves fp32 values
 * and pairs of bf16 alike. */
static inline __attribute__((always_inline)) void transpose16(__m512 r[16]) {
    __m512 t[16];
#pragma GCC unroll 8
    for (int i = 0; i < 8; i++) {        /* interleave 32-bit elements of row pairs */
        t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
#pragma GCC unroll 4
    for (int q = 0; q < 4; q++) {        /* then 64-bit pairs */
        const int b = 4 * q;
        __m512d a0 = _mm512_castps_pd(t[b]), a1 = _mm512_castps_pd(t[b + 1]);
        __m512d a2 = _mm512_castps_pd(t[b + 2]), a3 = _mm512_castps_pd(t[b + 3]);
        r[b] = _mm512_castpd_ps(_mm512_unpacklo_pd(a0, a2));
        r[b + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a0, a2));
        r[b + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(a1, a3));
        r[b + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(a1, a3));
    }
#pragma GCC unroll 2
    for (int h = 0; h < 2; h++)          /* then 128-bit lanes, twice */
#pragma GCC unroll 4
        for (int j = 0; j < 4; j++) {
            const int b = 8 * h;
            t[b + j] = _mm512_shuffle_f32x4(r[b + j], r[b + 4 + j], 0x88);
            t[b + 4 + j] = _mm512_shuffle_f32x4(r[b + j], r[b + 4 + j], 0xdd);
        }
#pragma GCC unroll 8
    for (int j = 0; j < 8; j++) {
        r[j] = _mm512_shuffle_f32x4(t[j], t[8 + j], 0x88);
        r[8 + j] = _mm512_shuffle_f32x4(t[j], t[8 + j], 0xdd);
    }
}

#endif
