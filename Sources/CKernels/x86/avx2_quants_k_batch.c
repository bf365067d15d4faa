// Several inputs (prompt prefill) against Q4_K or Q6_K rows in the file's layout, AVX2: the K-quant counterpart of
// quant_batch_body.h. Eight consecutive rows are unpacked once per group (a chunk of super-blocks at a time) into a
// lane-major L1 scratch — for super-block s, 32-element chunk c and ggml lane l, the 8 rows' elements 4l..4l+3 of
// the chunk in one register — with their sub-block scales as int16 pairs per row; then each input costs, per chunk
// and lane, a broadcast of its 4 bytes, vpmaddubsw, vpmaddwd by the 8 rows' scales and an add, the weights and
// scales shared by a tile of inputs.
//
// Arithmetic, identical to the row kernels' (avx2_quants_k.c, so to pl_kq_dot_portable and llama.cpp's AVX2
// vec_dot): lane l of a super-block is the exact int32 Σ over its 8 chunks of the scaled pair sums of elements
// 4l..4l+3 (Q6_K: minus 32·(sc[2l]·bsum[2l] + sc[2l+1]·bsum[2l+1]), the offset taken off through the block sums),
// fma'd with d_w·d_x into float lane l super-block after super-block; Q4_K's minimums four lanes of
// madd(mins, chunk sums) fma'd with −d_x·dmin_w; the row's result ggml's hsum_float_8 (plus the minimums' 4-lane sum).
#include "quants_k.h"
#include "kernels_internal.h"
#include <string.h>
#if defined(__x86_64__)
#include "x86/avx2_common.h"
#define AVX2 PL_AVX2_ATTR

// Super-blocks unpacked at a time (2048 columns: 16 KiB of quants), inputs per token tile and per register tile.
enum { KB_CHUNK = 8, KB_TOKENS = 32, KB_TILE = 4 };

typedef struct {
    _Alignas(32) uint8_t q[KB_CHUNK * 8 * 8 * 32];   // [s][c][l]: 8 rows × 4 quants (unsigned)
    _Alignas(32) uint32_t sc[KB_CHUNK * 8 * 2 * 8];  // [s][c][half]: per row, the scale as an int16 pair (Q4_K: half 0)
    _Alignas(32) uint32_t corr[KB_CHUNK * 8 * 8];    // Q6_K [s][l]: per row (sc[2l], sc[2l+1]); Q4_K [s][k<4]: mins
    _Alignas(32) float d[KB_CHUNK * 8], dmin[KB_CHUNK * 8];
} KScratch;

static inline uint32_t pair16(int a, int b) { return (uint32_t)(uint16_t)(int16_t)a | ((uint32_t)(uint16_t)(int16_t)b << 16); }

// Row `blk`'s chunk c (32 elements, in order) as unsigned quants.
AVX2 static inline __attribute__((always_inline)) __m256i chunk_quants(const int type, const uint8_t *blk, int c) {
    const __m256i low4 = _mm256_set1_epi8(0x0f);
    if (type == PL_TYPE_Q4_K) {
        __m256i v = _mm256_loadu_si256((const __m256i *)(blk + 16 + 32 * (c / 2)));
        return c % 2 ? _mm256_and_si256(_mm256_srli_epi16(v, 4), low4) : _mm256_and_si256(v, low4);
    }
    const int h = c / 4, k = c % 4;
    const __m256i bits45 = _mm256_set1_epi8(0x30);
    __m256i l = _mm256_loadu_si256((const __m256i *)(blk + 64 * h + 32 * (k % 2)));
    __m256i qh = _mm256_loadu_si256((const __m256i *)(blk + 128 + 32 * h));
    __m256i lo = k < 2 ? _mm256_and_si256(l, low4) : _mm256_and_si256(_mm256_srli_epi16(l, 4), low4);
    __m256i hi = k == 0 ? _mm256_slli_epi16(qh, 4) : k == 1 ? _mm256_slli_epi16(qh, 2) : k == 2 ? qh : _mm256_srli_epi16(qh, 2);
    return _mm256_or_si256(lo, _mm256_and_si256(hi, bits45));
}

// Super-blocks s0 ..< s0+ns of rows ..< valid (others zero) into the scratch.
AVX2 static inline __attribute__((always_inline)) void k_unpack(const int type, const uint8_t *w, size_t row_bytes,
        int valid, int prefetch_next, int64_t s0, int64_t ns, KScratch *ks) {
    const int bb = type == PL_TYPE_Q4_K ? 144 : 210;
    for (int64_t s = 0; s < ns; s++) {
        const uint8_t *blk[8];
        for (int i = 0; i < 8; i++) blk[i] = w + (size_t)(i < valid ? i : 0) * row_bytes + (s0 + s) * bb;
        // The next group's rows (unpacked after every input has run over this one's): fetched meanwhile.
        if (prefetch_next)
            for (int i = 0; i < 8; i++)
                for (int o = 0; o < bb + 63; o += 64)
                    _mm_prefetch((const char *)(blk[i] + 8 * row_bytes + (o < bb ? o : bb - 1)), _MM_HINT_T0);
        for (int c = 0; c < 8; c++) {
            __m256i e[8], out[8];
            PL_UNROLL
            for (int i = 0; i < 8; i++) e[i] = i < valid ? chunk_quants(type, blk[i], c) : _mm256_setzero_si256();
            pl_avx2_transpose8_epi32(e, out);
            uint8_t *o = ks->q + (s * 8 + c) * 256;
            PL_UNROLL
            for (int l = 0; l < 8; l++) _mm256_store_si256((__m256i *)(o + 32 * l), out[l]);
        }
        for (int i = 0; i < 8; i++) {
            const uint8_t *b = blk[i];
            const int live = i < valid;
            if (type == PL_TYPE_Q4_K) {
                uint32_t v[3];
                memcpy(v, b + 4, 12);
                uint32_t s0w = v[0] & 0x3f3f3f3f, s1w = (v[2] & 0x0f0f0f0f) | (((v[0] >> 6) & 0x03030303) << 4);
                uint32_t m0w = v[1] & 0x3f3f3f3f, m1w = ((v[2] >> 4) & 0x0f0f0f0f) | (((v[1] >> 6) & 0x03030303) << 4);
                uint8_t sc[8], mn[8];
                memcpy(sc, &s0w, 4); memcpy(sc + 4, &s1w, 4);
                memcpy(mn, &m0w, 4); memcpy(mn + 4, &m1w, 4);
                for (int c = 0; c < 8; c++) ks->sc[(s * 8 + c) * 16 + i] = live ? pair16(sc[c], sc[c]) : 0;
                for (int k = 0; k < 4; k++) ks->corr[(s * 8 + k) * 8 + i] = live ? pair16(mn[2 * k], mn[2 * k + 1]) : 0;
                ks->d[s * 8 + i] = live ? _cvtsh_ss(load_u16(b)) : 0.0f;
                ks->dmin[s * 8 + i] = live ? _cvtsh_ss(load_u16(b + 2)) : 0.0f;
            } else {
                const int8_t *sc = (const int8_t *)(b + 192);
                for (int c = 0; c < 8; c++) {
                    ks->sc[(s * 8 + c) * 16 + i] = live ? pair16(sc[2 * c], sc[2 * c]) : 0;
                    ks->sc[(s * 8 + c) * 16 + 8 + i] = live ? pair16(sc[2 * c + 1], sc[2 * c + 1]) : 0;
                }
                for (int l = 0; l < 8; l++) ks->corr[(s * 8 + l) * 8 + i] = live ? pair16(sc[2 * l], sc[2 * l + 1]) : 0;
                ks->d[s * 8 + i] = live ? _cvtsh_ss(load_u16(b + 208)) : 0.0f;
            }
        }
    }
}

// Inputs t ..< t+T over the scratch's ns super-blocks (block s0 + s of the row), lane by lane; acc from `saved`
// (or zero on the row's first chunk) and back there. Q4_K's minimum lanes in msaved[t][k].
AVX2 static inline __attribute__((always_inline)) void k_inputs(const int type, const int T, const uint8_t *xq,
        size_t xq_stride, int64_t t, const KScratch *ks, int64_t s0, int64_t ns, __m256 (*saved)[8], __m256 (*msaved)[4]) {
    const uint8_t *x[KB_TILE];
    __m256 scale[KB_TILE][KB_CHUNK];
    PL_UNROLL
    for (int i = 0; i < T; i++) {
        x[i] = xq + (size_t)(t + i) * xq_stride + s0 * PL_Q8_K_BLOCK_BYTES;
        for (int64_t s = 0; s < ns; s++) {
            const uint8_t *xb = x[i] + s * PL_Q8_K_BLOCK_BYTES;
            float yd;
            memcpy(&yd, xb, 4);
            scale[i][s] = _mm256_mul_ps(_mm256_set1_ps(yd), _mm256_load_ps(ks->d + 8 * s));
            if (type == PL_TYPE_Q4_K) {
                // The chunks' input sums (pairs of the 16-element block sums), as ggml's hadd; then the 4 lanes.
                _Alignas(16) int32_t q8s[4];
                _mm_store_si128((__m128i *)q8s, _mm_hadd_epi16(_mm_loadu_si128((const __m128i *)(xb + 260)),
                                                               _mm_loadu_si128((const __m128i *)(xb + 276))));
                __m256 dmin = _mm256_mul_ps(_mm256_set1_ps(-yd), _mm256_load_ps(ks->dmin + 8 * s));
                PL_UNROLL
                for (int k = 0; k < 4; k++) {
                    __m256i prod = _mm256_madd_epi16(_mm256_load_si256((const __m256i *)(ks->corr + (s * 8 + k) * 8)),
                                                     _mm256_set1_epi32(q8s[k]));
                    msaved[i][k] = _mm256_fmadd_ps(dmin, _mm256_cvtepi32_ps(prod), msaved[i][k]);
                }
            }
        }
    }
    PL_UNROLL
    for (int l = 0; l < 8; l++) {
        __m256 acc[KB_TILE];
        PL_UNROLL
        for (int i = 0; i < T; i++) acc[i] = s0 == 0 ? _mm256_setzero_ps() : saved[i][l];
        for (int64_t s = 0; s < ns; s++) {
            __m256i sumi[KB_TILE];
            PL_UNROLL
            for (int i = 0; i < T; i++) sumi[i] = _mm256_setzero_si256();
            PL_UNROLL
            for (int c = 0; c < 8; c++) {
                const __m256i wv = _mm256_load_si256((const __m256i *)(ks->q + ((s * 8 + c) * 8 + l) * 32));
                const int half = type == PL_TYPE_Q6_K && l >= 4;
                const __m256i sv = _mm256_load_si256((const __m256i *)(ks->sc + (s * 8 + c) * 16 + 8 * half));
                PL_UNROLL
                for (int i = 0; i < T; i++) {
                    const uint8_t *xc = x[i] + s * PL_Q8_K_BLOCK_BYTES + 4 + 32 * c + 4 * l;
                    __m256i xb = _mm256_castps_si256(_mm256_broadcast_ss((const float *)xc));
                    sumi[i] = _mm256_add_epi32(sumi[i], _mm256_madd_epi16(_mm256_maddubs_epi16(wv, xb), sv));
                }
            }
            PL_UNROLL
            for (int i = 0; i < T; i++) {
                if (type == PL_TYPE_Q6_K) {
                    const uint8_t *bs = x[i] + s * PL_Q8_K_BLOCK_BYTES + 260 + 4 * l;   // block sums 2l, 2l+1
                    __m256i corr = _mm256_madd_epi16(_mm256_load_si256((const __m256i *)(ks->corr + (s * 8 + l) * 8)),
                                                     _mm256_castps_si256(_mm256_broadcast_ss((const float *)bs)));
                    sumi[i] = _mm256_sub_epi32(sumi[i], _mm256_slli_epi32(corr, 5));
                }
                acc[i] = _mm256_fmadd_ps(scale[i][s], _mm256_cvtepi32_ps(sumi[i]), acc[i]);
            }
        }
        PL_UNROLL
        for (int i = 0; i < T; i++) saved[i][l] = acc[i];
    }
}

AVX2 static inline __attribute__((always_inline)) void k_matmul(const int type, const uint8_t *w, size_t row_bytes,
        const uint8_t *xq, size_t xq_stride, int64_t n_tokens, float *y, int64_t ldy, int64_t nsb, int64_t r0, int64_t r1) {
    KScratch ks;
    __m256 saved[KB_TOKENS][8], msaved[KB_TOKENS][4];
    for (int64_t t0 = 0; t0 < n_tokens; t0 += KB_TOKENS) {
        const int64_t t1 = n_tokens - t0 < KB_TOKENS ? n_tokens : t0 + KB_TOKENS;
        for (int64_t r = r0; r < r1; r += 8) {
            const int valid = r1 - r < 8 ? (int)(r1 - r) : 8;
            const __m256i mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(valid), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
            const uint8_t *wr = w + (size_t)r * row_bytes;
            for (int64_t t = t0; t < t1; t++)
                for (int k = 0; k < 4; k++) msaved[t - t0][k] = _mm256_setzero_ps();
            for (int64_t s0 = 0; s0 < nsb; s0 += KB_CHUNK) {
                const int64_t ns = nsb - s0 < KB_CHUNK ? nsb - s0 : KB_CHUNK;
                k_unpack(type, wr, row_bytes, valid, r + 16 <= r1, s0, ns, &ks);
                int64_t t = t0;
                for (; t + KB_TILE <= t1; t += KB_TILE)
                    k_inputs(type, KB_TILE, xq, xq_stride, t, &ks, s0, ns, saved + (t - t0), msaved + (t - t0));
                for (; t < t1; t++) k_inputs(type, 1, xq, xq_stride, t, &ks, s0, ns, saved + (t - t0), msaved + (t - t0));
            }
            for (int64_t t = t0; t < t1; t++) {
                const __m256 *a = saved[t - t0];
                // ggml's hsum_float_8 per row, then (Q4_K) the minimums' ((m0+m2) + (m1+m3)).
                __m256 v = _mm256_add_ps(_mm256_add_ps(_mm256_add_ps(a[4], a[0]), _mm256_add_ps(a[6], a[2])),
                                         _mm256_add_ps(_mm256_add_ps(a[5], a[1]), _mm256_add_ps(a[7], a[3])));
                if (type == PL_TYPE_Q4_K) {
                    const __m256 *m = msaved[t - t0];
                    v = _mm256_add_ps(v, _mm256_add_ps(_mm256_add_ps(m[0], m[2]), _mm256_add_ps(m[1], m[3])));
                }
                // vmaskmovps stores are slow on AMD: only for a partial group
                if (valid == 8) _mm256_storeu_ps(y + t * ldy + r, v);
                else _mm256_maskstore_ps(y + t * ldy + r, mask, v);
            }
        }
    }
}

AVX2 void pl_kq_matmul_batch_avx2(int type, const uint8_t *w, size_t row_bytes, const uint8_t *xq, size_t xq_stride,
                                  int64_t n_tokens, float *y, int64_t ldy, int64_t n, int64_t r0, int64_t r1) {
    switch (type) {   // one instantiation per type, so each inner loop is specialised
    case PL_TYPE_Q4_K: k_matmul(PL_TYPE_Q4_K, w, row_bytes, xq, xq_stride, n_tokens, y, ldy, n / 256, r0, r1); break;
    case PL_TYPE_Q6_K: k_matmul(PL_TYPE_Q6_K, w, row_bytes, xq, xq_stride, n_tokens, y, ldy, n / 256, r0, r1); break;
    default: break;
    }
}
#endif
