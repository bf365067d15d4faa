// AVX-512 VNNI bodies of the Q5_0/Q5_1/Q4_K/Q6_K dot products (the rest of quants_k.c's types run its portable
// body on every CPU for now). Each output is bit-identical to pl_kq_dot_portable: the integer lanes are the same
// exact sums (elements 4l..4l+3 of every 32-element chunk, times their scale, in int32), only gathered 512 bits at a
// time (lane l of a 32-chunk sits in 32-bit lane l or l+8 of a zmm, folded by an integer add), and the float steps
// are the same operations in the same order (one fma per lane per block, ggml's hsum_float_8).
// R rows run in lockstep against one input: the input's vectors are loaded once for all of them, and R independent
// fma chains hide each other's latency.
#include "quants_k.h"
#include "kernels_internal.h"
#include <string.h>
#if defined(__x86_64__)
#include "x86/avx512_quants_k.h"

// The VNNI bodies run on the AVX-512 tier of a CPU with VNNI (pl_isa: 0 while a thread forces a lower tier).
int pl_kq_fast(void) { return pl_tier_avx512_vnni(); }

int pl_quant_fast_body(int type) {
    return pl_kq_fast() && (type == PL_TYPE_Q5_0 || type == PL_TYPE_Q5_1 || type == PL_TYPE_Q4_K || type == PL_TYPE_Q5_K ||
                            type == PL_TYPE_Q6_K || pl_kq_avx2_low_owns(type));   // Q2_K/Q3_K: the AVX2 bodies
}


// ---- Q5_0 × Q8_0, Q5_1 × Q8_1 -------------------------------------------------------------------------------
VNNI static inline __attribute__((always_inline)) void q5_rows(const int q51, const int R, const uint8_t *w,
        size_t row_bytes, size_t pf, const uint8_t *xq, int64_t nb, float *out) {
    __m256 acc[4];
    float summs[4] = {0, 0, 0, 0};
    PL_UNROLL
    for (int i = 0; i < R; i++) acc[i] = _mm256_setzero_ps();
    const __m256i low4 = _mm256_set1_epi8(0x0f), sixteen = _mm256_set1_epi8(16);
    const int bb = q51 ? 24 : 22, xb_bytes = q51 ? 36 : 34, hoff = q51 ? 4 : 2;
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t *xb = xq + b * xb_bytes;
        __m256i c = _mm256_loadu_si256((const __m256i *)(xb + (q51 ? 4 : 2)));
        // Q5_0: (q−16)·c = q·c − 16·Σc per 4 elements; the second term is the input's alone.
        __m256i csum = q51 ? _mm256_setzero_si256() : _mm256_dpbusd_epi32(_mm256_setzero_si256(), sixteen, c);
        float dx = _cvtsh_ss(ld16(xb)), sx = q51 ? _cvtsh_ss(ld16(xb + 2)) : 0.0f;
        PL_UNROLL
        for (int i = 0; i < R; i++) {
            const uint8_t *wb = w + (size_t)i * row_bytes + b * bb;
            if ((b & 1) == 0) _mm_prefetch((const char *)(wb + pf), _MM_HINT_T0);
            __m128i raw = _mm_loadu_si128((const __m128i *)(wb + hoff + 4));
            __m256i a = _mm256_and_si256(_mm256_inserti128_si256(_mm256_castsi128_si256(raw), _mm_srli_epi16(raw, 4), 1), low4);
            a = _mm256_mask_add_epi8(a, (__mmask32)ld32(wb + hoff), a, sixteen);   // 5th bit j = bit j of qh
            __m256i S = _mm256_dpbusd_epi32(_mm256_setzero_si256(), a, c);
            float dw = _cvtsh_ss(ld16(wb));
            if (q51) {
                summs[i] = _mm_cvtss_f32(_mm_fmadd_ss(_mm_set_ss(_cvtsh_ss(ld16(wb + 2))), _mm_set_ss(sx), _mm_set_ss(summs[i])));
                acc[i] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(S), _mm256_set1_ps(dw * dx), acc[i]);
            } else {
                acc[i] = _mm256_fmadd_ps(_mm256_set1_ps(dw * dx), _mm256_cvtepi32_ps(_mm256_sub_epi32(S, csum)), acc[i]);
            }
        }
    }
    PL_UNROLL
    for (int i = 0; i < R; i++) out[i] = q51 ? pl_avx2_hsum8(acc[i]) + summs[i] : pl_avx2_hsum8(acc[i]);
}

// ---- Q6_K × Q8_K -----------------------------------------------------------------------------------------------
// Per 128 elements: 64 bytes of low nibbles give elements 0..63 (& 15) and 64..127 (>> 4); the 32 bytes of high
// bits, broadcast to both halves, are shifted per half so each element's 2 bits land at bits 4-5. Quants stay
// unsigned (0..63) and the −32 offset comes off through the block sums, as ggml does it (so the same lanes).
// `gp` (NULL for a matrix at `w`): the row's super-blocks gathered from a table, `spg` per entry, the row `row_off`
// bytes into each entry (pl_kq_matmul_groups_vnni; `w` is then unused).
VNNI static inline __attribute__((always_inline)) void q6k_rows(const int R, const uint8_t *w, size_t row_bytes, size_t pf,
        const uint8_t *xq, int64_t nsb, float *out, const uint8_t *const *gp, int64_t spg, size_t row_off) {
    __m256 acc[4];
    PL_UNROLL
    for (int i = 0; i < R; i++) acc[i] = _mm256_setzero_ps();
    const __m512i low4 = _mm512_set1_epi8(0x0f), bits45 = _mm512_set1_epi8(0x30);
    // Chunk A (elements 0..63 of a half): bits 0-1 (first 32) / 2-3 (next 32) up to 4-5; chunk B: 4-5 / 6-7.
    const __m512i shA = _mm512_inserti64x4(_mm512_set1_epi16(4), _mm256_set1_epi16(2), 1);
    const __m512i shB = _mm512_inserti64x4(_mm512_setzero_si512(), _mm256_set1_epi16(2), 1);
    // int16 lane m of 64-element chunk k (pairs 2m, 2m+1) has scale (64k + 2m)/16 = 4k + m/8.
    __m512i sidx[4];
    PL_UNROLL
    for (int k = 0; k < 4; k++) {
        int16_t ix[32];
        PL_UNROLL
        for (int m = 0; m < 32; m++) ix[m] = (int16_t)(4 * k + m / 8);
        sidx[k] = _mm512_loadu_si512((const void *)ix);
    }
    for (int64_t sb = 0; sb < nsb; sb++) {
        const uint8_t *xb = xq + sb * PL_Q8_K_BLOCK_BYTES;
        float yd;
        memcpy(&yd, xb, 4);
        __m512i x[4];
        PL_UNROLL
        for (int k = 0; k < 4; k++) x[k] = _mm512_loadu_si512((const void *)(xb + 4 + 64 * k));
        __m256i bs = _mm256_loadu_si256((const __m256i *)(xb + 260));
        PL_UNROLL
        for (int i = 0; i < R; i++) {
            const uint8_t *blk = (gp ? gp[sb / spg] + row_off + (size_t)(sb % spg) * 210 : w + sb * 210) + (size_t)i * row_bytes;
            // The next group of rows, a few KiB ahead: from DRAM the hardware prefetcher alone left this at ~5 GB/s.
            PL_UNROLL
            for (int o = 0; o < 256; o += 64) _mm_prefetch((const char *)(blk + pf + o), _MM_HINT_T0);
            __m256i sc16 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(blk + 192)));
            __m512i scz = _mm512_castsi256_si512(sc16);
            __m256i corr = _mm256_slli_epi32(_mm256_madd_epi16(sc16, bs), 5);
            __m512i sumi = _mm512_setzero_si512();
            PL_UNROLL
            for (int j = 0; j < 2; j++) {
                __m512i v = _mm512_loadu_si512((const void *)(blk + 64 * j));
                __m512i h = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)(blk + 128 + 32 * j)));
                __m512i A = _mm512_ternarylogic_epi32(_mm512_and_si512(v, low4), _mm512_sllv_epi16(h, shA), bits45, 0xF8);
                __m512i B = _mm512_ternarylogic_epi32(_mm512_and_si512(_mm512_srli_epi16(v, 4), low4),
                                                      _mm512_srlv_epi16(h, shB), bits45, 0xF8);
                sumi = _mm512_dpwssd_epi32(sumi, _mm512_maddubs_epi16(A, x[2 * j]), _mm512_permutexvar_epi16(sidx[2 * j], scz));
                sumi = _mm512_dpwssd_epi32(sumi, _mm512_maddubs_epi16(B, x[2 * j + 1]), _mm512_permutexvar_epi16(sidx[2 * j + 1], scz));
            }
            __m256i lanes = _mm256_sub_epi32(fold16(sumi), corr);
            float d = yd * _cvtsh_ss(ld16(blk + 208));
            acc[i] = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(lanes), acc[i]);
        }
    }
    PL_UNROLL
    for (int i = 0; i < R; i++) out[i] = pl_avx2_hsum8(acc[i]);
}

// ---- Q4_K × Q8_K -----------------------------------------------------------------------------------------------
// 64 bytes of nibbles cover 128 elements: low nibbles of bytes 0..31 / 32..63 are elements 0..31 / 64..95, high
// nibbles 32..63 / 96..127; the input is gathered to match (once for all rows). `gp`, `spg`, `row_off`: as q6k_rows.
VNNI static inline __attribute__((always_inline)) void q4k_rows(const int R, const uint8_t *w, size_t row_bytes, size_t pf,
        const uint8_t *xq, int64_t nsb, float *out, const uint8_t *const *gp, int64_t spg, size_t row_off) {
    __m256 acc[4];
    __m128 accm[4];
    PL_UNROLL
    for (int i = 0; i < R; i++) { acc[i] = _mm256_setzero_ps(); accm[i] = _mm_setzero_ps(); }
    const __m512i low4 = _mm512_set1_epi8(0x0f);
    // int16 lane m of the low/high vector of 128-element half p: scale 4p + (m < 16 ? 0 : 2) (+1 for high).
    __m512i sidx[4];
    PL_UNROLL
    for (int k = 0; k < 4; k++) {
        int16_t ix[32];
        int p = k / 2, hi = k % 2;
        PL_UNROLL
        for (int m = 0; m < 32; m++) ix[m] = (int16_t)(4 * p + (m < 16 ? 0 : 2) + hi);
        sidx[k] = _mm512_loadu_si512((const void *)ix);
    }
    for (int64_t sb = 0; sb < nsb; sb++) {
        const uint8_t *xb = xq + sb * PL_Q8_K_BLOCK_BYTES;
        float yd;
        memcpy(&yd, xb, 4);
        const uint8_t *xs = xb + 4;
        __m512i xl[2], xh[2];
        PL_UNROLL
        for (int p = 0; p < 2; p++) {
            xl[p] = _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)(xs + 128 * p))),
                                       _mm256_loadu_si256((const __m256i *)(xs + 128 * p + 64)), 1);
            xh[p] = _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)(xs + 128 * p + 32))),
                                       _mm256_loadu_si256((const __m256i *)(xs + 128 * p + 96)), 1);
        }
        // Sums of 32 inputs: pairs of the 16 block sums (ggml's hadd).
        __m128i q8s = _mm_hadd_epi16(_mm_loadu_si128((const __m128i *)(xb + 260)), _mm_loadu_si128((const __m128i *)(xb + 276)));
        PL_UNROLL
        for (int i = 0; i < R; i++) {
            const uint8_t *blk = (gp ? gp[sb / spg] + row_off + (size_t)(sb % spg) * 144 : w + sb * 144) + (size_t)i * row_bytes;
            PL_UNROLL
            for (int o = 0; o < 192; o += 64) _mm_prefetch((const char *)(blk + pf + o), _MM_HINT_T0);
            uint32_t u[4];
            memcpy(u, blk + 4, 12);
            // 6-bit scales to bytes 0..7, minimums to bytes 8..15 (get_scale_min_k4, four at a time).
            uint32_t s0 = u[0] & 0x3f3f3f3f, s1 = (u[2] & 0x0f0f0f0f) | (((u[0] >> 6) & 0x03030303) << 4);
            uint32_t m0 = u[1] & 0x3f3f3f3f, m1 = ((u[2] >> 4) & 0x0f0f0f0f) | (((u[1] >> 6) & 0x03030303) << 4);
            __m256i sm = _mm256_cvtepu8_epi16(_mm_set_epi32((int)m1, (int)m0, (int)s1, (int)s0));
            __m512i scz = _mm512_castsi256_si512(sm);
            __m128i prod = _mm_madd_epi16(_mm256_extracti128_si256(sm, 1), q8s);
            float dmin = -yd * _cvtsh_ss(ld16(blk + 2));
            accm[i] = _mm_fmadd_ps(_mm_set1_ps(dmin), _mm_cvtepi32_ps(prod), accm[i]);
            __m512i sumi = _mm512_setzero_si512();
            PL_UNROLL
            for (int p = 0; p < 2; p++) {
                __m512i v = _mm512_loadu_si512((const void *)(blk + 16 + 64 * p));
                __m512i lo = _mm512_and_si512(v, low4), hi = _mm512_and_si512(_mm512_srli_epi16(v, 4), low4);
                sumi = _mm512_dpwssd_epi32(sumi, _mm512_maddubs_epi16(lo, xl[p]), _mm512_permutexvar_epi16(sidx[2 * p], scz));
                sumi = _mm512_dpwssd_epi32(sumi, _mm512_maddubs_epi16(hi, xh[p]), _mm512_permutexvar_epi16(sidx[2 * p + 1], scz));
            }
            float d = yd * _cvtsh_ss(ld16(blk));
            acc[i] = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(fold16(sumi)), acc[i]);
        }
    }
    PL_UNROLL
    for (int i = 0; i < R; i++) {
        __m128 m = _mm_add_ps(accm[i], _mm_movehl_ps(accm[i], accm[i]));
        m = _mm_add_ss(m, _mm_movehdup_ps(m));
        out[i] = pl_avx2_hsum8(acc[i]) + _mm_cvtss_f32(m);
    }
}

// R rows (a compile-time constant at each call) of one type against one input.
// Row i of the R is at w + i·row_bytes (neighbours, or rows far apart: row_bytes is then a stride); each row's
// super-blocks are prefetched `pf` bytes ahead.
VNNI static inline __attribute__((always_inline)) void rows_dot(int type, const int R, const uint8_t *w, size_t row_bytes, size_t pf,
                                                                 const uint8_t *x, int64_t n, float *out) {
    switch (type) {
    case PL_TYPE_Q5_0: q5_rows(0, R, w, row_bytes, pf, x, n / 32, out); break;
    case PL_TYPE_Q5_1: q5_rows(1, R, w, row_bytes, pf, x, n / 32, out); break;
    case PL_TYPE_Q4_K: q4k_rows(R, w, row_bytes, pf, x, n / 256, out, NULL, 1, 0); break;
    case PL_TYPE_Q6_K: q6k_rows(R, w, row_bytes, pf, x, n / 256, out, NULL, 1, 0); break;
    default:
        PL_UNROLL
        for (int i = 0; i < R; i++) out[i] = pl_kq_dot_portable(type, w + (size_t)i * row_bytes, x, n);
        break;
    }
}

VNNI static inline __attribute__((always_inline)) void matmul_rows(int type, const uint8_t *w, size_t row_bytes, const uint8_t *xq, size_t xq_stride,
                             int64_t n_tokens, float *y, int64_t ldy, int64_t n, int64_t r0, int64_t r1) {
    float out[4];
    int64_t r = r0;
    if (n_tokens == 1) {
        // One input: four rows far apart (the quarters of the range) in lockstep, so the core streams weights from
        // four places at once and keeps more DRAM requests in flight; each prefetches two of its rows ahead.
        int64_t q = (r1 - r0) / 4;
        for (int64_t i = 0; i < q; i++) {
            rows_dot(type, 4, w + (size_t)(r0 + i) * row_bytes, (size_t)q * row_bytes, 2 * row_bytes, xq, n, out);
            PL_UNROLL
            for (int j = 0; j < 4; j++) y[r0 + i + j * q] = out[j];
        }
        r = r0 + 4 * q;
    }
    // Four rows at a time; in a batch they stay in L1 while every input passes over them.
    for (; r + 4 <= r1; r += 4)
        for (int64_t t = 0; t < n_tokens; t++) {
            rows_dot(type, 4, w + (size_t)r * row_bytes, row_bytes, 8 * row_bytes, xq + (size_t)t * xq_stride, n, out);
            PL_UNROLL
            for (int i = 0; i < 4; i++) y[t * ldy + r + i] = out[i];
        }
    for (; r < r1; r++)
        for (int64_t t = 0; t < n_tokens; t++) {
            rows_dot(type, 1, w + (size_t)r * row_bytes, row_bytes, 8 * row_bytes, xq + (size_t)t * xq_stride, n, out);
            y[t * ldy + r] = out[0];
        }
}

VNNI void pl_kq_matmul_vnni(int type, const uint8_t *w, size_t row_bytes, const uint8_t *xq, size_t xq_stride,
                       int64_t n_tokens, float *y, int64_t ldy, int64_t n, int64_t r0, int64_t r1) {
    // Q5_K has no one-input body of its own: the batch body with tiles of one input serves it.
    if ((n_tokens > 1 || type == PL_TYPE_Q5_K) && pl_kq_batch_owns(type)) {
        pl_kq_matmul_batch_vnni(type, w, row_bytes, xq, xq_stride, n_tokens, y, ldy, n, r0, r1);
        return;
    }
    switch (type) {   // one instantiation per type, so each inner loop is specialised
    case PL_TYPE_Q5_0: matmul_rows(PL_TYPE_Q5_0, w, row_bytes, xq, xq_stride, n_tokens, y, ldy, n, r0, r1); break;
    case PL_TYPE_Q5_1: matmul_rows(PL_TYPE_Q5_1, w, row_bytes, xq, xq_stride, n_tokens, y, ldy, n, r0, r1); break;
    case PL_TYPE_Q4_K: matmul_rows(PL_TYPE_Q4_K, w, row_bytes, xq, xq_stride, n_tokens, y, ldy, n, r0, r1); break;
    case PL_TYPE_Q6_K: matmul_rows(PL_TYPE_Q6_K, w, row_bytes, xq, xq_stride, n_tokens, y, ldy, n, r0, r1); break;
    default: matmul_rows(type, w, row_bytes, xq, xq_stride, n_tokens, y, ldy, n, r0, r1); break;
    }
}
// One input against a Q4_K/Q6_K matrix whose super-block columns lie in separate buffers: block b of row r at
// groups[b / spg] + r·slice_bytes + (b mod spg)·block bytes (a paged FFN's down slices, each group of neurons read
// into its own buffer). Row for row the same operations in the same order as pl_kq_matmul_vnni's one-input path,
// so the same bits as that matrix reassembled. The rows start `row_off` bytes into each group's buffer.
VNNI static inline __attribute__((always_inline)) void groups_rows(int type, const int R, const uint8_t *const *groups, int64_t spg, size_t row_off,
                             size_t row_stride, size_t pf, const uint8_t *xq, int64_t nsb, float *out) {
    if (type == PL_TYPE_Q4_K) q4k_rows(R, NULL, row_stride, pf, xq, nsb, out, groups, spg, row_off);
    else q6k_rows(R, NULL, row_stride, pf, xq, nsb, out, groups, spg, row_off);
}

VNNI void pl_kq_matmul_groups_vnni(int type, const uint8_t *const *groups, int64_t spg, size_t slice_bytes,
                                   const uint8_t *xq, float *y, int64_t n, int64_t r0, int64_t r1) {
    float out[4];
    const int64_t nsb = n / 256;
    // Four neighbouring rows at a time (not matmul_rows' quarters): each group's slices are then read as one
    // sequential stream (rows follow each other there), one stream per group rather than four, each prefetched
    // 16 rows ahead. The rows' sums are independent, so the bits do not depend on the grouping.
    int64_t r = r0;
    for (; r + 4 <= r1; r += 4) {
        if (type == PL_TYPE_Q4_K) groups_rows(PL_TYPE_Q4_K, 4, groups, spg, (size_t)r * slice_bytes, slice_bytes, 16 * slice_bytes, xq, nsb, out);
        else groups_rows(PL_TYPE_Q6_K, 4, groups, spg, (size_t)r * slice_bytes, slice_bytes, 16 * slice_bytes, xq, nsb, out);
        PL_UNROLL
        for (int i = 0; i < 4; i++) y[r + i] = out[i];
    }
    for (; r < r1; r++) {
        groups_rows(type, 1, groups, spg, (size_t)r * slice_bytes, slice_bytes, 16 * slice_bytes, xq, nsb, out);
        y[r] = out[0];
    }
}
#else
int pl_quant_fast_body(int type) { (void)type; return 0; }
#endif
