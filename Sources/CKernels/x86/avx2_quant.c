// AVX2 bodies of the activation quantizers (Q8_0, Q8_1: bit-identical to the portable ones: the same max, 127/amax
// and round-half-to-even), of the Q8_0/Q4_0/Q4_1 row kernels (quant_rows_body.h) and of the Q8_0/Q4_x/Q5_x batch
// kernel (quant_batch_body.h), with vpmaddubsw + vpmaddwd for vpdpbusd, or the VEX AVX-VNNI vpdpbusd where the CPU
// has it: bit-identical to the AVX-512 VNNI tier.
#include "kernels_internal.h"
#include "packed.h"
#if defined(__x86_64__)
#include <immintrin.h>
#include <math.h>
#include "x86/avx2_common.h"
#define AVX2 PL_AVX2_ATTR

AVX2 void pl_avx2_quantize_q8(const float *x, uint8_t *out, int64_t n, int with_sum) {
    const int bytes = with_sum ? PL_Q8_1_BLOCK_BYTES : PL_Q8_0_BLOCK_BYTES;
    const int qoff = with_sum ? 4 : 2;
    const __m256 sign = _mm256_set1_ps(-0.0f);
    for (int64_t b = 0; b < n / 32; b++, out += bytes) {
        __m256 v[4];
        for (int j = 0; j < 4; j++) v[j] = _mm256_loadu_ps(x + b * 32 + 8 * j);
        __m256 m = _mm256_max_ps(_mm256_max_ps(_mm256_andnot_ps(sign, v[0]), _mm256_andnot_ps(sign, v[1])),
                                 _mm256_max_ps(_mm256_andnot_ps(sign, v[2]), _mm256_andnot_ps(sign, v[3])));
        __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
        m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
        m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
        float amax = _mm_cvtss_f32(m4);
        float d = amax / 127.0f;
        float id = amax != 0.0f ? 127.0f / amax : 0.0f;
        const __m256 mul = _mm256_set1_ps(id);
        __m256i q[4];
        for (int j = 0; j < 4; j++)
            q[j] = _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(v[j], mul), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
        // packs work per 128-bit half: the dwords come out in the order 0 4 1 5 2 6 3 7, put back by a permute.
        __m256i p = _mm256_packs_epi16(_mm256_packs_epi32(q[0], q[1]), _mm256_packs_epi32(q[2], q[3]));
        p = _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
        _mm256_storeu_si256((__m256i *)(out + qoff), p);
        store_u16(out, pl_f32_to_f16(d));
        if (with_sum) {
            __m256i s = _mm256_add_epi32(_mm256_add_epi32(q[0], q[1]), _mm256_add_epi32(q[2], q[3]));
            __m128i s4 = _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
            s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0x4e));
            s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0xb1));
            store_u16(out + 2, pl_f32_to_f16(d * (float)_mm_cvtsi128_si32(s4)));
        }
    }
}

// One Q8_K block (256 floats, see pl_quantize_q8_K), bit-identical to the portable one: the first element of largest
// magnitude (NaN never taken), iscale = −127/max, quants rounded to nearest even (vcvtps2dq, as ggml's nearest_int
// for |v| < 2^22) and capped at 127, block sums of 16, d = 1/iscale. Returns 0 (nothing written) for a block with a
// NaN or an infinity, or so tiny that −127/max overflows: the portable body handles those.
AVX2 int pl_avx2_quantize_q8_K_block(const float *x, uint8_t *out) {
    const __m256 sign = _mm256_set1_ps(-0.0f);
    __m256 m = _mm256_setzero_ps(), nan = _mm256_setzero_ps();
    for (int j = 0; j < 256; j += 8) {
        __m256 v = _mm256_loadu_ps(x + j);
        m = _mm256_max_ps(_mm256_andnot_ps(sign, v), m);
        nan = _mm256_or_ps(nan, _mm256_cmp_ps(v, v, _CMP_UNORD_Q));
    }
    if (_mm256_movemask_ps(nan)) return 0;   // ggml's nearest_int of a NaN product is its own bit trick
    __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
    m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
    m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
    const float amax = _mm_cvtss_f32(m4);
    if (!isfinite(amax)) return 0;
    float iscale = 0.0f;
    if (amax != 0.0f) {
        const __m256 am = _mm256_set1_ps(amax);
        int first = 0;
        for (int j = 0; j < 256; j += 8) {
            int hit = _mm256_movemask_ps(_mm256_cmp_ps(_mm256_andnot_ps(sign, _mm256_loadu_ps(x + j)), am, _CMP_EQ_OQ));
            if (hit) { first = j + __builtin_ctz((unsigned)hit); break; }
        }
        iscale = -127.0f / x[first];
        if (!isfinite(iscale)) return 0;   // a tiny block: −127/max overflows, and ggml's bit trick decides the quants
    }
    int8_t *qs = (int8_t *)(out + 4);
    int16_t bsums[16];
    float d = 0.0f;
    if (amax == 0.0f) {
        memset(qs, 0, 256);
        memset(bsums, 0, sizeof bsums);
    } else {
        const __m256 mul = _mm256_set1_ps(iscale);
        const __m256i cap = _mm256_set1_epi32(127);
        for (int j = 0; j < 256; j += 32) {
            __m256i q[4];
            for (int k = 0; k < 4; k++)
                q[k] = _mm256_min_epi32(_mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x + j + 8 * k), mul)), cap);
            __m256i p = _mm256_packs_epi16(_mm256_packs_epi32(q[0], q[1]), _mm256_packs_epi32(q[2], q[3]));
            _mm256_storeu_si256((__m256i *)(qs + j), _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7)));
        }
        for (int g = 0; g < 16; g++) {
            // 16 quants widened to int16 and summed pairwise: exact (|sum| ≤ 2032).
            __m128i w = _mm_madd_epi16(_mm_cvtepi8_epi16(_mm_loadl_epi64((const __m128i *)(qs + 16 * g))), _mm_set1_epi16(1));
            w = _mm_add_epi32(w, _mm_madd_epi16(_mm_cvtepi8_epi16(_mm_loadl_epi64((const __m128i *)(qs + 16 * g + 8))), _mm_set1_epi16(1)));
            w = _mm_add_epi32(w, _mm_shuffle_epi32(w, 0x4e));
            w = _mm_add_epi32(w, _mm_shuffle_epi32(w, 0xb1));
            bsums[g] = (int16_t)_mm_cvtsi128_si32(w);
        }
        d = 1.0f / iscale;
    }
    memcpy(out, &d, 4);
    memcpy(out + 260, bsums, 32);
    return 1;
}

#define QR_ATTR AVX2
#define QR_NAME(f) pl_avx2_##f
#define QR_DPBUSD(acc, a, b) pl_avx2_dpbusd(acc, a, b)
#include "x86/quant_rows_body.h"
#undef QR_ATTR
#undef QR_NAME
#undef QR_DPBUSD

#define QB_ATTR AVX2
#define QB_NAME(f) pl_avx2_##f
#define QB_DPBUSD(acc, a, b) pl_avx2_dpbusd(acc, a, b)
#include "x86/quant_batch_body.h"
#undef QB_ATTR
#undef QB_NAME
#undef QB_DPBUSD

// AVX-VNNI (Alder Lake and later, Zen 5): the VEX-encoded vpdpbusd on 256 bits.
#define QR_ATTR __attribute__((target("avx2,fma,f16c,avxvnni")))
#define QR_NAME(f) pl_avxvnni_##f
#define QR_DPBUSD(acc, a, b) _mm256_dpbusd_avx_epi32(acc, a, b)
#include "x86/quant_rows_body.h"
#define QB_ATTR QR_ATTR
#define QB_NAME(f) pl_avxvnni_##f
#define QB_DPBUSD(acc, a, b) _mm256_dpbusd_avx_epi32(acc, a, b)
#include "x86/quant_batch_body.h"
#endif
