// AVX2 bodies of the Q5_0/Q5_1/Q4_K/Q6_K dot products (the other K-quants run the portable body on this tier). Each
// output is bit-identical to pl_kq_dot_portable: per 32-element chunk, vpmaddubsw (pairs, exact: no pair leaves
// int16) then vpmaddwd with the chunk's scale gives lane l = the scaled sum of elements 4l..4l+3, the chunks' lanes
// are added as exact int32, and the float steps are the portable body's (one fma per lane per block, ggml's
// hsum_float_8, the minimum terms in ggml's order): ggml's own AVX2 bodies, which the portable one mirrors.
#include "quants_k.h"
#include "kernels_internal.h"
#include <string.h>
#if defined(__x86_64__)
#include "x86/avx2_common.h"
#define AVX2 PL_AVX2_ATTR

static inline uint16_t ld16(const uint8_t *p) { uint16_t v; memcpy(&v, p, 2); return v; }
static inline uint32_t ld32(const uint8_t *p) { uint32_t v; memcpy(&v, p, 4); return v; }

// ---- Q5_0 × Q8_0, Q5_1 × Q8_1 -------------------------------------------------------------------------------
AVX2 static inline __attribute__((always_inline)) void q5_rows(const int q51, const int R, const uint8_t *w,
        size_t row_bytes, const uint8_t *xq, int64_t nb, float *out) {
    __m256 acc[4];
    __m128 summs4 = _mm_setzero_ps();
    PL_UNROLL
    for (int i = 0; i < R; i++) acc[i] = _mm256_setzero_ps();
    const __m256i low4 = _mm256_set1_epi8(0x0f), sixteen = _mm256_set1_epi8(16);
    const int bb = q51 ? 24 : 22, xb_bytes = q51 ? 36 : 34, hoff = q51 ? 4 : 2;
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t *xb = xq + b * xb_bytes;
        __m256i c = _mm256_loadu_si256((const __m256i *)(xb + (q51 ? 4 : 2)));
        __m256i csum = q51 ? _mm256_setzero_si256() : pl_avx2_dpbusd(_mm256_setzero_si256(), sixteen, c);
        float dx = _cvtsh_ss(ld16(xb)), sx = q51 ? _cvtsh_ss(ld16(xb + 2)) : 0.0f;
        // The R rows' scales converted in one vcvtph2ps and multiplied by dx in one vmulps (the scalar dw·dx's
        // single rounding), one vpermps broadcast per row; Q5_1's minimum terms an fma lane per row.
        uint16_t dr[4] = {0, 0, 0, 0}, mr[4] = {0, 0, 0, 0};
        PL_UNROLL
        for (int i = 0; i < R; i++) {
            dr[i] = ld16(w + (size_t)i * row_bytes + b * bb);
            if (q51) mr[i] = ld16(w + (size_t)i * row_bytes + b * bb + 2);
        }
        const __m256 scale = _mm256_castps128_ps256(_mm_mul_ps(
            _mm_cvtph_ps(_mm_setr_epi16((short)dr[0], (short)dr[1], (short)dr[2], (short)dr[3], 0, 0, 0, 0)), _mm_set1_ps(dx)));
        if (q51)   // fused, as ggml's FMA build computes m·s + summs
            summs4 = _mm_fmadd_ps(_mm_cvtph_ps(_mm_setr_epi16((short)mr[0], (short)mr[1], (short)mr[2], (short)mr[3], 0, 0, 0, 0)),
                                  _mm_set1_ps(sx), summs4);
        PL_UNROLL
        for (int i = 0; i < R; i++) {
            const uint8_t *wb = w + (size_t)i * row_bytes + b * bb;
            __m128i raw = _mm_loadu_si128((const __m128i *)(wb + hoff + 4));
            __m256i a = _mm256_and_si256(_mm256_inserti128_si256(_mm256_castsi128_si256(raw), _mm_srli_epi16(raw, 4), 1), low4);
            a = _mm256_or_si256(a, _mm256_and_si256(pl_avx2_bytes_from_bits(ld32(wb + hoff)), sixteen));
            __m256i S = pl_avx2_dpbusd(_mm256_setzero_si256(), a, c);
            const __m256 sc = _mm256_permutevar8x32_ps(scale, _mm256_set1_epi32(i));
            acc[i] = _mm256_fmadd_ps(sc, _mm256_cvtepi32_ps(q51 ? S : _mm256_sub_epi32(S, csum)), acc[i]);
        }
    }
    float summs[4];
    _mm_storeu_ps(summs, summs4);
    PL_UNROLL
    for (int i = 0; i < R; i++) out[i] = q51 ? pl_avx2_hsum8(acc[i]) + summs[i] : pl_avx2_hsum8(acc[i]);
}

// Scale s for int16 lanes 0..7 (elements 0..15 of a 32-chunk), t for lanes 8..15 (elements 16..31).
AVX2 static inline __m256i scale_pair(int s, int t) {
    return _mm256_set_m128i(_mm_set1_epi16((short)t), _mm_set1_epi16((short)s));
}

// ---- Q6_K × Q8_K -----------------------------------------------------------------------------------------------
// Quants stay unsigned (0..63) and the −32 offset comes off through the block sums, as ggml does it.
AVX2 static inline __attribute__((always_inline)) void q6k_rows(const int R, const uint8_t *w, size_t row_bytes,
        const uint8_t *xq, int64_t nsb, float *out) {
    __m256 acc[4];
    PL_UNROLL
    for (int i = 0; i < R; i++) acc[i] = _mm256_setzero_ps();
    const __m256i low4 = _mm256_set1_epi8(0x0f), bits45 = _mm256_set1_epi8(0x30);
    for (int64_t sb = 0; sb < nsb; sb++) {
        const uint8_t *xb = xq + sb * PL_Q8_K_BLOCK_BYTES;
        float yd;
        memcpy(&yd, xb, 4);
        __m256i bs = _mm256_loadu_si256((const __m256i *)(xb + 260));
        PL_UNROLL
        for (int i = 0; i < R; i++) {
            const uint8_t *blk = w + (size_t)i * row_bytes + sb * 210;
            const int8_t *sc = (const int8_t *)(blk + 192);
            __m256i sc16 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)sc));
            __m256i corr = _mm256_slli_epi32(_mm256_madd_epi16(sc16, bs), 5);
            __m256i sumi = _mm256_setzero_si256();
            PL_UNROLL
            for (int h = 0; h < 2; h++) {
                __m256i l0 = _mm256_loadu_si256((const __m256i *)(blk + 64 * h));
                __m256i l1 = _mm256_loadu_si256((const __m256i *)(blk + 64 * h + 32));
                __m256i qh = _mm256_loadu_si256((const __m256i *)(blk + 128 + 32 * h));
                __m256i q[4];
                q[0] = _mm256_or_si256(_mm256_and_si256(l0, low4), _mm256_and_si256(_mm256_slli_epi16(qh, 4), bits45));
                q[1] = _mm256_or_si256(_mm256_and_si256(l1, low4), _mm256_and_si256(_mm256_slli_epi16(qh, 2), bits45));
                q[2] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l0, 4), low4), _mm256_and_si256(qh, bits45));
                q[3] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l1, 4), low4),
                                       _mm256_and_si256(_mm256_srli_epi16(qh, 2), bits45));
                PL_UNROLL
                for (int k = 0; k < 4; k++) {
                    __m256i x = _mm256_loadu_si256((const __m256i *)(xb + 4 + 128 * h + 32 * k));
                    int s = 8 * h + 2 * k;
                    sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(_mm256_maddubs_epi16(q[k], x), scale_pair(sc[s], sc[s + 1])));
                }
            }
            __m256i lanes = _mm256_sub_epi32(sumi, corr);
            float d = yd * _cvtsh_ss(ld16(blk + 208));
            acc[i] = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(lanes), acc[i]);
        }
    }
    PL_UNROLL
    for (int i = 0; i < R; i++) out[i] = pl_avx2_hsum8(acc[i]);
}

// ---- Q4_K × Q8_K -----------------------------------------------------------------------------------------------
AVX2 static inline __attribute__((always_inline)) void q4k_rows(const int R, const uint8_t *w, size_t row_bytes,
        const uint8_t *xq, int64_t nsb, float *out) {
    __m256 acc[4];
    __m128 accm[4];
    PL_UNROLL
    for (int i = 0; i < R; i++) { acc[i] = _mm256_setzero_ps(); accm[i] = _mm_setzero_ps(); }
    const __m256i low4 = _mm256_set1_epi8(0x0f);
    for (int64_t sb = 0; sb < nsb; sb++) {
        const uint8_t *xb = xq + sb * PL_Q8_K_BLOCK_BYTES;
        float yd;
        memcpy(&yd, xb, 4);
        const uint8_t *xs = xb + 4;
        __m128i q8s = _mm_hadd_epi16(_mm_loadu_si128((const __m128i *)(xb + 260)), _mm_loadu_si128((const __m128i *)(xb + 276)));
        PL_UNROLL
        for (int i = 0; i < R; i++) {
            const uint8_t *blk = w + (size_t)i * row_bytes + sb * 144;
            uint32_t u[4];
            memcpy(u, blk + 4, 12);
            uint32_t s0 = u[0] & 0x3f3f3f3f, s1 = (u[2] & 0x0f0f0f0f) | (((u[0] >> 6) & 0x03030303) << 4);
            uint32_t m0 = u[1] & 0x3f3f3f3f, m1 = ((u[2] >> 4) & 0x0f0f0f0f) | (((u[1] >> 6) & 0x03030303) << 4);
            __m128i mins = _mm_cvtepu8_epi16(_mm_set_epi32(0, 0, (int)m1, (int)m0));
            uint8_t sc[8];
            memcpy(sc, &s0, 4);
            memcpy(sc + 4, &s1, 4);
            __m128i prod = _mm_madd_epi16(mins, q8s);
            float dmin = -yd * _cvtsh_ss(ld16(blk + 2));
            accm[i] = _mm_fmadd_ps(_mm_set1_ps(dmin), _mm_cvtepi32_ps(prod), accm[i]);
            __m256i sumi = _mm256_setzero_si256();
            PL_UNROLL
            for (int j = 0; j < 4; j++) {
                __m256i v = _mm256_loadu_si256((const __m256i *)(blk + 16 + 32 * j));
                __m256i lo = _mm256_and_si256(v, low4), hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), low4);
                __m256i xl = _mm256_loadu_si256((const __m256i *)(xs + 64 * j));
                __m256i xh = _mm256_loadu_si256((const __m256i *)(xs + 64 * j + 32));
                sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(_mm256_maddubs_epi16(lo, xl), _mm256_set1_epi16(sc[2 * j])));
                sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(_mm256_maddubs_epi16(hi, xh), _mm256_set1_epi16(sc[2 * j + 1])));
            }
            float d = yd * _cvtsh_ss(ld16(blk));
            acc[i] = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc[i]);
        }
    }
    PL_UNROLL
    for (int i = 0; i < R; i++) {
        __m128 m = _mm_add_ps(accm[i], _mm_movehl_ps(accm[i], accm[i]));
        m = _mm_add_ss(m, _mm_movehdup_ps(m));
        out[i] = pl_avx2_hsum8(acc[i]) + _mm_cvtss_f32(m);
    }
}

AVX2 static inline __attribute__((always_inline)) void rows_dot(int type, const int R, const uint8_t *w,
        size_t row_bytes, const uint8_t *x, int64_t n, float *out) {
    switch (type) {
    case PL_TYPE_Q5_0: q5_rows(0, R, w, row_bytes, x, n / 32, out); break;
    case PL_TYPE_Q5_1: q5_rows(1, R, w, row_bytes, x, n / 32, out); break;
    case PL_TYPE_Q4_K: q4k_rows(R, w, row_bytes, x, n / 256, out); break;
    case PL_TYPE_Q6_K: q6k_rows(R, w, row_bytes, x, n / 256, out); break;
    default:
        PL_UNROLL
        for (int i = 0; i < R; i++) out[i] = pl_kq_dot_portable(type, w + (size_t)i * row_bytes, x, n);
        break;
    }
}

AVX2 static inline __attribute__((always_inline)) void matmul_rows(int type, const uint8_t *w, size_t row_bytes,
        const uint8_t *xq, size_t xq_stride, int64_t n_tokens, float *y, int64_t ldy, int64_t n, int64_t r0, int64_t r1) {
    float out[4];
    int64_t r = r0;
    if (n_tokens == 1) {
        // One input: four rows far apart (the quarters of the range) in lockstep, four weight streams at once.
        int64_t q = (r1 - r0) / 4;
        for (int64_t i = 0; i < q; i++) {
            rows_dot(type, 4, w + (size_t)(r0 + i) * row_bytes, (size_t)q * row_bytes, xq, n, out);
            PL_UNROLL
            for (int j = 0; j < 4; j++) y[r0 + i + j * q] = out[j];
        }
        r = r0 + 4 * q;
    }
    for (; r + 4 <= r1; r += 4)
        for (int64_t t = 0; t < n_tokens; t++) {
            rows_dot(type, 4, w + (size_t)r * row_bytes, row_bytes, xq + (size_t)t * xq_stride, n, out);
            PL_UNROLL
            for (int i = 0; i < 4; i++) y[t * ldy + r + i] = out[i];
        }
    for (; r < r1; r++)
        for (int64_t t = 0; t < n_tokens; t++) {
            rows_dot(type, 1, w + (size_t)r * row_bytes, row_bytes, xq + (size_t)t * xq_stride, n, out);
            y[t * ldy + r] = out[0];
        }
}

int pl_kq_avx2_owns(int type) {
    return type == PL_TYPE_Q5_0 || type == PL_TYPE_Q5_1 || type == PL_TYPE_Q4_K || type == PL_TYPE_Q6_K;
}

AVX2 void pl_kq_matmul_avx2(int type, const uint8_t *w, size_t row_bytes, const uint8_t *xq, size_t xq_stride,
                            int64_t n_tokens, float *y, int64_t ldy, int64_t n, int64_t r0, int64_t r1) {
    if (n_tokens >= PL_AVX2_BATCH_MIN && (type == PL_TYPE_Q5_0 || type == PL_TYPE_Q5_1)) {
        if (pl_isa_features() & PL_FEATURE_AVX_VNNI) pl_avxvnni_matmul_batch(type, w, row_bytes, xq, xq_stride, n_tokens, y, ldy, n / 32, r0, r1);
        else pl_avx2_matmul_batch(type, w, row_bytes, xq, xq_stride, n_tokens, y, ldy, n / 32, r0, r1);
        return;
    }
    if (n_tokens >= PL_AVX2_BATCH_MIN && (type == PL_TYPE_Q4_K || type == PL_TYPE_Q6_K)) {
        pl_kq_matmul_batch_avx2(type, w, row_bytes, xq, xq_stride, n_tokens, y, ldy, n, r0, r1);
        return;
    }
    switch (type) {   // one instantiation per type, so each inner loop is specialised
    case PL_TYPE_Q5_0: matmul_rows(PL_TYPE_Q5_0, w, row_bytes, xq, xq_stride, n_tokens, y, ldy, n, r0, r1); break;
    case PL_TYPE_Q5_1: matmul_rows(PL_TYPE_Q5_1, w, row_bytes, xq, xq_stride, n_tokens, y, ldy, n, r0, r1); break;
    case PL_TYPE_Q4_K: matmul_rows(PL_TYPE_Q4_K, w, row_bytes, xq, xq_stride, n_tokens, y, ldy, n, r0, r1); break;
    case PL_TYPE_Q6_K: matmul_rows(PL_TYPE_Q6_K, w, row_bytes, xq, xq_stride, n_tokens, y, ldy, n, r0, r1); break;
    default: break;
    }
}
#endif
