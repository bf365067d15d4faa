// Q4_K, Q5_K and Q6_K weights against several inputs at once (prompt prefill), AVX-512 VNNI; Q5_K's only fast
// body (one input is a tile of one). Each super-block of a row
// is unpacked once (quants as bytes in element order, scales spread to the 16-bit lanes) and then multiplied with a
// tile of inputs, so the unpacking that dominates the one-input body (x86/avx512_quants_k.c) is shared by the tile.
// Every output is bit-identical to pl_kq_dot_portable on that row and input: the integer lanes are the same exact
// sums (elements 4l..4l+3 of each 32-element chunk, times their scale), and each input's float steps are the
// one-input body's, super-block after super-block (one fma per lane, the minimums' own fma chain, hsum_float_8).
#include "quants_k.h"
#include <string.h>
#if defined(__x86_64__)
#include "x86/avx512_quants_k.h"

// Tokens per tile: the tile's accumulators and the unpacked super-block stay in registers.
enum { TILE = 8, ROW_CHUNK = 8 };   // TILE 4 -> 8: Q4_K 54 -> 60, Q6_K 66 -> 71 GMAC/s (1 thread)

// int16 lane m of a vector of elements 64c .. 64c+63 holds elements 64c+2m, 64c+2m+1: the scale of 16 elements
// (Q6_K) is number 4c + m/8, of 32 elements (Q4_K) number 2c + m/16.
VNNI static inline __m512i scale_index(int c, int per32) {
    int16_t ix[32];
    PL_UNROLL
    for (int m = 0; m < 32; m++) ix[m] = (int16_t)(per32 ? 2 * c + m / 16 : 4 * c + m / 8);
    return _mm512_loadu_si512((const void *)ix);
}

// ---- Q4_K, Q5_K ------------------------------------------------------------------------------------------------
// 64 bytes of nibbles cover 128 elements: low nibbles of bytes 0..31 are elements 0..31, high nibbles 32..63, low
// of bytes 32..63 elements 64..95, high 96..127. Two 256-bit lane shuffles put them in element order, so every
// input is read as it is stored. Q5_K's 5th bits: bit k of byte i of its 32 bytes belongs to element 32k + i; the
// 32 bytes, broadcast to both halves, are shifted per half (16-bit shifts, exact after the & 0x10) to bit 4.
// The minimums: Q4_K keeps four lanes of them in their own fma chain; Q5_K sums them as integers first, then one
// scalar fma per super-block (the portable body says why).
VNNI static inline __attribute__((always_inline)) void q45k_tile(const int q5, const int T, const uint8_t *row,
        const uint8_t *xq, size_t xq_stride, int64_t nsb, float *y, int64_t ldy) {
    __m256 acc[TILE];
    __m128 accm[TILE];
    float summs[TILE];
    PL_UNROLL
    for (int t = 0; t < T; t++) { acc[t] = _mm256_setzero_ps(); accm[t] = _mm_setzero_ps(); summs[t] = 0.0f; }
    const __m512i low4 = _mm512_set1_epi8(0x0f), bit4 = _mm512_set1_epi8(0x10);
    // Q5_K: elements 64c..64c+31 take bit 2c, 64c+32..63 bit 2c+1: left by 4−k for k ≤ 4, right by k−4 above.
    const __m512i sh[4] = {
        _mm512_inserti64x4(_mm512_set1_epi16(4), _mm256_set1_epi16(3), 1),
        _mm512_inserti64x4(_mm512_set1_epi16(2), _mm256_set1_epi16(1), 1),
        _mm512_inserti64x4(_mm512_set1_epi16(0), _mm256_set1_epi16(1), 1),
        _mm512_inserti64x4(_mm512_set1_epi16(2), _mm256_set1_epi16(3), 1),
    };
    __m512i sidx[4];
    PL_UNROLL
    for (int c = 0; c < 4; c++) sidx[c] = scale_index(c, 1);
    const int bb = q5 ? 176 : 144, qoff = q5 ? 48 : 16;
    for (int64_t sb = 0; sb < nsb; sb++) {
        const uint8_t *blk = row + sb * bb;
        uint32_t u[3];
        memcpy(u, blk + 4, 12);
        // 6-bit scales to 16-bit lanes 0..7, minimums to 8..15 (get_scale_min_k4, four at a time).
        uint32_t s0 = u[0] & 0x3f3f3f3f, s1 = (u[2] & 0x0f0f0f0f) | (((u[0] >> 6) & 0x03030303) << 4);
        uint32_t m0 = u[1] & 0x3f3f3f3f, m1 = ((u[2] >> 4) & 0x0f0f0f0f) | (((u[1] >> 6) & 0x03030303) << 4);
        __m256i sm = _mm256_cvtepu8_epi16(_mm_set_epi32((int)m1, (int)m0, (int)s1, (int)s0));
        __m512i scz = _mm512_castsi256_si512(sm);
        __m128i mins = _mm256_extracti128_si256(sm, 1);
        __m512i q[4], s[4];
        PL_UNROLL
        for (int p = 0; p < 2; p++) {
            __m512i v = _mm512_loadu_si512((const void *)(blk + qoff + 64 * p));
            __m512i lo = _mm512_and_si512(v, low4), hi = _mm512_and_si512(_mm512_srli_epi16(v, 4), low4);
            q[2 * p] = _mm512_shuffle_i64x2(lo, hi, 0x44);       // elements 128p + 0..63
            q[2 * p + 1] = _mm512_shuffle_i64x2(lo, hi, 0xEE);   // elements 128p + 64..127
        }
        if (q5) {
            __m512i h = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)(blk + 16)));
            PL_UNROLL
            for (int c = 0; c < 4; c++) {
                __m512i b = c < 2 ? _mm512_sllv_epi16(h, sh[c]) : _mm512_srlv_epi16(h, sh[c]);
                q[c] = _mm512_ternarylogic_epi32(q[c], b, bit4, 0xF8);   // q | (b & 0x10)
            }
        }
        PL_UNROLL
        for (int c = 0; c < 4; c++) s[c] = _mm512_permutexvar_epi16(sidx[c], scz);
        const float dw = _cvtsh_ss(ld16(blk)), dmw = _cvtsh_ss(ld16(blk + 2));
        PL_UNROLL
        for (int t = 0; t < T; t++) {
            const uint8_t *xb = xq + (size_t)t * xq_stride + sb * PL_Q8_K_BLOCK_BYTES;
            float yd;
            memcpy(&yd, xb, 4);
            // Sums of 32 inputs: pairs of the 16 block sums (ggml's hadd), against the minimums.
            __m128i q8s = _mm_hadd_epi16(_mm_loadu_si128((const __m128i *)(xb + 260)), _mm_loadu_si128((const __m128i *)(xb + 276)));
            __m128i prod = _mm_madd_epi16(mins, q8s);
            if (q5) {
                __m128i s2 = _mm_add_epi32(prod, _mm_unpackhi_epi64(prod, prod));
                int32_t sum = _mm_cvtsi128_si32(_mm_add_epi32(s2, _mm_shuffle_epi32(s2, 1)));
                summs[t] = _mm_cvtss_f32(_mm_fmadd_ss(_mm_set_ss(-yd * dmw), _mm_set_ss((float)sum), _mm_set_ss(summs[t])));
            } else {
                accm[t] = _mm_fmadd_ps(_mm_set1_ps(-yd * dmw), _mm_cvtepi32_ps(prod), accm[t]);
            }
            __m512i sumi = _mm512_setzero_si512();
            PL_UNROLL
            for (int c = 0; c < 4; c++)
                sumi = _mm512_dpwssd_epi32(sumi, _mm512_maddubs_epi16(q[c], _mm512_loadu_si512((const void *)(xb + 4 + 64 * c))), s[c]);
            acc[t] = _mm256_fmadd_ps(_mm256_set1_ps(yd * dw), _mm256_cvtepi32_ps(fold16(sumi)), acc[t]);
        }
    }
    PL_UNROLL
    for (int t = 0; t < T; t++) {
        __m128 m = _mm_add_ps(accm[t], _mm_movehl_ps(accm[t], accm[t]));
        m = _mm_add_ss(m, _mm_movehdup_ps(m));
        y[t * ldy] = pl_avx2_hsum8(acc[t]) + (q5 ? summs[t] : _mm_cvtss_f32(m));
    }
}

// ---- Q6_K ------------------------------------------------------------------------------------------------------
// Per 128 elements: 64 bytes of low nibbles give elements 0..63 (& 15) and 64..127 (>> 4); the 32 bytes of high
// bits, broadcast to both halves, are shifted per half so each element's 2 bits land at bits 4-5. Quants stay
// unsigned (0..63) and the −32 offset comes off through the block sums, as ggml does it (so the same lanes).
VNNI static inline __attribute__((always_inline)) void q6k_tile(const int T, const uint8_t *row, const uint8_t *xq,
        size_t xq_stride, int64_t nsb, float *y, int64_t ldy) {
    __m256 acc[TILE];
    PL_UNROLL
    for (int t = 0; t < T; t++) acc[t] = _mm256_setzero_ps();
    const __m512i low4 = _mm512_set1_epi8(0x0f), bits45 = _mm512_set1_epi8(0x30);
    const __m512i shA = _mm512_inserti64x4(_mm512_set1_epi16(4), _mm256_set1_epi16(2), 1);
    const __m512i shB = _mm512_inserti64x4(_mm512_setzero_si512(), _mm256_set1_epi16(2), 1);
    __m512i sidx[4];
    PL_UNROLL
    for (int c = 0; c < 4; c++) sidx[c] = scale_index(c, 0);
    for (int64_t sb = 0; sb < nsb; sb++) {
        const uint8_t *blk = row + sb * 210;
        __m256i sc16 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(blk + 192)));
        __m512i scz = _mm512_castsi256_si512(sc16);
        __m512i q[4], s[4];
        PL_UNROLL
        for (int j = 0; j < 2; j++) {
            __m512i v = _mm512_loadu_si512((const void *)(blk + 64 * j));
            __m512i h = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)(blk + 128 + 32 * j)));
            q[2 * j] = _mm512_ternarylogic_epi32(_mm512_and_si512(v, low4), _mm512_sllv_epi16(h, shA), bits45, 0xF8);
            q[2 * j + 1] = _mm512_ternarylogic_epi32(_mm512_and_si512(_mm512_srli_epi16(v, 4), low4),
                                                     _mm512_srlv_epi16(h, shB), bits45, 0xF8);
        }
        PL_UNROLL
        for (int c = 0; c < 4; c++) s[c] = _mm512_permutexvar_epi16(sidx[c], scz);
        const float dw = _cvtsh_ss(ld16(blk + 208));
        PL_UNROLL
        for (int t = 0; t < T; t++) {
            const uint8_t *xb = xq + (size_t)t * xq_stride + sb * PL_Q8_K_BLOCK_BYTES;
            float yd;
            memcpy(&yd, xb, 4);
            __m256i corr = _mm256_slli_epi32(_mm256_madd_epi16(sc16, _mm256_loadu_si256((const __m256i *)(xb + 260))), 5);
            __m512i sumi = _mm512_setzero_si512();
            PL_UNROLL
            for (int c = 0; c < 4; c++)
                sumi = _mm512_dpwssd_epi32(sumi, _mm512_maddubs_epi16(q[c], _mm512_loadu_si512((const void *)(xb + 4 + 64 * c))), s[c]);
            __m256i lanes = _mm256_sub_epi32(fold16(sumi), corr);
            acc[t] = _mm256_fmadd_ps(_mm256_set1_ps(yd * dw), _mm256_cvtepi32_ps(lanes), acc[t]);
        }
    }
    PL_UNROLL
    for (int t = 0; t < T; t++) y[t * ldy] = pl_avx2_hsum8(acc[t]);
}

// Rows in chunks of ROW_CHUNK (in L1), inputs in tiles of TILE: a tile's inputs are read from L2 once per chunk
// and each row's super-blocks once per tile.
VNNI static inline __attribute__((always_inline)) void batch_rows(int type, const uint8_t *w, size_t row_bytes,
        const uint8_t *xq, size_t xq_stride, int64_t n_tokens, float *y, int64_t ldy, int64_t nsb, int64_t r0, int64_t r1) {
    for (int64_t c0 = r0; c0 < r1; c0 += ROW_CHUNK) {
        int64_t c1 = c0 + ROW_CHUNK < r1 ? c0 + ROW_CHUNK : r1;
        for (int64_t t0 = 0; t0 < n_tokens; t0 += TILE) {
            const uint8_t *x = xq + (size_t)t0 * xq_stride;
            float *yt = y + t0 * ldy;
            int64_t left = n_tokens - t0;
            for (int64_t r = c0; r < c1; r++) {
                const uint8_t *row = w + (size_t)r * row_bytes;
                // The tile size is a constant in each call, so the accumulators stay in registers.
#define PL_TILE(T) (type == PL_TYPE_Q4_K ? q45k_tile(0, T, row, x, xq_stride, nsb, yt + r, ldy)   \
                 : type == PL_TYPE_Q5_K ? q45k_tile(1, T, row, x, xq_stride, nsb, yt + r, ldy)   \
                                         : q6k_tile(T, row, x, xq_stride, nsb, yt + r, ldy))
                switch (left >= TILE ? TILE : left) {
                case 1: PL_TILE(1); break;
                case 2: PL_TILE(2); break;
                case 3: PL_TILE(3); break;
                case 4: PL_TILE(4); break;
                case 5: PL_TILE(5); break;
                case 6: PL_TILE(6); break;
                case 7: PL_TILE(7); break;
                default: PL_TILE(TILE); break;
                }
#undef PL_TILE
            }
        }
    }
}

int pl_kq_batch_owns(int type) { return type == PL_TYPE_Q4_K || type == PL_TYPE_Q5_K || type == PL_TYPE_Q6_K; }

VNNI void pl_kq_matmul_batch_vnni(int type, const uint8_t *w, size_t row_bytes, const uint8_t *xq, size_t xq_stride,
                                  int64_t n_tokens, float *y, int64_t ldy, int64_t n, int64_t r0, int64_t r1) {
    if (type == PL_TYPE_Q4_K) batch_rows(PL_TYPE_Q4_K, w, row_bytes, xq, xq_stride, n_tokens, y, ldy, n / 256, r0, r1);
    else if (type == PL_TYPE_Q5_K) batch_rows(PL_TYPE_Q5_K, w, row_bytes, xq, xq_stride, n_tokens, y, ldy, n / 256, r0, r1);
    else batch_rows(PL_TYPE_Q6_K, w, row_bytes, xq, xq_stride, n_tokens, y, ldy, n / 256, r0, r1);
}
#endif
