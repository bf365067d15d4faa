// A 16×16 transpose of floats in AVX-512 registers, shared by the F16 attention tile (avx512_math.c) and the BF16 one
// (avx512_attention_bf16.c).
#ifndef POCKETLM_AVX512_TRANSPOSE_H
#define POCKETLM_AVX512_TRANSPOSE_H
#include <immintrin.h>
#include "kernels_internal.h"

// 16×16 transpose of floats: r[j] lane e becomes r[e] lane j.
__attribute__((target("avx512f,avx512dq"))) static inline __attribute__((always_inline)) void transpose16(__m512 r[16]) {
    __m512 t[16], u[16];
    PL_UNROLL
    for (int j = 0; j < 8; j++) {
        t[2 * j] = _mm512_unpacklo_ps(r[2 * j], r[2 * j + 1]);
        t[2 * j + 1] = _mm512_unpackhi_ps(r[2 * j], r[2 * j + 1]);
    }
    PL_UNROLL
    for (int j = 0; j < 4; j++) {
        __m512d a0 = _mm512_castps_pd(t[4 * j]), a1 = _mm512_castps_pd(t[4 * j + 1]);
        __m512d a2 = _mm512_castps_pd(t[4 * j + 2]), a3 = _mm512_castps_pd(t[4 * j + 3]);
        u[4 * j] = _mm512_castpd_ps(_mm512_unpacklo_pd(a0, a2));
        u[4 * j + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a0, a2));
        u[4 * j + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(a1, a3));
        u[4 * j + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(a1, a3));
    }
    // u[4j + m], 128-bit lane L: element 4L + m of rows 4j..4j+3.
    PL_UNROLL
    for (int m = 0; m < 4; m++) {
        __m512 a = _mm512_shuffle_f32x4(u[m], u[4 + m], 0x88), b = _mm512_shuffle_f32x4(u[m], u[4 + m], 0xDD);
        __m512 c = _mm512_shuffle_f32x4(u[8 + m], u[12 + m], 0x88), d = _mm512_shuffle_f32x4(u[8 + m], u[12 + m], 0xDD);
        r[m] = _mm512_shuffle_f32x4(a, c, 0x88);
        r[8 + m] = _mm512_shuffle_f32x4(a, c, 0xDD);
        r[4 + m] = _mm512_shuffle_f32x4(b, d, 0x88);
        r[12 + m] = _mm512_shuffle_f32x4(b, d, 0xDD);
    }
}

#endif
