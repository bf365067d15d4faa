// AVX-512 bodies of the activation quantizers (Q8_0, Q8_1: bit-identical to the portable ones) and the AVX-512 VNNI
// row kernels of Q8_0/Q4_0/Q4_1 (ggml's AVX2 lane arithmetic: 8 int32 lanes per block, fma'd with d·d_x).
#include "kernels_internal.h"
#if defined(__x86_64__)
#include <immintrin.h>
#include <math.h>
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

#define QR_ATTR __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx2,f16c,fma")))
#define QR_NAME(f) pl_avx512_##f
#define QR_DPBUSD(acc, a, b) _mm256_dpbusd_epi32(acc, a, b)
#include "x86/quant_rows_body.h"
#endif
