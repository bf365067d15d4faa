// AVX-512 bodies of the activation quantizers (Q8_0, Q8_1: bit-identical to the portable ones) and the AVX-512 VNNI
// row kernels of Q8_0/Q4_0/Q4_1 (ggml's AVX2 lane arithmetic: 8 int32 lanes per block, fma'd with d·d_x).
#include "kernels_internal.h"
#if defined(__x86_64__)
#include <immintrin.h>
#define AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,f16c,fma")))

AVX512 static inline float f16_hw(const uint8_t *p) { return _cvtsh_ss(load_u16(p)); }

// The same quantization, 32 lanes at a time (identical results: max, 127/amax, round half to even).
AVX512 void pl_avx512_quantize_q8(const float *x, uint8_t *out, int64_t n, int with_sum) {
    const int bytes = with_sum ? PL_Q8_1_BLOCK_BYTES : PL_Q8_0_BLOCK_BYTES;
    const int qoff = with_sum ? 4 : 2;
    for (int64_t b = 0; b < n / 32; b++, out += bytes) {
        __m512 v0 = _mm512_loadu_ps(x + b * 32), v1 = _mm512_loadu_ps(x + b * 32 + 16);
        float amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(v0), _mm512_abs_ps(v1)));
        float d = amax / 127.0f;
        float id = amax != 0.0f ? 127.0f / amax : 0.0f;
        __m512 mul = _mm512_set1_ps(id);
        __m512i q0 = _mm512_cvtps_epi32(_mm512_roundscale_ps(_mm512_mul_ps(v0, mul), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
        __m512i q1 = _mm512_cvtps_epi32(_mm512_roundscale_ps(_mm512_mul_ps(v1, mul), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
        _mm_storeu_si128((__m128i *)(out + qoff), _mm512_cvtsepi32_epi8(q0));
        _mm_storeu_si128((__m128i *)(out + qoff + 16), _mm512_cvtsepi32_epi8(q1));
        store_u16(out, pl_f32_to_f16(d));
        if (with_sum) {
            int sum = _mm512_reduce_add_epi32(_mm512_add_epi32(q0, q1));
            store_u16(out + 2, pl_f32_to_f16(d * (float)sum));
        }
    }
}

#define AVX512VNNI __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx2,f16c,fma")))

AVX512VNNI static inline float hsum256(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}


// R rows against one quantized input at once: the input block is loaded and its scale converted once for all
// R rows, and R independent accumulator chains keep the FMA units busy (one row alone is latency-bound).
AVX512VNNI static inline __attribute__((always_inline)) void dotq_rows(
        int type, const int R, const uint8_t *w, size_t row_bytes, const uint8_t *xq, int64_t nb, float *out) {
    __m256 acc[4];
    float msum[4] = {0, 0, 0, 0};
    for (int i = 0; i < R; i++) acc[i] = _mm256_setzero_ps();
    const __m256i low4 = _mm256_set1_epi8(0x0f);
    if (type == PL_TYPE_Q4_1) {
        for (int64_t b = 0; b < nb; b++) {
            const uint8_t *xb = xq + b * 36;
            __m256i c = _mm256_loadu_si256((const __m256i *)(xb + 4));
            float dx = f16_hw(xb), sx = f16_hw(xb + 2);
            for (int i = 0; i < R; i++) {
                const uint8_t *wb = w + (size_t)i * row_bytes + b * 20;
                __m128i raw = _mm_loadu_si128((const __m128i *)(wb + 4));
                __m256i a = _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(raw, 4), raw), low4);
                __m256i sum = _mm256_dpbusd_epi32(_mm256_setzero_si256(), a, c);
                acc[i] = _mm256_fmadd_ps(_mm256_set1_ps(f16_hw(wb) * dx), _mm256_cvtepi32_ps(sum), acc[i]);
                msum[i] += f16_hw(wb + 2) * sx;
            }
        }
    } else if (type == PL_TYPE_Q4_0) {
        const __m256i eight = _mm256_set1_epi8(8);
        for (int64_t b = 0; b < nb; b++) {
            const uint8_t *xb = xq + b * 34;
            __m256i c = _mm256_loadu_si256((const __m256i *)(xb + 2));
            // Σ(q−8)·c = Σq·c − 8·Σc; the second term is shared by all rows.
            __m256i csum = _mm256_dpbusd_epi32(_mm256_setzero_si256(), eight, c);
            float dx = f16_hw(xb);
            for (int i = 0; i < R; i++) {
                const uint8_t *wb = w + (size_t)i * row_bytes + b * 18;
                __m128i raw = _mm_loadu_si128((const __m128i *)(wb + 2));
                __m256i a = _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(raw, 4), raw), low4);
                __m256i sum = _mm256_sub_epi32(_mm256_dpbusd_epi32(_mm256_setzero_si256(), a, c), csum);
                acc[i] = _mm256_fmadd_ps(_mm256_set1_ps(f16_hw(wb) * dx), _mm256_cvtepi32_ps(sum), acc[i]);
            }
        }
    } else { // Q8_0 × Q8_0: |w| against x with w's sign moved onto it, so the products fit u8·s8.
        for (int64_t b = 0; b < nb; b++) {
            const uint8_t *xb = xq + b * 34;
            __m256i c = _mm256_loadu_si256((const __m256i *)(xb + 2));
            float dx = f16_hw(xb);
            for (int i = 0; i < R; i++) {
                const uint8_t *wb = w + (size_t)i * row_bytes + b * 34;
                __m256i a = _mm256_loadu_si256((const __m256i *)(wb + 2));
                __m256i sum = _mm256_dpbusd_epi32(_mm256_setzero_si256(), _mm256_sign_epi8(a, a), _mm256_sign_epi8(c, a));
                acc[i] = _mm256_fmadd_ps(_mm256_set1_ps(f16_hw(wb) * dx), _mm256_cvtepi32_ps(sum), acc[i]);
            }
        }
    }
    for (int i = 0; i < R; i++) out[i] = hsum256(acc[i]) + msum[i];
}

AVX512VNNI void pl_avx512_matmul_q(int type, const uint8_t *w, size_t row_bytes, const uint8_t *xq, size_t xq_stride,
                                     int64_t n_tokens, float *y, int64_t ldy, int64_t nb, int64_t r0, int64_t r1) {
    float out[4];
    int64_t r = r0;
    for (; r + 4 <= r1; r += 4) {
        for (int64_t t = 0; t < n_tokens; t++) {
            const uint8_t *x = xq + (size_t)t * xq_stride;
            switch (type) {
            case PL_TYPE_Q4_1: dotq_rows(PL_TYPE_Q4_1, 4, w + (size_t)r * row_bytes, row_bytes, x, nb, out); break;
            case PL_TYPE_Q4_0: dotq_rows(PL_TYPE_Q4_0, 4, w + (size_t)r * row_bytes, row_bytes, x, nb, out); break;
            default: dotq_rows(PL_TYPE_Q8_0, 4, w + (size_t)r * row_bytes, row_bytes, x, nb, out); break;
            }
            for (int i = 0; i < 4; i++) y[t * ldy + r + i] = out[i];
        }
    }
    for (; r < r1; r++) {
        for (int64_t t = 0; t < n_tokens; t++) {
            const uint8_t *x = xq + (size_t)t * xq_stride;
            switch (type) {
            case PL_TYPE_Q4_1: dotq_rows(PL_TYPE_Q4_1, 1, w + (size_t)r * row_bytes, row_bytes, x, nb, out); break;
            case PL_TYPE_Q4_0: dotq_rows(PL_TYPE_Q4_0, 1, w + (size_t)r * row_bytes, row_bytes, x, nb, out); break;
            default: dotq_rows(PL_TYPE_Q8_0, 1, w + (size_t)r * row_bytes, row_bytes, x, nb, out); break;
            }
            y[t * ldy + r] = out[0];
        }
    }
}
#endif
