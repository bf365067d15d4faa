// AVX2 bodies of the float-input kernels: F32/F16/BF16 dot products and matvec (8 lanes, two accumulators; F32 over
// four row streams as the AVX-512 body), dequantization of F16. Sums are reassociated against the portable body
// (tests bound the difference); quantized weights against float inputs take the portable body.
#include "kernels_internal.h"
#if defined(__x86_64__)
#include "x86/avx2_common.h"
#include <immintrin.h>
#define AVX2 __attribute__((target("avx2,fma,f16c")))

AVX2 static inline __m256 load8(int type, const uint8_t *p, const float *w, int64_t i) {
    switch (type) {
    case PL_TYPE_F16: return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(p + 2 * i)));
    case PL_TYPE_BF16:
        return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(p + 2 * i))), 16));
    default: return _mm256_loadu_ps(w + i);
    }
}

AVX2 static inline float scalar_at(int type, const uint8_t *p, const float *w, int64_t i) {
    switch (type) {
    case PL_TYPE_F16: return _cvtsh_ss(load_u16(p + 2 * i));
    case PL_TYPE_BF16: return bf16_to_f32(load_u16(p + 2 * i));
    default: return w[i];
    }
}

// S rows at once (rows w[0..S-1]), each with two 8-lane accumulators over 16 elements per step.
AVX2 static inline __attribute__((always_inline)) void dot_rows(int type, const int S, const uint8_t *const *rows,
                                                               const float *x, int64_t n, float *out) {
    __m256 a[4], b[4];
    PL_UNROLL
    for (int j = 0; j < S; j++) { a[j] = _mm256_setzero_ps(); b[j] = _mm256_setzero_ps(); }
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m256 x0 = _mm256_loadu_ps(x + i), x1 = _mm256_loadu_ps(x + i + 8);
        PL_UNROLL
        for (int j = 0; j < S; j++) {
            const float *w = (const float *)rows[j];
            a[j] = _mm256_fmadd_ps(load8(type, rows[j], w, i), x0, a[j]);
            b[j] = _mm256_fmadd_ps(load8(type, rows[j], w, i + 8), x1, b[j]);
        }
    }
    PL_UNROLL
    for (int j = 0; j < S; j++) {
        float tail = 0.0f;
        for (int64_t k = i; k < n; k++) tail += scalar_at(type, rows[j], (const float *)rows[j], k) * x[k];
        out[j] = pl_avx2_hsum8(_mm256_add_ps(a[j], b[j])) + tail;
    }
}

AVX2 void pl_avx2_matvec(int type, const uint8_t *base, size_t row_bytes, const float *x, float *y, int64_t n,
                         int64_t r0, int64_t r1) {
    if (type != PL_TYPE_F32 && type != PL_TYPE_F16 && type != PL_TYPE_BF16) {
        pl_portable_matvec(type, base, row_bytes, x, y, n, r0, r1);
        return;
    }
    // Four rows far apart (the quarters of the range) in lockstep: four weight streams keep more DRAM requests in
    // flight than one.
    int64_t part = (r1 - r0) / 4;
    float out[4];
    for (int64_t i = 0; i < part; i++) {
        const uint8_t *rows[4];
        PL_UNROLL
        for (int j = 0; j < 4; j++) rows[j] = base + (size_t)(r0 + j * part + i) * row_bytes;
        switch (type) {
        case PL_TYPE_F16: dot_rows(PL_TYPE_F16, 4, rows, x, n, out); break;
        case PL_TYPE_BF16: dot_rows(PL_TYPE_BF16, 4, rows, x, n, out); break;
        default: dot_rows(PL_TYPE_F32, 4, rows, x, n, out); break;
        }
        PL_UNROLL
        for (int j = 0; j < 4; j++) y[j * part + i] = out[j];
    }
    for (int64_t r = r0 + 4 * part; r < r1; r++) {
        const uint8_t *row = base + (size_t)r * row_bytes;
        dot_rows(type, 1, &row, x, n, out);
        y[r - r0] = out[0];
    }
}

AVX2 void pl_avx2_dequant(int type, const void *src, float *dst, int64_t n) {
    if (type != PL_TYPE_F16) { pl_portable_dequant(type, src, dst, n); return; }
    const uint8_t *p = (const uint8_t *)src;
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(p + 2 * i))));
    for (; i < n; i++) dst[i] = _cvtsh_ss(load_u16(p + 2 * i));
}
#endif
