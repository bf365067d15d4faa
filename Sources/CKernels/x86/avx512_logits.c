// AVX-512 bodies of portable/logits.c: argmax over a vocabulary's logits (one 1 MiB pass for Gemma 3's 262,144,
// which the scalar loop took ~100 µs of a ~9 ms token for, the other thread idle meanwhile) and GeGLU with the
// GELU table looked up by gathers (the scalar loop converted each gate to f16 by a function call and waited on
// each table miss in turn).
#include "kernels_internal.h"
#if defined(__x86_64__)
#include <immintrin.h>
#define AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,f16c,fma")))

// Four vectors of 16 running maxima and their indices: each (vector, lane) keeps the first index of its residue
// class that reached its maximum (strictly greater replaces; NaN never compares greater), so the smallest index
// among the classes holding the overall maximum is the first index of it, as the scalar loop returns.
AVX512 int64_t pl_avx512_argmax(const float *x, int64_t n) {
    if (n >= ((int64_t)1 << 31) - 64) return pl_portable_argmax(x, n);   // indices are int32 lanes
    const __m512 neg_inf = _mm512_set1_ps(-__builtin_inff());
    __m512 best[4] = {neg_inf, neg_inf, neg_inf, neg_inf};
    __m512i where[4], idx[4];
    const __m512i step = _mm512_set1_epi32(64);
    PL_UNROLL
    for (int a = 0; a < 4; a++) {
        where[a] = _mm512_setzero_si512();
        idx[a] = _mm512_add_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                                  _mm512_set1_epi32(16 * a));
    }
    int64_t i = 0;
    for (; i + 64 <= n; i += 64) {
        PL_UNROLL
        for (int a = 0; a < 4; a++) {
            __m512 v = _mm512_loadu_ps(x + i + 16 * a);
            __mmask16 gt = _mm512_cmp_ps_mask(v, best[a], _CMP_GT_OQ);
            best[a] = _mm512_mask_mov_ps(best[a], gt, v);
            where[a] = _mm512_mask_mov_epi32(where[a], gt, idx[a]);
            idx[a] = _mm512_add_epi32(idx[a], step);
        }
    }
    // The tail, 16 at a time into vector 0 (lanes past the end read as −∞ and never win).
    __m512i tail_idx = _mm512_add_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                                        _mm512_set1_epi32((int)i));
    for (; i < n; i += 16) {
        int64_t left = n - i;
        __mmask16 m = left >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << left) - 1);
        __m512 v = _mm512_mask_loadu_ps(neg_inf, m, x + i);
        __mmask16 gt = _mm512_cmp_ps_mask(v, best[0], _CMP_GT_OQ);
        best[0] = _mm512_mask_mov_ps(best[0], gt, v);
        where[0] = _mm512_mask_mov_epi32(where[0], gt, tail_idx);
        tail_idx = _mm512_add_epi32(tail_idx, _mm512_set1_epi32(16));
    }
    __m512 top = _mm512_max_ps(_mm512_max_ps(best[0], best[1]), _mm512_max_ps(best[2], best[3]));
    __m512 m = _mm512_set1_ps(_mm512_reduce_max_ps(top));
    // Lanes still at −∞ hold index 0, so when nothing beat −∞ the answer is 0, as in the scalar loop.
    int32_t first = INT32_MAX;
    PL_UNROLL
    for (int a = 0; a < 4; a++) {
        __mmask16 eq = _mm512_cmp_ps_mask(best[a], m, _CMP_EQ_OQ);
        if (eq) {
            int32_t f = _mm512_mask_reduce_min_epi32(eq, where[a]);
            if (f < first) first = f;
        }
    }
    return first == INT32_MAX ? 0 : first;
}

AVX512 static inline __attribute__((always_inline)) void geglu16(float *g, const float *u, const float *table, __mmask16 m) {
    const __m512 x = _mm512_maskz_loadu_ps(m, g), uu = _mm512_maskz_loadu_ps(m, u);
    // The table's index is x's f16 bit pattern (round to nearest even, as pl_f32_to_f16 and ggml's F16C do).
    __m512i id = _mm512_cvtepu16_epi32(_mm512_cvtps_ph(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
    __m512 t = _mm512_mask_i32gather_ps(_mm512_setzero_ps(), m, id, table, 4);
    __mmask16 high = _mm512_cmp_ps_mask(x, _mm512_set1_ps(10.0f), _CMP_GE_OQ);
    __mmask16 low = _mm512_cmp_ps_mask(x, _mm512_set1_ps(-10.0f), _CMP_LE_OQ);
    __m512 r = _mm512_mul_ps(_mm512_mask_mov_ps(t, high, x), uu);
    r = _mm512_mask_mov_ps(r, low, _mm512_setzero_ps());
    _mm512_mask_storeu_ps(g, m, r);
}

AVX512 void pl_avx512_geglu_table(float *g, const float *u, const float *table, int64_t n) {
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) geglu16(g + i, u + i, table, (__mmask16)0xffff);
    if (i < n) geglu16(g + i, u + i, table, (__mmask16)((1u << (n - i)) - 1));
}
#endif
