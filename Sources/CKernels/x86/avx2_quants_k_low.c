// AVX2 bodies of the Q2_K, Q3_K and Q5_K dot products against Q8_K activations (x86/avx2_quants_k.c has Q5_0/Q5_1/
// Q4_K/Q6_K). Each output is bit-identical to pl_kq_dot_portable (ggml's AVX2 lane arithmetic): per 32-element chunk,
// vpmaddubsw (unsigned quants × signed x, pairs exact in int16) then vpmaddwd with the chunk's scale pair (elements
// 0..15 one 16-group scale, 16..31 the next) gives lane l = the scaled sum of elements 4l..4l+3; the chunks' lanes add
// as exact int32, and the float steps are the portable body's: Q2_K the minimum lanes' fma then the quants' fma per
// super-block; Q3_K one fma; Q5_K the minimums summed as integers into one fma'd scalar, added after hsum_float_8.
#include "quants_k.h"
#include "kernels_internal.h"
#include <string.h>
#if defined(__x86_64__)
#include "x86/avx2_common.h"
#define AVX2 PL_AVX2_ATTR

AVX2 static inline float f16(const uint8_t *p) { uint16_t v; memcpy(&v, p, 2); return _cvtsh_ss(v); }

// Scale s for int16 lanes 0..7 (elements 0..15 of a chunk), t for lanes 8..15 (elements 16..31).
AVX2 static inline __m256i scale_pair(int s, int t) {
    return _mm256_set_m128i(_mm_set1_epi16((short)t), _mm_set1_epi16((short)s));
}

// sumi + the 8 scaled lanes of one chunk: pairs p (int16, from vpmaddubsw) times the chunk's 16-group scales.
AVX2 static inline __m256i add_chunk(__m256i sumi, __m256i p, int s, int t) {
    return _mm256_add_epi32(sumi, _mm256_madd_epi16(p, scale_pair(s, t)));
}

// ---- Q2_K: 16 B scales|mins (low|high nibble per 16-group), 64 B 2-bit quants, f16 d, f16 dmin --------------------
AVX2 static inline __attribute__((always_inline)) float q2k_row(const uint8_t *w, const uint8_t *xq, int64_t nsb) {
    __m256 acc = _mm256_setzero_ps();
    const __m256i three = _mm256_set1_epi8(3);
    for (int64_t sb = 0; sb < nsb; sb++, w += 84, xq += PL_Q8_K_BLOCK_BYTES) {
        float yd;
        memcpy(&yd, xq, 4);
        const uint8_t *xs = xq + 4;
        const __m128i sm = _mm_loadu_si128((const __m128i *)w);
        const __m256i mins = _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16(sm, 4), _mm_set1_epi8(15)));
        const __m256i bs = _mm256_loadu_si256((const __m256i *)(xq + 260));
        // lane l: mins[2l]·bsums[2l] + mins[2l+1]·bsums[2l+1], fma'd first (ggml's order)
        const float d = yd * f16(w + 80), dmin = -yd * f16(w + 82);
        acc = _mm256_fmadd_ps(_mm256_set1_ps(dmin), _mm256_cvtepi32_ps(_mm256_madd_epi16(mins, bs)), acc);
        uint8_t sc[16];
        _mm_storeu_si128((__m128i *)sc, _mm_and_si128(sm, _mm_set1_epi8(15)));
        __m256i sumi = _mm256_setzero_si256();
        PL_UNROLL
        for (int j = 0; j < 2; j++) {
            const __m256i q2 = _mm256_loadu_si256((const __m256i *)(w + 16 + 32 * j));
            PL_UNROLL
            for (int k = 0; k < 4; k++) {
                const int c = 4 * j + k;
                __m256i q = _mm256_and_si256(_mm256_srli_epi16(q2, 2 * k), three);
                __m256i x = _mm256_loadu_si256((const __m256i *)(xs + 32 * c));
                sumi = add_chunk(sumi, _mm256_maddubs_epi16(q, x), sc[2 * c], sc[2 * c + 1]);
            }
        }
        acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
    }
    return pl_avx2_hsum8(acc);
}

// ---- Q3_K: 32 B high bits, 64 B 2-bit quants, 12 B 6-bit scales (minus 32), f16 d -------------------------------
// q = low 2 bits − 4 where the high bit is clear: vpmaddubsw of the low bits minus vpmaddubsw of the 4s (ggml's form).
AVX2 static inline __attribute__((always_inline)) float q3k_row(const uint8_t *w, const uint8_t *xq, int64_t nsb) {
    __m256 acc = _mm256_setzero_ps();
    const __m256i three = _mm256_set1_epi8(3), four = _mm256_set1_epi8(4), zero = _mm256_setzero_si256();
    for (int64_t sb = 0; sb < nsb; sb++, w += 110, xq += PL_Q8_K_BLOCK_BYTES) {
        float yd;
        memcpy(&yd, xq, 4);
        const uint8_t *xs = xq + 4;
        int8_t sc[16];
        pl_kq_scales_q3k(w + 96, sc);
        const __m256i hm = _mm256_loadu_si256((const __m256i *)w);
        __m256i sumi = _mm256_setzero_si256();
        PL_UNROLL
        for (int j = 0; j < 2; j++) {
            const __m256i q2 = _mm256_loadu_si256((const __m256i *)(w + 32 + 32 * j));
            PL_UNROLL
            for (int k = 0; k < 4; k++) {
                const int c = 4 * j + k;
                __m256i lo = _mm256_and_si256(_mm256_srli_epi16(q2, 2 * k), three);
                __m256i clear = _mm256_cmpeq_epi8(_mm256_and_si256(hm, _mm256_set1_epi8((char)(1 << c))), zero);
                __m256i x = _mm256_loadu_si256((const __m256i *)(xs + 32 * c));
                __m256i p = _mm256_sub_epi16(_mm256_maddubs_epi16(lo, x), _mm256_maddubs_epi16(_mm256_and_si256(clear, four), x));
                sumi = add_chunk(sumi, p, sc[2 * c], sc[2 * c + 1]);
            }
        }
        acc = _mm256_fmadd_ps(_mm256_set1_ps(yd * f16(w + 108)), _mm256_cvtepi32_ps(sumi), acc);
    }
    return pl_avx2_hsum8(acc);
}

// ---- Q5_K: f16 d, f16 dmin, 12 B scales|mins, 32 B 5th bits, 128 B nibbles ---------------------------------------
AVX2 static inline __attribute__((always_inline)) float q5k_row(const uint8_t *w, const uint8_t *xq, int64_t nsb) {
    __m256 acc = _mm256_setzero_ps();
    float summs = 0.0f;
    const __m256i low4 = _mm256_set1_epi8(0x0f), one = _mm256_set1_epi8(1);
    for (int64_t sb = 0; sb < nsb; sb++, w += 176, xq += PL_Q8_K_BLOCK_BYTES) {
        float yd;
        memcpy(&yd, xq, 4);
        const uint8_t *xs = xq + 4;
        uint8_t sc[8], mn[8];
        pl_kq_scales_mins_k4(w + 4, sc, mn);
        // Σ_g mins[g]·(bsums[2g] + bsums[2g+1]) as one integer, then summs = fma(dmin, it, summs)
        const __m128i q8s = _mm_hadd_epi16(_mm_loadu_si128((const __m128i *)(xq + 260)), _mm_loadu_si128((const __m128i *)(xq + 276)));
        __m128i pm = _mm_madd_epi16(_mm_cvtepu8_epi16(_mm_loadl_epi64((const __m128i *)mn)), q8s);
        pm = _mm_add_epi32(pm, _mm_shuffle_epi32(pm, 0x4e));
        pm = _mm_add_epi32(pm, _mm_shuffle_epi32(pm, 0xb1));
        const float dmin = -yd * f16(w + 2);
        summs = _mm_cvtss_f32(_mm_fmadd_ss(_mm_set_ss(dmin), _mm_set_ss((float)_mm_cvtsi128_si32(pm)), _mm_set_ss(summs)));
        const __m256i qh = _mm256_loadu_si256((const __m256i *)(w + 16));
        __m256i sumi = _mm256_setzero_si256();
        PL_UNROLL
        for (int j = 0; j < 4; j++) {
            const __m256i v = _mm256_loadu_si256((const __m256i *)(w + 48 + 32 * j));
            __m256i lo = _mm256_and_si256(v, low4), hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), low4);
            lo = _mm256_or_si256(lo, _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 2 * j), one), 4));
            hi = _mm256_or_si256(hi, _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 2 * j + 1), one), 4));
            __m256i xl = _mm256_loadu_si256((const __m256i *)(xs + 64 * j));
            __m256i xh = _mm256_loadu_si256((const __m256i *)(xs + 64 * j + 32));
            sumi = add_chunk(sumi, _mm256_maddubs_epi16(lo, xl), sc[2 * j], sc[2 * j]);
            sumi = add_chunk(sumi, _mm256_maddubs_epi16(hi, xh), sc[2 * j + 1], sc[2 * j + 1]);
        }
        acc = _mm256_fmadd_ps(_mm256_set1_ps(yd * f16(w)), _mm256_cvtepi32_ps(sumi), acc);
    }
    return pl_avx2_hsum8(acc) + summs;
}

int pl_kq_avx2_low_owns(int type) { return type == PL_TYPE_Q2_K || type == PL_TYPE_Q3_K || type == PL_TYPE_Q5_K; }

// One input: four rows far apart (the quarters of the range) interleaved, so four weight streams are in flight.
#define KL_MATMUL(NAME, ROW)                                                                                          \
AVX2 static void NAME(const uint8_t *w, size_t row_bytes, const uint8_t *xq, size_t xq_stride, int64_t n_tokens,       \
                      float *y, int64_t ldy, int64_t nsb, int64_t r0, int64_t r1) {                                    \
    int64_t r = r0;                                                                                                    \
    if (n_tokens == 1) {                                                                                               \
        const int64_t q = (r1 - r0) / 4;                                                                               \
        for (int64_t i = 0; i < q; i++)                                                                                \
            PL_UNROLL                                                                                                  \
            for (int j = 0; j < 4; j++) y[r0 + i + j * q] = ROW(w + (size_t)(r0 + i + j * q) * row_bytes, xq, nsb);    \
        r = r0 + 4 * q;                                                                                                \
    }                                                                                                                  \
    for (; r < r1; r++)                                                                                                \
        for (int64_t t = 0; t < n_tokens; t++)                                                                         \
            y[t * ldy + r] = ROW(w + (size_t)r * row_bytes, xq + (size_t)t * xq_stride, nsb);                         \
}
KL_MATMUL(q2k_matmul, q2k_row)
KL_MATMUL(q3k_matmul, q3k_row)
KL_MATMUL(q5k_matmul, q5k_row)

void pl_kq_matmul_avx2_low(int type, const uint8_t *w, size_t row_bytes, const uint8_t *xq, size_t xq_stride,
                           int64_t n_tokens, float *y, int64_t ldy, int64_t n, int64_t r0, int64_t r1) {
    switch (type) {
    case PL_TYPE_Q2_K: q2k_matmul(w, row_bytes, xq, xq_stride, n_tokens, y, ldy, n / 256, r0, r1); break;
    case PL_TYPE_Q3_K: q3k_matmul(w, row_bytes, xq, xq_stride, n_tokens, y, ldy, n / 256, r0, r1); break;
    case PL_TYPE_Q5_K: q5k_matmul(w, row_bytes, xq, xq_stride, n_tokens, y, ldy, n / 256, r0, r1); break;
    default: break;
    }
}
#endif
